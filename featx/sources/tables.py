"""Tables with the images inside: Hugging Face ``datasets`` (``save_to_disk`` folders and
``datasets.Dataset`` objects), Arrow files, and Parquet files with image bytes.

::

    a save_to_disk folder       state.json (its data files), dataset_info.json (its features),
                                data-00000-of-0000N.arrow (Arrow IPC streams, read in order)
    a DatasetDict folder        dataset_dict.json and one such folder per split: pass the split's
    x.arrow, x.feather          an Arrow IPC file or stream
    x.parquet                   with an image-bytes column or Hugging Face features (other
                                Parquet files are manifests: :mod:`featx.sources.manifests`)
    a datasets.Dataset          read through its own methods (featx never imports datasets)

Columns, each auto-detected or named like a manifest's (``path_column=`` names the image
column): the images are a column of bytes, or Hugging Face's image struct ``{"bytes", "path"}``
(a row with no bytes but a path names a file), or a str column of paths; else the texts are a
str column found by name. The label is the column named, else a ``ClassLabel`` (its names are
the labels; -1 or null is no label), else a column found by name; an empty label is no label.
The id is the column named, else ``id`` when present, else: texts ``sha1(text)`` (as in
manifests), images the row number from 0 over the data files in order.

What an image item refers to (:mod:`featx.sources.refs`): in an uncompressed Arrow file (what
``save_to_disk`` writes) the bytes' place in the file, read in place; in a Parquet file or a
compressed Arrow file the cell, read with its row group; a ``Dataset`` object's bytes are copied
while listing (held in memory: for a dataset larger than memory, pass its ``save_to_disk``
folder). Stamps: the data file's ``size:mtime``; a hash of the bytes for a ``Dataset`` object.

Examples
--------
>>> import pyarrow as pa, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "t.arrow")
>>> table = pa.table({"image": [b"\\x89PNG...", None], "label": ["cat", ""]})
>>> with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
...     writer.write_table(table)
>>> ds = open_arrow_table(Path(path), {})
>>> ds.ids(), [item.label for item in ds.items], ds.items[0].ref.size, ds.items[1].ref
(['0', '1'], ['cat', None], 7, None)
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataSourceError
from ..extras import require
from .items import Dataset, Item, clean_label, file_stamp, make_dataset, text_id
from .manifests import (ID_COLUMN, LABEL_COLUMNS, PATH_COLUMNS, TEXT_COLUMNS, find_column, image_item,
                        manifest_ids)
from .refs import FileRange, TableCell, arrow_reader

log = logging.getLogger("featx")

#: Rows of a ``datasets.Dataset`` object copied per step while listing.
OBJECT_ROWS_PER_STEP = 1000
#: A Parquet row group whose image column is larger than this is read whole by each process
#: that decodes one of its images: say so while listing.
LARGE_PART_BYTES = 512 * 2**20
_HF_METADATA_KEY = b"huggingface"


@dataclass(frozen=True)
class Columns:
    """The columns the items of a table are made of.

    ``form`` is how the content column holds its items: ``"bytes"`` (a binary column),
    ``"struct"`` (Hugging Face's image struct), ``"path"`` (str paths) or ``"text"``.
    ``classes`` are the names of a ``ClassLabel`` label column.
    """

    content: str
    form: str
    label: str | None = None
    classes: tuple[str, ...] | None = None
    id: str | None = None

    @property
    def modality(self) -> str:
        return "text" if self.form == "text" else "image"

    @property
    def image_bytes(self) -> str | None:
        """The struct field holding the bytes (None when the column holds them)."""
        return "bytes" if self.form == "struct" else None


# ------------------------------------------------------------------- the sources
def open_hf_folder(path: Path, columns: dict) -> Dataset:
    """A ``datasets`` ``save_to_disk`` folder (one split)."""
    state = read_json(path / "state.json")
    files = [path / str(entry.get("filename", "")) for entry in state.get("_data_files", [])
             if isinstance(entry, dict)]
    if not files:
        raise DataSourceError(f"Hugging Face dataset folder {path}: state.json lists no data files")
    for file in files:
        if not file.is_file():
            raise DataSourceError(f"Hugging Face dataset folder {path}: the data file {file.name} listed in "
                                  "state.json is missing; save the dataset again")
    features = read_json(path / "dataset_info.json").get("features")
    return arrow_dataset(f"hf-datasets:{path}", f"Hugging Face dataset folder {path}", files, columns, features)


def open_hf_dict_folder(path: Path, columns: dict) -> Dataset:
    """A ``DatasetDict`` folder: refused, naming its splits (each split's folder is a source)."""
    splits = read_json(path / "dataset_dict.json").get("splits") or []
    example = path / str(splits[0]) if splits else path / "train"
    raise DataSourceError(f"{path} is a Hugging Face DatasetDict with the splits {', '.join(map(str, splits))}: "
                          f"pass the folder of one split, e.g. {example}")


def open_arrow_table(path: Path, columns: dict) -> Dataset:
    """An Arrow IPC file or stream (``.arrow``, ``.feather``)."""
    return arrow_dataset(f"arrow:{path}", f"Arrow file {path}", [path], columns, None)


def parquet_holds_images(path: Path) -> bool:
    """Whether a Parquet file is a table of this module (image bytes or Hugging Face features)."""
    schema = read_parquet_schema(path)
    return hf_features(schema) is not None or any(image_form(f.type) in ("bytes", "struct") for f in schema)


def open_parquet_table(path: Path, columns: dict) -> Dataset:
    """A Parquet file with image bytes (or Hugging Face features), read row group by row group."""
    pq = pyarrow_parquet(f"reading the Parquet file {path}")
    schema = read_parquet_schema(path)
    where = f"Parquet file {path}"
    chosen = choose_columns(schema, hf_features(schema) or {}, columns, where)
    rows = TableRows(chosen, where, path.parent)
    try:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            parquet_group_rows(parquet, path, group, chosen, rows)
    except (OSError, ValueError) as e:  # pyarrow's errors derive from them
        raise DataSourceError(f"cannot read {where}: {e}") from None
    return rows.dataset(f"parquet:{path}")


def is_hf_dataset(source) -> bool:
    """Whether ``source`` is an object of ``datasets`` (it is then imported already)."""
    module = sys.modules.get("datasets")
    kinds = tuple(getattr(module, name) for name in ("Dataset", "DatasetDict", "IterableDataset",
                                                     "IterableDatasetDict") if hasattr(module, name))
    return module is not None and isinstance(source, kinds)


def open_hf_object(source, columns: dict) -> Dataset:
    """A ``datasets.Dataset`` object: its rows copied while listing (see the module's notes)."""
    kind = type(source).__name__
    if kind != "Dataset":
        advice = "pass one split, e.g. data['train']" if kind.endswith("Dict") else \
            "load it as a Dataset (not streaming), or save_to_disk and pass the folder"
        raise DataSourceError(f"a datasets.{kind} is not a dataset featx lists: {advice}")
    info = source.info
    parts = (getattr(info, "dataset_name", None) or getattr(info, "builder_name", None),
             getattr(info, "config_name", None), source.split)
    files = source.cache_files  # memory-mapped Arrow files: name it by their folder
    name = "hf-dataset:" + (":".join(str(part) for part in parts if part)
                            or (str(Path(files[0]["filename"]).parent) if files else "in-memory"))
    chosen = choose_columns(source.features.arrow_schema, source.features.to_dict(), columns, name)
    rows = TableRows(chosen, name, Path.cwd())
    view = source.with_format("arrow")
    for start in range(0, len(source), OBJECT_ROWS_PER_STEP):
        batch = view[start:start + OBJECT_ROWS_PER_STEP].combine_chunks()
        refs = None
        if chosen.form in ("bytes", "struct"):
            refs = column_array(batch, chosen.content, chosen.image_bytes).to_pylist()
        rows.add(batch, batch.num_rows, refs, stamps=None if refs is None else [content_stamp(r) for r in refs])
    return rows.dataset(name)


# ------------------------------------------------------------------- reading the files
def arrow_dataset(name: str, where: str, files: list[Path], columns: dict, features: dict | None) -> Dataset:
    """The items of Arrow IPC files (files or streams), one after another."""
    pa = require("pyarrow", "parquet", f"reading the {where}")
    rows = None
    for path in files:
        try:
            source = pa.memory_map(str(path))
            whole = source.read_buffer()
            source.seek(0)
            schema, batches = arrow_reader(pa, source)
            if rows is None:
                chosen = choose_columns(schema, features or hf_features(schema) or {}, columns, where)
                rows = TableRows(chosen, where, path.parent)
            stamp = file_stamp(path)
            for part, batch in enumerate(batches):
                refs = None
                if rows.columns.form in ("bytes", "struct"):
                    binary = column_array(batch, rows.columns.content, rows.columns.image_bytes)
                    refs = (file_ranges(pa, binary, whole, path)
                            or table_cells(binary, str(path), "arrow", part, rows.columns))
                rows.add(batch, batch.num_rows, refs, stamps=[stamp] * batch.num_rows)
        except (pa.ArrowException, OSError) as e:  # pyarrow: not an Arrow file, or a truncated one
            raise DataSourceError(f"cannot read the {where}: {path.name} is not a complete Arrow file ({e})") from e
    return rows.dataset(name)


def file_ranges(pa, binary, whole, path: Path) -> list | None:
    """Where each value of a binary array lies in the memory-mapped file ``whole`` (None for a null
    value); None when the values are not in the file as they are (a compressed file)."""
    data = binary.buffers()[2]
    if data is None or data.size == 0 or not (whole.address <= data.address
                                              and data.address + data.size <= whole.address + whole.size):
        return None
    dtype = np.int64 if pa.types.is_large_binary(binary.type) else np.int32
    offsets = np.frombuffer(binary.buffers()[1], dtype)[binary.offset:binary.offset + len(binary) + 1]
    start = data.address - whole.address
    valid = valid_mask(binary)
    return [FileRange(str(path), int(start + offsets[i]), int(offsets[i + 1] - offsets[i])) if valid[i] else None
            for i in range(len(binary))]


def table_cells(binary, path: str, kind: str, part: int, columns: Columns) -> list:
    """A :class:`TableCell` per non-null value of a part's binary array."""
    valid = valid_mask(binary)
    return [TableCell(path, kind, part, row, columns.content, columns.image_bytes) if valid[row] else None
            for row in range(len(binary))]


def parquet_group_rows(parquet, path: Path, group: int, columns: Columns, rows: "TableRows") -> None:
    """The rows of one row group: its image bytes are not read (unless some are null)."""
    meta = parquet.metadata.row_group(group)
    wanted = [c for c in (columns.label, columns.id) if c]
    if columns.form in ("path", "text"):
        wanted.append(columns.content)
    elif columns.form == "struct":
        wanted.append(f"{columns.content}.path")
    batch = parquet.read_row_group(group, columns=wanted) if wanted else None
    refs = None
    if columns.form in ("bytes", "struct"):
        leaf = columns.content + (".bytes" if columns.form == "struct" else "")
        chunk = next(meta.column(j) for j in range(meta.num_columns) if meta.column(j).path_in_schema == leaf)
        if chunk.total_uncompressed_size > LARGE_PART_BYTES:
            log.warning("row group %d of %s holds %d MiB of images: each process decoding one of them reads it "
                        "whole; write it with smaller row groups (e.g. row_group_size=100) to use less memory",
                        group, path, chunk.total_uncompressed_size >> 20)
        if chunk.statistics is not None and chunk.statistics.null_count == 0:
            refs = [TableCell(str(path), "parquet", group, row, columns.content, columns.image_bytes)
                    for row in range(meta.num_rows)]
        else:  # some rows may have no bytes (a struct with a path): read the column to know which
            whole = parquet.read_row_group(group, columns=[columns.content])
            refs = table_cells(column_array(whole, columns.content, columns.image_bytes), str(path), "parquet",
                               group, columns)
    rows.add(batch, meta.num_rows, refs, stamps=[file_stamp(path)] * meta.num_rows)


def pyarrow_parquet(purpose: str):
    """``pyarrow.parquet``, or :class:`MissingDependencyError` naming pyarrow's extra."""
    require("pyarrow", "parquet", purpose)
    return require("pyarrow.parquet", "parquet", purpose)


def read_parquet_schema(path: Path):
    pq = pyarrow_parquet(f"reading the Parquet file {path}")
    try:
        return pq.read_schema(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid (garbage, not Parquet) is a ValueError
        raise DataSourceError(f"cannot read the Parquet file {path}: {e}; it is not a complete Parquet file: "
                              "write or download it again") from None


def read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataSourceError(f"cannot read {path} ({e}); is the Hugging Face dataset folder complete?") from e
    if not isinstance(content, dict):
        raise DataSourceError(f"{path} holds a JSON {type(content).__name__}, expected an object")
    return content


# ------------------------------------------------------------------- columns and rows
def hf_features(schema) -> dict | None:
    """The Hugging Face features a table's schema carries (None when it has none)."""
    raw = (schema.metadata or {}).get(_HF_METADATA_KEY)
    try:
        features = json.loads(raw)["info"]["features"] if raw else None
    except (ValueError, KeyError, TypeError):
        return None
    return features if isinstance(features, dict) else None


def image_form(arrow_type) -> str | None:
    """How a column of this Arrow type holds images: "bytes", "struct", "path", or None."""
    import pyarrow as pa

    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytes"
    if pa.types.is_struct(arrow_type):
        index = arrow_type.get_field_index("bytes")
        if index >= 0 and image_form(arrow_type.field(index).type) == "bytes":
            return "struct"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "path"
    return None


def choose_columns(schema, features: dict, options: dict, where: str) -> Columns:
    """The content, label and id columns of a table (see the module's notes)."""
    names = list(schema.names)
    text_column, path_column = options.get("text_column"), options.get("path_column")
    if text_column is not None and path_column is not None:
        raise DataSourceError(f"give either path_column (images) or text_column (texts) for {where}, not both")
    strings = [n for n in names if image_form(schema.field(n).type) == "path"]
    if path_column is not None:
        content = find_column(names, path_column, (), "path_column", where)
        form = image_form(schema.field(content).type)
        if form is None:
            raise DataSourceError(f"path_column={content!r} of {where} holds {schema.field(content).type}, not images: "
                                  "expected bytes, an image struct {bytes, path} or str paths")
    elif text_column is not None:
        content, form = find_column(names, text_column, (), "text_column", where), "text"
    else:
        declared = [n for n in names if (features.get(n) or {}).get("_type") == "Image"
                    and image_form(schema.field(n).type) == "struct"]
        held = [n for n in names if image_form(schema.field(n).type) in ("bytes", "struct")]
        content = (declared or held or [None])[0]
        form = image_form(schema.field(content).type) if content else None
        if content is None and (content := find_column(strings, None, PATH_COLUMNS, "path_column", where)):
            form = "path"
        if content is None and (content := find_column(strings, None, TEXT_COLUMNS, "text_column", where)):
            form = "text"
        if content is None:
            found = ", ".join(f"{n!r} ({schema.field(n).type})" for n in names)
            raise DataSourceError(
                f"{where} has no image or text column; columns found: {found}. Name one with path_column= / "
                f"--path-column (images: bytes, an image struct or paths) or text_column= / --text-column (texts)")
    chosen_id = find_column(names, options.get("id_column"), (ID_COLUMN,), "id_column", where, exact=True)
    label = options.get("label_column")
    if label is not None:
        find_column(names, label, (), "label_column", where)
    else:
        class_labels = [n for n in names if (features.get(n) or {}).get("_type") == "ClassLabel"
                        and n not in (content, chosen_id)]
        label = class_labels[0] if class_labels else find_column(
            names, None, LABEL_COLUMNS, "label_column", where, exclude={content, chosen_id})
    feature = (features.get(label) or {}) if label else {}
    inner = feature.get("feature") if feature.get("_type") in ("Sequence", "List", "LargeList") else None
    if isinstance(inner, list) and len(inner) == 1:  # datasets writes Sequence(ClassLabel) as [ClassLabel] too
        inner = inner[0]
    feature = inner if isinstance(inner, dict) and inner.get("_type") == "ClassLabel" else feature
    classes = feature.get("names") if feature.get("_type") == "ClassLabel" else None
    return Columns(content, form, label, tuple(map(str, classes)) if classes else None, chosen_id)


def column_array(batch, name: str, field_name: str | None = None):
    """A column of a record batch or table as one array (``field_name``: that struct field)."""
    import pyarrow as pa

    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.field(field_name) if field_name is not None else column


def valid_mask(array) -> np.ndarray:
    return ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), bool)


def content_stamp(data: bytes | None) -> str | None:
    """A stamp for in-memory bytes: the first 16 hex digits of their sha1."""
    return None if data is None else "sha1:" + hashlib.sha1(data).hexdigest()[:16]


def table_label(value) -> str | None:
    """A label as str; None for a missing or blank one."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, (list, tuple)):  # a label set: make_dataset reads it, and names the item when ill-formed
        return value
    return clean_label(value)


@dataclass
class TableRows:
    """The rows of a table, added part by part, then made items."""

    columns: Columns
    where: str
    base: Path  # relative image paths resolve against it
    contents: list = field(default_factory=list)  # refs, texts, or (for paths) the paths as written
    paths: list = field(default_factory=list)  # the path as written when the item is a file, else None
    stamps: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    raw_ids: list = field(default_factory=list)

    def add(self, batch, size: int, refs: list | None, stamps: list | None) -> None:
        """One part: ``refs`` are the image references (None where a row has no bytes)."""
        c = self.columns
        if c.form in ("text", "path"):
            values = column_array(batch, c.content).to_pylist()
            paths = values if c.form == "path" else [None] * size
            refs, stamps = values, [None] * size
        elif c.form == "struct":
            written = column_array(batch, c.content, "path").to_pylist() if batch is not None else [None] * size
            paths = [p if ref is None else None for ref, p in zip(refs, written)]
        else:
            paths = [None] * size
        self.contents += refs
        self.paths += paths
        self.stamps += stamps
        self.labels += self.label_values(column_array(batch, c.label).to_pylist() if c.label else [None] * size)
        if c.id:
            self.raw_ids += column_array(batch, c.id).to_pylist()

    def label_values(self, values: list) -> list[str | None]:
        classes = self.columns.classes
        if classes is None:
            return [table_label(v) for v in values]
        labels = []
        for row, value in enumerate(values, start=len(self.labels)):
            if isinstance(value, (list, tuple)):  # Sequence(ClassLabel): a label set of class indices
                labels.append([self.class_name(row, v) for v in value])
            elif value is None or value == -1:
                labels.append(None)
            elif isinstance(value, (int, np.integer)) and 0 <= value < len(classes):
                labels.append(classes[value])
            else:
                raise DataSourceError(
                    f"label column {self.columns.label!r} of {self.where}: row {row} holds {value!r}, not a class of "
                    f"its ClassLabel (0..{len(classes) - 1}, or -1 for none)")
        return labels

    def class_name(self, row: int, value) -> str:
        classes = self.columns.classes
        if isinstance(value, (int, np.integer)) and 0 <= value < len(classes):
            return classes[value]
        raise DataSourceError(f"label column {self.columns.label!r} of {self.where}: row {row} holds {value!r} in its "
                              f"label set, not a class of its Sequence(ClassLabel) (0..{len(classes) - 1})")

    def dataset(self, name: str) -> Dataset:
        c = self.columns
        if not self.contents:
            raise DataSourceError(f"{self.where} holds no rows")
        fallback = ([text_id(t) for t in self.contents] if c.form == "text"
                    else [str(row) for row in range(len(self.contents))])
        ids = manifest_ids({c.id: self.raw_ids} if c.id else {}, c.id, self.where, fallback=fallback)
        items = [image_item(self.base, i, path, label) if path is not None
                 else Item(id=i, ref=ref, label=label, stamp=stamp)
                 for i, ref, path, stamp, label in zip(ids, self.contents, self.paths, self.stamps, self.labels)]
        return make_dataset(name, c.modality, items)
