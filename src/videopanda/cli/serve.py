"""`videopanda serve`: an OpenAI-compatible chat server for a local model (plain LLM or Video-Panda)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videopanda.runtime import DTYPE_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the top-level parser."""
    p = subparsers.add_parser("serve", help="OpenAI-compatible /v1/chat/completions server for a local model")
    p.add_argument("model", nargs="?", default="smollm2",
                   help="a Video-Panda model directory, a chat LLM directory, or 'smollm2' (default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                   help="precision of a Video-Panda model (default auto: bfloat16 only where it is faster)")
    p.add_argument("--template", help="prompt template of a Video-Panda model (default: the one it records)")
    p.add_argument("--num-frames", type=int, metavar="N",
                   help="Video-Panda: frames sampled per video (a multiple of 4; default: the model's)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every /v1 call")
    p.add_argument("--media-root", type=Path, metavar="DIR",
                   help="local video/image paths are served only from under DIR (without it: refused)")
    p.add_argument("--no-http-media", action="store_true", help="refuse http(s) media URLs")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="also download media from loopback/private/link-local addresses (refused by default)")
    p.add_argument("--max-batch-size", type=int, default=8, help="requests generated together (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a batch waits for more requests (default 10)")
    p.add_argument("--default-max-tokens", type=int, default=256, help="for a request without max_tokens")
    p.add_argument("--max-tokens-limit", type=int, default=2048, help="largest max_tokens accepted")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MiB)")
    p.add_argument("--max-download-mb", type=float, default=200.0,
                   help="largest http(s) download or data: URL (default 200 MiB)")
    p.add_argument("--download-timeout-s", type=float, default=30.0)
    p.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from videopanda.serve import MediaPolicy, ServeConfig, create_app, load_served_model
    from videopanda.serve.server import PortInUseError, bind_socket, run

    if args.media_root is not None and not args.media_root.is_dir():
        raise SystemExit(f"--media-root {args.media_root}: not a directory")
    if args.max_batch_size < 1:
        raise SystemExit(f"--max-batch-size must be at least 1, got {args.max_batch_size}")
    media = MediaPolicy(args.media_root, int(args.max_download_mb * 2**20), args.download_timeout_s,
                        not args.no_http_media, args.allow_private_urls)
    config = ServeConfig(
        args.host, args.port, args.api_key, media, args.default_max_tokens, args.max_tokens_limit,
        int(args.max_body_mb * 2**20), max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
    )
    try:
        sock = bind_socket(config.host, config.port)  # before loading: "in use" comes first
    except PortInUseError as err:
        raise SystemExit(str(err)) from None
    model = load_served_model(args.model, args.device, args.dtype, args.template, args.num_frames)
    run(create_app(model, config), sock, model.model_id)
    return 0
