"""Embedding items with the error policy, in one place: items and ids -> rows, bad items by name.

::

    (refs, ids) per batch
      -> load, item by item        decode + crop (images) or check (texts); a raise is that item's
                                   failure (unreadable, empty text...)
      -> collate, the whole batch  model feeds of the items that loaded (uploaded when IO-bound)
      -> run                       float32 (k, d)
      -> finite?                   a row with NaN/inf is that item's failure
      -> Embedded                  rows, the input position of each row, failures (position, id, reason)

:func:`prepare_batches` works ahead in ``workers`` decoding threads (Pillow, numpy and ONNX
Runtime release the GIL: on 2 cores 2 threads decode photo JPEGs 1.75x as fast as one, and
decoding overlaps inference). Images are loaded item by item in the threads, so one batch is
decoded by all of them; a batch's items are collated in order by one more thread. Memory stays
bounded on any dataset: at most ``depth`` batches are worked on ahead of the consumer, each
holds only its crops (a full-size image lives only while it is decoded and cropped), and the
images being decoded at once share a :class:`~featx.engine.decode.PixelBudget`
(:data:`~featx.engine.decode.MAX_PIXELS_IN_FLIGHT` pixels by default), so huge images decode one at a
time however many threads there are. How many threads by default:
:func:`featx.engine.defaults.device_defaults`.

The policy, ``on_error`` (the one vocabulary: :mod:`featx.engine.defaults`):

- ``"raise"``: the first bad item stops the work and the error names it;
- ``"skip"``: a bad item is recorded with its reason and gets no row.

``Embedded.positions`` says which input each row belongs to, so a row is never bound to
another item: :func:`featx.extraction.extract` commits rows and failures by id, pipelines leave failed
items out, :class:`~featx.estimators.transformer.EmbeddingTransformer` gives them NaN rows
(:meth:`Embedded.dense`). Decoding is per item, so a bad file never costs its batch; the
batch steps have no per-item failure other than a non-finite row, which is found row by row,
so no batch is re-run item by item.

:func:`embed` is the one routine behind every in-memory path: :meth:`featx.Backbone.embed` (the
public call), :class:`~featx.estimators.transformer.EmbeddingTransformer`, pipelines, ``featx
predict`` and deployed files; :func:`featx.extraction.extract` streams the same batch steps
(:func:`prepare_batches`, :func:`run_batches`) shard by shard. A backbone here is anything with ``decode``, ``prepare``, ``run``, ``dim``, ``modality``,
``spec`` and ``session`` (:class:`featx.Backbone`).

Examples
--------
>>> import featx, numpy as np
>>> from featx.engine.embedding import embed
>>> bb = featx.load_backbone(tiny_onnx)
>>> out = embed(bb, [np.zeros((8, 8), np.uint8), "missing.png", np.ones((8, 8), np.uint8)],
...             ["a", "b", "c"], batch_size=16, on_error="skip")
>>> out.rows.shape, out.positions.tolist(), [(f.id, f.reason) for f in out.failures]
((2, 8), [0, 2], [('b', "image 'b': no such file (missing.png)")])
>>> out.dense().shape, bool(np.isnan(out.dense()[1]).all())
((3, 8), True)
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .decode import MAX_PIXELS_IN_FLIGHT, PixelBudget, lone_surrogate
from .defaults import ON_ERROR, device_defaults
from ..errors import InputError, NonFiniteOutputError, UnreadableItemError
from ..specs.layers import FINAL

__all__ = ["Embedded", "Failure", "NON_FINITE", "ON_ERROR", "Prepared", "embed", "longest_first", "prepare_batches",
           "raise_failures", "run_batches", "in_batches"]
#: The reason recorded for an item whose features hold NaN or inf.
NON_FINITE = "the model produced NaN/inf features"


@dataclass(frozen=True)
class Failure:
    """A bad item: its position in its batch (or input), its id, why, and the error raised, if any."""

    position: int
    id: str
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def retry(self) -> bool:
        """Whether trying again may succeed with the same bytes: True unless the failure is the item's
        content (a bad image or text, NaN features); an unreadable file or any unexpected error is
        retried by the next extraction."""
        if self.error is None:  # non-finite features: the model on these bytes
            return False
        return not isinstance(self.error, InputError) or isinstance(self.error, UnreadableItemError)


@dataclass
class Prepared:
    """One batch ready to run: feeds for the items that decoded, and the ones that did not."""

    ids: list[str]  # every item of the batch, in order
    positions: list[int]  # the items in ``feeds``, one per row
    feeds: object | None  # dict of arrays or a runtime.DeviceBatch; None when nothing decoded
    failures: list[Failure] = field(default_factory=list)
    truncated: int = 0  # texts cut at the model's max_length

    @classmethod
    def from_feeds(cls, feeds, ids: Sequence[str]) -> "Prepared":
        """A batch that is model feeds already (e.g. a float32 NCHW image batch)."""
        return cls(list(ids), list(range(len(ids))), feeds)


@dataclass
class Embedded:
    """Rows of the items that succeeded, where each came from, and the failures."""

    rows: np.ndarray  # float32 (k, d)
    positions: np.ndarray  # int64 (k,), increasing: the input position of each row
    failures: list[Failure]
    size: int  # items asked for (k + len(failures))
    truncated: int = 0
    layers: dict = field(default_factory=dict)  # intermediate layer -> its rows (k, d_layer), as ``rows``

    @property
    def ok(self) -> np.ndarray:
        """bool ``(size,)``: which inputs have a row."""
        mask = np.zeros(self.size, bool)
        mask[self.positions] = True
        return mask

    def dense(self, fill: float = np.nan) -> np.ndarray:
        """float32 ``(size, d)``: one row per input, ``fill`` for the failed ones."""
        if len(self.positions) == self.size:
            return self.rows
        out = np.full((self.size, self.rows.shape[1]), fill, np.float32)
        out[self.positions] = self.rows
        return out

    def select(self, layer: str | None) -> "Embedded":
        """The same items with the rows of an intermediate ``layer`` (None or ``"final"``: these rows)."""
        if layer is None or layer == FINAL:
            return self
        return dataclasses.replace(self, rows=self.layers[layer], layers={})

    def reorder(self, order: np.ndarray) -> "Embedded":
        """Back to input order, for items that ran in ``order`` (position ``k`` here was input ``order[k]``)."""
        positions = np.asarray(order, np.int64)[self.positions]
        rank = np.argsort(positions, kind="stable")
        failures = sorted((dataclasses.replace(f, position=int(order[f.position])) for f in self.failures),
                          key=lambda f: f.position)
        return dataclasses.replace(self, rows=self.rows[rank], positions=positions[rank], failures=failures,
                                   layers={name: rows[rank] for name, rows in self.layers.items()})

    @classmethod
    def concat(cls, parts: Sequence["Embedded"], dim: int, layers: Mapping[str, int] | None = None) -> "Embedded":
        """Batches one after another: positions and failures become positions in the whole input.

        ``layers`` (``{name: dim}``) are the intermediate layers every part carries.
        """
        offsets = np.cumsum([0] + [p.size for p in parts])
        return cls(
            rows=_stack([p.rows for p in parts], dim),
            positions=np.concatenate([p.positions + o for p, o in zip(parts, offsets)] + [np.empty(0, np.int64)]),
            failures=[dataclasses.replace(f, position=f.position + int(o)) for p, o in zip(parts, offsets)
                      for f in p.failures],
            size=int(offsets[-1]),
            truncated=sum(p.truncated for p in parts),
            layers={name: _stack([p.layers[name] for p in parts if name in p.layers], d)
                    for name, d in (layers or {}).items()},
        )


def _stack(arrays: Sequence[np.ndarray], dim: int) -> np.ndarray:
    arrays = [a for a in arrays if len(a)]
    return np.concatenate(arrays) if arrays else np.empty((0, dim), np.float32)


def reason_of(error: BaseException) -> str:
    """What a failure record says: the error's message, or its type when it has none."""
    return str(error) if error.args else type(error).__name__


# ------------------------------------------------------------------- the steps
def prepare_batch(backbone, refs: Sequence, ids: Sequence[str], *, on_error: str = "raise",
                  budget: PixelBudget | None = None) -> Prepared:
    """Load each item (decode, and crop images), then collate the ones that loaded as one batch.

    A loading error is that item's failure; with ``on_error="raise"`` loading stops there
    (the caller raises it, see :func:`run_batches`).
    """
    loaded, positions, failures = [], [], []
    for position, (ref, item_id) in enumerate(zip(refs, ids)):
        try:
            loaded.append(backbone.load(ref, item_id, budget))
        except Exception as e:  # any error of one item is that item's, never its batch's
            failures.append(Failure(position, item_id, reason_of(e), e))
            if on_error == "raise":
                return Prepared(list(ids), [], None, failures)
            continue
        positions.append(position)
    return collate_batch(backbone, ids, loaded, positions, failures)


def collate_batch(backbone, ids: Sequence[str], loaded: list, positions: list[int], failures: list[Failure]
                  ) -> Prepared:
    """The loaded items of a batch -> one :class:`Prepared`: feeds, uploaded when the session binds.

    On a bound session (CUDA) images are normalised straight into a reused, page-locked host
    buffer and copied into a reused device buffer (:mod:`featx.engine.staging`): no per-batch allocation.
    """
    if not loaded:
        return Prepared(list(ids), [], None, failures)
    session = backbone.session
    bound = session.uses_io_binding
    out = None
    if bound and backbone.modality == "image":
        size = backbone.spec.preprocess.size
        out = session.host_buffer(session.input_names[0], (len(loaded), 3, size, size), np.float32)
    feeds = backbone.collate(loaded, out=out)
    truncated = 0
    if backbone.modality == "text":
        limit = backbone.spec.preprocess.max_length
        mask = feeds.get("attention_mask")  # a model without one (SigLIP's text tower): count the tokens again
        lengths = mask.sum(1) if mask is not None else backbone.tokenizer.count_tokens(loaded)
        truncated = int((lengths >= limit).sum())
    if bound:  # on a GPU: upload here (a preparing thread), while the previous batch runs
        feeds = session.to_device(feeds, reuse=True)
    return Prepared(list(ids), positions, feeds, failures, truncated)


def _gather(backbone, ids: list[str], loads: list[cf.Future], on_error: str) -> Prepared:
    """Wait for a batch's items, loaded in decoding threads, in order; then collate them."""
    loaded, positions, failures = [], [], []
    for position, (fut, item_id) in enumerate(zip(loads, ids)):
        try:
            loaded.append(fut.result())
        except Exception as e:
            failures.append(Failure(position, item_id, reason_of(e), e))
            if on_error == "raise":
                for rest in loads[position + 1:]:
                    rest.cancel()
                return Prepared(list(ids), [], None, failures)
            continue
        positions.append(position)
    return collate_batch(backbone, ids, loaded, positions, failures)


def run_batch(backbone, prepared: Prepared) -> Embedded:
    """Run one prepared batch; rows with NaN/inf become failures of their items."""
    size = len(prepared.ids)
    if prepared.feeds is None:
        return Embedded(np.empty((0, backbone.dim), np.float32), np.empty(0, np.int64), list(prepared.failures),
                        size, prepared.truncated)
    layers = {}
    if getattr(backbone, "layers", None):  # an export with intermediate layers: every output, one pass
        features, layers = backbone.run_layers(prepared.feeds)
    else:
        features = backbone.run(prepared.feeds)
    positions = np.asarray(prepared.positions, np.int64)
    finite = np.isfinite(features).all(axis=1)
    for rows in layers.values():  # a NaN in any layer fails the item: its layers stay aligned
        finite &= np.isfinite(rows).all(axis=1)
    failures = list(prepared.failures)
    if not finite.all():
        failures += [Failure(int(p), prepared.ids[p], NON_FINITE) for p in positions[~finite]]
        failures.sort(key=lambda f: f.position)
        features, positions = features[finite], positions[finite]
        layers = {name: rows[finite] for name, rows in layers.items()}
    return Embedded(features, positions, failures, size, prepared.truncated, layers)


def raise_failures(failures: Sequence[Failure]) -> None:
    """Raise for a batch's failures as :meth:`featx.Backbone.embed` does.

    A decoding error is raised as it was (an :class:`~featx.errors.InputError` naming the item);
    non-finite rows raise :class:`~featx.errors.NonFiniteOutputError` naming up to 5 items.
    """
    if not failures:
        return
    first = failures[0]
    if first.error is not None:
        raise first.error
    names = ", ".join(f.id for f in failures[:5])
    raise NonFiniteOutputError(f"{NON_FINITE} for item(s) {names}")


# ------------------------------------------------------------------- the routine
def prepare_batches(backbone, batches: Iterable[tuple[Sequence, Sequence[str]]], *, on_error: str = "raise",
                    workers: int = 0, depth: int | None = None, budget: PixelBudget | None = None
                    ) -> Iterator[Prepared]:
    """:func:`prepare_batch` over ``(refs, ids)`` batches, in order.

    With ``workers > 0`` images are loaded by that many threads, item by item, and batches
    collated by one more, up to ``depth`` batches (default 3) ahead of the consumer; texts are
    prepared a batch per thread, up to ``depth`` (default ``2 * workers + 1``) ahead. The images
    being decoded at once share ``budget`` (default: a new one of
    :data:`~featx.engine.decode.MAX_PIXELS_IN_FLIGHT` pixels; see the module docstring); with
    ``workers=0`` items are loaded one at a time in the caller's thread.
    """
    if workers <= 0:
        for refs, ids in batches:
            yield prepare_batch(backbone, refs, ids, on_error=on_error)
        return
    per_item = backbone.modality == "image"
    depth = depth or (3 if per_item else 2 * workers + 1)
    budget = budget or PixelBudget(MAX_PIXELS_IN_FLIGHT)
    loaders = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featx-decode")
    collator = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="featx-collate") if per_item else loaders
    pending: deque = deque()
    try:
        for refs, ids in batches:
            ids = list(ids)
            if per_item:
                loads = [loaders.submit(backbone.load, ref, item_id, budget) for ref, item_id in zip(refs, ids)]
                pending.append(collator.submit(_gather, backbone, ids, loads, on_error))
            else:
                pending.append(loaders.submit(prepare_batch, backbone, refs, ids, on_error=on_error))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # Never wait here: an abandoned generator is closed by the garbage collector, in whatever
        # thread it runs and whatever lock that thread holds (joining a thread from a finalizer that
        # runs inside threading's own bookkeeping deadlocked a test run). The threads exit by
        # themselves once their current item is done.
        for fut in pending:
            fut.cancel()
        loaders.shutdown(wait=False, cancel_futures=True)
        collator.shutdown(wait=False, cancel_futures=True)


def run_batches(backbone, prepared: Iterable[Prepared], *, on_error: str = "raise") -> Iterator[Embedded]:
    """Run prepared batches in order: one :class:`Embedded` per batch, failures as data.

    With ``on_error="raise"`` the iteration ends with the first batch that has a failure (a batch
    whose loading stopped at a bad item is not run): the caller raises for it, in its own words
    (:func:`raise_failures` for :meth:`featx.Backbone.embed`, an ``ItemFailedError`` saying how to
    resume for ``featx.extract``).
    """
    for batch in prepared:
        result = run_batch(backbone, batch)
        yield result
        if on_error == "raise" and result.failures:
            return


def in_batches(refs: Sequence, ids: Sequence[str], batch_size: int) -> Iterator[tuple[Sequence, Sequence[str]]]:
    """``(refs, ids)`` in batches of ``batch_size``."""
    for start in range(0, len(refs), batch_size):
        yield refs[start:start + batch_size], ids[start:start + batch_size]


def longest_first(texts: Sequence, count_tokens: Callable[[Sequence[str]], np.ndarray] | None = None,
                  chunk: int = 8192) -> np.ndarray:
    """The order that runs texts longest first (stable), so each batch pads to little more than its texts.

    Texts are measured by ``count_tokens(texts) -> counts`` (the backbone's tokenizer: on
    fine-food reviews in batches of 16 this pads 2% over the real tokens, against 17% when sorting
    by characters), ``chunk`` texts at a time (a million encodings at once would hold gigabytes),
    else by characters. An item that is no text, or one that decoding will refuse, counts as empty.

    Examples
    --------
    >>> longest_first(["a", "a long one", None, "mid"]).tolist()
    [1, 3, 0, 2]
    """
    texts = [t if isinstance(t, str) and lone_surrogate(t) is None else "" for t in texts]
    if count_tokens is None:
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    else:
        lengths = np.concatenate([count_tokens(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]
                                 + [np.empty(0, np.int64)])
    return np.argsort(-lengths, kind="stable")


def embed(backbone, refs: Sequence, ids: Sequence[str] | None = None, *, batch_size: int | None = None,
          on_error: str = "raise", on_batch: Callable[[int], None] | None = None,
          workers: int | None = None) -> Embedded:
    """Embed items with the error policy, scheduled for speed, rows in input order; see the module docstring.

    The one routine behind every in-memory path (:meth:`featx.Backbone.embed`, the estimators,
    pipelines, ``featx predict``, deployed files); ``featx.extract`` streams the same batch
    steps (:func:`prepare_batches`, :func:`run_batches`) shard by shard. Texts run longest first
    (:func:`longest_first`), so a batch pads to little more than its own texts; the result is put
    back in input order.

    Parameters
    ----------
    backbone : featx.Backbone
    refs : sequence
        Raw items (paths, bytes, images, arrays; texts).
    ids : sequence of str, optional
        Their names in errors and failure records (default ``#0``, ``#1``...).
    batch_size : int, optional
        Default: the device's (:func:`featx.engine.defaults.device_defaults`).
    on_error : {"raise", "skip"}
    on_batch : callable, optional
        Called with the number of items of each batch done (a progress bar's ``update``).
    workers : int, optional
        Decoding threads (:func:`prepare_batches`); default: the device's (none for a single item).

    Returns
    -------
    Embedded
        Positions and failures index ``refs``.

    Raises
    ------
    InputError, NonFiniteOutputError
        With ``on_error="raise"``, naming the first bad item.
    """
    refs = list(refs)
    ids = [f"#{i}" for i in range(len(refs))] if ids is None else [str(i) for i in ids]
    defaults = device_defaults(backbone.session)
    batch_size = batch_size or defaults.batch_size
    if workers is None:
        workers = defaults.decode_workers if len(refs) > 1 else 0
    order = None
    if backbone.modality == "text" and len(refs) > batch_size:  # one batch pads to its longest text anyway
        order = longest_first(refs, backbone.tokenizer.count_tokens)
        refs, ids = [refs[i] for i in order], [ids[i] for i in order]
    parts = []
    prepared = prepare_batches(backbone, in_batches(refs, ids, batch_size), on_error=on_error, workers=workers)
    for part in run_batches(backbone, prepared, on_error=on_error):
        if on_error == "raise" and part.failures:
            raise_failures(part.failures)
        parts.append(part)
        if on_batch is not None:
            on_batch(part.size)
    embedded = Embedded.concat(parts, backbone.dim, getattr(backbone, "layers", None))
    return embedded if order is None else embedded.reorder(order)
