"""The kinds of source, and :func:`open_dataset`, which picks one.

A source is named by a prefix (:data:`PREFIXED`: ``builtin:NAME[:SPLIT]``), or it is a path: a
folder of images, or a file picked by its extension (:data:`BY_SUFFIX`: ``.txt``, manifests).
One more kind of source: a module in this package whose ``open_*`` function lists the items
(:class:`~featx.sources.items.Item` with stable ids) as a :class:`~featx.sources.items.Dataset`
made with :func:`~featx.sources.items.make_dataset`, and an entry in one of the two tables.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataSourceError
from .builtins import open_builtin
from .folders import open_folder
from .items import Dataset
from .manifests import MANIFEST_KINDS, open_manifest
from .subsets import subset
from .textlines import open_text_lines

ACCEPTED_SOURCES = (
    "a folder of images, a manifest (.csv, .tsv, .jsonl, .ndjson, .parquet), "
    "a .txt file (one text per line), or builtin:NAME"
)


def _open_text_file(path: Path, columns: dict) -> Dataset:
    reject_column_options(columns, f"text file {path}")
    return open_text_lines(path)


def _open_manifest(path: Path, columns: dict) -> Dataset:
    return open_manifest(path, MANIFEST_KINDS[path.suffix.lower()], **columns)


#: Sources named by a prefix: ``prefix -> open(source)``.
PREFIXED = {"builtin:": open_builtin}
#: Files by extension: ``suffix -> open(path, columns)``; only manifests take column options.
BY_SUFFIX = {".txt": _open_text_file, **{suffix: _open_manifest for suffix in MANIFEST_KINDS}}


def open_dataset(
    source,
    *,
    text_column: str | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """List the items of a dataset.

    Parameters
    ----------
    source : str, os.PathLike or Dataset
        A folder of images, a manifest (.csv, .tsv, .jsonl, .ndjson, .parquet), a .txt file,
        ``builtin:NAME[:SPLIT]``, or a Dataset (returned as is, then limited).
    text_column, path_column, label_column, id_column : str, optional
        Manifest columns; auto-detected when not given (see :mod:`featx.sources.manifests`).
    limit : int, optional
        Keep a deterministic, stratified subset of this many items (:func:`subset`).
    seed : int
        Seed of that subset.

    Returns
    -------
    Dataset

    Raises
    ------
    DataSourceError
        The source does not exist, has an unknown form, holds no items, lacks the columns
        needed, has duplicate ids, or a built-in's data are not fetched.

    Examples
    --------
    >>> ds = open_dataset("builtin:digits", limit=10)
    >>> len(ds), ds.items[0].ref.shape
    (10, (8, 8))
    """
    columns = {"text_column": text_column, "path_column": path_column,
               "label_column": label_column, "id_column": id_column}
    dataset = open_full_dataset(source, columns)
    return dataset if limit is None else subset(dataset, limit, seed=seed)


def open_full_dataset(source, columns: dict[str, str | None]) -> Dataset:
    """The whole dataset a source names (:func:`open_dataset` without ``limit``)."""
    if isinstance(source, Dataset):
        reject_column_options(columns, f"a Dataset ({source.name})")
        return source
    for prefix, open_source in PREFIXED.items():
        if isinstance(source, str) and source.startswith(prefix):
            reject_column_options(columns, source)
            return open_source(source)
    if not isinstance(source, (str, os.PathLike)):
        raise DataSourceError(f"dataset source must be a path or a str, got {type(source).__name__}: "
                              f"expected {ACCEPTED_SOURCES}")
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(source))))
    if path.is_dir():
        reject_column_options(columns, f"folder {path}")
        return open_folder(path)
    if not path.exists():
        raise DataSourceError(f"dataset source {os.fspath(source)!r} not found; expected {ACCEPTED_SOURCES}")
    open_file = BY_SUFFIX.get(path.suffix.lower())
    if open_file is None:
        raise DataSourceError(
            f"dataset source {os.fspath(source)!r} has an unknown extension {path.suffix!r}; expected {ACCEPTED_SOURCES}"
        )
    return open_file(path, columns)


def reject_column_options(columns: dict[str, str | None], what: str) -> None:
    given = [f"{key}={value!r}" for key, value in columns.items() if value is not None]
    if given:
        raise DataSourceError(f"{', '.join(given)} applies to manifests only, not to {what}")
