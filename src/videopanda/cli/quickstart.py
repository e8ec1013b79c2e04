"""``videopanda quickstart``: synthetic data, three training stages, evaluation and a report, on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from videopanda.runtime import DTYPE_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``videopanda quickstart`` to the top-level parser."""
    parser = subparsers.add_parser(
        "quickstart",
        help="the whole pipeline on a synthetic dataset with SmolLM2, in minutes on a CPU",
        description="Synthesise a video QA dataset, evaluate the untrained model, train prealign -> pretrain -> "
        "finetune (evaluating after each), judge the final answers with a local LLM, and write "
        "DIR/model, DIR/results.json and DIR/report.md.",
    )
    parser.add_argument("--out", type=Path, default=Path("quickstart"), metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--steps-scale", type=float, default=1.0, metavar="F",
                       help="multiply every stage's steps (and the training videos, up to 1x) by F")
    scale.add_argument("--fast", action="store_const", const=0.25, dest="steps_scale",
                       help="a quarter of the steps: checks the mechanics in a few minutes, lower accuracy")
    parser.add_argument("--teacher", type=Path, metavar="DIR",
                        help="local LanguageBind video tower: distillation in prealign and pretrain (slow on CPU)")
    parser.add_argument("--num-test", type=int, help="held-out videos (default 60)")
    parser.add_argument("--judge-items", type=int, help="final answers judged by the local LLM judge (default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="precision (default auto: bfloat16 only on CPUs where it is faster than float32)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from dataclasses import replace

    from videopanda.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig(out=str(args.out), seed=args.seed, dtype=args.dtype,
                              teacher=None if args.teacher is None else str(args.teacher), threads=args.threads)
    if args.num_test is not None:
        config = replace(config, num_test=args.num_test)
    if args.judge_items is not None:
        config = replace(config, judge_items=args.judge_items)
    run_quickstart(config.scaled(args.steps_scale), started=started)
    return 0
