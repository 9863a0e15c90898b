"""The unit of extraction work: a shard of items -> its embeddings and failures, computed where a backbone is.

::

    coordinator (holds the cache lock)     worker (this process, a pool process, a Dask worker)
    ShardJob (model file, fingerprint...)
    ShardTask (key, items)  ─────────────> ShardJob.backbone(): loaded once per process, the
                                             model file as *this* node sees it, checked against the
                                             coordinator's fingerprint
                                           embedding: decoding threads ahead of inference
    commits ShardResult.data by key  <──── ShardResult (key, data, providers, worker, ...)

A shard's key is a hash of the coordinator's fingerprint and of the shard's ids and stamps:
the same items of the same files under the same model give the same key, so a result
delivered twice (a straggler's copy, a retry) is committed once. Nothing here touches the
cache: :func:`featx.extraction.extract` commits.

A worker never raises for a bad item: with ``on_error="raise"`` the shard stops at it and the
result says which (:attr:`ShardResult.bad_item`), so an executor's retries (Dask's) repeat
only transient failures, never a deterministic one. A worker whose backbone differs from the
coordinator's returns :attr:`ShardResult.error` instead of features.

Examples
--------
>>> import featx
>>> from featx.extraction.shard import ShardJob, ShardTask, compute_shard
>>> bb = featx.load_backbone(tiny_onnx)
>>> items = featx.open_dataset("builtin:digits", limit=20).items
>>> job = ShardJob.of(bb, batch_size=8, on_error="raise")
>>> task = ShardTask.of(bb.fingerprint_id, items[:10])
>>> result = compute_shard(job, task)
>>> len(result.data.ids), result.key == task.key, result.providers
(10, True, ('CPUExecutionProvider',))
>>> same, other = ShardTask.of(bb.fingerprint_id, items[:10]), ShardTask.of(bb.fingerprint_id, items[10:])
>>> same.key == task.key, other.key == task.key
(True, False)
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..cache import FAILED_CONTENT, FAILED_RETRY, ShardData
from ..engine.backbone import Backbone
from ..engine.embedding import Embedded, Failure, prepare_batches, run_batches
from ..errors import CacheMismatchError, FeatxError, WorkerError
from ..sources import Item, utf8_text

__all__ = ["ShardBuffer", "ShardJob", "ShardResult", "ShardTask", "batches", "compute_shard", "embed_chunks",
           "shard_key", "stopping_failure", "this_process"]


# ------------------------------------------------------------------- embedding a shard
def batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def embed_chunks(backbone: Backbone, items: Sequence[Item], *, batch_size: int, on_error: str,
                 decode_workers: int) -> Iterator[tuple[list[Item], Embedded]]:
    """``(chunk, embedded)`` per batch of items, in order; ``decode_workers`` threads prepare batches ahead.

    Failures are data: with ``on_error="raise"`` the last pair may carry the failure that stopped
    the run (:func:`stopping_failure`); the caller says what it means (the in-process coordinator
    raises :class:`~featx.errors.ItemFailedError`, a worker reports :attr:`ShardResult.bad_item`).
    """
    chunks = list(batches(items, batch_size))  # references to the items: small beside what the batches hold
    prepared = prepare_batches(backbone, (([i.ref for i in c], [i.id for i in c]) for c in chunks),
                               on_error=on_error, workers=decode_workers)
    return zip(chunks, run_batches(backbone, prepared, on_error=on_error))


def stopping_failure(embedded: Embedded, on_error: str) -> Failure | None:
    """The failure that stops a run with ``on_error="raise"`` (None: go on; its rows are good)."""
    return embedded.failures[0] if on_error == "raise" and embedded.failures else None


class ShardBuffer:
    """Embedded rows and failures of items, by item, until :meth:`take` makes them a :class:`ShardData`."""

    def __init__(self, dim: int, layers=None):
        self.dim = dim
        self.layers = dict(layers or {})  # intermediate layer -> dim: each kept as its own feature set
        self.items: list[Item] = []
        self.parts: list[Embedded] = []
        self.failures: list[tuple[Item, Failure]] = []
        self.truncated = 0

    def __len__(self):
        return len(self.items) + len(self.failures)

    def add(self, chunk: list[Item], embedded: Embedded) -> None:
        self.items += [chunk[p] for p in embedded.positions]
        if len(embedded.positions):
            self.parts.append(embedded)
        self.failures += [(chunk[f.position], f) for f in embedded.failures]
        self.truncated += embedded.truncated

    def take(self) -> ShardData:
        rows = Embedded.concat(self.parts, self.dim, self.layers)
        data = ShardData(
            ids=[i.id for i in self.items], stamps=[i.stamp or "" for i in self.items], embeddings=rows.rows,
            failed_ids=[i.id for i, _ in self.failures], failed_stamps=[i.stamp or "" for i, _ in self.failures],
            failed_reasons=[utf8_text(f.reason) for _, f in self.failures],  # may quote a path that is not UTF-8
            failed_kinds=[FAILED_RETRY if f.retry else FAILED_CONTENT for _, f in self.failures],
            layers=rows.layers,
        )
        self.items, self.parts, self.failures = [], [], []
        return data


# ------------------------------------------------------------------- what travels
def shard_key(fingerprint_id: str, items: Sequence[Item]) -> str:
    """A shard's identity: the coordinator's fingerprint, and the shard's ids and stamps, hashed."""
    h = hashlib.sha256(fingerprint_id.encode())
    for item in items:
        h.update(b"\x1e" + item.id.encode("utf-8", "surrogatepass") + b"\x1f" + (item.stamp or "").encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class ShardTask:
    """One shard to compute: its key and its items (paths or texts travel, never decoded pixels)."""

    key: str
    items: tuple[Item, ...]

    @classmethod
    def of(cls, fingerprint_id: str, items: Sequence[Item]) -> "ShardTask":
        return cls(shard_key(fingerprint_id, items), tuple(items))

    def describe(self, limit: int = 3) -> str:
        """``"12 items (a, b, c, ...)"``: how an error names a shard."""
        ids = ", ".join(i.id for i in self.items[:limit]) + (", ..." if len(self.items) > limit else "")
        return f"{len(self.items)} items ({ids})"


@dataclass(frozen=True)
class ShardJob:
    """What every worker needs besides a shard's items: the backbone as the coordinator sees it.

    ``threads=None`` lets the worker choose (see :meth:`backbone`).
    """

    onnx_path: str
    fingerprint_id: str
    providers: object = None
    threads: int | None = None
    jpeg_draft: bool = False
    batch_size: int | None = None  # None: the worker's device default (featx.engine.defaults)
    on_error: str = "raise"
    decode_workers: int | None = None  # None: the worker's device default

    @classmethod
    def of(cls, backbone: Backbone, *, batch_size: int | None = None, on_error: str = "raise",
           decode_workers: int | None = None) -> "ShardJob":
        """The job of a coordinator's backbone (whose session is never created here)."""
        return cls(str(backbone.onnx_path), backbone.fingerprint_id, backbone.session.providers,
                   backbone.session.threads, bool(getattr(backbone.spec.preprocess, "jpeg_draft", False)),
                   batch_size, on_error, decode_workers)

    @property
    def _cache_key(self) -> tuple:
        return self.onnx_path, self.fingerprint_id, str(self.providers), self.jpeg_draft

    def backbone(self, worker: str | None = None, threads: int | None = None) -> Backbone:
        """This process's backbone for the job: loaded on first use, then reused.

        The first call loads the model file at :attr:`onnx_path` as this process sees it with
        ``threads`` (default :attr:`threads`; None: every core) ONNX Runtime threads, and checks
        its fingerprint against the coordinator's.

        Raises
        ------
        CacheMismatchError
            This node's model file or preprocessing differs from the coordinator's (names ``worker``).
        WorkerError
            This node cannot load the model file.
        """
        key = self._cache_key
        with _BACKBONES_LOCK:
            backbone = _BACKBONES.get(key)
            if backbone is None:
                where = worker or this_process()
                try:
                    backbone = Backbone(self.onnx_path, providers=self.providers,
                                        threads=self.threads if threads is None else threads,
                                        jpeg_draft=self.jpeg_draft)
                except (FeatxError, OSError) as e:
                    raise WorkerError(f"worker {where} cannot load the backbone at {self.onnx_path}: {e}. Every "
                                      "worker needs the model file at the same path (a shared file system, or "
                                      "the same file copied to each node)") from None
                if backbone.fingerprint_id != self.fingerprint_id:
                    raise CacheMismatchError(
                        f"worker {where}: the backbone at {self.onnx_path} has fingerprint {backbone.fingerprint_id}, "
                        f"the coordinator's has {self.fingerprint_id} (another model file or preprocessing); "
                        "give every worker the same model file")
                _BACKBONES[key] = backbone
            return backbone

    def forget(self) -> None:
        """Drop this process's backbone for the job (its session's memory goes with it)."""
        with _BACKBONES_LOCK:
            _BACKBONES.pop(self._cache_key, None)


_BACKBONES: dict[tuple, Backbone] = {}
_BACKBONES_LOCK = threading.Lock()


@dataclass
class ShardResult:
    """What a worker sends back for one :class:`ShardTask`.

    Attributes
    ----------
    key : str
        The task's key.
    data : ShardData
        The shard's rows and recorded failures; with ``bad_item``, the items before it.
    worker : str
        Who computed it (a Dask worker's address, or host and pid).
    providers : tuple of str
        The ONNX Runtime providers that ran it.
    truncated : int
        Texts cut at the model's ``max_length``.
    bad_item : (id, reason) or None
        ``on_error="raise"``: the item that stopped the shard.
    unreadable : tuple of (id, path)
        Failed items whose file this worker cannot open although the listing saw it: the
        coordinator checks whether it can (then the worker lacks the shared storage).
    error : FeatxError or None
        This worker could not do the job (another model file, no model file); nothing computed.
    """

    key: str
    data: ShardData
    worker: str
    providers: tuple[str, ...] = ()
    truncated: int = 0
    bad_item: tuple[str, str] | None = None
    unreadable: tuple[tuple[str, str], ...] = ()
    error: FeatxError | None = None


def this_process() -> str:
    """``"HOST pid N"``: how a worker that is not a Dask worker is named."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def compute_shard(job: ShardJob, task: ShardTask, worker: str | None = None) -> ShardResult:
    """Compute one shard with this process's backbone (an executor's entry point).

    Never raises for a bad item or a refused backbone: both come back in the result.
    """
    worker = worker or this_process()
    try:
        backbone = job.backbone(worker)
    except (CacheMismatchError, WorkerError) as e:
        return ShardResult(task.key, ShardData([], [], np.empty((0, 0), np.float32)), worker, error=e)
    buffer = ShardBuffer(backbone.dim, backbone.layers)
    bad_item = None
    defaults = backbone.defaults  # this worker's device
    for chunk, embedded in embed_chunks(backbone, task.items, batch_size=job.batch_size or defaults.batch_size,
                                        on_error=job.on_error,
                                        decode_workers=job.decode_workers or defaults.decode_workers):
        failure = stopping_failure(embedded, job.on_error)
        if failure is not None:
            bad_item = (failure.id, failure.reason)
            break
        buffer.add(chunk, embedded)
    truncated = buffer.truncated
    data = buffer.take()
    failed = set(data.failed_ids) | ({bad_item[0]} if bad_item else set())
    providers = tuple(backbone.session.active_providers) if len(data.ids) else ()
    unreadable = _unreadable([i for i in task.items if i.id in failed]) if backbone.modality == "image" else ()
    return ShardResult(task.key, data, worker, providers, truncated, bad_item, unreadable)


def _unreadable(items: Sequence[Item]) -> tuple[tuple[str, str], ...]:
    """Failed image items listed with a file stamp (the listing saw the file) that this process cannot open."""
    return tuple((i.id, i.ref) for i in items
                 if i.stamp is not None and isinstance(i.ref, str) and not os.access(i.ref, os.R_OK))
