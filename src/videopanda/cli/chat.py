"""``videopanda chat`` (multi-turn, in the terminal) and ``videopanda ask`` (one answer) about a video.

Both run ``inference.VideoPandaPredictor``: deterministic preprocessing,
greedy decoding, the precision policy of ``runtime`` (``--dtype auto``), and the
prompt template the model directory records (``inference.model_template``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from videopanda.runtime import DTYPE_CHOICES

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
    parser.add_argument("--model", type=Path, required=True, metavar="DIR",
                        help="a trained Video-Panda model directory")
    parser.add_argument("--video", type=Path, required=True, metavar="FILE")
    parser.add_argument("--template", help="prompt template (default: the one the model directory records)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="precision (default auto: bfloat16 only where it is faster than float32)")
    parser.add_argument("--num-frames", type=int, metavar="N",
                        help="frames sampled per video (a multiple of 4; default: the model's, 8 for the release)")


def load_predictor(args: argparse.Namespace):
    from videopanda.inference import GenerationConfig, VideoPandaPredictor

    if not args.video.is_file():
        raise FileNotFoundError(f"video {args.video} not found: give an existing video file with --video")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, template=args.template, batch_size=1,
                              num_frames=args.num_frames)
    return VideoPandaPredictor.from_pretrained(args.model, config, device=args.device, dtype=args.dtype)


def _run_ask(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise ValueError("the question is empty: give the question to ask as the last argument")
    predictor = load_predictor(args)
    answer = predictor.ask(args.video, args.question)
    if args.json:
        print(json.dumps({"model": str(args.model), "video": str(args.video), "question": args.question,
                          "answer": answer}, ensure_ascii=False))
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
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, as in a shell
            print(file=out, flush=True)
            continue
        if question in QUIT_COMMANDS:
            break
        if question == RESET_COMMAND:
            history = []
            print("(history cleared)", file=out, flush=True)
            continue
        if not question:
            continue
        try:
            answer = predictor.answer([visuals], [question], [history])[0]
        except KeyboardInterrupt:  # Ctrl-C while answering: drop this turn, back to the prompt
            print("\n(answer interrupted)", file=out, flush=True)
            continue
        except ValueError as err:  # a question this model cannot take (too long, ...): say so, keep chatting
            print(f"(not answered: {err})", file=out, flush=True)
            continue
        print(f"videopanda> {answer}", file=out, flush=True)
        history += [Turn("user", question), Turn("assistant", answer)]
        answered += 1
    return answered


def _run_chat(args: argparse.Namespace) -> int:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    predictor = load_predictor(args)
    print(f"Chatting about {args.video} ({' or '.join(QUIT_COMMANDS)} to leave, {RESET_COMMAND} to forget).",
          flush=True)
    chat_loop(predictor, args.video)
    return 0
