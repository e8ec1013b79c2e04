"""``videopanda convert``: release checkpoint directories <-> our ``save_pretrained`` directories.

    videopanda convert --release Video-Panda-7B/videopanda_fitu --out runs/videopanda_fitu
    videopanda convert --to-release --model runs/stage3 --out exported/
        (add --teacher runs/videopanda_fitu/teacher.safetensors to export the distillation teacher too)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TEACHER_FILE = "teacher.safetensors"  # the release's teacher weights, kept beside a converted model
DTYPES = ("auto", "float32", "bfloat16", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert``."""
    parser = subparsers.add_parser("convert",
                                   help="convert a release checkpoint to ours (or ours to the release layout)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", type=Path,
                        help="release directory (config.json + pytorch_model-*.bin / *.safetensors)")
    source.add_argument("--model", type=Path,
                        help="our model directory (save_pretrained, or a LoRA output: merged), with --to-release")
    parser.add_argument("--to-release", action="store_true", help="write --model in the release layout")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--teacher", type=Path, help=f"teacher weights ({TEACHER_FILE}) to include, with --to-release")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weight dtype (auto: keep the checkpoint's)")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    if args.to_release != bool(args.model):
        raise SystemExit("use --release DIR (release -> ours) or --to-release --model DIR (ours -> release)")
    if args.to_release:
        return to_release(args.model, args.out, args.teacher, _dtype(args.dtype))
    return from_release(args.release, args.out, _dtype(args.dtype))


def from_release(release: Path, out: Path, dtype: torch.dtype | None) -> int:
    from safetensors.torch import save_file

    from videopanda.data.processing_videopanda import save_model_processor
    from videopanda.model.llm import load_tokenizer
    from videopanda.model.release import check_release_dir, load_release_checkpoint

    tokenizer = load_tokenizer(check_release_dir(release))
    model, teacher = load_release_checkpoint(release, dtype=dtype, tokenizer=tokenizer)
    model.save_pretrained(out)
    save_model_processor(out, tokenizer, model.config)
    if teacher:
        save_file({k: v.contiguous() for k, v in teacher.items()}, str(out / TEACHER_FILE))
    logger.info("wrote %s%s", out, f" (teacher weights in {TEACHER_FILE})" if teacher else "")
    return 0


def to_release(model_dir: Path, out: Path, teacher_file: Path | None, dtype: torch.dtype | None) -> int:
    """A trained model directory, or an unmerged LoRA output (merged on load), in the release layout."""
    from videopanda.model.directory import ModelDirKind, require_kind
    from videopanda.model.llm import load_tokenizer
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
    from videopanda.model.release import export_release_checkpoint
    from videopanda.model.weights import load_weight_file
    from videopanda.runtime import cast_weights

    if require_kind(model_dir, ModelDirKind.VIDEOPANDA, ModelDirKind.LORA_ADAPTER) is ModelDirKind.LORA_ADAPTER:
        from videopanda.train.lora import load_lora_output

        model, tokenizer = load_lora_output(model_dir, merge=True)
        if dtype is not None:
            cast_weights(model, dtype)
    else:
        model = VideoPandaForCausalLM.from_pretrained(model_dir, dtype=dtype or "auto")
        tokenizer = load_tokenizer(model_dir)
    teacher = load_weight_file(teacher_file) if teacher_file else None
    export_release_checkpoint(model, out, teacher=teacher, tokenizer=tokenizer)
    logger.info("wrote %s in the release layout", out)
    return 0


def _dtype(name: str) -> torch.dtype | None:
    import torch

    return None if name == "auto" else getattr(torch, name)
