"""The golden-case directory: VIDEOPANDA_GOLDEN_DIR replaces tests/golden, and a skipped golden test is an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOLDEN_DIR

pytestmark = pytest.mark.slow  # three pytest subprocesses, each paying the torch/transformers imports

STAB_TESTS = str(Path(__file__).with_name("test_stab.py"))


def run_pytest(golden: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest on the STAB golden test only, with ``golden`` as the case directory (in one process: ``-n 0``)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", STAB_TESTS, "-k", "matches_release",
         *args],
        capture_output=True, text=True, env={**os.environ, "VIDEOPANDA_GOLDEN_DIR": str(golden)},
    )


def test_golden_dir_from_environment_runs_exactly_its_cases(tmp_path):
    source = GOLDEN_DIR / "stab_golden"
    for suffix in (".json", ".safetensors"):
        shutil.copy(source.with_suffix(suffix), tmp_path / f"stab_copied{suffix}")
    result = run_pytest(tmp_path, "--collect-only")
    collected = [line.split("::")[-1] for line in result.stdout.splitlines() if "::" in line]
    assert collected == ["test_stab_matches_release_outputs_and_gradients[stab_copied]"], result.stdout


def test_golden_kind_without_cases_is_an_error(tmp_path):
    result = run_pytest(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], result.stdout
    assert f"golden test skipped (no stab_* golden cases in {tmp_path})" in result.stdout, result.stdout


def test_allow_missing_golden_lets_the_kind_skip(tmp_path):
    result = run_pytest(tmp_path, "--allow-missing-golden")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout.splitlines()[-1], result.stdout
