"""`videopanda train` subcommand(s). TODO(owner of this area): register them."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the top-level parser."""
