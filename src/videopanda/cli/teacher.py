"""``videopanda teacher cache``: precompute the distillation teacher's features of a dataset."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "float16", "bfloat16")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``teacher`` group and its ``cache`` subcommand."""
    group = subparsers.add_parser("teacher", help="the frozen LanguageBind distillation teacher")
    commands = group.add_subparsers(dest="teacher_command", metavar="COMMAND", required=True)
    cache = commands.add_parser(
        "cache", help="precompute teacher features for every video/image of a dataset (resumable)",
        description="Run the teacher once over every distinct video/image of the annotation files and write "
        "sharded safetensors + index.json to --out. Rerun the same command to resume.",
    )
    cache.add_argument("--teacher", required=True, help="local LanguageBind_Video_merge directory")
    cache.add_argument("--data", required=True, nargs="+", help="Video-LLaVA annotation JSON file(s)")
    cache.add_argument("--video-root", required=True, help="directory the annotations' video paths are relative to")
    cache.add_argument("--image-root", help="directory of the images (default: --video-root)")
    cache.add_argument("--out", required=True, help="cache directory")
    cache.add_argument("--batch-size", type=int, default=8, help="videos/images per teacher call (default 8)")
    cache.add_argument("--shard-size", type=int, default=256, help="videos/images per shard (default 256)")
    cache.add_argument("--num-frames", type=int, default=8, help="frames per video (default 8, the release)")
    cache.add_argument("--no-flips", dest="flips", action="store_false",
                       help="skip the horizontally flipped copies (only for training without flips)")
    cache.add_argument("--workers", type=int, default=0, help="decoding worker processes (default 0)")
    cache.add_argument("--device", default=None, help="teacher device (default: cuda if available, else cpu)")
    cache.add_argument("--compute-dtype", choices=DTYPES, default="float32", help="teacher dtype (default float32)")
    cache.add_argument("--dtype", choices=DTYPES, default="float16", help="stored feature dtype (default float16)")
    cache.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    import torch

    from videopanda.model.teacher import load_teacher
    from videopanda.train.teacher_cache import build_teacher_cache, collect_media

    if min(args.batch_size, args.shard_size, args.num_frames) < 1:
        raise SystemExit("--batch-size, --shard-size and --num-frames must be positive")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = load_teacher(args.teacher, dtype=getattr(torch, args.compute_dtype)).to(device)
    items = collect_media(args.data, args.video_root, args.image_root)
    index = build_teacher_cache(
        teacher, items, args.out, num_frames=args.num_frames, batch_size=args.batch_size,
        shard_size=args.shard_size, flips=args.flips, dtype=getattr(torch, args.dtype), num_workers=args.workers,
    )
    print(f"teacher cache written: {index}")
    return 0
