"""Immutable shard files: one committed unit of extraction work.

A shard holds the embeddings of the items it covers (``ids``, ``stamps``, ``embeddings``),
for a backbone exported with intermediate layers each layer's rows as a feature set of its own
(``layers/<name>``, aligned with ``ids``), and the items that failed (``failed/ids``,
``failed/stamps``, ``failed/reasons``, ``failed/kinds``: ``"content"`` when the item's bytes are
bad, kept while its stamp is unchanged, ``"retry"`` when it could not be read, tried again by the
next extraction), with a checksum over all of it in its attributes. It is written to a temporary
name, fsynced and renamed into place: it either exists whole or not at all.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..files import write_atomically
from .layout import CHUNK_BYTES

STR = h5py.string_dtype("utf-8")
#: Kinds of recorded failure: the item's content (kept while its stamp is unchanged), or retried.
FAILED_CONTENT, FAILED_RETRY = "content", "retry"


@dataclass
class ShardData:
    """The content of one shard (embedded rows and failures)."""

    ids: list[str]
    stamps: list[str]
    embeddings: np.ndarray
    failed_ids: list[str] = field(default_factory=list)
    failed_stamps: list[str] = field(default_factory=list)
    failed_reasons: list[str] = field(default_factory=list)
    failed_kinds: list[str] | None = None  # FAILED_CONTENT / FAILED_RETRY per failure; None: all retried
    layers: dict = field(default_factory=dict)  # intermediate layer -> (len(ids), d_layer)

    def __len__(self) -> int:
        return len(self.ids) + len(self.failed_ids)

    def checksum(self) -> str:
        parts = [self.ids, self.stamps, self.failed_ids, self.failed_stamps, self.failed_reasons]
        parts += [] if self.failed_kinds is None else [self.failed_kinds]
        # no layers for a plain backbone: its checksums are as they were
        return checksum(parts, self.embeddings, {name: self.layers[name] for name in sorted(self.layers)})


def checksum(parts, array: np.ndarray | None = None, named_arrays: dict | None = None) -> str:
    """sha256 (hex) of an array's bytes, lists of strings (each list joined, in order) and named arrays.

    Examples
    --------
    >>> checksum([["a", "b"], ["c"]]) == checksum([["a", "b"], ["c"]]) != checksum([["a"], ["b", "c"]])
    True
    """
    h = hashlib.sha256()
    if array is not None:
        h.update(np.ascontiguousarray(array).tobytes())
    for part in parts:
        h.update("\x1f".join(part).encode())
        h.update(b"\x1e")
    for name, values in (named_arrays or {}).items():
        h.update(f"layer {name}".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def chunk_rows(dim: int, itemsize: int) -> int:
    return max(1, CHUNK_BYTES // max(1, dim * itemsize))


def write_shard(final: Path, data: ShardData, *, model: str, fingerprint_id: str, dtype: str = "float32",
                durable: bool = True) -> Path:
    """Write ``data`` to ``final`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    stored = as_stored(data, dtype)
    emb, layers = stored.embeddings, stored.layers

    def fill(f) -> None:
        for name, rows in (("embeddings", emb), *((f"layers/{k}", v) for k, v in layers.items())):
            n, dim = rows.shape
            chunks = (min(n, chunk_rows(dim, rows.itemsize)), dim) if n else None
            f.create_dataset(name, data=rows, chunks=chunks)
        _strings_dataset(f, "ids", stored.ids)
        _strings_dataset(f, "stamps", stored.stamps)
        _strings_dataset(f, "failed/ids", stored.failed_ids)
        _strings_dataset(f, "failed/stamps", stored.failed_stamps)
        _strings_dataset(f, "failed/reasons", stored.failed_reasons)
        if stored.failed_kinds is not None:  # without kinds every failure is retried
            _strings_dataset(f, "failed/kinds", stored.failed_kinds)
        f.attrs["model"] = model
        f.attrs["fingerprint_id"] = fingerprint_id
        f.attrs["dtype"] = dtype
        f.attrs["checksum"] = stored.checksum()
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    return write_h5_atomically(Path(final), fill, durable=durable)


def as_stored(data: ShardData, dtype: str) -> ShardData:
    """``data`` cast to the storage ``dtype``; a row that is not finite *as stored* becomes a failure.

    A float32 row can be finite and still overflow float16 (above 65504): such an item is recorded
    as a failure of its content (with a reason that says what to do), never stored as ``inf``.

    Examples
    --------
    >>> d = ShardData(["a", "b"], ["s", "s"], np.array([[1.0, 2.0], [7e4, 0.0]], np.float32))
    >>> s = as_stored(d, "float16")
    >>> s.ids, s.failed_ids, s.embeddings.dtype
    (['a'], ['b'], dtype('float16'))
    """
    with np.errstate(over="ignore"):  # an overflow is what this finds
        emb = np.asarray(data.embeddings, dtype=dtype)
        layers = {name: np.asarray(rows, dtype=dtype) for name, rows in data.layers.items()}
    finite = np.isfinite(emb).all(axis=1) if emb.ndim == 2 else np.ones(len(data.ids), bool)
    for rows in layers.values():
        finite &= np.isfinite(rows).all(axis=1)
    if finite.all():
        return ShardData(data.ids, data.stamps, emb, data.failed_ids, data.failed_stamps, data.failed_reasons,
                         data.failed_kinds, layers)
    bad = np.flatnonzero(~finite)
    reason = (f"its features are not finite when stored as {dtype} (a value beyond the type's range, "
              f"{float(np.finfo(dtype).max):g}); extract with dtype float32 to keep it")
    kinds = data.failed_kinds if data.failed_kinds is not None else [FAILED_RETRY] * len(data.failed_ids)
    return ShardData([data.ids[i] for i in np.flatnonzero(finite)], [data.stamps[i] for i in np.flatnonzero(finite)],
                     emb[finite], list(data.failed_ids) + [data.ids[i] for i in bad],
                     list(data.failed_stamps) + [data.stamps[i] for i in bad],
                     list(data.failed_reasons) + [reason] * len(bad), list(kinds) + [FAILED_CONTENT] * len(bad),
                     {name: rows[finite] for name, rows in layers.items()})


def _strings_dataset(f, name: str, values) -> None:
    f.create_dataset(name, data=np.array(list(values), dtype=object), dtype=STR)


def read_shard(path: Path, *, embeddings: bool = True) -> tuple[ShardData, dict]:
    """Read a shard: ``(data, attrs)``. With ``embeddings=False`` the arrays are left empty (cheap scan)."""
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        emb = f["embeddings"][()] if embeddings else np.empty((0, 0), np.float32)
        names = list(f["layers"]) if "layers" in f else []
        data = ShardData(
            ids=_strings(f["ids"]),
            stamps=_strings(f["stamps"]),
            embeddings=emb,
            failed_ids=_strings(f["failed/ids"]),
            failed_stamps=_strings(f["failed/stamps"]),
            failed_reasons=_strings(f["failed/reasons"]),
            failed_kinds=_strings(f["failed/kinds"]) if "failed/kinds" in f else None,
            layers={name: f["layers"][name][()] for name in names} if embeddings else {},
        )
        rows = [f["embeddings"].shape[0], *(f["layers"][name].shape[0] for name in names)]
        if any(n != len(data.ids) for n in rows) or len(data.stamps) != len(data.ids):
            raise ValueError(f"{len(data.ids)} ids but {rows} rows of embeddings and layers")
    return data, attrs


def _strings(ds) -> list[str]:
    return [s for s in ds.asstr()[()]] if ds.shape[0] else []


def write_h5_atomically(final: Path, fill, durable: bool = True) -> Path:
    """Build an HDF5 file in memory with ``fill(h5py.File)``, then publish it with :func:`write_atomically`.

    HDF5 never writes to disk itself: a full disk (ENOSPC) is met by a plain ``write``, which
    raises a clean ``OSError``, rather than inside the HDF5 library, which can crash the process.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=("earliest", "v110")) as f:
        fill(f)
    return write_atomically(final, lambda tmp: tmp.write_bytes(buffer.getbuffer()), durable=durable)
