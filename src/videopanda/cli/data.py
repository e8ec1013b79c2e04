"""``videopanda data ...``: dataset tools. Each subcommand is a ``_register_*`` function below
adding its parser to the ``data`` group, and a ``_run_*`` wrapper over one library call."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``videopanda data`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser("data", help="dataset tools: check a data root, write a synthetic one",
                                   description="Dataset tools: check a data root, write a synthetic one.")
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _register_check(commands)
    _register_synth(commands)


def _register_check(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check",
        help="parse every annotation file and decode every video of a data root",
        description="Check DATA_ROOT (the seed's layout, or any part of it): annotation files, "
        "missing and corrupt media. Exits 1 when problems are found.",
    )
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (0: in this process)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames sampled per video, as in training")
    parser.add_argument("--write-clean", type=Path, metavar="DIR",
                        help="write the annotation files without the bad samples under DIR (a new data root)")
    parser.add_argument("--json", type=Path, metavar="REPORT", help="also write the report as JSON")
    parser.set_defaults(func=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from videopanda.data.check import check_dataset

    report = check_dataset(args.data_root, workers=args.workers, num_frames=args.num_frames,
                           write_clean=args.write_clean)
    print(report.summary())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return 0 if report.ok else 1


def _register_synth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth",
        help="write a synthetic video-language dataset (real video files) in the seed's layout",
        description="Write OUT/train/{train_json,valley,videochatgpt_tune} (captions, QA) and the held-out "
        "zero-shot QA set OUT/eval/GPT_Zero_Shot_QA/Synth_Zero_Shot_QA (test_q/test_a/chance.json, videos/).",
    )
    parser.add_argument("out", type=Path, metavar="OUT")
    parser.add_argument("--seed", type=int, help="random seed (default 0); the same seed writes the same files")
    parser.add_argument("--num-train", type=int, help="videos per training set (default 600)")
    parser.add_argument("--num-test", type=int, help="held-out videos (default 90)")
    parser.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from videopanda.data.synth import SynthConfig, synthesize

    given = {"seed": args.seed, "num_train": args.num_train, "num_test": args.num_test}
    summary = synthesize(args.out, SynthConfig(**{k: v for k, v in given.items() if v is not None}))
    print(f"{summary.num_videos} videos, {summary.num_questions} held-out questions in {summary.root}")
    print("chance: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.chance.items()))
    return 0
