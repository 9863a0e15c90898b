"""The ``featx`` command: thin subcommands over the library.

Each module of this package adds its subcommands with ``register(subparsers)``;
a subcommand is a function ``(args) -> int``. ``main(argv)`` returns the exit code,
so tests call it directly.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import FeatxError

#: Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = ("backbones", "cache", "heads", "bench", "data", "demo")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="featx", description="Transfer learning by feature extraction: ONNX backbones, HDF5 caches, sklearn heads."
    )
    parser.add_argument("--version", action="version", version=f"featx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="featx: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featx: interrupted (Ctrl-C). Committed work is kept; run the same command again to resume.",
              file=sys.stderr)
        return 130
    except FeatxError as e:
        print(f"featx: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
