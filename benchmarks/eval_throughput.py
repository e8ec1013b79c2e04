"""Questions per second of ``eval run``'s path: batch 1 (the release's way) against batched generation.

    python benchmarks/eval_throughput.py [--videos 16] [--batch-sizes 1 16] [--bf16]

Quickstart-size model (SmolLM2-135M + a 128-wide STAB on 56x56 frames, as in
``quickstart/config.py``), STAB and projector randomly initialised: throughput
does not depend on training. The questions are a synthetic held-out QA set
(``data synth``: mp4/avi/gif/webm/mkv files). Every batch size answers the
same questions through ``run_shard`` (decoding, preprocessing, left-padded
greedy generation); the answers must be identical to batch 1's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from videopanda.data.synth import QA_DIR, SynthConfig, synthesize
from videopanda.eval.jsonl import read_jsonl
from videopanda.eval.run import run_shard, shard_files
from videopanda.quickstart.config import QuickstartConfig
from videopanda.quickstart.evaluate import QASet
from videopanda.quickstart.pipeline import load_models, make_predictor


def answer_all(model, tokenizer, config: QuickstartConfig, qa_set: QASet, out: Path, bf16: bool) -> tuple[float, dict]:
    """(questions per second, {question id: answer}) of one full run at ``config.eval_batch_size``."""
    predictor = make_predictor(model, tokenizer, config)
    questions = qa_set.questions
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        run_shard(questions, qa_set.video_dir, predictor, out)
    elapsed = time.perf_counter() - start
    answers = {r["id"]: r["pred"] for r in read_jsonl(shard_files(out, 1, 0)[0])}
    return len(questions) / elapsed, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16, help="held-out videos (two questions each)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="the first is the reference")
    parser.add_argument("--bf16", action="store_true", help="CPU bfloat16 autocast, as the quickstart evaluates")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = replace(QuickstartConfig(), judge_items=0)
    model, tokenizer, _ = load_models(config)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, SynthConfig(num_train=0, num_test=args.videos))
        qa_set = QASet(Path(tmp) / QA_DIR)
        print(f"{len(qa_set.questions)} questions on {args.videos} videos, max_new_tokens={config.max_new_tokens}, "
              f"{'bf16 autocast' if args.bf16 else 'float32'}, {torch.get_num_threads()} threads")
        reference = None
        for batch_size in args.batch_sizes:
            rate, answers = answer_all(model, tokenizer, replace(config, eval_batch_size=batch_size), qa_set,
                                       Path(tmp) / f"batch{batch_size}", args.bf16)
            reference = reference or (batch_size, rate, answers)
            differing = [i for i in answers if answers[i] != reference[2][i]]
            print(f"batch {batch_size:>3}: {rate:6.2f} questions/s  ({rate / reference[1]:.2f}x batch "
                  f"{reference[0]}), answers differing from batch {reference[0]}: {len(differing)}", flush=True)
            for i in differing:
                print(f"    {i}: {reference[2][i]!r} vs {answers[i]!r}")
            assert not differing, f"batch {batch_size} answers differ from batch {reference[0]}'s"


if __name__ == "__main__":
    main()
