"""Refitting a head over chunks of rows: from an array in memory or from the cache, same result.

::

    rows_of(X)                  an array, or a FeatureReader (rows read from the HDF5 shards)
    epoch_order(n, seed, e)     blocks of BLOCK_ROWS rows in random order, rows shuffled within windows
                                of WINDOW_ROWS: a permutation that depends on n, seed and e only
    iter_batches(rows, order)   BATCH_ROWS rows at a time, read WINDOW_ROWS-aligned chunks at a time
    fit_sgd(...)                partial_fit over the batches, epoch after epoch
    transform_all(...)          the fitted steps applied a chunk at a time (kernel map, PCA)

The guarantee: the batches, and so the fitted model, do not depend on the chunk size: a head
streamed from the cache in chunks of any size is the head fitted from the same rows in memory.
Reading in blocks keeps the reads contiguous on disk while every batch mixes rows from all over
the dataset (a cache extracted class by class would otherwise feed SGD one class at a time).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..errors import InputError

__all__ = ["BLOCK_ROWS", "WINDOW_ROWS", "BATCH_ROWS", "ArrayRows", "rows_of", "epoch_order", "iter_batches",
           "fit_sgd", "transform_all", "apply_steps", "check_finite"]

#: Contiguous rows read together (1280-d float16: 640 KiB).
BLOCK_ROWS = 256
#: Rows shuffled together: the order within one window of 32 random blocks is random.
WINDOW_ROWS = 8192
#: Rows per ``partial_fit`` call.
BATCH_ROWS = 1024


class ArrayRows:
    """An in-memory matrix with the reading interface of :class:`featx.cache.FeatureReader`."""

    def __init__(self, X):
        self.X = X
        self.n_rows, self.dim = X.shape

    def read(self, positions) -> np.ndarray:
        return np.asarray(self.X[np.asarray(positions, dtype=np.int64)], dtype=np.float32)

    def take(self, positions) -> "ArrayRows":
        """The rows at ``positions`` only."""
        return ArrayRows(self.X[np.asarray(positions, dtype=np.int64)])


def rows_of(X):
    """``X`` itself when it reads rows by position (a FeatureReader), else :class:`ArrayRows`."""
    return X if hasattr(X, "read") and hasattr(X, "n_rows") else ArrayRows(X)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: random blocks, rows shuffled within windows.

    Examples
    --------
    >>> order = epoch_order(1000, seed=0, epoch=0)
    >>> sorted(order.tolist()) == list(range(1000))
    True
    """
    rng = np.random.default_rng([seed, epoch])
    starts = rng.permutation(np.arange(0, n, BLOCK_ROWS))
    order = np.concatenate([np.arange(s, min(s + BLOCK_ROWS, n)) for s in starts]) if n else np.empty(0, np.int64)
    for lo in range(0, n, WINDOW_ROWS):
        rng.shuffle(order[lo:lo + WINDOW_ROWS])
    return order


def check_finite(X: np.ndarray, positions: np.ndarray) -> None:
    """Raise :class:`~featx.errors.InputError` naming the rows (``positions``) of ``X`` with NaN or inf."""
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(f"X has NaN/inf in row(s) {np.sort(positions[bad])[:5].tolist()}; "
                         "drop or recompute those items")


def _read_chunks(rows, order: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, float32 rows)`` following ``order``, ``chunk`` rows (rounded to whole windows) at a time."""
    step = max(WINDOW_ROWS, chunk // WINDOW_ROWS * WINDOW_ROWS) if len(order) > chunk else len(order)
    step = min(step, len(order))
    for lo in range(0, len(order), max(1, step)):
        positions = order[lo:lo + step]
        X = rows.read(positions)
        check_finite(X, positions)
        yield positions, X
        del X  # before the next read: one chunk in memory at a time


def iter_batches(rows, order: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, float32 rows)`` of :data:`BATCH_ROWS` rows following ``order``.

    Batches are copies, so a batch kept by the caller never keeps its whole chunk alive.
    """
    for positions, X in _read_chunks(rows, order, chunk):
        for lo in range(0, len(positions), BATCH_ROWS):
            yield positions[lo:lo + BATCH_ROWS], X[lo:lo + BATCH_ROWS].copy()
        del X


def apply_steps(steps, X):
    """Apply fitted pipeline steps (``[(name, step)]``, ``"passthrough"`` skipped) to ``X``."""
    for _, step in steps:
        if step not in (None, "passthrough"):
            X = step.transform(X)
    return X


def fit_sgd(clf, steps, rows, y: np.ndarray, classes: np.ndarray, *, epochs: int, seed: int, chunk: int):
    """Fit an SGD classifier by ``partial_fit`` over :func:`iter_batches`, ``epochs`` passes.

    ``steps`` are fitted transformers applied to each batch first. The coefficients kept are
    the average of the iterates after each batch from the second epoch on (Polyak averaging;
    scikit-learn's own ``average=True`` loses the multiclass intercepts between ``partial_fit``
    calls). Returns ``clf``.
    """
    coef = intercept = None
    seen = 0
    for epoch in range(epochs):
        for positions, X in iter_batches(rows, epoch_order(rows.n_rows, seed, epoch), chunk):
            clf.partial_fit(apply_steps(steps, X), y[positions], classes=classes)
            if epoch == 0 and epochs > 1:
                continue
            seen += 1
            if coef is None:
                coef, intercept = clf.coef_.copy(), clf.intercept_.copy()
            else:
                coef += (clf.coef_ - coef) / seen
                intercept += (clf.intercept_ - intercept) / seen
    if coef is not None:
        clf.coef_, clf.intercept_ = coef, intercept
    return clf


def transform_all(steps, rows, chunk: int) -> np.ndarray:
    """``steps`` applied to every row, in dataset order, a chunk at a time: float32 (n, k)."""
    out = None
    for positions, X in _read_chunks(rows, np.arange(rows.n_rows), chunk):
        Z = np.asarray(apply_steps(steps, X), dtype=np.float32)
        del X
        if out is None:
            out = np.empty((rows.n_rows, Z.shape[1]), np.float32)
        out[positions] = Z
        del Z
    return out if out is not None else np.empty((0, 0), np.float32)
