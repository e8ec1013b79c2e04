"""`videopanda demo`: a gradio web app to chat about a video (needs the ``demo`` extra: gradio)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from videopanda.runtime import DTYPE_CHOICES

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the top-level parser."""
    p = subparsers.add_parser("demo", help="web demo: upload a video and chat about it (pip install videopanda[demo])")
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="a trained Video-Panda model directory")
    p.add_argument("--examples", type=Path, nargs="*", default=[], metavar="VIDEO", help="videos offered as examples")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="precision selected at start")
    p.add_argument("--max-new-tokens", type=int, default=256, help="token limit selected at start")
    p.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    try:
        from videopanda.serve.demo import DemoConfig, launch
    except ImportError as err:
        raise SystemExit(
            f"videopanda demo needs gradio ({err.name} is missing): pip install 'videopanda[demo]'"
        ) from None
    from videopanda.inference import require_loadable
    from videopanda.serve.server import PortInUseError, bind_socket

    require_loadable(args.model)  # a one-line ModelDirError before the port and the model
    missing = [str(p) for p in args.examples if not p.is_file()]
    if missing:
        raise SystemExit(f"--examples: {missing[0]} not found")
    try:
        bind_socket(args.host, args.port).close()  # say "in use" before loading the model
    except PortInUseError as err:
        raise SystemExit(str(err)) from None
    config = DemoConfig(args.model, args.device, args.dtype, args.max_new_tokens, tuple(args.examples))
    logger.info("demo of %s on http://%s:%d", args.model, args.host, args.port)
    launch(config, args.host, args.port)
    return 0
