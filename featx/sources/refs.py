"""References to encoded images stored inside bigger files, read when the item is decoded.

A source whose images live inside another file (a WebDataset tar shard, an Arrow or Parquet
table) gives each item one of these as its ``ref`` instead of the bytes: a listing stays a few
hundred bytes per item however large the shards, and a reference is small and picklable, so it
travels to ``extract --workers`` processes and Dask workers, which read it where they run.

- :class:`FileRange`: bytes stored as they are at a place of a file: a member of an uncompressed
  tar, a value of an uncompressed Arrow file (what ``datasets``' ``save_to_disk`` writes). One
  ``seek`` and one ``read``.
- :class:`TableCell`: a value of a compressed table: a Parquet row group or an Arrow record
  batch. The part's column is read once and kept in a small per-process cache
  (:data:`CACHED_PARTS` parts), so items read in order read each part once: memory is bounded
  by the size of a part (``datasets`` writes Parquet row groups of at most 100 MB).

:func:`read_bytes` reads either; ``OSError`` when the file is gone, shorter than the reference
says, or the table cannot be read (the decoder turns it into the item's failure).

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "blob")
>>> with open(path, "wb") as f:
...     _ = f.write(b"headerPNGDATAtrailer")
>>> read_bytes(FileRange(path, 6, 7))
b'PNGDATA'
>>> read_bytes(FileRange(path, 15, 10))
Traceback (most recent call last):
...
OSError: ... ends before the 10 bytes at offset 15 (got 5): the file is truncated or changed since it was listed
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import InputError
from ..extras import require

#: Table parts (a Parquet row group's column, an Arrow record batch's) kept per process.
CACHED_PARTS = 3  # two decoding threads, each in a part, one crossing into the next


@dataclass(frozen=True)
class FileRange:
    """``size`` bytes at ``offset`` of the file ``path``, stored as they are."""

    path: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.path} (bytes {self.offset}..{self.offset + self.size})"


@dataclass(frozen=True)
class TableCell:
    """The value at ``row`` of ``part`` (row group / record batch) of ``column`` of a table file.

    ``kind`` is ``"parquet"`` or ``"arrow"`` (an Arrow IPC file or stream); ``field`` names the
    struct field holding the bytes (``"bytes"`` in Hugging Face's image struct), or is None when
    the column holds the bytes.
    """

    path: str
    kind: str
    part: int
    row: int
    column: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.path} ({self.kind} part {self.part}, row {self.row}, column {self.column!r})"


@dataclass(frozen=True)
class BadMember:
    """A sample whose listing found it bad (e.g. a WebDataset label member that is not UTF-8 or too large).

    Reading it raises :class:`~featx.errors.InputError` with ``reason``, so the item follows
    ``on_error`` like any bad item instead of refusing the whole source.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return self.path


def is_reference(ref) -> bool:
    """Whether ``ref`` is one of the references above (read with :func:`read_bytes`)."""
    return isinstance(ref, (FileRange, TableCell, BadMember))


def read_bytes(ref: FileRange | TableCell) -> bytes | None:
    """The bytes a reference points at (None for a null table cell).

    Raises
    ------
    OSError
        The file is missing or unreadable, ends early, or its table cannot be read.
    """
    if isinstance(ref, BadMember):
        raise InputError(ref.reason)
    if isinstance(ref, FileRange):
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.size)
        if len(data) != ref.size:
            raise OSError(f"{ref.path} ends before the {ref.size} bytes at offset {ref.offset} (got {len(data)}): "
                          "the file is truncated or changed since it was listed")
        return data
    column = _PARTS.get(ref)
    if ref.row >= len(column):
        raise OSError(f"{ref} is past the end of its part ({len(column)} rows): the file changed since it was listed")
    value = column[ref.row]
    return None if not value.is_valid else value.as_py()


def read_table_part(path: str, kind: str, part: int, column: str):
    """One column of one part of a table file, as a pyarrow array (read fully)."""
    pa = require("pyarrow", "parquet", f"reading {path}")
    try:
        if kind == "parquet":
            pq = require("pyarrow.parquet", "parquet", f"reading {path}")
            return pq.ParquetFile(path).read_row_group(part, columns=[column]).column(0).combine_chunks()
        _, batches = arrow_reader(pa, pa.memory_map(path))
        for number, batch in enumerate(batches):
            if number == part:
                return batch.column(column)
        raise IndexError(f"the file has no record batch {part}")
    except (pa.ArrowException, KeyError, IndexError) as e:  # bad file, missing column or part
        raise OSError(f"cannot read part {part} of column {column!r} of {path}: {e}") from e


def arrow_reader(pa, source):
    """``(schema, record batches)`` of an Arrow IPC file (random-access format) or stream.

    ``pa`` is the pyarrow module; ``source`` a pyarrow input file at its start.
    """
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid:  # not the file format: the stream format (what datasets writes)
        source.seek(0)
        stream = pa.ipc.open_stream(source)
        return stream.schema, iter(stream)
    return reader.schema, (reader.get_batch(part) for part in range(reader.num_record_batches))


class _PartCache:
    """The last :data:`CACHED_PARTS` table parts read in this process (thread-safe).

    Keyed by the file's size and modification time too, so a rewritten file is read again.
    """

    def __init__(self, size: int):
        self.size = size
        self.parts: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, ref: TableCell):
        st = os.stat(ref.path)
        key = (ref.path, st.st_size, st.st_mtime_ns, ref.kind, ref.part, ref.column, ref.field)
        with self.lock:
            if key in self.parts:
                self.parts.move_to_end(key)
                return self.parts[key]
        column = read_table_part(ref.path, ref.kind, ref.part, ref.column)
        if ref.field is not None:
            column = column.field(ref.field)
        with self.lock:
            self.parts[key] = column
            while len(self.parts) > self.size:
                self.parts.popitem(last=False)
        return column


_PARTS = _PartCache(CACHED_PARTS)
