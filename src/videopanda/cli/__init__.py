"""``videopanda`` command line: one subcommand per library entry point.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds
its subcommand(s) and sets ``func`` to a thin wrapper over a library function.
Heavy imports (torch, transformers) happen inside those wrappers, so
``videopanda --help`` stays fast.

What every subcommand shares is added here, once: ``-v/--debug`` after any
subcommand, a description and shown defaults in every ``--help``, and
``main``'s handling of failures: a user error (bad file, key, value, device,
missing package) is one line on stderr and exit 1 (its traceback only with
``--debug``); Ctrl-C is one line saying what was kept, and exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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

# Errors that a wrong input causes, with messages written for the user (ConfigError, DeviceError,
# VideoDecodeError, ConversationError, ... are ValueErrors); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError, LookupError)
EXIT_USER_ERROR = 1
CACHE_DIR_ENV = "VIDEOPANDA_CACHE_DIR"  # where SmolLM2's converted copy lives (default ~/.cache/videopanda)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# What an interrupted command leaves behind, by command (``prog`` without the leading "videopanda ").
KEPT_ON_INTERRUPT = {
    "train": "complete checkpoints in output_dir are kept; rerun the same command to resume",
    "eval run": "answers written so far are kept in the output directory; rerun the same command to resume",
    "eval judge": "verdicts so far are kept in the judge cache; rerun the same command to resume",
    "eval five-criteria": "answers and verdicts so far are kept; rerun the same command to resume",
    "teacher cache": "finished shards are kept; rerun the same command to resume",
    "quickstart": "finished steps are kept in the output directory",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's default shown unless it is None/False or the help states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and "default" not in text
        if shown and (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            text += " (default: %(default)s)"
        return text.strip()


class _SubCommands(argparse._SubParsersAction):
    """Every subcommand parser gets the shared flags, the formatter, a description and its ``prog``."""

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter  # both keep their descriptions as written here
        if kwargs.get("description") is None and kwargs.get("help"):
            kwargs["description"] = kwargs["help"][0].upper() + kwargs["help"][1:] + "."
        kwargs["parents"] = [*kwargs.get("parents", ()), _verbosity_flags()]
        parser = super().add_parser(name, **kwargs)
        parser.set_defaults(command_path=parser.prog)
        return parser


class VideoPandaParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubCommands)

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", VideoPandaParser)
        return super().add_subparsers(**kwargs)


def _verbosity_flags() -> argparse.ArgumentParser:
    """``-v/--verbose/--debug`` for a subcommand; SUPPRESS keeps a flag given before it from being reset."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-v", "--verbose", "--debug", dest="verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging, and the traceback of an error")
    return flags


def build_parser() -> argparse.ArgumentParser:
    from videopanda import __version__

    parser = VideoPandaParser(prog="videopanda", description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", "--debug", dest="verbose", action="store_true",
                        help="debug logging, and the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own progress at INFO; other libraries only from WARNING on, so their INFO lines (e.g. numexpr's
    # thread count) never mix with a command's one-line result or error.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("videopanda").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    command = args.command_path.removeprefix(f"{parser.prog} ")
    if os.environ.get(CACHE_DIR_ENV):  # read here, at the boundary: the library takes it as a setting
        from videopanda.model.smollm2_cache import set_default_cache_dir

        set_default_cache_dir(os.environ[CACHE_DIR_ENV])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.verbose:
            raise
        kept = KEPT_ON_INTERRUPT.get(command, "nothing further was written")
        print(f"\nvideopanda {command}: interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"videopanda {command}: error: {one_line(err)} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1 (a count of things to do)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def one_line(err: BaseException) -> str:
    """The error's message on one line, with its type where the message alone would not say what failed."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyError):  # str(KeyError('x')) is "'x'"
        text = f"{type(err).__name__}: {text}"
    elif isinstance(err, ImportError) and not isinstance(err, ModuleNotFoundError):
        text = f"missing package: {text}"
    elif isinstance(err, ModuleNotFoundError):
        text = f"missing package {err.name!r}: pip install it, or avoid the option that needs it"
    return text


if __name__ == "__main__":
    sys.exit(main())
