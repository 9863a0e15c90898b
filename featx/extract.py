"""Orchestration: dataset -> skip what is cached -> batches -> ONNX Runtime -> committed shards.

Decoding and preprocessing run in decoding threads (``decode_workers``), a few batches ahead
of inference (bounded in batches and in decoded pixels, so memory stays flat on huge datasets
and huge images; see :mod:`featx.embedding`); ONNX Runtime releases the GIL, so both overlap. Texts are sorted by length so that each batch is padded only to its own longest
text; rows are stored by id, so the order of work never changes the result.

The unit of work is a shard of items. :func:`embed_items` turns items into a
:class:`~featx.cache.ShardData` and touches no file: in-process it is fed batch by batch;
with ``executor=`` (a ``concurrent.futures.Executor``: a process pool, a Dask
``client.get_executor()``, ...) whole shards are computed by workers and only this
process, the coordinator holding the cache lock, commits them.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from .backbone import DEFAULT_BATCH_SIZE, Backbone, load_backbone
from .cache import CacheStore, ShardData, WriterLock
from .embedding import ON_ERROR, Embedded, default_decode_workers, prepare_batches, run_batches
from .errors import CacheDatasetError, CacheError, ItemFailedError, ParameterError, WorkerError
from .progress import progress_bar
from .sources import Dataset, Item, open_dataset
from .validation import check_bool, check_choice, check_int

log = logging.getLogger("featx")

DTYPES = ("float32", "float16")
DEFAULT_SHARD_SIZE = 1024
#: A shard is committed at the latest this many seconds after the previous one.
COMMIT_EVERY_S = 60.0


@dataclass
class ExtractReport:
    """What one extraction did."""

    dataset: str
    model: str
    cache: str
    items: int
    embedded: int = 0
    cached: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # id -> reason, this run
    failed_before: int = 0
    truncated: int = 0
    shards: int = 0
    seconds: float = 0.0
    providers: tuple[str, ...] = ()

    @property
    def items_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        parts = [f"{self.embedded} embedded", f"{self.cached} cached already"]
        if self.failed or self.failed_before:
            parts.append(f"{len(self.failed) + self.failed_before} skipped")
        if self.truncated:
            parts.append(f"{self.truncated} texts truncated")
        return (f"{self.model} on {self.dataset}: {', '.join(parts)} of {self.items} items "
                f"in {self.seconds:.1f} s ({self.items_per_s:.1f} items/s) -> {self.cache}")

    def failure_lines(self, limit: int = 10) -> list[str]:
        lines = [f"  skipped {item_id}: {reason}" for item_id, reason in list(self.failed.items())[:limit]]
        if len(self.failed) > limit:
            lines.append(f"  ... and {len(self.failed) - limit} more (see `featx info`)")
        return lines


# ------------------------------------------------------------------- pure-ish pieces
def plan(dataset: Dataset, is_done, count_tokens=None) -> list[Item]:
    """Items still to embed; texts sorted longest first for dynamic padding.

    Texts are sorted by ``count_tokens(texts) -> counts`` when given (the backbone's tokenizer:
    on fine-food reviews in batches of 16 this pads 2% over the real tokens, against 17% when
    sorting by characters), else by characters.
    """
    todo = [item for item in dataset.items if not is_done(item.id, item.stamp or "")]
    if dataset.modality == "text" and todo:
        texts = [item.ref if isinstance(item.ref, str) else "" for item in todo]
        if count_tokens is None:
            lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        else:  # in chunks: a million encodings at once would hold gigabytes
            lengths = np.concatenate([count_tokens(texts[i:i + _COUNT_CHUNK])
                                      for i in range(0, len(texts), _COUNT_CHUNK)])
        todo = [todo[i] for i in np.argsort(-lengths, kind="stable")]
    return todo


_COUNT_CHUNK = 8192


def batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _item_failed(failures) -> None:
    """``on_error="raise"``: stop at the first bad item, naming it (the advice says how to go on)."""
    first = failures[0]
    raise ItemFailedError(first.id, first.reason) from first.error


def embed_batches(backbone: Backbone, chunks: Iterable[list[Item]], on_error: str,
                  workers: int = 0) -> Iterator[tuple[list[Item], Embedded]]:
    """``(chunk, embedded)`` per batch of items, in order; ``workers`` threads decode ahead."""
    chunks = list(chunks)  # references to the items: small beside what the batches hold
    prepared = prepare_batches(backbone, (([i.ref for i in c], [i.id for i in c]) for c in chunks),
                               on_error=on_error, workers=workers)
    return zip(chunks, run_batches(backbone, prepared, on_error=on_error, raise_error=_item_failed))


def embed_items(backbone: Backbone, items: Sequence[Item], *, batch_size: int = DEFAULT_BATCH_SIZE,
                on_error: str = "raise") -> ShardData:
    """Embed items into one :class:`ShardData` (a worker's unit of work; writes no file)."""
    check_int(batch_size, "batch_size", "embed_items", low=1)
    check_choice(on_error, "on_error", "embed_items", ON_ERROR)
    buffer = _ShardBuffer(backbone.dim)
    for chunk, embedded in embed_batches(backbone, batches(items, batch_size), on_error):
        buffer.add(chunk, embedded)
    return buffer.take()


def _embed_task(onnx_path: str, providers, threads, jpeg_draft: bool, fingerprint_id: str, items, batch_size: int,
                on_error: str) -> ShardData:
    """Executor entry point: one backbone per worker process, created once.

    The worker checks that its backbone (the model file as *it* sees it, the preprocessing)
    has the coordinator's fingerprint, so a node with another file at the same path fails
    instead of committing features of another model.
    """
    key = (onnx_path, str(providers), threads, jpeg_draft)
    backbone = _WORKER_BACKBONES.get(key)
    if backbone is None:
        backbone = _WORKER_BACKBONES[key] = Backbone(onnx_path, providers=providers, threads=threads,
                                                     jpeg_draft=jpeg_draft)
    if backbone.fingerprint_id != fingerprint_id:
        raise CacheError(f"worker {socket.gethostname()} pid {os.getpid()}: the backbone at {onnx_path} has "
                         f"fingerprint {backbone.fingerprint_id}, the coordinator's has {fingerprint_id}; "
                         "give every worker the same model file")
    return embed_items(backbone, items, batch_size=batch_size, on_error=on_error)


_WORKER_BACKBONES: dict = {}


class _ShardBuffer:
    def __init__(self, dim: int):
        self.dim = dim
        self.items: list[Item] = []
        self.parts: list[np.ndarray] = []
        self.failures: list[tuple[Item, str]] = []

    def __len__(self):
        return len(self.items) + len(self.failures)

    def add(self, chunk: list[Item], embedded: Embedded) -> None:
        self.items += [chunk[p] for p in embedded.positions]
        if len(embedded.positions):
            self.parts.append(embedded.rows)
        self.failures += [(chunk[f.position], f.reason) for f in embedded.failures]

    def take(self) -> ShardData:
        emb = np.concatenate(self.parts) if self.parts else np.empty((0, self.dim), np.float32)
        data = ShardData(
            ids=[i.id for i in self.items], stamps=[i.stamp or "" for i in self.items], embeddings=emb,
            failed_ids=[i.id for i, _ in self.failures], failed_stamps=[i.stamp or "" for i, _ in self.failures],
            failed_reasons=[r for _, r in self.failures],
        )
        self.items, self.parts, self.failures = [], [], []
        return data


# ------------------------------------------------------------------- the coordinator
def extract(data, model, cache, *, batch_size: int | None = None, on_error: str = "raise",
            providers=None, threads: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
            decode_workers: int | None = None, dtype: str = "float32", executor: cf.Executor | None = None,
            progress: bool | None = None, durable: bool = True, jpeg_draft: bool = False,
            precision: str = "fp32") -> ExtractReport:
    """Embed every item of a dataset into an HDF5 cache, resuming whatever is already committed.

    Parameters
    ----------
    data : str or Dataset
        A folder, manifest, ``.txt`` file or ``builtin:NAME`` (see :func:`featx.sources.open_dataset`).
    model : str, path or Backbone
        A registered backbone name, an exported ``.onnx`` path, or a loaded :class:`Backbone`.
    cache : path
        The cache directory (created when missing).
    batch_size : int, optional
        Items per ONNX Runtime call (default: 16 on the CPU, 128 on a GPU;
        :attr:`featx.Backbone.default_batch_size`).
    on_error : {"raise", "skip"}
        ``"raise"`` stops at the first bad item, naming it (committed work is kept);
        ``"skip"`` records it with its reason and goes on.
    providers, threads :
        ONNX Runtime providers (``"cpu"``, ``"cuda"``, ``"cuda:1"``...) and intra-op threads
        (see :class:`featx.runtime.Session`).
    shard_size : int
        Items per committed shard: at most this much work is lost when the process dies.
    decode_workers : int, optional
        Threads decoding and preprocessing ahead of inference (default: every core on a GPU; on
        the CPU the cores ONNX Runtime leaves free, at least 1; see
        :func:`featx.embedding.default_decode_workers`). The features do not depend on it.
    dtype : {"float32", "float16"}
        Storage type of the embeddings (float16 halves the cache; :func:`load_features` returns float32).
    executor : concurrent.futures.Executor, optional
        Compute shards in these workers (processes, a Dask or Ray executor); this process commits.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    durable : bool
        fsync each committed shard (survives power loss, not only process death).
    jpeg_draft : bool
        Images: decode JPEGs at a reduced scale, 2-3x faster decoding of photo-sized files;
        the features change slightly and are cached apart from full decoding's
        (see :class:`featx.registry.ImagePreprocess`). For a loaded ``model``, set it there.
    precision : {"fp32", "fp16", "auto"}
        ``"fp16"``: the backbone's fp16 variant (for GPUs); ``"auto"``: fp16 on a GPU where its
        parity allows (see :func:`featx.load_backbone`). Cached apart from fp32 features.
        For a loaded ``model``, load it so.

    Returns
    -------
    ExtractReport

    Examples
    --------
    >>> import featx
    >>> report = featx.extract("builtin:digits:test", model=tiny_onnx, cache="digits.cache")
    >>> print(report.summary())
    tiny-cnn on builtin:digits:test: 450 embedded, 0 cached already of 450 items in ... s (... items/s) -> digits.cache
    >>> featx.extract("builtin:digits:test", model=tiny_onnx, cache="digits.cache").cached  # a re-run: nothing to do
    450
    >>> X, y, ids = featx.load_features("digits.cache")
    >>> X.shape, y[0], ids[0]
    ((450, 8), '1', 'digits/0021')
    """
    _check_params(batch_size, on_error, shard_size, dtype, decode_workers, threads, progress, durable, jpeg_draft)
    t0 = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else open_dataset(data)
    if isinstance(model, Backbone):
        for name, value, default in (("jpeg_draft", jpeg_draft, False), ("precision", precision, "fp32")):
            if value != default:
                raise ParameterError(f"{name}={value!r} with a loaded Backbone: load it with "
                                     f"featx.load_backbone(..., {name}={value!r}) instead")
        backbone = model
    else:
        backbone = load_backbone(model, providers=providers, threads=threads, jpeg_draft=jpeg_draft,
                                 precision=precision)
    batch_size = batch_size or backbone.default_batch_size
    if dataset.modality != backbone.modality:
        raise CacheError(f"{backbone.name} is a {backbone.modality} backbone but {dataset.name} holds "
                         f"{dataset.modality}s; pick a {dataset.modality} backbone")
    store = CacheStore(cache)
    store.create()
    report = ExtractReport(dataset.name, backbone.name, str(cache), len(dataset))
    with WriterLock(store.root):
        store.remove_temporaries()
        listing = store.read_listing()
        if listing is not None and listing.name != dataset.name:
            raise CacheDatasetError(f"cache {cache} holds the dataset {listing.name!r}, not {dataset.name!r}; "
                             "use one cache per dataset (several backbones can share it)")
        store.register_model(backbone.fingerprint, backbone.fingerprint_id, dtype)
        store.write_listing(dataset.name, dataset.modality, dataset.ids(), dataset.labels(),
                            [i.stamp for i in dataset.items])
        state = store.scan(backbone.name)
        for path, reason in state.damaged:
            store.quarantine(path, reason)
        todo = plan(dataset, state.is_done,
                    count_tokens=backbone.tokenizer.count_tokens if backbone.modality == "text" else None)
        report.cached = sum(1 for item in dataset.items if item.id in state.rows
                            and state.is_done(item.id, item.stamp or ""))
        report.failed_before = len(dataset) - len(todo) - report.cached
        commit = _Committer(store, backbone, dtype, durable, report)
        bar = progress_bar(len(todo), f"featx {backbone.name}", progress=progress)
        try:
            if executor is None:
                _run_local(backbone, todo, batch_size, on_error, shard_size, decode_workers, commit, bar, report)
            else:
                _run_executor(executor, backbone, todo, batch_size, on_error, shard_size, commit, bar)
        finally:
            bar.close()
            try:  # cheap (ids and virtual mappings only); the listing may have changed
                store.rebuild_index()
            except OSError as e:  # derived data: never mask the real outcome; the next run rebuilds it
                log.warning("could not rebuild %s/index.h5 (%s); the next extract rebuilds it", store.root, e)
    report.providers = tuple(backbone.session.active_providers) if report.embedded else ()
    report.seconds = time.perf_counter() - t0
    return report


class _Committer:
    """Commits shards and counts them in the report; turns ENOSPC into a clear error."""

    def __init__(self, store: CacheStore, backbone: Backbone, dtype: str, durable: bool, report: ExtractReport):
        self.store, self.backbone, self.dtype, self.durable, self.report = store, backbone, dtype, durable, report

    def __call__(self, data: ShardData) -> None:
        if not len(data):
            return
        try:
            self.store.commit(self.backbone.name, data, fingerprint_id=self.backbone.fingerprint_id,
                              dtype=self.dtype, durable=self.durable)
        except OSError as e:
            if e.errno == errno.ENOSPC or "No space left" in str(e) or "errno = 28" in str(e):
                raise CacheError(
                    f"disk full while writing a shard to {self.store.root}: {self.report.embedded} items committed "
                    "in this run are intact. Free some space and run the same command again to resume."
                ) from None
            raise
        self.report.shards += 1
        self.report.embedded += len(data.ids)
        self.report.failed.update(zip(data.failed_ids, data.failed_reasons))


def _run_local(backbone, todo, batch_size, on_error, shard_size, decode_workers, commit, bar, report):
    buffer = _ShardBuffer(backbone.dim)
    last_commit = time.monotonic()
    workers = decode_workers or default_decode_workers(backbone.session)
    try:
        for chunk, embedded in embed_batches(backbone, batches(todo, batch_size), on_error, workers):
            report.truncated += embedded.truncated
            buffer.add(chunk, embedded)
            bar.update(embedded.size)
            if len(buffer) >= shard_size or time.monotonic() - last_commit > COMMIT_EVERY_S:
                commit(buffer.take())
                last_commit = time.monotonic()
    except ItemFailedError:
        commit(buffer.take())  # keep the good work done before the bad item
        raise
    commit(buffer.take())


def _run_executor(executor, backbone, todo, batch_size, on_error, shard_size, commit, bar):
    args = (str(backbone.onnx_path), backbone.session.providers, backbone.session.threads,
            getattr(backbone.spec.preprocess, "jpeg_draft", False), backbone.fingerprint_id)
    futures: dict = {}
    try:
        for chunk in batches(todo, shard_size):
            futures[executor.submit(_embed_task, *args, chunk, batch_size, on_error)] = len(chunk)
        for fut in cf.as_completed(futures):
            commit(fut.result())
            bar.update(futures[fut])
    except cf.BrokenExecutor as e:  # a worker was killed (OOM killer, kill -9) or could not start
        raise WorkerError(
            f"a worker process died while computing shards ({e}). The {commit.report.embedded} items committed "
            "in this run are kept: run the same command again to resume, with fewer workers or a smaller batch "
            "size if a worker ran out of memory."
        ) from None
    finally:
        for fut in futures:
            fut.cancel()


def _check_params(batch_size, on_error, shard_size, dtype, decode_workers, threads, progress, durable,
                  jpeg_draft) -> None:
    check_int(batch_size, "batch_size", "extract", low=1, optional=True)
    check_choice(on_error, "on_error", "extract", ON_ERROR)
    check_int(shard_size, "shard_size", "extract", low=1)
    check_choice(dtype, "dtype", "extract", DTYPES)
    check_int(decode_workers, "decode_workers", "extract", low=1, optional=True)
    check_int(threads, "threads", "extract", low=1, optional=True)
    check_bool(progress, "progress", "extract", optional=True)
    check_bool(durable, "durable", "extract")
    check_bool(jpeg_draft, "jpeg_draft", "extract")
