"""Flags every subcommand shares, and the types that turn a flag's text into a value.

A value argparse cannot convert is a usage error: ``featx`` prints the usage and exits 2.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

from ..engine.defaults import CPU_BATCH_SIZE, GPU_BATCH_SIZE
from ..errors import ParameterError


def add_common_flags(parser: argparse.ArgumentParser, default) -> None:
    """``-q/--quiet`` and ``-v/--verbose`` (``default``: False on the top parser, SUPPRESS on subcommands,
    so that a flag given before the subcommand is not reset by the subcommand's default)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress and no human text; JSON, CSV, warnings and errors are still written")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log more (featx's debug log), and show the traceback of an OS error")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: the command's report as one JSON document on stdout."""
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON document on stdout (human text goes to stderr)")


def add_batch_size_flag(p, what: str = "items per ONNX Runtime call") -> None:
    """``--batch-size``: default None, the device's own (:mod:`featx.engine.defaults`)."""
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"{what} (default: the device's, {CPU_BATCH_SIZE} on the CPU, {GPU_BATCH_SIZE} on a GPU)")


def add_manifest_columns(p, label: bool) -> None:
    """``--text-column``, ``--path-column``, ``--id-column`` (and ``--label-column``) of a manifest or table."""
    p.add_argument("--text-column", default=None,
                   help="manifest or table column of the texts (default: found by name: text, review, sentence, ...)")
    p.add_argument("--path-column", default=None,
                   help="manifest or table column of the images, as paths or bytes (default: a column of image "
                        "bytes, else found by name: path, file, image, ...)")
    if label:
        p.add_argument("--label-column", default=None,
                       help="manifest or table column of the labels (default: a ClassLabel, else found by name: "
                            "label, class, target, ...); for WebDataset shards, the label member's extension "
                            "(default: the first of cls, txt, json)")
    p.add_argument("--id-column", default=None,
                   help="manifest or table column of the item ids (default: 'id' when present)")


def _int(text: str, expected: str, ok) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1 (argparse ``type=``)."""
    return _int(text, "an int >= 1", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    """An int >= 0 (argparse ``type=``): a count where 0 means none, a seed."""
    return _int(text, "an int >= 0", lambda v: v >= 0)


def folds(text: str) -> int:
    """Cross-validation folds: an int >= 2 (argparse ``type=``)."""
    return _int(text, "an int >= 2 (folds of the cross-validation)", lambda v: v >= 2)


def jobs(text: str) -> int:
    """Parallel jobs: a non-zero int, negative counting back from all cores (argparse ``type=``)."""
    return _int(text, "an int other than 0 (-1: all cores, -2: all but one...)", lambda v: v != 0)


def dask_address(text: str) -> str:
    """``local``, ``local:N`` or a Dask scheduler address (argparse ``type=``; :func:`featx.extraction.cluster.check_cluster`)."""
    from ..extraction.cluster import check_cluster

    try:
        return check_cluster(text)
    except ParameterError:
        raise argparse.ArgumentTypeError(f"expected local, local:N (N >= 1) or a scheduler address such as "
                                         f"tcp://HOST:8786, got {text!r}") from None


def dask_logs(args):
    """With ``--dask`` and without ``-v``: Dask's own log is silenced (featx says what went wrong itself)."""
    from ..extraction.cluster import quiet_logs

    return quiet_logs() if args.dask and not args.console.verbose else nullcontext()
