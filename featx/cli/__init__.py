"""The ``featx`` command: thin subcommands over the library.

Each module of this package adds its subcommands with ``register(subparsers)``;
a subcommand is a function ``(args) -> int`` that writes through ``args.console``
(:class:`~featx.cli.console.Console`: where text goes, ``-q``, ``-v``, ``--json``).
``main(argv)`` returns the exit code, so tests call it directly; the exit codes and the
output contract are in :mod:`featx.cli.console` and in ``featx --help``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from importlib import import_module

from .. import interrupts
from ..errors import FeatxError, UsageError
from ..version import __version__
from .console import CONTRACT, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, Console
from .flags import add_common_flags

#: Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = ("backbones", "cache", "heads", "deploy", "bench", "advise", "audit", "data", "demo")


class CommandParser(argparse.ArgumentParser):
    """The parser of every subcommand (nested ones too): ``-q`` and ``-v`` work after it as well."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_common_flags(self, default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featx",
        description="Transfer learning by feature extraction: ONNX backbones, HDF5 caches, sklearn heads.",
        epilog=CONTRACT, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"featx {__version__}")
    add_common_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # not written yet
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse prints them and exits 2
    console = args.console = Console(quiet=args.quiet, verbose=args.verbose, json=getattr(args, "json", False))
    with console.capturing(), interrupts.recorded():
        try:
            code = int(args.func(args) or 0)
            if interrupts.received():  # a Ctrl-C that landed where Python could only print it
                raise KeyboardInterrupt
            return code
        except KeyboardInterrupt:
            print("featx: interrupted (Ctrl-C). Committed work is kept; run the same command again to resume.",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        except UsageError as e:
            console.error(f"{e} (see `featx {args.command} --help`)")
            return EXIT_USAGE
        except FeatxError as e:
            console.error(str(e))
            return EXIT_ERROR
        except OSError as e:  # a file or folder featx was pointed at: say which, no traceback
            if console.verbose:
                traceback.print_exc()
            console.error(str(e))
            return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
