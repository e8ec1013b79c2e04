"""Whole training runs in subprocesses: resume after SIGKILL, and two-process DDP and FSDP (gloo) = one process."""

from __future__ import annotations

import json
import math
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

from conftest import ONE_PROCESS_RUNS_UNIT
from test_train_support import stage_overrides, write_tiny_llm, write_video_dataset

pytestmark = pytest.mark.slow
ONE_PROCESS_UNIT = pytest.mark.xdist_group(ONE_PROCESS_RUNS_UNIT)  # conftest.xdist_unit
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm2_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs_world")
    return {"root": root, "llm": write_tiny_llm(root / "llm", smollm2_tokenizer),
            "annotations": write_video_dataset(root / "data", num_videos=8)}


def write_config(world, output: Path, stage: str = "prealign", **extra) -> Path:
    """A config file for a tiny CPU run of ``stage`` (every override written out as YAML keys)."""
    config: dict = {}
    for override in stage_overrides(world["llm"], world["annotations"], output, stage, **extra):
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


@ONE_PROCESS_UNIT
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


def write_deepspeed_config(world, output: Path, zero_stage: int, stage: str = "prealign", **extra) -> Path:
    settings = {"gradient_accumulation_steps": 1, **COMMON, **extra}
    return write_config(world, output, stage, distributed="deepspeed",
                        deepspeed=str(DEEPSPEED_CONFIGS / f"zero{zero_stage}.json"), **settings)


def optimizer_shards(checkpoint: Path) -> dict[str, dict]:
    """DeepSpeed's sharded optimizer state in a Trainer checkpoint: one file per rank, by file name."""
    return {p.name: torch.load(p, map_location="cpu", weights_only=False)
            for p in sorted(checkpoint.glob("global_step*/*_optim_states.pt"))}


def zero3_padding(checkpoint: Path, rank: int, world_size: int = 2) -> torch.Tensor:
    """(N,) bool over rank ``rank``'s flat fp32 partition: True where ZeRO-3 padded a parameter's shard (each
    parameter splits into ceil(numel / world) elements per rank). Padding is uninitialised memory, never a weight."""
    states = torch.load(next(checkpoint.glob(f"global_step*/zero_pp_rank_{rank}_mp_rank_00_model_states.pt")),
                        map_location="cpu", weights_only=False)
    padding = []
    for group in states["param_shapes"]:
        for shape in group.values():
            numel = math.prod(shape)
            shard = -(-numel // world_size)
            held = max(0, min(shard, numel - rank * shard))
            padding += [False] * held + [True] * (shard - held)
    return torch.tensor(padding)


def assert_same_state(a, b, where: str = "") -> None:
    """Bit-for-bit equality of nested optimizer states (tensors, numbers, containers)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__"):  # e.g. DeepSpeed's loss scaler
        assert type(a) is type(b), where
        assert_same_state(vars(a), vars(b), where)
    else:
        assert a == b, where


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def zero_run(request, world) -> tuple[int, Path]:
    stage = request.param
    output = world["root"] / f"zero{stage}"
    run = run_two_processes(write_deepspeed_config(world, output, stage), DEEPSPEED_LAUNCHER)
    assert "built successfully" not in run.stdout  # the launcher skipped DeepSpeed's shm op (its docstring)
    return stage, output


def test_two_process_deepspeed_matches_one_process_with_the_same_global_batch(zero_run, one_process_run):
    stage, output = zero_run
    shards = sorted(optimizer_shards(output / "checkpoint-2"))
    assert shards == [f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)], shards  # the engine ran
    assert_same_weights(trained_weights(output), one_process_run, rtol=1e-5, atol=1e-6)


def test_deepspeed_resume_after_sigkill_ends_like_the_uninterrupted_run(world, zero_run):
    """torchrun and both ranks SIGKILLed right after checkpoint-1; the same command resumes from it, and
    every rank's optimizer shard and the saved model end bit for bit where the uninterrupted run ended."""
    stage, straight = zero_run
    killed = world["root"] / f"zero{stage}_killed"
    config = write_deepspeed_config(world, killed, stage, save_steps=1)
    crash = subprocess.run(torchrun_command(config, DEEPSPEED_LAUNCHER), capture_output=True, text=True,
                           env={**ONE_THREAD, "KILL_AFTER_CHECKPOINT": "1"})
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    assert len(optimizer_shards(killed / "checkpoint-1")) == 2
    assert not (killed / "checkpoint-2").exists() and not (killed / "model.safetensors").exists()

    resumed = run_two_processes(config, DEEPSPEED_LAUNCHER)
    assert "resuming from" in resumed.stderr and "checkpoint-1" in resumed.stderr
    ended, expected = optimizer_shards(killed / "checkpoint-2"), optimizer_shards(straight / "checkpoint-2")
    assert ended.keys() == expected.keys() and len(ended) == 2
    for rank, name in enumerate(sorted(ended)):
        if stage == 3:  # the padding of the flat master copy is left out (see zero3_padding)
            weights = ~zero3_padding(straight / "checkpoint-2", rank)
            for state in (ended[name], expected[name]):
                state["optimizer_state_dict"]["fp32_flat_groups"][0] = state["optimizer_state_dict"][
                    "fp32_flat_groups"][0].detach()[weights]
        assert_same_state(ended[name]["optimizer_state_dict"], expected[name]["optimizer_state_dict"], name)
    assert_same_weights(final_weights(killed), final_weights(straight), rtol=0, atol=0)


def floating_dtypes(weights: dict[str, torch.Tensor]) -> set[torch.dtype]:
    return {t.dtype for t in weights.values() if t.is_floating_point()}


def test_zero3_bf16_with_a_text_only_batch_on_one_rank(world):
    """ZeRO-3 in bf16, its last step a video on one rank and a text-only conversation on the other: the rank
    without video still gathers the STAB (it would otherwise wait forever on the other's all-gathers), and every
    parameter and buffer trains and is saved in bf16 (the run checks the engine before its first step)."""
    items = json.loads(world["annotations"].read_text())[:7]
    items.append({"id": "text", "conversations": [{"from": "human", "value": "Say something."},
                                                  {"from": "gpt", "value": "A square moves to the right."}]})
    annotations = world["annotations"].with_name("with_text.json")
    annotations.write_text(json.dumps(items))
    from videopanda.data.sampler import ModalityLengthGroupedSampler

    sampler = ModalityLengthGroupedSampler([("video", 8)] * 7 + [("text", 8)], batch_size=1, world_size=2)
    assert 7 in list(sampler)[-2:]  # the last step: one rank's batch is the conversation, the other's a video
    output = world["root"] / "zero3_bf16_text"
    config = write_deepspeed_config(world, output, 3, precision="bf16", max_steps=4,
                                    **{"data.annotation_files": json.dumps([str(annotations)])})
    run = subprocess.run(torchrun_command(config, DEEPSPEED_LAUNCHER), capture_output=True, text=True,
                         env=ONE_THREAD, timeout=600)  # a hang fails instead of blocking the suite
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(optimizer_shards(output / "checkpoint-4")) == 2
    assert floating_dtypes(final_weights(output)) == {torch.bfloat16}
    assert any(k.endswith("running_var") for k in final_weights(output))  # buffers are in what was checked


@ONE_PROCESS_UNIT
def test_one_process_zero2_bf16_lora_without_a_launcher(world):
    """``videopanda train`` alone (no torchrun, no RANK) with ZeRO-2 in bf16 and LoRA, as the README's smoke
    test runs the release configs: a one-process world, adapters trained, and a merged model that loads."""
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

    output = world["root"] / "zero2_lora"
    lora = json.dumps({"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    config = write_deepspeed_config(world, output, 2, "finetune", precision="bf16", **{"model.lora": lora})
    environment = {k: v for k, v in ONE_THREAD.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    run = subprocess.run([sys.executable, *DEEPSPEED_LAUNCHER, "train", "--config", str(config), "--merge"],
                         capture_output=True, text=True, env=environment)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(optimizer_shards(output / "checkpoint-2")) == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    trained = {**load_file(str(output / "adapter" / "adapter_model.safetensors")),
               **load_file(str(output / "non_llm_weights.safetensors"))}  # what the engine held, as saved
    assert any("lora_" in k for k in trained) and floating_dtypes(trained) == {torch.bfloat16}
    merged = VideoPandaForCausalLM.from_pretrained(output)  # the base LLM's weights with the adapters folded in
    stab = {k: v.float() if v.is_floating_point() else v for k, v in trained.items() if k.startswith("stab.")}
    assert_same_weights({k: v for k, v in merged.state_dict().items() if k.startswith("stab.")}, stab)
