"""Whole training runs in subprocesses: resume after SIGKILL, and two-process DDP and FSDP (gloo) = one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_train_support import stage_overrides, write_tiny_llm, write_video_dataset

pytestmark = pytest.mark.slow
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm2_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs_world")
    return {"root": root, "llm": write_tiny_llm(root / "llm", smollm2_tokenizer),
            "annotations": write_video_dataset(root / "data", num_videos=8)}


def write_config(world, output: Path, **extra) -> Path:
    """A prealign config file for a tiny CPU run (every override written out as YAML keys)."""
    config: dict = {}
    for override in stage_overrides(world["llm"], world["annotations"], output, "prealign", **extra):
        key, _, value = override.partition("=")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path = output.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "videopanda", "train", "--config", str(config)]


def final_weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "model.safetensors"))


def assert_same_weights(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=lambda m, n=name: f"{n}: {m}", **tolerance)


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(world):
    root, settings = world["root"], {"max_steps": 6, "save_steps": 2, "optim.group_lr.visual": 1e-3}
    straight = write_config(world, root / "straight", **settings)
    subprocess.run(train_command(straight), check=True, capture_output=True)

    killed = root / "killed"
    config = write_config(world, killed, **settings)
    process = subprocess.Popen(train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists() and not (killed / "checkpoint-6").exists()

    resumed = subprocess.run(train_command(config), check=True, capture_output=True, text=True)
    newest = max(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    assert newest == 6 and "resuming from" in resumed.stderr
    assert_same_weights(final_weights(killed), final_weights(root / "straight"), rtol=0, atol=0)


# Global batch 2: two ranks x 1 sample, or one process x 1 sample x 2 accumulation steps. One sample per
# forward on both sides, so the STAB's BatchNorm sees the same batches. The two sides sum the same gradients
# in another order (all-reduce vs accumulation), so they agree to rounding; AdamW's first steps move a weight
# by ~lr * g / (|g| + eps) whatever |g| is, which turns a gradient that is zero up to rounding into a full
# step of either sign (the DDP comparison failed once). A larger eps keeps such steps as small as g.
COMMON = {"max_steps": 2, "per_device_batch_size": 1, "optim.group_lr.visual": 1e-3, "model.config.stab_dropout": 0.0,
          "optim.eps": 1e-4}
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels (thread split) on both sides
FSDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fsdp" / "full_shard.json"


@pytest.fixture(scope="module")
def one_process_run(world) -> dict[str, torch.Tensor]:
    single = write_config(world, world["root"] / "single", gradient_accumulation_steps=2, **COMMON)
    subprocess.run(train_command(single), check=True, capture_output=True, env=ONE_THREAD)
    return trained_weights(world["root"] / "single")


def trained_weights(output: Path) -> dict[str, torch.Tensor]:
    """BatchNorm running statistics are buffers, not trained: DDP keeps rank 0's, like the release."""
    return {k: v for k, v in final_weights(output).items() if not k.endswith(BN_BUFFERS)}


def torchrun_command(config: Path, launcher: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *launcher,
            "train", "--config", str(config)]


def run_two_processes(config: Path, launcher: list[str]) -> subprocess.CompletedProcess:
    run = subprocess.run(torchrun_command(config, launcher), capture_output=True, text=True, env=ONE_THREAD)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 2" in run.stderr
    assert "Gradient Accumulation steps = 1" in run.stderr  # so the 2 comes from 2 ranks
    return run


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(world, one_process_run):
    double = write_config(world, world["root"] / "double", gradient_accumulation_steps=1, **COMMON)
    run_two_processes(double, ["-m", "videopanda"])
    assert_same_weights(trained_weights(world["root"] / "double"), one_process_run, rtol=1e-5, atol=1e-6)


FSDP_LAUNCHER = [str(Path(__file__).parent / "fsdp_on_cpu.py")]


def write_fsdp_config(world, output: Path, **extra) -> Path:
    return write_config(world, output, gradient_accumulation_steps=1, distributed="fsdp",
                        fsdp_config=str(FSDP_CONFIG), **COMMON, **extra)


@pytest.fixture(scope="module")
def fsdp_run(world) -> tuple[Path, subprocess.CompletedProcess]:
    output = world["root"] / "fsdp"
    return output, run_two_processes(write_fsdp_config(world, output), FSDP_LAUNCHER)


def test_two_process_fsdp_matches_one_process_with_the_same_global_batch(fsdp_run, one_process_run):
    """FSDP2 full shard through the Trainer, the STAB and each LLaMA decoder layer a unit (configs/fsdp).

    Accelerate enables FSDP only on GPU process groups; ``fsdp_on_cpu.py`` lifts that gate for gloo.
    """
    output, run = fsdp_run
    sharded = next(line for line in run.stderr.splitlines() if "sharded: FSDP units" in line)
    assert "STAB" in sharded and "LlamaDecoderLayer" in sharded and "(6 units" in sharded  # + root, embeddings, head
    assert_same_weights(trained_weights(output), one_process_run, rtol=1e-5, atol=1e-6)


def test_fsdp_resume_after_sigkill_ends_like_the_uninterrupted_fsdp_run(world, fsdp_run):
    """torchrun and both ranks SIGKILLed right after checkpoint-1 (sharded optimizer state, per-rank RNG);
    the same command again resumes from it and ends bit for bit where the uninterrupted FSDP run ended."""
    killed = world["root"] / "fsdp_killed"
    config = write_fsdp_config(world, killed, save_steps=1)
    crash = subprocess.run(torchrun_command(config, FSDP_LAUNCHER), capture_output=True, text=True,
                           env={**ONE_THREAD, "KILL_AFTER_CHECKPOINT": "1"})
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    assert (killed / "checkpoint-1" / "trainer_state.json").exists()
    assert not (killed / "checkpoint-2").exists() and not (killed / "model.safetensors").exists()

    resumed = run_two_processes(config, FSDP_LAUNCHER)
    assert "resuming from" in resumed.stderr and "checkpoint-1" in resumed.stderr
    assert (killed / "checkpoint-2" / "trainer_state.json").exists()
    assert_same_weights(final_weights(killed), final_weights(fsdp_run[0]), rtol=0, atol=0)


# DeepSpeed ZeRO-2 and ZeRO-3 through the Trainer, on CPU processes with gloo (tests/deepspeed_on_cpu.py).
DEEPSPEED_LAUNCHER = [str(Path(__file__).parent / "deepspeed_on_cpu.py")]
DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"


def write_deepspeed_config(world, output: Path, stage: int, **extra) -> Path:
    settings = {"gradient_accumulation_steps": 1, **COMMON, **extra}
    return write_config(world, output, distributed="deepspeed", deepspeed=str(DEEPSPEED_CONFIGS / f"zero{stage}.json"),
                        **settings)


def zero_shards(checkpoint: Path) -> list[str]:
    """The files of DeepSpeed's sharded state in a Trainer checkpoint: one optimizer shard per rank."""
    return sorted(p.name for p in checkpoint.glob("global_step*/*") if p.name.endswith("_optim_states.pt"))


def optimizer_shards(checkpoint: Path) -> list[dict]:
    return [torch.load(p, map_location="cpu", weights_only=False)
            for p in sorted(checkpoint.glob("global_step*/*_optim_states.pt"))]


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def zero_run(request, world) -> tuple[int, Path]:
    stage = request.param
    output = world["root"] / f"zero{stage}"
    run_two_processes(write_deepspeed_config(world, output, stage), DEEPSPEED_LAUNCHER)
    return stage, output


def test_two_process_deepspeed_matches_one_process_with_the_same_global_batch(zero_run, one_process_run):
    stage, output = zero_run
    print(sorted(str(p.relative_to(output)) for p in output.rglob("*")))
    assert_same_weights(trained_weights(output), one_process_run, rtol=1e-5, atol=1e-6)
