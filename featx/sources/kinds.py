"""The kinds of source, and :func:`open_dataset`, which picks one.

A source is an object (:data:`OBJECTS`: a ``datasets.Dataset``), or named by a prefix
(:data:`PREFIXED`: ``builtin:NAME[:SPLIT]``), or it is a path: a folder, picked by the files it
holds (:data:`FOLDERS`: a Hugging Face ``save_to_disk`` folder, else a folder of images), a
file picked by its extension (:data:`BY_SUFFIX`: ``.txt``, manifests, tables, tar shards), or a
brace pattern over files (:data:`PATTERNS`: WebDataset shards ``{000000..000009}.tar``).
One more kind of source: a module in this package whose ``open_*`` function lists the items
(:class:`~featx.sources.items.Item` with stable ids) as a :class:`~featx.sources.items.Dataset`
made with :func:`~featx.sources.items.make_dataset`, and an entry in one of the tables.
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
from .tables import (is_hf_dataset, open_arrow_table, open_hf_dict_folder, open_hf_folder, open_hf_object,
                     open_parquet_table, parquet_holds_images)
from .textlines import open_text_lines
from .webdataset import expand_braces, is_brace_pattern, open_webdataset

ACCEPTED_SOURCES = (
    "a folder of images, a manifest (.csv, .tsv, .jsonl, .ndjson, .parquet), "
    "a .txt file (one text per line), a table with image bytes (.parquet, .arrow, .feather), "
    "a Hugging Face save_to_disk folder, WebDataset shards (.tar, or a brace pattern such as "
    "shards/{000000..000009}.tar), builtin:NAME, or a datasets.Dataset"
)


def _open_text_file(path: Path, columns: dict) -> Dataset:
    reject_column_options(columns, f"text file {path}")
    return open_text_lines(path)


def _open_manifest(path: Path, columns: dict) -> Dataset:
    return open_manifest(path, MANIFEST_KINDS[path.suffix.lower()], **columns)


def _open_parquet(path: Path, columns: dict) -> Dataset:
    """A table of image bytes (or with Hugging Face features), else a manifest."""
    return open_parquet_table(path, columns) if parquet_holds_images(path) else _open_manifest(path, columns)


def _open_shards(paths: list[Path], name: str, columns: dict) -> Dataset:
    reject_column_options({k: v for k, v in columns.items() if k != "label_column"}, f"WebDataset shards {name}")
    return open_webdataset(f"webdataset:{name}", paths, columns.get("label_column"))


def _open_tar(path: Path, columns: dict) -> Dataset:
    return _open_shards([path], str(path), columns)


#: Objects: ``(is_kind(source), open(source, columns))``.
OBJECTS = ((is_hf_dataset, open_hf_object),)
#: Sources named by a prefix: ``prefix -> open(source)``.
PREFIXED = {"builtin:": open_builtin}
#: Folders holding these files: ``file names -> open(folder, columns)``; any other folder is a folder of images.
FOLDERS = {("dataset_dict.json",): open_hf_dict_folder, ("state.json", "dataset_info.json"): open_hf_folder}
#: Files by extension: ``suffix -> open(path, columns)``; column options as the kind allows.
BY_SUFFIX = {".txt": _open_text_file, **{suffix: _open_manifest for suffix in MANIFEST_KINDS},
             ".parquet": _open_parquet, ".arrow": open_arrow_table, ".feather": open_arrow_table, ".tar": _open_tar}
#: Brace patterns over files with this extension: ``suffix -> open(paths, pattern, columns)``.
PATTERNS = {".tar": _open_shards}


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
    source : str, os.PathLike, Dataset or datasets.Dataset
        A folder of images, a manifest (.csv, .tsv, .jsonl, .ndjson, .parquet), a .txt file,
        a table with image bytes (.parquet, .arrow, .feather), a Hugging Face ``save_to_disk``
        folder, WebDataset shards (a .tar, or a brace pattern ``shards/{000000..000009}.tar``),
        ``builtin:NAME[:SPLIT]``, a ``datasets.Dataset``, or a Dataset (returned as is, then limited).
    text_column, path_column, label_column, id_column : str, optional
        Columns of manifests and tables (``path_column``: the images, as paths or bytes);
        auto-detected when not given (see :mod:`featx.sources.manifests`). For WebDataset
        shards, ``label_column`` is the label member's extension (``cls``, ``txt``, ``json``).
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
    for is_kind, open_object in OBJECTS:
        if is_kind(source):
            return open_object(source, columns)
    for prefix, open_source in PREFIXED.items():
        if isinstance(source, str) and source.startswith(prefix):
            reject_column_options(columns, source)
            return open_source(source)
    if not isinstance(source, (str, os.PathLike)):
        raise DataSourceError(f"dataset source must be a path or a str, got {type(source).__name__}: "
                              f"expected {ACCEPTED_SOURCES}")
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(source))))
    if path.is_dir():
        for markers, open_marked in FOLDERS.items():
            if all((path / marker).is_file() for marker in markers):
                return open_marked(path, columns)
        reject_column_options(columns, f"folder {path}")
        return open_folder(path)
    if not path.exists() and is_brace_pattern(os.fspath(source)):
        return open_pattern(path, columns)
    if not path.exists():
        raise DataSourceError(f"dataset source {os.fspath(source)!r} not found; expected {ACCEPTED_SOURCES}")
    open_file = BY_SUFFIX.get(path.suffix.lower())
    if open_file is None:
        raise DataSourceError(
            f"dataset source {os.fspath(source)!r} has an unknown extension {path.suffix!r}; expected {ACCEPTED_SOURCES}"
        )
    return open_file(path, columns)


def open_pattern(pattern: Path, columns: dict[str, str | None]) -> Dataset:
    """Files named by a brace pattern (:data:`PATTERNS`), each of which must exist."""
    open_files = PATTERNS.get(pattern.suffix.lower())
    if open_files is None:
        raise DataSourceError(f"brace patterns name WebDataset shards ({', '.join(PATTERNS)}), not {pattern.name!r}")
    paths = [Path(p) for p in expand_braces(str(pattern))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataSourceError(f"{len(missing)} of the {len(paths)} files of {pattern} are missing: "
                              f"{', '.join(str(p) for p in missing[:3])}{', ...' if len(missing) > 3 else ''}")
    return open_files(paths, str(pattern), columns)


def reject_column_options(columns: dict[str, str | None], what: str) -> None:
    given = [f"{key}={value!r}" for key, value in columns.items() if value is not None]
    if given:
        raise DataSourceError(f"{', '.join(given)} applies to manifests and tables only, not to {what}")
