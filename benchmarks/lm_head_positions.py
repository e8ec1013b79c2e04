"""Training step with the LLM head on every position against the head on labelled positions only.

``VideoPandaForCausalLM.forward`` with ``labels`` computes logits only where the
next token is a label (``logit_positions``). The baseline, measured in the same
run, computes logits at every position and the same cross-entropy, as a plain
causal-LM loss would. Batches are the quickstart's: SmolLM2-135M, a 128-wide
STAB on 56x56 frames, synthetic multi-turn QA about 8-frame videos.
Prints seconds per step (forward + backward) for both, their ratio, and the two losses.

    python benchmarks/lm_head_positions.py                    # CPU, bf16 autocast, batch 8
    python benchmarks/lm_head_positions.py --batch-size 4 --steps 5 --fp32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from videopanda.data.collator import VideoPandaCollator
from videopanda.data.dataset import VideoLLaVADataset, load_annotations
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.synth import SynthConfig, synthesize
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM, build_videopanda
from videopanda.quickstart.config import CHATML_NO_SYSTEM, QuickstartConfig

Step = Callable[[VideoPandaForCausalLM, dict], torch.Tensor]


def loss_on_kept_logits(model: VideoPandaForCausalLM, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def loss_on_all_logits(model: VideoPandaForCausalLM, batch: dict) -> torch.Tensor:
    """The same loss from logits at every position (B, L, V)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    targets = batch["labels"].masked_fill(batch["input_ids"] == model.config.image_token_id, -100)[:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def time_steps(step: Step, model: VideoPandaForCausalLM, batches: list[dict], bf16: bool) -> tuple[float, float]:
    """(seconds per forward+backward, mean loss) over ``batches``, after one warm-up step."""
    def run(batch: dict) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = step(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.item()

    run(batches[0])
    start = time.perf_counter()
    losses = [run(batch) for batch in batches]
    return (time.perf_counter() - start) / len(batches), sum(losses) / len(losses)


def quickstart_batches(model: VideoPandaForCausalLM, tokenizer, batch_size: int, steps: int) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="lm_head_bench_"))
    synthesize(root, SynthConfig(num_train=batch_size * steps, num_test=1))
    processor = VideoPandaProcessor.for_model(tokenizer, model.config, template="chat_template")
    items = load_annotations([root / "train/train_json/videochatgpt_synth.json"])
    dataset = VideoLLaVADataset(items, root / "train", processor, train=False)
    collate = VideoPandaCollator(tokenizer.pad_token_id)
    return [collate([dataset[i] for i in range(s * batch_size, (s + 1) * batch_size)]) for s in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = build_videopanda("smollm2", **QuickstartConfig().model)
    tokenizer.chat_template = CHATML_NO_SYSTEM
    model.train()
    batches = quickstart_batches(model, tokenizer, args.batch_size, args.steps)
    tokens = int(batches[0]["attention_mask"].sum())
    all_s, all_loss = time_steps(loss_on_all_logits, model, batches, not args.fp32)
    kept_s, kept_loss = time_steps(loss_on_kept_logits, model, batches, not args.fp32)
    print(f"batch {args.batch_size} (~{tokens} tokens), {args.steps} steps, {'fp32' if args.fp32 else 'bf16 autocast'}")
    print(f"head on every position : {all_s:6.2f} s/step  loss {all_loss:.4f}")
    print(f"head on labelled ones  : {kept_s:6.2f} s/step  loss {kept_loss:.4f}")
    print(f"speed-up: {all_s / kept_s:.2f}x")


if __name__ == "__main__":
    main()
