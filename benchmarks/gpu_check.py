"""A five-minute check of the training and inference paths on one GPU, ready for the day one is at hand.

    python benchmarks/gpu_check.py [--out DIR]         # on a CUDA machine: everything, bf16
    python benchmarks/gpu_check.py --out DIR           # on a CPU machine: what needs CUDA is skipped
    python benchmarks/gpu_check.py --vllm-python .venv-vllm/bin/python   # with the vLLM row

Each check runs on a tiny LLaMA (2 layers, width 32) around the embedded SmolLM2 tokenizer and
a small synthetic video set, so the whole run stays within minutes:

* three-stage training (prealign -> pretrain -> finetune) in bf16 with each engine, one process:
  DDP (the plain Trainer), FSDP2 (full shard), DeepSpeed ZeRO-2 and ZeRO-3 (needs ``deepspeed``);
* a LoRA step and a QLoRA step (bitsandbytes NF4, CUDA only) of the finetune stage;
* greedy generation and an ``eval run`` of the synthetic held-out QA set;
* the STAB speed at 224x224, 8 frames, in bf16 (CUDA; 112x112 float32 on a CPU);
* vLLM with our plugin (``--vllm-python``, vLLM's environment from ``scripts/vllm_env.sh``; CUDA): a
  SmolLM2-based model served in bf16, ``eval run --endpoint`` against it and the local ``eval run``
  (answers equal, questions/s of each). On a CPU, tests/test_vllm.py proves the same in float32.

Prints one markdown table: check, pass / FAIL / skip, seconds, a figure or the reason.
Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TINY_STAB = {"stab_hidden_size": 32, "image_size": 56, "teacher_image_size": 28, "teacher_hidden_size": 32}


@dataclass
class Result:
    name: str
    status: str  # pass | FAIL | skip
    seconds: float
    note: str


class Skip(Exception):
    """A check that cannot run on this machine (the reason is its message)."""


@dataclass
class World:
    root: Path
    llm: Path
    data: Path  # a `videopanda data synth` root
    cuda: bool
    vllm_python: Path | None = None  # vLLM's environment (scripts/vllm_env.sh), for the vLLM row

    @property
    def precision(self) -> str:
        return "bf16" if self.cuda else "fp32"


def make_world(root: Path) -> World:
    from transformers import LlamaConfig, LlamaForCausalLM

    from videopanda.data.synth import SynthConfig, synthesize
    from videopanda.model.llm import load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    synthesize(root / "data", SynthConfig(num_train=8, num_test=2))
    return World(root, root / "llm", root / "data", torch.cuda.is_available())


def stage_overrides(world: World, name: str, **extra) -> list[str]:
    values = {
        "model.use_distillation": False, "output_dir": str(world.root / name),
        "precision": world.precision, "max_steps": 2 if world.cuda else 1, "per_device_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": True, "save_steps": 1000, "logging_steps": 1, "data.max_samples": 8,
        "data.num_workers": 0, "model.config": json.dumps(TINY_STAB),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


ANNOTATIONS = {"prealign": "valley_synth.json", "pretrain": "valley_synth.json", "finetune": "videochatgpt_synth.json"}


def train_one(world: World, stage: str, init: Path, name: str, **extra) -> Path:
    """One stage from its configs/small file, on the synthetic data, sized down by overrides."""
    from videopanda.train.config import load_train_config
    from videopanda.train.run import train_stage

    values = {"model.init": str(init), "data.annotation_files": json.dumps([str(world.data / "train" / "train_json" /
                                                                              ANNOTATIONS[stage])]),
              "data.media_root": str(world.data / "train")}
    if stage != "prealign":
        values["model.config"] = "{}"
    overrides = stage_overrides(world, name, **{**values, **extra})
    return train_stage(load_train_config(REPO / "configs" / "small" / f"{stage}.yaml", overrides))


def three_stages(world: World, engine: str, **extra) -> str:
    model = world.llm
    for stage in ("prealign", "pretrain", "finetune"):
        model = train_one(world, stage, model, f"{engine}_{stage}", **extra)
    return f"model in {model.name}"


def check_ddp(world: World) -> str:
    return three_stages(world, "ddp")


def check_fsdp(world: World) -> str:
    if not world.cuda:
        raise Skip("FSDP through Accelerate needs CUDA (tests/test_train_runs.py proves it on CPU, 2 processes)")
    return three_stages(world, "fsdp", distributed="fsdp",
                        fsdp_config=str(REPO / "configs" / "fsdp" / "full_shard.json"))


def check_deepspeed(stage: int) -> Callable[[World], str]:
    def check(world: World) -> str:
        if not world.cuda:
            raise Skip("a GPU row: tests/test_train_runs.py proves ZeRO-2/3 on CPU (2 gloo processes, fp32 and bf16)")
        try:
            import deepspeed  # noqa: F401
        except ImportError as err:
            raise Skip("deepspeed is not installed (pip install 'videopanda[deepspeed]')") from err
        from videopanda.cli.train import single_process_world

        single_process_world()  # as `videopanda train` does without a launcher: DeepSpeed needs a process group
        return three_stages(world, f"zero{stage}", distributed="deepspeed",
                            deepspeed=str(REPO / "configs" / "deepspeed" / f"zero{stage}.json"))
    check.__name__ = f"check_zero{stage}"
    return check


def lora_step(world: World, quantized: bool) -> str:
    base = world.root / "ddp_finetune"
    if not (base / "config.json").is_file():
        raise Skip("needs the DDP three-stage output")
    extra = {"model.lora.r": 4, "merge_lora": True, "max_steps": 1}
    if quantized:
        extra["model.load_in_4bit"] = True
    output = train_one(world, "finetune", base, "qlora" if quantized else "lora", **extra)
    return f"adapter + merged model in {output.name}"


def check_lora(world: World) -> str:
    return lora_step(world, quantized=False)


def check_qlora(world: World) -> str:
    if not world.cuda:
        raise Skip("QLoRA (bitsandbytes NF4) needs CUDA")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise Skip("bitsandbytes is not installed (pip install 'videopanda[qlora]')") from err
    return lora_step(world, quantized=True)


def check_generate_and_eval(world: World) -> str:
    from videopanda.cli import main

    model = world.root / "ddp_finetune"
    if not (model / "config.json").is_file():
        raise Skip("needs the DDP three-stage output")
    device, dtype = ("cuda", "bfloat16") if world.cuda else ("cpu", "float32")
    out = world.root / "eval"
    code = main(["eval", "run", str(model), "--benchmark", "Synth", "--data-root", str(world.data), "--output-dir",
                 str(out), "--max-new-tokens", "8", "--device", device, "--dtype", dtype, "--num-frames", "16"])
    answered = len((out / "merge.jsonl").read_text().splitlines())
    if code != 0 or answered == 0:
        raise RuntimeError(f"eval run exited {code} with {answered} answers")
    return f"{answered} answers generated (16 frames)"


def check_stab_speed(world: World) -> str:
    from videopanda.model.configuration_videopanda import VideoPandaConfig
    from videopanda.model.stab import STAB

    device = "cuda" if world.cuda else "cpu"
    dtype = torch.bfloat16 if world.cuda else torch.float32
    size, runs = (224, 5) if world.cuda else (112, 2)  # CPU: a quick figure, not a benchmark
    stab = STAB(VideoPandaConfig(image_size=size)).to(device, dtype).eval()
    frames = torch.randn(8, 4, size, size, device=device, dtype=dtype)
    frames[:, 3] = 1
    chunks = torch.tensor([4, 4], device=device)
    with torch.no_grad():
        stab(frames, chunks)
        if world.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(runs):
            stab(frames, chunks)
        if world.cuda:
            torch.cuda.synchronize()
    per_video = (time.perf_counter() - start) / runs
    return f"{1 / per_video:.1f} videos/s ({str(dtype).removeprefix('torch.')}, 8 frames {size}x{size}, d 1024)"


def check_vllm(world: World) -> str:
    """A SmolLM2-based Video-Panda (head size 64, as vLLM's GPU kernels want) served by vLLM: `eval run
    --endpoint` against it answers as the local `eval run`; questions/s of each."""
    import socket
    import subprocess

    import openai

    from videopanda.cli import main
    from videopanda.eval.jsonl import read_jsonl
    from videopanda.model.modeling_videopanda import build_videopanda

    if not world.cuda:
        raise Skip("a GPU row: tests/test_vllm.py proves vLLM's answers on CPU (float32, --vllm-python)")
    if world.vllm_python is None:
        raise Skip("give --vllm-python (vLLM's environment: scripts/vllm_env.sh)")
    model_dir = world.root / "vllm_model"
    torch.manual_seed(0)
    model, tokenizer = build_videopanda("smollm2", torch.bfloat16, **TINY_STAB)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    log = (world.root / "vllm.log").open("w")
    server = subprocess.Popen([str(world.vllm_python), "-m", "videopanda.vllm.serve", str(model_dir), "--port",
                               str(port), "--dtype", "bfloat16", "--served-model-name", "model",
                               "--gpu-memory-utilization", "0.3"], stdout=log, stderr=subprocess.STDOUT)
    try:
        client, deadline = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=5), time.time() + 600
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError as err:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"vLLM did not start (see {world.root / 'vllm.log'})") from err
                time.sleep(2)
        common = ["--benchmark", "Synth", "--data-root", str(world.data), "--max-new-tokens", "8"]
        rates = {}
        for name, argv in (("vLLM", ["--endpoint", url, "--endpoint-model", "model", "--workers", "16"]),
                           ("local", [str(model_dir), "--device", "cuda", "--dtype", "bfloat16", "--batch-size", "8"])):
            start = time.perf_counter()
            if main(["eval", "run", *argv, *common, "--output-dir", str(world.root / f"eval_{name}")]) != 0:
                raise RuntimeError(f"eval run ({name}) failed")
            rates[name] = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)
    local, served = ({r["id"]: r["pred"] for r in read_jsonl(world.root / f"eval_{n}" / "merge.jsonl")}
                     for n in ("local", "vLLM"))
    same = sum(served.get(k) == v for k, v in local.items())
    return (f"{same}/{len(local)} answers equal to the local eval run (bf16: near-ties may differ); "
            f"eval {len(local) / rates['vLLM']:.1f} q/s on vLLM, {len(local) / rates['local']:.1f} q/s local")


CHECKS: list[tuple[str, Callable[[World], str]]] = [
    ("3 stages, DDP", check_ddp),
    ("3 stages, FSDP", check_fsdp),
    ("3 stages, ZeRO-2", check_deepspeed(2)),
    ("3 stages, ZeRO-3", check_deepspeed(3)),
    ("LoRA step + merge", check_lora),
    ("QLoRA step + merge", check_qlora),
    ("generation + eval run", check_generate_and_eval),
    ("STAB speed", check_stab_speed),
    ("vLLM: eval run --endpoint", check_vllm),
]


def run_checks(root: Path, only: list[str] | None = None, vllm_python: Path | None = None) -> list[Result]:
    world = make_world(root)
    world.vllm_python = vllm_python
    results = []
    for name, check in CHECKS:
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            note, status = check(world), "pass"
        except Skip as reason:
            note, status = str(reason), "skip"
        except Exception as err:  # a failed check is a row of the table, the run goes on
            note, status = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160], "FAIL"
            logging.getLogger(__name__).debug("%s failed:\n%s", name, traceback.format_exc())
        results.append(Result(name, status, time.perf_counter() - start, note))
    return results


def render(results: list[Result], cuda: bool) -> str:
    device = torch.cuda.get_device_name() if cuda else "CPU only: checks that need CUDA are skipped"
    lines = [f"GPU check on {device}, torch {torch.__version__}", "",
             "| check | result | s | figure / reason |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.note} |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument("--vllm-python", type=Path, help="vLLM's environment's Python, for the vLLM row")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        results = run_checks(root, vllm_python=args.vllm_python)
    print(render(results, torch.cuda.is_available()))
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
