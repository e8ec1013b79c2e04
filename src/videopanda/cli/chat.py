"""``videopanda chat`` (multi-turn, in the terminal) and ``videopanda ask`` (one answer) about a video.

Both run ``eval.predict.VideoPandaPredictor``: deterministic preprocessing,
greedy decoding. The prompt template is the one the model was trained with
(``data.template`` of the ``train_config.yaml`` that training saves beside the
model; the release's evaluation form ``vicuna_v1_eval`` when there is none).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import yaml

DEFAULT_TEMPLATE = "vicuna_v1_eval"
# A model trained with the release's template is prompted with its evaluation form.
EVAL_FORM = {"vicuna_v1": "vicuna_v1_eval"}
QUIT_COMMANDS = ("/quit", "/exit")
RESET_COMMAND = "/reset"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``videopanda chat`` and ``videopanda ask``."""
    chat = subparsers.add_parser("chat", help="chat about a video in the terminal (/quit to leave)")
    _add_common(chat)
    chat.set_defaults(func=_run_chat)
    ask = subparsers.add_parser("ask", help="one answer about a video")
    _add_common(ask)
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print {model, video, question, answer} as JSON")
    ask.set_defaults(func=_run_ask)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="DIR", help="a trained Video-Panda model directory")
    parser.add_argument("--video", type=Path, required=True, metavar="FILE")
    parser.add_argument("--template", help="prompt template (default: the one the model was trained with)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-frames", type=int, metavar="N",
                        help="frames sampled per video (a multiple of 4; default: the model's, 8 for the release)")


def prompt_template(model_dir: str | Path) -> str:
    """The template a model directory was trained with (its ``train_config.yaml``), in its evaluation form."""
    path = Path(model_dir) / "train_config.yaml"
    if not path.is_file():
        return DEFAULT_TEMPLATE
    try:
        template = (yaml.safe_load(path.read_text()) or {}).get("data", {}).get("template")
    except (yaml.YAMLError, AttributeError) as err:
        raise ValueError(f"{path} is not a training config: {err}") from err
    return EVAL_FORM.get(template, template) if template else DEFAULT_TEMPLATE


def load_predictor(args: argparse.Namespace):
    from videopanda.eval.predict import GenerationConfig, VideoPandaPredictor

    if not args.video.is_file():
        raise SystemExit(f"video {args.video} not found")
    template = args.template or prompt_template(args.model)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, template=template, batch_size=1,
                              num_frames=args.num_frames)
    try:
        return VideoPandaPredictor.from_pretrained(args.model, config, device=args.device)
    except ValueError as err:  # e.g. a --num-frames that does not split into chunks
        raise SystemExit(f"{args.model}: {err}") from None


def _run_ask(args: argparse.Namespace) -> int:
    predictor = load_predictor(args)
    answer = predictor.ask(args.video, args.question)
    if args.json:
        print(json.dumps({"model": str(args.model), "video": str(args.video), "question": args.question,
                          "answer": answer}))
    else:
        print(answer)
    return 0


def chat_loop(predictor, video: Path, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> int:
    """Question after question about one video, each seeing the earlier turns; returns the turns answered.

    ``/reset`` forgets the earlier turns, ``/quit`` (or end of input) leaves.
    """
    from videopanda.data.conversation import Turn

    visuals = predictor.load_video(video)  # decoded once for the whole chat
    history: list[Turn] = []
    answered = 0
    while True:
        try:
            question = read("you> ").strip()
        except EOFError:
            break
        if question in QUIT_COMMANDS:
            break
        if question == RESET_COMMAND:
            history = []
            print("(history cleared)", file=out, flush=True)
            continue
        if not question:
            continue
        answer = predictor.answer([visuals], [question], [history])[0]
        print(f"videopanda> {answer}", file=out, flush=True)
        history += [Turn("user", question), Turn("assistant", answer)]
        answered += 1
    return answered


def _run_chat(args: argparse.Namespace) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    predictor = load_predictor(args)
    print(f"Chatting about {args.video} ({' or '.join(QUIT_COMMANDS)} to leave, {RESET_COMMAND} to forget).",
          flush=True)
    chat_loop(predictor, args.video)
    return 0
