"""Datasets as ordered lists of items with stable ids and optional labels.

Pure listing: nothing here decodes an image or tokenizes a text (:mod:`featx.decode` does),
and missing or broken files are left for the decoder to report per item.

A source is one of:

- a folder of images, searched recursively (hidden files and folders skipped); the label of
  a file is the name of its first-level sub-folder (None for files in the root);
  id = path relative to the root (posix); sorted by id;
- a manifest (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.parquet``) with a path column
  (an image dataset; relative paths resolve against the manifest's folder) or a text column
  (a text dataset), an optional label column and an optional id column;
- a ``.txt`` file: one text per line, no labels;
- ``builtin:NAME[:SPLIT]``: ``digits``, ``fashion-mnist``, ``fine-foods`` (see :mod:`featx.builtins`).

Ids without an id column: for image manifests the path as written; for texts the first
16 hex digits of ``sha1(text)``. Repeated ids get ``~2``, ``~3``, ... in order of appearance
(``"a"``, ``"a"``, ``"a"`` -> ``"a"``, ``"a~2"``, ``"a~3"``). An id column must be unique.

Examples
--------
>>> ds = open_dataset("builtin:digits:train")
>>> ds.name, ds.modality, len(ds), ds.classes[:3]
('builtin:digits:train', 'image', 1347, ('0', '1', '2'))
>>> small = subset(ds, 100, seed=0)
>>> len(small), small.items[0].id, small.items[0].ref.dtype.name
(100, 'digits/0001', 'uint8')
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .builtins import builtin_spec, fetch, read_builtin, resolve_split, stamp_of
from .errors import DataSourceError, MissingDependencyError
from .extras import require

__all__ = ["Item", "Dataset", "open_dataset", "subset", "fetch_builtin", "file_stamp", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path")
TEXT_COLUMNS = ("text", "review", "sentence", "content", "body", "document")
LABEL_COLUMNS = ("label", "labels", "class", "target", "y", "score", "category")
ID_COLUMN = "id"
ACCEPTED_SOURCES = (
    "a folder of images, a manifest (.csv, .tsv, .jsonl, .ndjson, .parquet), "
    "a .txt file (one text per line), or builtin:NAME"
)
MAX_NAMED = 5


@dataclass(frozen=True)
class Item:
    """One item of a dataset.

    Attributes
    ----------
    id : str
        Stable and unique within the dataset.
    ref : object
        What the decoder takes: an absolute path (str) for image files, the text for texts
        (as found: may be None or a non-str for bad rows), or a uint8 array (H, W) / (H, W, 3)
        for in-memory built-in images.
    label : str or None
        Class name, always a str.
    stamp : str or None
        ``"{size}:{mtime_ns}"`` of the file; None for in-memory items and missing files.
    """

    id: str
    ref: object
    label: str | None = None
    stamp: str | None = None


@dataclass(frozen=True)
class Dataset:
    """An ordered, labelled or unlabelled collection of items of one modality.

    Attributes
    ----------
    name : str
        Canonical description of the source: ``"folder:/abs/path"``, ``"csv:/abs/x.csv"``,
        ``"builtin:digits:train"``... A subset keeps the name of its dataset.
    modality : {"image", "text"}
    items : tuple of Item
        In a deterministic order.
    classes : tuple of str or None
        Sorted distinct labels; None when no item has a label.
    """

    name: str
    modality: str
    items: tuple[Item, ...]
    classes: tuple[str, ...] | None

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray | None:
        """Labels as an object array of str (None for unlabelled items), or None when unlabelled."""
        if self.classes is None:
            return None
        return np.array([item.label for item in self.items], dtype=object)

    def ids(self) -> list[str]:
        """Item ids, in order."""
        return [item.id for item in self.items]


def make_dataset(name: str, modality: str, items: Sequence[Item]) -> Dataset:
    """A Dataset whose ``classes`` are the sorted distinct labels of ``items``."""
    classes = sorted({item.label for item in items if item.label is not None})
    return Dataset(name=name, modality=modality, items=tuple(items), classes=tuple(classes) or None)


def file_stamp(path: str | os.PathLike) -> str | None:
    """Cheap change detector of a file: ``"{size}:{mtime_ns}"``, or None when it cannot be stat'ed."""
    return stamp_of(Path(path))


def fetch_builtin(name: str) -> Path:
    """Make a built-in dataset's data available locally and return the folder holding them.

    ``fine-foods`` runs ``apt-get download r-cran-modeldata`` and ``dpkg-deb -x`` into
    ``$FEATX_HOME/data/r-cran-modeldata`` (nothing is installed); ``fashion-mnist`` uses
    ``/usr/share/datasets/fashion-mnist`` when present, else extracts ``dataset-fashion-mnist``
    the same way; ``digits`` ships with scikit-learn.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"fashion-mnist"`` or ``"fine-foods"`` (``"builtin:"`` prefix allowed).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataSourceError
        Unknown name, or the download failed (the message gives the commands to run by hand).

    Examples
    --------
    >>> fetch_builtin("digits").name
    'data'
    """
    return fetch(name)


# --------------------------------------------------------------------------- open_dataset

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
        Manifest columns; auto-detected when not given (see the module docstring).
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
    if isinstance(source, Dataset):
        reject_column_options(columns, f"a Dataset ({source.name})")
        return source
    if isinstance(source, str) and source.startswith("builtin:"):
        reject_column_options(columns, source)
        return open_builtin(source)
    if not isinstance(source, (str, os.PathLike)):
        raise DataSourceError(f"dataset source must be a path or a str, got {type(source).__name__}: "
                              f"expected {ACCEPTED_SOURCES}")
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(source))))
    if path.is_dir():
        reject_column_options(columns, f"folder {path}")
        return open_folder(path)
    if not path.exists():
        raise DataSourceError(f"dataset source {os.fspath(source)!r} not found; expected {ACCEPTED_SOURCES}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        reject_column_options(columns, f"text file {path}")
        return open_text_lines(path)
    if suffix in MANIFEST_KINDS:
        return open_manifest(path, MANIFEST_KINDS[suffix], **columns)
    raise DataSourceError(
        f"dataset source {os.fspath(source)!r} has an unknown extension {path.suffix!r}; expected {ACCEPTED_SOURCES}"
    )


def reject_column_options(columns: dict[str, str | None], what: str) -> None:
    given = [f"{key}={value!r}" for key, value in columns.items() if value is not None]
    if given:
        raise DataSourceError(f"{', '.join(given)} applies to manifests only, not to {what}")


# --------------------------------------------------------------------------- folders

def open_folder(root: Path) -> Dataset:
    """Images under ``root`` (recursive, hidden skipped), labelled by first-level sub-folder."""
    relative_paths = sorted(list_image_files(root))
    if not relative_paths:
        raise DataSourceError(
            f"no images found in folder {root}: looked recursively for {', '.join(IMAGE_EXTENSIONS)} "
            "(any case), skipping hidden files and folders"
        )
    items = [folder_item(root, rel) for rel in relative_paths]
    return make_dataset(f"folder:{root}", "image", items)


def list_image_files(root: Path) -> Iterable[str]:
    """Posix paths, relative to ``root``, of the non-hidden image files below it."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        relative_dir = Path(dirpath).relative_to(root)
        for filename in filenames:
            if not filename.startswith(".") and Path(filename).suffix.lower() in IMAGE_EXTENSIONS:
                yield (relative_dir / filename).as_posix()


def folder_item(root: Path, relative_path: str) -> Item:
    parts = relative_path.split("/")
    absolute = str(root / relative_path)
    return Item(
        id=relative_path,
        ref=absolute,
        label=parts[0] if len(parts) > 1 else None,
        stamp=stamp_of(Path(absolute)),
    )


# --------------------------------------------------------------------------- text files

def open_text_lines(path: Path) -> Dataset:
    """One text item per line of a UTF-8 file (only the line ending is stripped)."""
    texts = read_lines(path)
    if not texts:
        raise DataSourceError(f"text file {path} is empty: expected one text per line")
    ids = unique_ids([text_id(text) for text in texts])
    items = [Item(id=i, ref=text) for i, text in zip(ids, texts)]
    return make_dataset(f"txt:{path}", "text", items)


def read_lines(path: Path) -> list[str]:
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"text file {path} is not UTF-8 ({exc}); save it as UTF-8") from exc
    except OSError as exc:
        raise DataSourceError(f"cannot read text file {path}: {exc}") from exc
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def text_id(text) -> str:
    """First 16 hex digits of ``sha1(text)`` (``str(text)`` for a non-str, ``""`` for None)."""
    content = "" if text is None else text if isinstance(text, str) else str(text)
    return hashlib.sha1(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def unique_ids(ids: Sequence[str]) -> list[str]:
    """Make ids unique: each repeat gets ``~2``, ``~3``... in order of appearance.

    A suffix that would clash with another id is skipped (``["a", "a", "a~2"]`` ->
    ``["a", "a~3", "a~2"]``).

    Examples
    --------
    >>> unique_ids(["a", "b", "a", "a"])
    ['a', 'b', 'a~2', 'a~3']
    """
    taken = set(ids)
    if len(taken) == len(ids):
        return list(ids)
    seen: set[str] = set()
    repeats: Counter = Counter()
    result = []
    for raw in ids:
        if raw not in seen:
            seen.add(raw)
            result.append(raw)
            continue
        repeats[raw] += 1
        candidate = f"{raw}~{repeats[raw] + 1}"
        while candidate in taken:
            repeats[raw] += 1
            candidate = f"{raw}~{repeats[raw] + 1}"
        taken.add(candidate)
        result.append(candidate)
    return result


# --------------------------------------------------------------------------- manifests

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
    chosen_path = find_column(names, path_column, PATH_COLUMNS, "path_column", path) if text_column is None else None
    chosen_text = None if chosen_path else find_column(names, text_column, TEXT_COLUMNS, "text_column", path)
    if chosen_path is None and chosen_text is None:
        raise DataSourceError(
            f"manifest {path} has no path or text column; columns found: {', '.join(map(repr, names))}. "
            f"Name one with path_column= / --path-column (images; looked for {', '.join(PATH_COLUMNS)}) "
            f"or text_column= / --text-column (texts; looked for {', '.join(TEXT_COLUMNS)})"
        )
    content_column = chosen_path or chosen_text
    chosen_id = find_column(names, id_column, (ID_COLUMN,), "id_column", path, exact=True)
    chosen_label = find_column(names, label_column, LABEL_COLUMNS, "label_column", path,
                               exclude={content_column, chosen_id})
    labels = [label_text(v) for v in table[chosen_label]] if chosen_label else [None] * len(table[content_column])
    name = f"{kind}:{path}"
    if chosen_path:
        written = [None if v is None else str(v) for v in table[chosen_path]]
        ids = manifest_ids(table, chosen_id, path, fallback=image_ids(written))
        items = [image_item(path.parent, i, p, label) for i, p, label in zip(ids, written, labels)]
        return make_dataset(name, "image", items)
    texts = table[chosen_text]
    ids = manifest_ids(table, chosen_id, path, fallback=[text_id(t) for t in texts])
    items = [Item(id=i, ref=text, label=label) for i, text, label in zip(ids, texts, labels)]
    return make_dataset(name, "text", items)


def find_column(
    names: Sequence[str],
    requested: str | None,
    candidates: Sequence[str],
    option: str,
    path: Path,
    *,
    exact: bool = False,
    exclude: set | None = None,
) -> str | None:
    """The requested column (which must exist), else the first candidate present (any case)."""
    if requested is not None:
        if requested not in names:
            raise DataSourceError(
                f"{option}={requested!r} not found in manifest {path}; columns found: {', '.join(map(repr, names))}"
            )
        return requested
    exclude = exclude or set()
    for candidate in candidates:
        for name in names:
            if name not in exclude and (name == candidate or (not exact and name.lower() == candidate)):
                return name
    return None


def manifest_ids(table: dict[str, list], id_column: str | None, path: Path, *, fallback: list[str]) -> list[str]:
    """Ids from the id column (must be present and unique), else the fallback made unique."""
    if id_column is None:
        return unique_ids(fallback)
    ids = [label_text(v) for v in table[id_column]]
    empty_rows = [row for row, value in enumerate(ids) if value is None]
    if empty_rows:
        raise DataSourceError(
            f"id column {id_column!r} of manifest {path} is empty in {len(empty_rows)} row(s) "
            f"(first data rows, from 0: {empty_rows[:MAX_NAMED]}); every row needs an id"
        )
    duplicated = [value for value, count in Counter(ids).items() if count > 1]
    if duplicated:
        raise DataSourceError(
            f"id column {id_column!r} of manifest {path} has {len(duplicated)} duplicated id(s): "
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
    return Item(id=item_id, ref=absolute, label=label, stamp=stamp_of(Path(absolute)))


def label_text(value) -> str | None:
    """A label as str: None stays None, integral floats lose their ``.0`` (parquet int columns with gaps)."""
    if is_missing(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def is_missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return True  # pandas.NA refuses to be compared


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


# --------------------------------------------------------------------------- builtins

def open_builtin(source: str) -> Dataset:
    """``builtin:NAME[:SPLIT]`` as a Dataset with in-memory images or texts."""
    parts = source.split(":")
    if len(parts) > 3:
        raise DataSourceError(f"malformed builtin source {source!r}: expected builtin:NAME[:SPLIT]")
    name = parts[1].lower()
    spec = builtin_spec(name)
    split = resolve_split(spec, parts[2].lower() if len(parts) == 3 else None)
    table = read_builtin(name, split)
    items = [Item(id=i, ref=ref, label=label) for i, ref, label in zip(table.ids, table.refs, table.labels)]
    canonical = f"builtin:{name}" + (f":{split}" if split else "")
    return make_dataset(canonical, table.modality, items)


# --------------------------------------------------------------------------- subset

def subset(dataset: Dataset, n: int | None = None, *, per_class: int | None = None, seed: int = 0) -> Dataset:
    """A deterministic subset, stratified by label; chosen items keep their original order.

    Parameters
    ----------
    dataset : Dataset
    n : int, optional
        Number of items to keep (all when ``n >= len(dataset)``). When labelled, each class
        gets its share of ``n`` in proportion to its size (largest remainders round up).
    per_class : int, optional
        At most this many items of each class (labelled datasets only); applied before ``n``.
    seed : int
        Same seed, same dataset -> same subset.

    Returns
    -------
    Dataset
        Same name and modality; ``classes`` recomputed from the chosen items.

    Raises
    ------
    DataSourceError
        ``n`` or ``per_class`` is not a positive int, or ``per_class`` on an unlabelled dataset.

    Examples
    --------
    >>> ds = open_dataset("builtin:digits")
    >>> few = subset(ds, per_class=2, seed=1)
    >>> len(few), few.classes == ds.classes
    (20, True)
    """
    check_count("n", n)
    check_count("per_class", per_class)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataSourceError(f"The 'seed' parameter of subset must be an int. Got {seed!r} instead.")
    if per_class is not None and dataset.classes is None:
        raise DataSourceError(f"per_class={per_class} needs a labelled dataset; {dataset.name} has no labels")
    rng = np.random.default_rng(seed)
    groups = group_positions([item.label for item in dataset.items])
    if per_class is not None:
        groups = [choose(rng, positions, min(per_class, len(positions))) for positions in groups]
    if n is not None:
        quotas = proportional_quotas([len(positions) for positions in groups], n)
        groups = [choose(rng, positions, quota) for positions, quota in zip(groups, quotas)]
    chosen = sorted(int(p) for positions in groups for p in positions)
    if len(chosen) == len(dataset):
        return dataset
    return make_dataset(dataset.name, dataset.modality, [dataset.items[p] for p in chosen])


def check_count(parameter: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataSourceError(
            f"The {parameter!r} parameter of subset must be an int in [1, inf). Got {value!r} instead."
        )


def group_positions(labels: Sequence[str | None]) -> list[np.ndarray]:
    """Positions of each label, labels in sorted order (None last); one group when all are None."""
    by_label: dict[str | None, list[int]] = {}
    for position, label in enumerate(labels):
        by_label.setdefault(label, []).append(position)
    order = sorted(by_label, key=lambda label: (label is None, label or ""))
    return [np.array(by_label[label], dtype=np.int64) for label in order]


def proportional_quotas(sizes: Sequence[int], n: int) -> list[int]:
    """Split ``n`` (capped at ``sum(sizes)``) in proportion to ``sizes``, by largest remainder.

    Examples
    --------
    >>> proportional_quotas([50, 30, 20], 7)
    [4, 2, 1]
    """
    total = sum(sizes)
    n = min(n, total)
    quotas = [n * size // total for size in sizes]
    remainders = [n * size % total for size in sizes]
    by_remainder = sorted(range(len(sizes)), key=lambda k: (-remainders[k], k))
    for k in by_remainder[: n - sum(quotas)]:
        quotas[k] += 1
    return quotas


def choose(rng: np.random.Generator, positions: np.ndarray, count: int) -> np.ndarray:
    if count >= len(positions):
        return positions
    return np.sort(rng.choice(positions, size=count, replace=False))
