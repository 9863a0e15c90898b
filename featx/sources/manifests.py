"""Manifests: a table (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.parquet``) with a path column
(an image dataset; relative paths resolve against the manifest's folder) or a text column (a text
dataset), an optional label column and an optional id column (unique), auto-detected or named."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Sequence


from ..errors import DataSourceError, MissingDependencyError
from ..extras import require
from .items import Dataset, Item, clean_label, file_stamp, is_missing, make_dataset, text_id, unique_ids
from .textlines import read_lines

MANIFEST_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path")
TEXT_COLUMNS = ("text", "review", "sentence", "content", "body", "document")
LABEL_COLUMNS = ("label", "labels", "class", "target", "y", "score", "category")
ID_COLUMN = "id"
MAX_NAMED = 5


def open_manifest(
    path: Path,
    kind: str,
    *,
    text_column: str | None,
    path_column: str | None,
    label_column: str | None,
    id_column: str | None,
) -> Dataset:
    """Items from a table: image items when it has a path column, else text items."""
    table = read_table(path, kind)
    if not table or not len(next(iter(table.values()))):
        raise DataSourceError(f"manifest {path} has no rows")
    if text_column is not None and path_column is not None:
        raise DataSourceError(
            f"give either path_column (images) or text_column (texts) for {path}, not both"
        )
    names = list(table)
    where = f"manifest {path}"
    chosen_path = find_column(names, path_column, PATH_COLUMNS, "path_column", where) if text_column is None else None
    chosen_text = None if chosen_path else find_column(names, text_column, TEXT_COLUMNS, "text_column", where)
    if chosen_path is None and chosen_text is None:
        raise DataSourceError(
            f"manifest {path} has no path or text column; columns found: {', '.join(map(repr, names))}. "
            f"Name one with path_column= / --path-column (images; looked for {', '.join(PATH_COLUMNS)}) "
            f"or text_column= / --text-column (texts; looked for {', '.join(TEXT_COLUMNS)})"
        )
    content_column = chosen_path or chosen_text
    chosen_id = find_column(names, id_column, (ID_COLUMN,), "id_column", where, exact=True)
    chosen_label = find_column(names, label_column, LABEL_COLUMNS, "label_column", where,
                               exclude={content_column, chosen_id})
    labels = list(table[chosen_label]) if chosen_label else [None] * len(table[content_column])
    name = f"{kind}:{path}"
    if chosen_path:
        written = [None if v is None else str(v) for v in table[chosen_path]]
        ids = manifest_ids(table, chosen_id, where, fallback=image_ids(written))
        items = [image_item(path.parent, i, p, label) for i, p, label in zip(ids, written, labels)]
        return make_dataset(name, "image", items)
    texts = table[chosen_text]
    ids = manifest_ids(table, chosen_id, where, fallback=[text_id(t) for t in texts])
    items = [Item(id=i, ref=text, label=label) for i, text, label in zip(ids, texts, labels)]
    return make_dataset(name, "text", items)


def find_column(
    names: Sequence[str],
    requested: str | None,
    candidates: Sequence[str],
    option: str,
    where: str,
    *,
    exact: bool = False,
    exclude: set | None = None,
) -> str | None:
    """The requested column (which must exist), else the first candidate present (any case).

    ``where`` names the table in messages (``"manifest /data/x.csv"``).
    """
    if requested is not None:
        if requested not in names:
            raise DataSourceError(
                f"{option}={requested!r} not found in {where}; columns found: {', '.join(map(repr, names))}"
            )
        return requested
    exclude = exclude or set()
    for candidate in candidates:
        for name in names:
            if name not in exclude and (name == candidate or (not exact and name.lower() == candidate)):
                return name
    return None


def manifest_ids(table: dict[str, list], id_column: str | None, where: str, *, fallback: list[str]) -> list[str]:
    """Ids from the id column (must be present and unique), else the fallback made unique.

    ``where`` names the table in messages (``"manifest /data/x.csv"``).
    """
    if id_column is None:
        return unique_ids(fallback)
    ids = [clean_label(v) for v in table[id_column]]
    empty_rows = [row for row, value in enumerate(ids) if value is None]
    if empty_rows:
        raise DataSourceError(
            f"id column {id_column!r} of {where} is empty in {len(empty_rows)} row(s) "
            f"(first data rows, from 0: {empty_rows[:MAX_NAMED]}); every row needs an id"
        )
    duplicated = [value for value, count in Counter(ids).items() if count > 1]
    if duplicated:
        raise DataSourceError(
            f"id column {id_column!r} of {where} has {len(duplicated)} duplicated id(s): "
            f"{', '.join(map(repr, duplicated[:MAX_NAMED]))}{', ...' if len(duplicated) > MAX_NAMED else ''}; "
            "ids must be unique"
        )
    return ids


def image_ids(written_paths: Sequence[str | None]) -> list[str]:
    """The path as written; ``<row N>`` (N from 0) for an empty path cell."""
    return [p if p is not None else f"<row {row}>" for row, p in enumerate(written_paths)]


def image_item(base: Path, item_id: str, written_path: str | None, label: str | None) -> Item:
    """An image item; the file is not checked (stamp None when missing, ref None when the cell is empty)."""
    if written_path is None:
        return Item(id=item_id, ref=None, label=label)
    absolute = os.path.abspath(os.path.join(base, os.path.expanduser(written_path)))
    return Item(id=item_id, ref=absolute, label=label, stamp=file_stamp(absolute))


def read_table(path: Path, kind: str) -> dict[str, list]:
    """Columns of a manifest as ``{name: list of values}``, missing values as None."""
    try:
        if kind == "jsonl":
            return read_jsonl(path)
        frame = read_frame(path, kind)
    except (DataSourceError, MissingDependencyError):
        raise
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"manifest {path} is not UTF-8 ({exc}); save it as UTF-8") from exc
    except Exception as exc:  # pandas/pyarrow parse errors have no common base class
        raise DataSourceError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from exc
    return {str(name): [None if is_missing(v) else v for v in frame[name].tolist()] for name in frame.columns}


def read_frame(path: Path, kind: str):
    import pandas as pd

    if kind == "parquet":
        require("pyarrow", "parquet", f"reading the Parquet manifest {path}")
        return pd.read_parquet(path, engine="pyarrow")
    # Only empty cells are missing: "NA", "null", "None" are kept as written.
    return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str,
                       keep_default_na=False, na_values=[""], encoding="utf-8-sig")


def read_jsonl(path: Path) -> dict[str, list]:
    """JSON Lines (one object per line, blank lines skipped), keeping JSON types as they are."""
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataSourceError(f"line {number} of manifest {path} is not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise DataSourceError(
                f"line {number} of manifest {path} is a JSON {type(row).__name__}, expected an object"
            )
        rows.append(row)
    names = list(dict.fromkeys(key for row in rows for key in row))
    return {name: [row.get(name) for row in rows] for name in names}
