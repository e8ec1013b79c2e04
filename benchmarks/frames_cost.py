"""Cost of one training step against the number of frames, on the quickstart-size model.

    python benchmarks/frames_cost.py [--frames 8 16 32] [--steps 3]

SmolLM2-135M + the quickstart's STAB (128 wide, 56x56 frames), one video per step, full
fine-tuning (forward, backward, AdamW step), float32. Each frame count runs in a fresh process so
its peak memory is its own: peak RSS of the process on CPU, peak allocated GPU memory on CUDA.
Prints seconds per step (median of --steps after one warm-up step) and both figures as ratios
against the smallest frame count measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(num_frames: int, steps: int, device: str) -> dict[str, float]:
    """One process: build the model, run warm-up + ``steps`` training steps at ``num_frames``."""
    import torch

    from videopanda.data.processing_videopanda import VideoPandaProcessor
    from videopanda.data.transform import preprocess_frames
    from videopanda.model.modeling_videopanda import build_videopanda
    from videopanda.quickstart.config import QuickstartConfig

    torch.manual_seed(0)
    model, tokenizer = build_videopanda("smollm2", **QuickstartConfig().model, num_frames=num_frames)
    model.to(device).train()
    cfg = model.config
    frames = torch.randint(0, 255, (num_frames, 56, 56, 3), dtype=torch.uint8).numpy()
    visuals = preprocess_frames(frames, image_size=cfg.image_size, teacher_image_size=cfg.teacher_image_size,
                                patch_size=cfg.patch_size, num_frames=num_frames, with_teacher=False)
    processor = VideoPandaProcessor.for_model(tokenizer, cfg, template="chat_template")
    batch = {k: v.to(device) for k, v in processor.batch_prompts(["Describe the video."], [visuals]).items()}
    batch["labels"] = batch["input_ids"].clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB (ru_maxrss is KiB on Linux)
    return {"frames": num_frames, "tokens": int(batch["input_ids"].shape[1]), "seconds": statistics.median(times[1:]),
            "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one count, print JSON
    args = parser.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.one:
        print(json.dumps(measure(args.one, args.steps, device)))
        return
    rows = []
    for frames in args.frames:
        done = subprocess.run([sys.executable, __file__, "--one", str(frames), "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    memory = "peak GPU MiB" if device == "cuda" else "peak RSS MiB"
    print(f"| frames | sequence tokens | s / step | x | {memory} | x |")
    print("|---|---|---|---|---|---|")
    base = rows[0]
    for row in rows:
        print(f"| {row['frames']} | {row['tokens']} | {row['seconds']:.2f} | {row['seconds'] / base['seconds']:.2f} "
              f"| {row['peak_mib']:.0f} | {row['peak_mib'] / base['peak_mib']:.2f} |")


if __name__ == "__main__":
    main()
