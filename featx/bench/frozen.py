"""The frozen-feature rows: features from the featx cache, then featx's heads with their selection.

    extract_features  training items any frozen row uses + the test set -> featx.extract -> cache
                      -> Features (X by item id, one matrix per layer) and Extraction (the per-item rate
                      a row's cost uses)
    run_heads         per subset: one HeadRow per head (featx.heads.select_head), then
                      "frozen: best by CV", the head with the best CV score (a SelectedRow)
    run_layers        per subset: "frozen: logreg @ <layer>" per intermediate layer (the export carries
                      them: featx.specs.layers), then "frozen: best layer by CV" (the final layer included)
"""

from __future__ import annotations

import hashlib

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..engine.backbone import Backbone
from ..cache import load_features
from ..errors import FeatxError
from ..extraction.extract import extract
from ..heads import best_layer, select_head
from ..specs.layers import FINAL
from ..files import featx_home
from ..sources import make_dataset
from .config import slug
from .formatting import display_path, format_number
from .meter import Meter
from .models import BenchBackbone
from .result import Extraction
from .rows import BEST_BY_CV, BEST_LAYER, LAYER_HEAD, HeadRow, SelectedRow, head_strategy, jsonable, scores
from .splits import Subset
from .table import Context, Table

#: Below this many newly embedded items the extraction rate is timed on a sample instead.
MIN_TIMED_ITEMS = 64


@dataclass
class Features:
    """Cached features of every item a table uses, looked up by item id; one matrix per layer."""

    X: np.ndarray  # the final features
    rows: dict[str, int]  # item id -> row of X (and of every layer's matrix)
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # intermediate layer -> its matrix

    def of(self, items: Sequence, layer: str | None = None) -> np.ndarray:
        X = self.X if layer in (None, FINAL) else self.layers[layer]
        return X[[self.rows[i.id] for i in items]]


def default_cache(dataset: str) -> Path:
    """``$FEATX_HOME/bench-cache/<slug>``; a dataset that is not a builtin adds a hash of its name as given, so
    that two folders of the same name (``a/photos``, ``b/photos``) never meet in one cache.

    Examples
    --------
    >>> default_cache("builtin:fine-foods").name, default_cache("a/photos").name, default_cache("b/photos").name
    ('fine-foods', 'photos-d8bd312d', 'photos-7a2c7f2c')
    """
    name = slug(dataset)
    if not dataset.startswith("builtin:"):
        name += "-" + hashlib.sha256(dataset.encode()).hexdigest()[:8]
    return featx_home() / "bench-cache" / name


def extract_features(ctx: Context, positions: Sequence[int], bb: BenchBackbone) -> tuple[Features, Extraction]:
    """Extract (or reuse) the features of the training items at ``positions`` and of the test set."""
    config, splits = ctx.config, ctx.splits
    items = [splits.train.items[p] for p in positions] + list(splits.test.items)
    pool = make_dataset(f"featx-bench:{config.dataset}", splits.train.modality, items)
    cache = Path(config.cache) if config.cache else default_cache(config.dataset)
    ctx.say(f"extracting {len(pool)} items ({len(positions)} train + {len(splits.test)} test) with {bb.name} "
            f"-> {cache}")
    report = extract(pool, model=str(bb.onnx_path), cache=cache, batch_size=config.extract_batch_size,
                     threads=config.threads, progress=ctx.say.bars)
    X, _, ids = load_features(cache, model=bb.name, strict=True)
    layers = {layer: load_features(cache, model=bb.name, strict=True, layer=layer)[0] for layer in bb.layers}
    lookup = {str(i): k for k, i in enumerate(ids)}
    missing = [i.id for i in items if i.id not in lookup]
    if missing:
        raise FeatxError(f"{len(missing)} benchmark item(s) have no features in {cache} (e.g. {missing[:3]})")
    if report.embedded >= MIN_TIMED_ITEMS:
        per_item = report.seconds / report.embedded
        how = f"featx.extract of {report.embedded} items (decode + preprocess + ONNX Runtime + cache commit)"
    else:  # everything was cached already: time the backbone on a sample
        sample = [i.ref for i in items[:MIN_TIMED_ITEMS]]
        backbone = Backbone(bb.onnx_path, threads=config.threads)
        backbone.embed(sample[:8], batch_size=config.extract_batch_size)  # warm-up
        t = time.perf_counter()
        backbone.embed(sample, batch_size=config.extract_batch_size)
        per_item = (time.perf_counter() - t) / len(sample)
        how = f"the cache was warm; Backbone.embed timed on {len(sample)} items (decode + preprocess + ONNX Runtime)"
    ctx.say(f"extraction: {report.embedded} embedded, {report.cached} cached, {per_item * 1000:.2f} ms/item")
    extraction = Extraction(cache=display_path(cache), items=len(pool), embedded=report.embedded, cached=report.cached,
                            seconds=report.seconds, per_item_s=per_item, per_item_method=how,
                            batch_size=config.extract_batch_size, threads=config.threads)
    return Features(X, lookup, layers), extraction


def warm_up_workers(threads: int) -> None:
    """Start joblib's worker processes before any timed row (their start-up is not a head's cost)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    y = np.array(["a", "b"] * 10, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        select_head("logreg", X, y, cv=2, n_jobs=threads, progress=False)


def head_row(ctx: Context, subset: Subset, kind: str, features: Features, extraction: Extraction,
             layer: str = FINAL) -> HeadRow:
    """One head with featx.heads model selection on the subset's cached features (of ``layer``)."""
    X, X_test = features.of(subset.items, layer), features.of(ctx.splits.test.items, layer)
    with Meter() as m, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fewer folds / no CV: recorded in notes
        # no bar: its chunked search would change the fit time this row measures
        sel = select_head(kind, X, subset.labels, cv=ctx.config.cv, n_jobs=ctx.config.threads, seed=0,
                                       progress=False)
    est = sel.best_estimator
    t = time.perf_counter()
    pred = est.predict(X_test)
    head_latency = (time.perf_counter() - t) / len(X_test)
    cv_score = None if not sel.n_splits or math.isnan(sel.cv_mean) else float(sel.cv_mean)
    per_item = extraction.per_item_s
    params = jsonable(sel.best_params) | ({} if layer == FINAL else {"layer": layer})
    return HeadRow.scored(subset, head_strategy(kind, layer), "frozen", scores(ctx.test_labels, pred, ctx.splits.classes),
                          extract_s=per_item * subset.n_train, fit_s=m.seconds, peak_rss_mb=m.peak_mb,
                          trainable_params=estimator_params(est),
                          predict_ms_per_item=(per_item + head_latency) * 1000,
                          params=params, cv_score=cv_score,
                          cv_std=None if cv_score is None else float(sel.cv_std), cv_folds=sel.n_splits or None,
                          notes=list(sel.notes))


def best_by_cv(subset: Subset, head_rows: Sequence[HeadRow], strategy: str = BEST_BY_CV,
               what: str = "head") -> SelectedRow:
    """The row a user would pick without the test set: highest CV score (ties, and no CV: the first row,
    :func:`featx.heads.best_layer`'s rule); its fit time counts every row it was chosen from.

    ``what`` is the choice: ``"head"`` (the frozen heads on the final features) or ``"layer"``."""
    chosen = best_layer({k: r.cv_score for k, r in enumerate(head_rows)})
    best = head_rows[chosen]
    scored = any(r.cv_score is not None for r in head_rows)
    name = best.params.get("layer", FINAL) if what == "layer" else best.strategy.split(": ", 1)[1].split(" @ ")[0]
    return SelectedRow.scored(subset, strategy, "frozen", best.scores, extract_s=best.extract_s,
                              fit_s=sum(r.fit_s for r in head_rows),
                              peak_rss_mb=max((r.peak_rss_mb or 0) for r in head_rows),
                              trainable_params=best.trainable_params, predict_ms_per_item=best.predict_ms_per_item,
                              cv_score=best.cv_score, cv_std=best.cv_std, cv_folds=best.cv_folds,
                              params={what: name, "chosen_by": "highest CV score" if scored
                                      else f"no CV possible: the first {what}", **best.params})


def run_heads(ctx: Context, subset: Subset, table: Table, features: Features, extraction: Extraction) -> list[HeadRow]:
    """The frozen-head rows of one subset, and "frozen: best by CV" when there are several heads."""
    head_rows = []
    for kind in ctx.config.heads:
        row = table.attempt(subset, head_strategy(kind),
                            lambda kind=kind: head_row(ctx, subset, kind, features, extraction))
        if row:
            head_rows.append(row)
            table.report(row, f"cv {format_number(row.cv_score)} fit {row.fit_s:.1f}s")
    if len(head_rows) > 1:
        table.add(best_by_cv(subset, head_rows))
    return head_rows


def run_layers(ctx: Context, subset: Subset, table: Table, features: Features, extraction: Extraction,
               final: HeadRow | None = None) -> None:
    """The layer rows of one subset: "frozen: logreg @ <layer>" per intermediate layer, then "frozen: best
    layer by CV", of those and ``final`` ("frozen: logreg" on the final features), the best CV score."""
    rows = [final] if final is not None else []
    for layer in features.layers:
        row = table.attempt(subset, head_strategy(LAYER_HEAD, layer),
                            lambda layer=layer: head_row(ctx, subset, LAYER_HEAD, features, extraction, layer))
        if row:
            rows.append(row)
            table.report(row, f"cv {format_number(row.cv_score)} fit {row.fit_s:.1f}s")
    if len(rows) > 1:
        table.add(best_by_cv(subset, rows, BEST_LAYER, "layer"))


def estimator_params(est) -> int | None:
    """Fitted values of a head: coefficients (linear); support vectors, dual coefficients and the
    sigmoid calibration (SVM); stored training vectors (kNN)."""
    clf = est[-1] if hasattr(est, "steps") else est
    extra = 0
    if hasattr(clf, "calibrated_classifiers_"):
        calibrated = clf.calibrated_classifiers_[0]
        extra = 2 * len(calibrated.calibrators)
        clf = calibrated.estimator
    if hasattr(clf, "support_vectors_"):
        return int(np.size(clf.support_vectors_) + np.size(clf.dual_coef_) + np.size(clf.intercept_)) + extra
    if hasattr(clf, "coef_"):
        return int(np.size(clf.coef_) + np.size(getattr(clf, "intercept_", 0))) + extra
    if hasattr(clf, "_fit_X"):
        return int(np.size(clf._fit_X)) + extra
    return None

