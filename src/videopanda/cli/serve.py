"""`videopanda serve`: an OpenAI-compatible chat server for a local model (plain LLM or Video-Panda)."""

from __future__ import annotations

import argparse

from videopanda.runtime import DTYPE_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the top-level parser."""
    p = subparsers.add_parser("serve", help="OpenAI-compatible /v1/chat/completions server for a local model")
    p.add_argument("model", nargs="?", default="smollm2",
                   help="a Video-Panda model directory, a chat LLM directory, or 'smollm2' (default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                   help="precision of a Video-Panda model (default auto: bfloat16 only where it is faster)")
    p.add_argument("--template", help="prompt template of a Video-Panda model (default: the one it records)")
    p.add_argument("--num-frames", type=int, metavar="N",
                   help="Video-Panda: frames sampled per video (a multiple of 4; default: the model's)")
    p.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from videopanda.eval.serve import load_chat_model, serve

    serve(load_chat_model(args.model, args.device, args.dtype, args.template, args.num_frames), args.host, args.port)
    return 0
