"""Where a quickstart training step's time goes: data, forward, backward and optimizer, full vs LoRA vs frozen LLM.

    python benchmarks/quickstart_step_cost.py [--threads N] [--repeats 3] [--dtype auto] [--stage pretrain]
                                              [--lsd-stride S]

Builds the quickstart's model (SmolLM2-135M + 128-wide STAB on 56x56 frames) and
one batch of its pretrain stage (captions; ``--stage finetune``: multi-turn QA), then times a
training step three ways, in the same run:
- ``full``: every LLM weight trains (the release's pretrain/finetune rule);
- ``lora``: the quickstart's adapters (``QuickstartConfig.lora``) train instead of the LLM;
- ``frozen``: the LLM trains nothing (prealign's rule).
Wall and CPU seconds are printed per phase (medians over ``--repeats``), with
ratios against ``full``. CPU seconds divided by the thread count approximate
the wall time on an otherwise idle machine. ``--lsd-stride`` overrides the STAB's LSD
stride (4 on 56-px frames: one LSD cell, 3 visual tokens per frame instead of 7).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from videopanda.data.collator import VideoPandaCollator
from videopanda.data.synth import SynthConfig, synthesize
from videopanda.quickstart.config import QuickstartConfig
from videopanda.quickstart.pipeline import load_models
from videopanda.quickstart.stages import stage_config
from videopanda.runtime import resolve_precision
from videopanda.train.lora import add_lora
from videopanda.train.run import build_dataset
from videopanda.train.stages import apply_stage, get_stage

MODES = ("full", "lora", "frozen")
INPUTS = ("input_ids", "attention_mask", "labels", "pixel_values_videos", "video_grid_thw")


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def time_steps(model, batch, precision, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds of forward, backward and the AdamW step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    phases: dict[str, list[tuple[float, float]]] = {"forward": [], "backward": [], "optimizer": []}
    model.train()
    for _ in range(repeats + 1):  # the first step warms up allocators and kernels
        start = clock()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.dtype == "bfloat16"):
            loss = model(**batch).loss
        forward, start = since(start), clock()
        loss.backward()
        backward, start = since(start), clock()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for name, value in zip(phases, (forward, backward, since(start)), strict=True):
            phases[name].append(value)
    return {
        name: tuple(statistics.median(v[i] for v in values[1:]) for i in range(2)) for name, values in phases.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--stage", choices=("pretrain", "finetune"), default="pretrain")
    parser.add_argument("--lsd-stride", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.dtype)
    quickstart = QuickstartConfig(judge_items=0)
    if args.lsd_stride is not None:
        quickstart = replace(quickstart, model={**quickstart.model, "lsd_stride": args.lsd_stride})
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp), SynthConfig(num_train=16, num_test=1))
        config = stage_config(quickstart, args.stage, Path(tmp) / "train", Path(tmp) / "runs", precision)
        rule = get_stage(args.stage)
        results = {}
        for mode in MODES:
            model, tokenizer, _ = load_models(quickstart)
            if mode == "lora":
                add_lora(model, quickstart.lora)
            apply_stage(model, rule if mode != "frozen" else get_stage("prealign"), False, lora=mode == "lora")
            dataset = build_dataset(config, rule, model, tokenizer)
            start = clock()
            samples = [dataset[i] for i in range(quickstart.stages[args.stage].batch_size)]
            data = since(start)
            batch = VideoPandaCollator(tokenizer.pad_token_id, "right")(samples)
            batch = {k: v for k, v in batch.items() if k in INPUTS}
            results[mode] = {"data": data, **time_steps(model, batch, precision, args.repeats)}
    shape = tuple(batch["input_ids"].shape)
    print(f"\nquickstart {args.stage} step, batch {shape[0]} x {shape[1]} tokens, {precision.dtype} "
          f"({precision.cpu_capability}), {args.threads} thread(s); seconds as wall / cpu\n")
    print("| LLM | data | forward | backward | optimizer | step (no data) | step vs full |")
    print("|---|---|---|---|---|---|---|")
    full_step = sum(results["full"][p][0] for p in ("forward", "backward", "optimizer"))
    for mode, phases in results.items():
        step = sum(phases[p][0] for p in ("forward", "backward", "optimizer"))
        cells = " | ".join(
            f"{phases[p][0]:.2f} / {phases[p][1]:.2f}" for p in ("data", "forward", "backward", "optimizer")
        )
        print(f"| {mode} | {cells} | {step:.2f} | {full_step / step:.2f}x faster |")


if __name__ == "__main__":
    main()
