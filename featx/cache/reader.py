"""Reading one backbone's cached rows in dataset order: all at once, in chunks, or any rows.

::

    FeatureReader(cache, model)        scans the shards once (checksums, one shard in memory at a time)
      .ids, .labels                    the listing's rows that have embeddings, in dataset order
      .read(positions) -> float32      any rows, grouped by shard and read as contiguous runs
      .chunks(rows)                    consecutive slices in dataset order
      .read_all()                      the whole matrix (what load_features returns)

The guarantee: memory grows with the rows asked for, never with the cache. A reader holds the
row map (shard and row of each position: 12 bytes a row) and the ids and labels (strings), but
no embeddings; a float16 cache is read as float16 and converted a chunk at a time.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from ..errors import CacheCorruptError, CacheError, ParameterError, SpecError
from ..specs.layers import FINAL, check_layer
from ..validation import check_bool, check_int, check_path, check_str
from .store import CacheStore

log = logging.getLogger("featx")

#: Rows per chunk of :func:`iter_features` by default (1280-d float32: 40 MiB).
DEFAULT_CHUNK = 8192


class FeatureReader:
    """Random and sequential access to one backbone's cached rows, in dataset order.

    Parameters
    ----------
    cache : path
        A cache directory written by :func:`featx.extraction.extract`.
    model : str, optional
        Backbone name; may be omitted when the cache holds a single backbone.
    strict : bool
        Raise instead of warning when items are not extracted yet or changed on disk.
    layer : str, optional
        An intermediate layer the backbone's export carries (``featx export NAME --layers ...``):
        its own feature set, read instead of the final features (None or ``"final"``).

    Attributes
    ----------
    model : str
    layer : str
        ``"final"`` or the intermediate layer read.
    layers : dict
        The intermediate layers the cache holds for this backbone, ``{name: dim}``.
    n_rows, dim : int
    dtype : numpy.dtype
        Storage type on disk (float32 or float16); every read returns float32.
    ids : ndarray of str (object)
        The items that have features; the others are counted in :attr:`missing` (and warned about).
    missing : dict
        Why the other items of the listing have no rows: ``failed`` (``{id: reason}``, recorded by
        ``on_error="skip"``), ``not_extracted`` and ``changed`` (on disk since extraction) counts.
    labels : ndarray of str (object) or None
        None when no item of the dataset has a label; None for an unlabelled item otherwise.

    Raises
    ------
    CacheError
        Not a cache, no such backbone or layer, no listing (or, with ``strict``, incomplete).
    CacheCorruptError
        A committed shard is damaged.

    Examples
    --------
    >>> import featx
    >>> _ = featx.extract("builtin:digits:test", tiny_onnx, "digits.cache")
    >>> reader = FeatureReader("digits.cache")
    >>> reader.shape, reader.read([449, 0]).shape
    ((450, 8), (2, 8))
    """

    def __init__(self, cache, model: str | None = None, *, strict: bool = False, layer: str | None = None):
        _check_args(cache, model, strict, "FeatureReader", layer)
        store = CacheStore(cache)
        store.check_readable()
        name = store.resolve_model(model)
        record = store.read_model(name) or {}
        fingerprint = record.get("fingerprint", {})
        self.layers = dict(fingerprint.get("layers", {}))
        try:
            self.layer = check_layer(layer, self.layers, f"cache {store.root} ({name})")
        except SpecError as e:
            raise CacheError(str(e)) from None
        self._dataset = "embeddings" if self.layer == FINAL else f"layers/{self.layer}"
        listing = store.read_listing()
        if listing is None:
            raise CacheError(f"cache {store.root} has no dataset listing; run `featx extract` first")
        state = store.scan(name)
        if state.damaged:
            paths = ", ".join(str(p) for p, _ in state.damaged[:3])
            raise CacheCorruptError(f"cache {store.root}: damaged shard(s) {paths}; run `featx verify {store.root}` "
                                    "and `featx extract` again to recompute them")
        positions, shard_of, row_of = [], [], []
        failed: dict[str, str] = {}
        missing = stale = 0
        for pos, (item_id, stamp) in enumerate(zip(listing.ids, listing.stamps)):
            hit = state.rows.get(item_id)
            if hit is None:
                failure = state.failed.get(item_id)
                if failure is None:
                    missing += 1
                elif failure[0] != stamp:
                    stale += 1
                else:
                    failed[item_id] = failure[1]
                continue
            if hit[2] != stamp:
                stale += 1
                continue
            positions.append(pos)
            shard_of.append(hit[0])
            row_of.append(hit[1])
        self.missing = {"failed": failed, "not_extracted": missing, "changed": stale}
        if failed or missing or stale:
            message = _missing_message(store.root, name, len(listing.ids), failed, missing, stale)
            if strict and (missing or stale):
                raise CacheError(message)
            log.warning(message)
        idx = np.asarray(positions, dtype=np.int64)
        self.root = store.root
        self.model = name
        self.dim = int(fingerprint.get("dim", 0) if self.layer == FINAL else self.layers[self.layer])
        self.dtype = np.dtype(record.get("dtype", "float32"))
        self.ids = listing.ids[idx] if len(idx) else np.empty(0, dtype=object)
        self.labels = None if listing.labels is None else (
            listing.labels[idx] if len(idx) else np.empty(0, dtype=object))
        self._paths: list[Path] = list(state.shards)
        self._shard = np.asarray(shard_of, dtype=np.int32)
        self._row = np.asarray(row_of, dtype=np.int64)

    @property
    def n_rows(self) -> int:
        return len(self._row)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.dim)

    def __len__(self) -> int:
        return self.n_rows

    def read(self, positions) -> np.ndarray:
        """Rows at ``positions`` (indices into :attr:`ids`, any order, repeats allowed) as float32.

        Each shard is opened once per call and read as contiguous runs of rows.
        """
        positions = self._positions(positions)
        out = np.empty((len(positions), self.dim), np.float32)
        shards, rows = self._shard[positions], self._row[positions]
        order = np.lexsort((rows, shards))
        bounds = np.flatnonzero(np.diff(shards[order])) + 1
        for group in np.split(order, bounds) if len(order) else []:
            path = self._paths[int(shards[group[0]])]
            try:
                with h5py.File(path, "r") as f:
                    ds = f[self._dataset]
                    _read_runs(ds, rows[group], group, out)
            except (OSError, KeyError) as e:
                raise CacheCorruptError(f"cache {self.root}: cannot read {path} ({e}); run `featx verify "
                                        f"{self.root}` and `featx extract` again") from None
        return out

    def _positions(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.n_rows):
            raise ParameterError(f"The 'positions' parameter must hold ints in [0, {self.n_rows}). "
                                 f"Got values from {positions.min()} to {positions.max()} instead.")
        return positions

    def take(self, positions) -> "FeatureReader":
        """A reader of the rows at ``positions`` only (indices into :attr:`ids`, in the order given).

        Examples
        --------
        >>> import featx
        >>> _ = featx.extract("builtin:digits:test", tiny_onnx, "digits.cache")
        >>> reader = FeatureReader("digits.cache")
        >>> few = reader.take([2, 0])
        >>> few.ids.tolist() == reader.ids[[2, 0]].tolist(), bool((few.read([0]) == reader.read([2])).all())
        (True, True)
        """
        positions = self._positions(positions)
        view = copy.copy(self)
        view.ids = self.ids[positions]
        view.labels = None if self.labels is None else self.labels[positions]
        view._shard, view._row = self._shard[positions], self._row[positions]
        return view

    def chunks(self, rows: int = DEFAULT_CHUNK) -> Iterator[tuple[slice, np.ndarray]]:
        """``(slice of positions, float32 rows)`` over the whole listing, in dataset order."""
        _check_chunk(rows)
        for start in range(0, self.n_rows, rows):
            stop = min(start + rows, self.n_rows)
            yield slice(start, stop), self.read(np.arange(start, stop))

    def read_all(self) -> np.ndarray:
        """The whole matrix, float32 (n_rows, dim), filled a chunk at a time."""
        X = np.empty((self.n_rows, self.dim), np.float32)
        for where, rows in self.chunks():
            X[where] = rows
        return X


def _missing_message(root, name: str, n_items: int, failed: dict, missing: int, stale: int) -> str:
    """How many items have no features and why, with what to do about it."""
    parts, advice = [], []
    if failed:
        shown = "; ".join(f"{item_id}: {reason}" for item_id, reason in list(failed.items())[:3])
        parts.append(f"{len(failed)} failed extraction ({shown}{'; ...' if len(failed) > 3 else ''})")
        advice.append(f"`featx info {root}` lists the failures, and the next `featx extract` retries those that "
                      "were not the item's content (an unreadable file)")
    if missing:
        parts.append(f"{missing} not extracted yet")
    if stale:
        parts.append(f"{stale} changed on disk since extraction")
    if missing or stale:
        advice.append("run `featx extract` again to complete it")
    return (f"cache {root}: {len(failed) + missing + stale} of {n_items} items have no features of {name!r}: "
            f"{', '.join(parts)}; {'; '.join(advice)}")


def _read_runs(ds, rows: np.ndarray, targets: np.ndarray, out: np.ndarray) -> None:
    """Copy ``ds[rows]`` into ``out[targets]``; ``rows`` sorted; one slice read per contiguous run."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run_rows, run_targets in zip(np.split(rows, breaks), np.split(targets, breaks)):
        lo, hi = int(run_rows[0]), int(run_rows[-1]) + 1
        block = ds[lo:hi]
        out[run_targets] = block[run_rows - lo]


def _check_args(cache, model, strict, owner: str, layer=None) -> None:
    check_path(cache, "cache", owner)
    check_str(model, "model", owner, optional=True)
    check_bool(strict, "strict", owner)
    check_str(layer, "layer", owner, optional=True)


def _check_chunk(rows) -> None:
    check_int(rows, "chunk", "iter_features", low=1)


def iter_features(cache, model: str | None = None, *, chunk: int = DEFAULT_CHUNK, strict: bool = False,
                  layer: str | None = None):
    """Cached embeddings in dataset order, ``chunk`` rows at a time: ``(X, y, ids)`` per chunk.

    Memory holds one chunk (float32, ``chunk x dim``) plus the ids and labels; a float16
    cache stays float16 on disk and is converted a chunk at a time.

    Parameters
    ----------
    cache, model, strict, layer :
        As in :class:`FeatureReader`.
    chunk : int
        Rows per chunk (default 8192); the last chunk may be shorter.

    Yields
    ------
    X : ndarray (rows, dim), float32
    y : ndarray of str (object), or None when unlabelled
    ids : ndarray of str (object)

    Examples
    --------
    >>> import featx
    >>> _ = featx.extract("builtin:digits:test", tiny_onnx, "digits.cache")
    >>> [len(X) for X, y, ids in iter_features("digits.cache", chunk=200)]
    [200, 200, 50]
    """
    _check_args(cache, model, strict, "iter_features", layer)
    _check_chunk(chunk)
    reader = FeatureReader(cache, model, strict=strict, layer=layer)
    for where, X in reader.chunks(chunk):
        yield X, None if reader.labels is None else reader.labels[where], reader.ids[where]


def load_features(cache, model: str | None = None, *, strict: bool = False, layer: str | None = None):
    """Cached embeddings in the dataset's order (parameters as in :class:`FeatureReader`): the final
    features, or those of an intermediate ``layer`` the export carries (each layer is its own feature set).

    Returns
    -------
    X : ndarray of shape (n, d), float32
    y : ndarray of str (object) of shape (n,), or None when the dataset is unlabelled
    ids : ndarray of str (object) of shape (n,)
        Items that failed extraction (recorded with ``on_error="skip"``) are left out.

    See Also
    --------
    iter_features : the same rows a chunk at a time, for caches larger than memory.

    Examples
    --------
    >>> import featx
    >>> _ = featx.extract("builtin:digits:test", tiny_onnx, "digits.cache")
    >>> X, y, ids = load_features("digits.cache", model="tiny-cnn")
    >>> X.shape, X.dtype, y[:3].tolist(), ids[:2].tolist()
    ((450, 8), dtype('float32'), ['1', '4', '8'], ['digits/0021', 'digits/0024'])
    """
    _check_args(cache, model, strict, "load_features", layer)
    reader = FeatureReader(cache, model, strict=strict, layer=layer)
    return reader.read_all(), reader.labels, reader.ids
