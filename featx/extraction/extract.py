"""Orchestration: dataset -> skip what is cached -> batches -> ONNX Runtime -> committed shards.

Decoding and preprocessing run in decoding threads (``decode_workers``), a few batches ahead
of inference (bounded in batches and in decoded pixels, so memory stays flat on huge datasets
and huge images; see :mod:`featx.engine.embedding`); ONNX Runtime releases the GIL, so both overlap. Texts are sorted by length so that each batch is padded only to its own longest
text; rows are stored by id, so the order of work never changes the result.

The unit of work is a shard of items (:mod:`featx.extraction.shard`): in-process it is fed batch by
batch; with ``executor=`` (a ``concurrent.futures.Executor``: the process pool of
``--workers``, ...) or ``dask=`` (a Dask cluster, :mod:`featx.extraction.cluster`) whole shards are
computed by workers, a bounded window of them in flight (:mod:`featx.extraction.dispatch`), and only
this process, the coordinator holding the cache lock, commits them: each shard once, by its
key, so no id is ever stored twice. The coordinator then creates no ONNX session: the
workers report the providers that ran.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import functools
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field


from . import cluster
from .. import interrupts
from ..engine.backbone import Backbone
from ..factory import load_backbone
from ..cache import CacheStore, ShardData, WriterLock
from ..cache.shards import as_stored
from .dispatch import dispatch, window_for
from ..engine.defaults import ON_ERROR
from ..engine.embedding import longest_first
from ..errors import CacheCorruptError, CacheDatasetError, CacheError, ItemFailedError, ParameterError, WorkerError
from ..progress import progress_bar
from ..engine.runtime import default_threads
from ..sources import Dataset, Item, check_modality, open_dataset
from ..validation import check_bool, check_choice, check_int
from .shard import (ShardBuffer, ShardJob, ShardResult, ShardTask, batches,
                    compute_shard, embed_chunks, stopping_failure)

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
    failed_before: int = 0  # recorded failures of the items' content, skipped while their stamps are unchanged
    retried: int = 0  # recorded failures tried again (unreadable files, unexpected errors, changed stamps)
    truncated: int = 0
    shards: int = 0
    resubmitted: int = 0  # straggler shards computed twice (the first result was kept)
    seconds: float = 0.0
    providers: tuple[str, ...] = ()

    @property
    def items_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        parts = [f"{self.embedded} embedded", f"{self.cached} cached already"]
        if self.failed or self.failed_before:
            parts.append(f"{len(self.failed) + self.failed_before} skipped")
        if self.retried:
            parts.append(f"{self.retried} recorded failures retried")
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
def items_to_embed(dataset: Dataset, is_done, count_tokens=None) -> list[Item]:
    """Items still to embed; texts sorted longest first for dynamic padding.

    Texts are sorted by ``count_tokens(texts) -> counts`` when given (the backbone's tokenizer:
    on fine-food reviews in batches of 16 this pads 2% over the real tokens, against 17% when
    sorting by characters), else by characters.
    """
    todo = [item for item in dataset.items if not is_done(item.id, item.stamp or "")]
    if dataset.modality == "text" and todo:
        todo = [todo[i] for i in longest_first([item.ref for item in todo], count_tokens)]
    return todo


# ------------------------------------------------------------------- the coordinator
def extract(data, model, cache, *, batch_size: int | None = None, on_error: str = "raise",
            providers=None, threads: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
            decode_workers: int | None = None, dtype: str = "float32", executor: cf.Executor | None = None,
            dask=None, gpus_per_worker: int = 0, max_in_flight: int | None = None,
            progress: bool | None = None, durable: bool = True, jpeg_draft: bool = False,
            precision: str = "fp32") -> ExtractReport:
    """Embed every item of a dataset into an HDF5 cache, resuming whatever is already committed.

    Parameters
    ----------
    data : str or Dataset
        A folder, manifest, ``.txt`` file, table, Hugging Face dataset (folder or ``datasets.Dataset``),
        WebDataset shards or ``builtin:NAME`` (see :func:`featx.sources.open_dataset`).
    model : str, path or Backbone
        A registered backbone name, an exported ``.onnx`` path, or a loaded :class:`Backbone`.
    cache : path
        The cache directory (created when missing).
    batch_size : int, optional
        Items per ONNX Runtime call (default: 16 on the CPU, 128 on a GPU;
        :mod:`featx.engine.defaults`).
    on_error : {"raise", "skip"}
        ``"raise"`` stops at the first bad item, naming it (committed work is kept);
        ``"skip"`` records it with its reason and goes on.
    providers, threads :
        ONNX Runtime providers (``"cpu"``, ``"cuda"``, ``"cuda:1"``...) and intra-op threads
        (see :class:`featx.engine.runtime.Session`); on a
        Dask cluster ``threads=None`` gives each worker its share of its machine's cores.
    shard_size : int
        Items per committed shard: at most this much work is lost when the process dies.
    decode_workers : int, optional
        Threads decoding and preprocessing ahead of inference (default: every core on a GPU; on
        the CPU the cores ONNX Runtime leaves free, at least 1; see :mod:`featx.engine.defaults`). The features do not depend on it. Workers decode with their own default.
    dtype : {"float32", "float16"}
        Storage type of the embeddings (float16 halves the cache; :func:`load_features` returns float32).
    executor : concurrent.futures.Executor, optional
        Compute shards in these workers (e.g. :func:`featx.extraction.dispatch.process_pool`); this process commits.
    dask : str or distributed.Client, optional
        Compute shards on a Dask cluster: ``"local"``/``"local:N"`` (N worker processes here), a
        scheduler address (``"tcp://HOST:8786"``) or a client (see :mod:`featx.extraction.cluster`). Every worker
        must see the model file and the items at the same paths.
    gpus_per_worker : {0, 1}
        With ``dask``: each shard needs the Dask resource ``GPU`` (workers started with
        ``dask worker ADDRESS --resources GPU=1``), one device per worker.
    max_in_flight : int, optional
        With ``executor`` or ``dask``: shards in flight at most (default: 2 per worker).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    durable : bool
        fsync each committed shard (survives power loss, not only process death).
    jpeg_draft : bool
        Images: decode JPEGs at a reduced scale, 2-3x faster decoding of photo-sized files;
        the features change slightly and are cached apart from full decoding's
        (see :class:`featx.specs.spec.ImagePreprocess`). For a loaded ``model``, set it there.
    precision : {"fp32", "fp16", "auto"}
        ``"fp16"``: the backbone's fp16 variant (for GPUs); ``"auto"``: fp16 on a GPU where its
        parity allows (see :func:`featx.load_backbone`). Cached apart from fp32 features.
        For a loaded ``model``, load it so.

    Returns
    -------
    ExtractReport

    Raises
    ------
    ItemFailedError
        ``on_error="raise"`` and a bad item (named); the work before it is committed.
    WorkerError
        A shard could not be computed (a worker died, a worker cannot read an item or the model
        file); what finished is committed first, the message says how to resume.
    CacheMismatchError
        The cache, or a worker, has another model file or preprocessing.

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
    _check_workers(executor, dask, gpus_per_worker, max_in_flight)
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
    check_modality(dataset, backbone.modality, f"the {backbone.modality} backbone {backbone.name}")
    store = CacheStore(cache)
    store.create()
    report = ExtractReport(dataset.name, backbone.name, str(cache), len(dataset))
    with WriterLock(store.root):
        store.remove_temporaries()
        try:
            listed = getattr(store.read_listing(), "name", None)
        except CacheCorruptError as damaged:  # rewritten below from the dataset (when it is the one listed)
            listed = store.listed_name()
            log.warning("%s; rewriting it from %s", damaged, dataset.name)
        if listed is not None and listed != dataset.name:
            raise CacheDatasetError(f"cache {cache} holds the dataset {listed!r}, not {dataset.name!r}; "
                                    "use one cache per dataset (several backbones can share it)")
        store.register_model(backbone.fingerprint, backbone.fingerprint_id, dtype)
        store.write_listing(dataset.name, dataset.modality, dataset.ids(), dataset.labels(),
                            [i.stamp for i in dataset.items])
        state = store.scan(backbone.name)
        for path, reason in state.damaged:
            store.quarantine(path, reason)
        todo = items_to_embed(dataset, state.is_done,
                              count_tokens=backbone.tokenizer.count_tokens if backbone.modality == "text" else None)
        report.cached = sum(1 for item in dataset.items if item.id in state.rows
                            and state.is_done(item.id, item.stamp or ""))
        report.failed_before = len(dataset) - len(todo) - report.cached
        report.retried = sum(1 for item in todo if item.id in state.failed)
        commit = _Committer(store, backbone, dtype, durable, report)
        bar = progress_bar(len(todo), f"featx {backbone.name}", progress=progress)
        try:
            if not todo:
                pass  # nothing to compute: no session, no worker
            elif executor is None and dask is None:  # the device's defaults, resolved here once and passed down
                defaults = backbone.defaults
                _run_local(backbone, todo, _LocalRun(batch_size or defaults.batch_size, on_error, shard_size,
                                                     decode_workers or defaults.decode_workers), commit, bar, report)
            else:  # decode_workers None: each worker's own default
                job = ShardJob.of(backbone, batch_size=batch_size or backbone.defaults.batch_size, on_error=on_error,
                                  decode_workers=decode_workers)
                tasks = (ShardTask.of(backbone.fingerprint_id, chunk) for chunk in batches(todo, shard_size))
                _run_workers(job, tasks, executor, dask, gpus_per_worker, max_in_flight, _Landing(commit, bar))
        finally:
            bar.close()
            try:  # cheap (ids and virtual mappings only); the listing may have changed
                store.rebuild_index()
            except OSError as e:  # derived data: never mask the real outcome; the next run rebuilds it
                log.warning("could not rebuild %s/index.h5 (%s); the next extract rebuilds it", store.root, e)
    report.seconds = time.perf_counter() - t0
    return report


class _Committer:
    """Commits shards, each key once, and counts them in the report; turns ENOSPC into a clear error."""

    def __init__(self, store: CacheStore, backbone: Backbone, dtype: str, durable: bool, report: ExtractReport):
        self.store, self.backbone, self.dtype, self.durable, self.report = store, backbone, dtype, durable, report
        self.keys: set[str] = set()

    def __call__(self, data: ShardData, key: str | None = None) -> bool:
        """Commit ``data``; False when ``key`` was committed already (the shard is skipped)."""
        if key is not None and key in self.keys:
            return False
        if not len(data):
            return False
        data = as_stored(data, self.dtype)  # a row not finite as stored (float16 overflow) is the item's failure
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
        if key is not None:
            self.keys.add(key)
        self.report.shards += 1
        self.report.embedded += len(data.ids)
        self.report.failed.update(zip(data.failed_ids, data.failed_reasons))
        return True


@dataclass(frozen=True)
class _LocalRun:
    """How an in-process run embeds: every value resolved by :func:`extract`."""

    batch_size: int
    on_error: str
    shard_size: int
    decode_workers: int


def _run_local(backbone, todo, run: _LocalRun, commit, bar, report):
    buffer = ShardBuffer(backbone.dim, backbone.layers)
    last_commit = time.monotonic()
    for chunk, embedded in embed_chunks(backbone, todo, batch_size=run.batch_size, on_error=run.on_error,
                                        decode_workers=run.decode_workers):
        interrupts.check()  # a Ctrl-C swallowed by a callback stops the run here, before the next commit
        failure = stopping_failure(embedded, run.on_error)
        if failure is not None:
            commit(buffer.take())  # keep the good work done before the bad item
            raise ItemFailedError(failure.id, failure.reason) from failure.error
        report.truncated += embedded.truncated
        buffer.add(chunk, embedded)
        bar.update(embedded.size)
        if len(buffer) >= run.shard_size or time.monotonic() - last_commit > COMMIT_EVERY_S:
            commit(buffer.take())
            last_commit = time.monotonic()
    commit(buffer.take())
    report.providers = tuple(backbone.session.active_providers) if report.embedded else ()


def _run_workers(job, tasks, executor, dask, gpus_per_worker, max_in_flight, landing) -> None:
    """Shards through a process pool / executor, or on a Dask cluster; ``landing`` commits each result."""
    with ExitStack() as stack:
        if dask is not None:
            client = stack.enter_context(cluster.connect(dask, gpus_per_worker=gpus_per_worker))
            local_gpus = cluster.local_gpus() if gpus_per_worker and cluster.local_workers(dask) else 0
            shards = stack.enter_context(cluster.DaskShards(client, job, gpus_per_worker=gpus_per_worker,
                                                            local_gpus=local_gpus))
            submit, workers, alive = shards.submit, shards.workers, shards.alive
        else:
            submit = functools.partial(executor.submit, compute_shard, job)
            # a process or thread pool says how many it runs; any other executor: assume one per core
            workers, alive = getattr(executor, "_max_workers", None) or default_threads(), None
        stats = dispatch(submit, tasks, landing, workers=workers, window=window_for(workers, max_in_flight),
                         alive=alive)
    landing.commit.report.resubmitted = stats.resubmitted


class _Landing:
    """What the coordinator does with each shard's result: check it, commit it, report it."""

    def __init__(self, commit: _Committer, bar):
        self.commit, self.bar = commit, bar

    def __call__(self, task: ShardTask, result: ShardResult) -> None:
        interrupts.check()  # a Ctrl-C swallowed by a callback stops the run here, before the next commit
        report = self.commit.report
        if result.error is not None:  # another model file on that worker, or none
            raise result.error
        seen = [(item_id, path) for item_id, path in result.unreadable if os.access(path, os.R_OK)]
        if seen:
            item_id, path = seen[0]
            more = f" (and {len(seen) - 1} more items of its shard)" if len(seen) > 1 else ""
            raise WorkerError(
                f"worker {result.worker} cannot read {path} (item {item_id!r}){more}, which the coordinator reads: "
                "every worker must see the items at the same path (shared storage: NFS, a mounted bucket...); "
                "texts travel with the shards. Committed work is kept: run the same command again to resume.")
        self.commit(result.data, key=task.key)
        report.truncated += result.truncated
        report.providers = tuple(dict.fromkeys(report.providers + result.providers))
        self.bar.update(len(task.items))
        if result.bad_item is not None:
            raise ItemFailedError(*result.bad_item)


def _check_workers(executor, dask, gpus_per_worker, max_in_flight) -> None:
    if executor is not None and dask is not None:
        raise ParameterError("pass executor= or dask=, not both")
    if dask is not None:
        cluster.check_cluster(dask)
    check_int(gpus_per_worker, "gpus_per_worker", "extract", low=0, high=1)
    if gpus_per_worker and dask is None:
        raise ParameterError("gpus_per_worker applies to a Dask cluster: pass dask= too")
    check_int(max_in_flight, "max_in_flight", "extract", low=1, optional=True)


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
