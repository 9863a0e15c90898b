"""The simple baselines: the majority class, and logistic regression on raw pixels or TF-IDF.

The logistic regression's C is chosen by stratified cross-validation on the training subset
(:data:`~featx.bench.config.BASELINE_C_GRIDS`, the heads' folds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..engine.decode import decode_image
from .config import BASELINE_C_GRIDS
from .meter import Meter
from .rows import BASELINE_LOGREG, MAJORITY, BaselineRow, Row, jsonable, scores
from .splits import Subset
from .table import Context, Table

RAW_MAX_PIXELS = 64 * 64
RAW_SIZE = 32


@dataclass
class RawPixels:
    """Raw pixels of the training items any baseline row uses, computed once per table."""

    X: np.ndarray
    rows: dict[int, int]  # position in the training split -> row of X
    per_item_s: float  # decoding time per item: a row's extraction cost

    def of(self, subset: Subset) -> np.ndarray:
        return self.X[[self.rows[p] for p in subset.positions]]


def raw_pixels(items: Sequence, ids: Sequence[str] | None = None) -> np.ndarray:
    """Raw pixels scaled to [0, 1]: native size when every image shares one of at most 64x64
    pixels, else resized (no crop) to 32x32; one channel when every image is grey."""
    from PIL import Image

    decoded = [decode_image(item, item_id=None if ids is None else ids[i]) for i, item in enumerate(items)]
    shapes = {d.shape for d in decoded}
    if len(shapes) != 1 or decoded[0].shape[0] * decoded[0].shape[1] > RAW_MAX_PIXELS:
        decoded = [np.asarray(Image.fromarray(d).resize((RAW_SIZE, RAW_SIZE), Image.Resampling.BILINEAR))
                   for d in decoded]
    grey = all((d[..., 0] == d[..., 1]).all() and (d[..., 1] == d[..., 2]).all() for d in decoded)
    arr = np.stack([d[..., :1] if grey else d for d in decoded]) if decoded else np.empty((0, 1, 1, 1), np.uint8)
    return arr.reshape(len(decoded), -1).astype(np.float32) / 255.0


def raw_pixels_of(ctx: Context, positions: Sequence[int]) -> RawPixels:
    """Decode the training items at ``positions`` once (timed) for every image baseline row."""
    with Meter() as m:
        X = raw_pixels([ctx.splits.train.items[p].ref for p in positions])
    return RawPixels(X, {p: k for k, p in enumerate(positions)}, m.seconds / max(1, len(positions)))


def baseline_pipeline(modality: str):
    """Logistic regression on standardised raw pixels, or on TF-IDF word 1-2-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(max_iter=2000)
    if modality == "text":
        return make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1), clf)
    return make_pipeline(StandardScaler(), clf)


def cv_folds(y, cv: int) -> int:
    """Folds for stratified CV: ``min(cv, smallest class count)``; below 2, no selection.

    Examples
    --------
    >>> cv_folds(["a", "a", "a", "b", "b"], 5)
    2
    """
    counts = np.unique(np.asarray(y, dtype=object), return_counts=True)[1]
    return int(min(cv, counts.min())) if len(counts) else 0


def fit_selected(pipeline, grid: dict, X, y, cv: int, n_jobs: int | None = None):
    """GridSearchCV (stratified, seeded, accuracy) when every class has 2+ items, else a plain fit.

    BLAS runs one thread per fit (as in :func:`featx.heads.select_head`); ``n_jobs`` fits run in parallel.
    Returns ``(estimator, best params, best CV score or None)``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from threadpoolctl import threadpool_limits

    k = cv_folds(y, cv)
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if k < 2:
            return pipeline.fit(X, y), {}, None
        search = GridSearchCV(pipeline, grid, cv=StratifiedKFold(k, shuffle=True, random_state=0),
                              scoring="accuracy", refit=True, error_score=np.nan, n_jobs=n_jobs)
        search.fit(X, y)
    return search.best_estimator_, dict(search.best_params_), float(search.best_score_)


def majority_row(ctx: Context, subset: Subset) -> Row:
    """Predicts the most frequent training label."""
    from sklearn.dummy import DummyClassifier

    n_test = len(ctx.splits.test)
    with Meter() as m:
        clf = DummyClassifier(strategy="most_frequent").fit(np.zeros((subset.n_train, 1)), subset.labels)
    t = time.perf_counter()
    pred = clf.predict(np.zeros((n_test, 1)))
    latency = (time.perf_counter() - t) / n_test
    return Row.scored(subset, MAJORITY, "baseline", scores(ctx.test_labels, pred, ctx.splits.classes),
                      fit_s=m.seconds, peak_rss_mb=m.peak_mb, trainable_params=0,
                      predict_ms_per_item=latency * 1000, params={"predicts": str(pred[0])})


def logreg_row(ctx: Context, subset: Subset, raw: RawPixels | None) -> BaselineRow:
    """Logistic regression on standardised raw pixels (``raw``), or on TF-IDF of the texts."""
    modality = ctx.modality
    if modality == "image":
        X, extract_s = raw.of(subset), raw.per_item_s * subset.n_train
    else:
        X, extract_s = subset.refs, 0.0
    grid = {"logisticregression__C": list(BASELINE_C_GRIDS[modality])}
    with Meter() as m:
        est, params, cv_score = fit_selected(baseline_pipeline(modality), grid, X, subset.labels, ctx.config.cv,
                                             n_jobs=ctx.config.threads)
    t = time.perf_counter()
    X_test = raw_pixels(ctx.test_refs) if modality == "image" else ctx.test_refs
    pred = est.predict(X_test)
    latency = (time.perf_counter() - t) / len(ctx.splits.test)
    clf = est[-1]
    return BaselineRow.scored(subset, BASELINE_LOGREG[modality], "baseline",
                              scores(ctx.test_labels, pred, ctx.splits.classes), extract_s=extract_s,
                              fit_s=m.seconds, peak_rss_mb=m.peak_mb,
                              trainable_params=int(clf.coef_.size + clf.intercept_.size),
                              predict_ms_per_item=latency * 1000, params=jsonable(params), cv_score=cv_score,
                              n_features=int(clf.coef_.shape[1]))


def run_baselines(ctx: Context, subset: Subset, table: Table, raw: RawPixels | None = None) -> None:
    """The majority-class and logistic-regression rows of one subset."""
    for strategy, make in ((MAJORITY, lambda: majority_row(ctx, subset)),
                           ("baseline logreg", lambda: logreg_row(ctx, subset, raw))):
        row = table.attempt(subset, strategy, make)
        if row:
            table.report(row, f"fit {row.fit_s:.1f}s")
