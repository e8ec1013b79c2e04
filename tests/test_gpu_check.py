"""benchmarks/gpu_check.py in its CPU mode: what needs CUDA is skipped, everything else passes."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow
CUDA_ONLY = {"3 stages, FSDP", "3 stages, ZeRO-2", "3 stages, ZeRO-3", "QLoRA step + merge",
             "vLLM: eval run --endpoint"}


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU mode")
def test_gpu_check_on_cpu_skips_what_needs_cuda_and_passes_the_rest(tmp_path):
    gpu_check = load_gpu_check()
    results = {r.name: r for r in gpu_check.run_checks(tmp_path)}
    assert set(results) == {name for name, _ in gpu_check.CHECKS}
    for name, result in results.items():
        expected = "skip" if name in CUDA_ONLY else "pass"
        assert result.status == expected, (name, result.note)
    assert "answers generated" in results["generation + eval run"].note
    table = gpu_check.render(list(results.values()), cuda=False)
    assert table.count("| skip |") == len(CUDA_ONLY) and "FAIL" not in table
