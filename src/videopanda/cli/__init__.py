"""``videopanda`` command line: one subcommand per library entry point.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its subcommand(s) and sets ``func`` to a thin wrapper over a library function.
Heavy imports (torch, transformers) happen inside those wrappers, so
``videopanda --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "videopanda.cli.data",
    "videopanda.cli.model",
    "videopanda.cli.teacher",
    "videopanda.cli.train",
    "videopanda.cli.eval",
    "videopanda.cli.serve",
    "videopanda.cli.demo",
    "videopanda.cli.chat",
    "videopanda.cli.quickstart",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videopanda", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
