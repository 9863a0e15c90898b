"""Heads for targets beyond one label, selected by cross-validation like the single-label ones:
multi-label (one-vs-rest logreg / linear SVM / kNN, with a threshold chosen on out-of-fold
scores, global or per label) and regression (ridge, SVR, kNN regression).

A multi-label head is a plain :class:`~sklearn.pipeline.Pipeline` (scaler, then
:class:`~sklearn.multiclass.OneVsRestClassifier`); its labels and threshold are kept in the head's
metadata (:func:`multilabel_predict` applies them), so the file loads and deploys like any head.
Folds are plain shuffled :class:`~sklearn.model_selection.KFold` (a label set cannot be
stratified): a label absent from a fold's training rows is a constant "no" there, which is what
one-vs-rest does with a label seen in one item only.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(60, 4)); Y = np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(np.uint8)
>>> r = select_multilabel("logreg", X, Y, cv=3, seed=0)
>>> r.kind, r.estimator.predict_proba(X[:2]).shape, 0 < r.threshold[0] < 1
('logreg', (2, 2), True)
>>> y = X[:, 0] * 2 + 1
>>> r = select_regressor("ridge", X, y, cv=3)
>>> r.kind, round(r.cv["r2"], 2) > 0.9
('ridge', True)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError, DataSourceError

MULTILABEL_HEADS = ("logreg", "svm", "knn")
REGRESSION_HEADS = ("ridge", "svr", "knn")
THRESHOLDS = ("global", "per-label")


@dataclass
class TargetResult:
    """One head selected by CV: the refitted estimator, its parameters and its CV scores.

    ``threshold`` (multi-label only) has one value per label; ``cv`` holds the CV means of the
    metrics (multi-label: ``map`` the micro average precision that chose the parameters, and the
    out-of-fold ``micro_f1``/``macro_f1`` at the threshold; regression: ``r2``, ``mae``, ``rmse``).
    """

    kind: str
    target: str
    estimator: object
    best_params: dict
    cv: dict
    fit_seconds: float
    threshold: list | None = None
    notes: list = field(default_factory=list)


def _grid(target: str, kind: str, n_fit: int) -> tuple[object, dict]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR, LinearSVC

    ks = sorted({k for k in (1, 3, 5, 10, 20) if k <= max(1, n_fit)})
    if target == "multi":
        heads = {"logreg": (LogisticRegression(max_iter=2000), {"C": [0.01, 0.1, 1.0, 10.0]}),
                 "svm": (LinearSVC(dual=True, max_iter=5000), {"C": [0.01, 0.1, 1.0]}),
                 "knn": (KNeighborsClassifier(metric="cosine"), {"n_neighbors": ks})}
        if kind not in heads:
            raise ParameterError(f"multi-label head {kind!r}: expected one of {', '.join(MULTILABEL_HEADS)}")
        clf, grid = heads[kind]
        pipe = Pipeline([("scale", StandardScaler()), ("clf", OneVsRestClassifier(clf))])
        return pipe, {f"clf__estimator__{k}": v for k, v in grid.items()}
    heads = {"ridge": (Ridge(), {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]}),
             "svr": (SVR(), {"C": [0.1, 1.0, 10.0, 100.0]}),
             "knn": (KNeighborsRegressor(metric="cosine"), {"n_neighbors": ks, "weights": ["uniform", "distance"]})}
    if kind not in heads:
        raise ParameterError(f"regression head {kind!r}: expected one of {', '.join(REGRESSION_HEADS)}")
    reg, grid = heads[kind]
    pipe = Pipeline([("scale", StandardScaler()), ("reg", reg)])
    return pipe, {f"reg__{k}": v for k, v in grid.items()}


def _folds(n: int, cv: int, seed: int, what: str):
    from sklearn.model_selection import KFold

    if n < 2 * cv and n < 4:
        raise DataSourceError(f"{n} labelled items are too few to select a {what} head by CV")
    return KFold(n_splits=min(cv, n), shuffle=True, random_state=seed)


def scores_of(estimator, X) -> np.ndarray:
    """Per-label scores of a multi-label head: probabilities, or the SVM's decision values."""
    if hasattr(estimator, "predict_proba") and not _is_svm(estimator):
        return np.asarray(estimator.predict_proba(X), dtype=np.float64)
    return np.asarray(estimator.decision_function(X), dtype=np.float64).reshape(len(X), -1)


def _is_svm(estimator) -> bool:
    inner = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return type(getattr(inner, "estimator", inner)).__name__ == "LinearSVC"


def choose_threshold(Y: np.ndarray, scores: np.ndarray, mode: str = "global") -> np.ndarray:
    """Thresholds (one per label) maximising F1 on out-of-fold ``scores``: one shared value
    (micro-F1), or each label's own (its F1; a label with no positive keeps the shared one).

    Examples
    --------
    >>> Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    >>> s = np.array([[0.9, 0.2], [0.3, 0.6], [0.7, 0.8], [0.1, 0.4]])
    >>> choose_threshold(Y, s).tolist(), choose_threshold(Y, s, "per-label").tolist()
    ([0.5, 0.5], [0.5, 0.5])
    """
    from sklearn.metrics import f1_score

    if mode not in THRESHOLDS:
        raise ParameterError(f"threshold={mode!r}: expected one of {', '.join(THRESHOLDS)}")
    Y = np.asarray(Y)

    def best(y, s, average):
        values = np.unique(s)
        cuts = np.r_[(values[:-1] + values[1:]) / 2, values[-1:]] if len(values) > 1 else values
        if len(cuts) > 256:
            cuts = np.quantile(s, np.linspace(0, 1, 257)[1:-1])
        f1 = [f1_score(y, s >= c, average=average, zero_division=0) for c in cuts]
        return float(np.round(cuts[int(np.argmax(f1))], 6))

    shared = best(Y, scores, "micro")
    if mode == "global":
        return np.full(Y.shape[1], shared)
    return np.array([best(Y[:, j], scores[:, j], "binary") if Y[:, j].any() else shared for j in range(Y.shape[1])])


def micro_ap(estimator, X, Y) -> float:
    """Micro-averaged average precision of a multi-label head's scores (a scorer for CV)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(Y, scores_of(estimator, X), average="micro"))


def select_multilabel(kind: str, X, Y, *, cv: int = 5, seed: int = 0, n_jobs: int | None = None,
                      threshold: str = "global") -> TargetResult:
    """Select a one-vs-rest head by CV on micro average precision, then its threshold(s) on the
    out-of-fold scores of the chosen parameters; refit on all rows."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV, cross_val_predict

    X, Y = np.asarray(X), np.asarray(Y)
    t0 = time.perf_counter()
    folds = _folds(len(X), cv, seed, "multi-label")
    pipe, grid = _grid("multi", kind, len(X) - len(X) // folds.n_splits)
    method = "decision_function" if kind == "svm" else "predict_proba"
    with warnings.catch_warnings():  # a label absent from a fold: one-vs-rest's constant head, told in the notes
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        search = GridSearchCV(pipe, grid, scoring=micro_ap, cv=folds, n_jobs=n_jobs, error_score="raise").fit(X, Y)
        oof = np.asarray(cross_val_predict(search.best_estimator_, X, Y, cv=folds, method=method, n_jobs=n_jobs))
    cuts = choose_threshold(Y, oof, threshold)
    pred = oof >= cuts
    cv_scores = {"map": float(search.best_score_),
                 "micro_f1": float(f1_score(Y, pred, average="micro", zero_division=0)),
                 "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0))}
    notes = []
    rare = int((Y.sum(axis=0) < 2).sum())
    if rare:
        notes.append(f"{rare} label(s) appear in one item or none: their heads are constant in some folds")
    return TargetResult(kind, "multi", search.best_estimator_, _plain(search.best_params_), cv_scores,
                        time.perf_counter() - t0, cuts.tolist(), notes)


def select_regressor(kind: str, X, y, *, cv: int = 5, seed: int = 0, n_jobs: int | None = None) -> TargetResult:
    """Select a regressor by CV on R² (MAE and RMSE of the same folds reported beside); refit on all rows."""
    from sklearn.model_selection import GridSearchCV

    X, y = np.asarray(X), np.asarray(y, dtype=np.float64)
    t0 = time.perf_counter()
    folds = _folds(len(X), cv, seed, "regression")
    pipe, grid = _grid("numeric", kind, len(X) - len(X) // folds.n_splits)
    scoring = {"r2": "r2", "mae": "neg_mean_absolute_error", "rmse": "neg_root_mean_squared_error"}
    search = GridSearchCV(pipe, grid, scoring=scoring, refit="r2", cv=folds, n_jobs=n_jobs,
                          error_score="raise").fit(X, y)
    i = search.best_index_
    res = search.cv_results_
    cv_scores = {"r2": float(res["mean_test_r2"][i]), "mae": float(-res["mean_test_mae"][i]),
                 "rmse": float(-res["mean_test_rmse"][i])}
    return TargetResult(kind, "numeric", search.best_estimator_, _plain(search.best_params_), cv_scores,
                        time.perf_counter() - t0)


def train_target_heads(X, labels, target: str, heads=None, *, delimiter: str | None = None, cv: int = 5,
                       seed: int = 0, n_jobs: int | None = None, threshold: str = "global"):
    """Select each head of a target kind by CV on labelled rows.

    Parameters
    ----------
    X : array (n, d)
    labels : sequence of str
        Kept labels (:func:`featx.sources.clean_label`), none missing.
    target : {"multi", "numeric"}
    heads : sequence of str, optional
        Default: every head of the kind (:data:`MULTILABEL_HEADS` or :data:`REGRESSION_HEADS`).

    Returns
    -------
    (list of TargetResult, dict)
        The results, and what the heads' metadata must keep: ``target``, and for label sets the
        ``labels`` (column order of the scores) and the ``delimiter``.
    """
    from ..sources.targets import binarize, label_sets, numeric_targets

    if target == "multi":
        names = MULTILABEL_HEADS if heads is None else tuple(heads)
        Y, classes = binarize(label_sets(labels, delimiter))
        results = [select_multilabel(k, X, Y, cv=cv, seed=seed, n_jobs=n_jobs, threshold=threshold) for k in names]
        return results, {"target": "multi", "labels": list(classes), "delimiter": delimiter}
    if target == "numeric":
        names = REGRESSION_HEADS if heads is None else tuple(heads)
        y = numeric_targets(labels)
        return [select_regressor(k, X, y, cv=cv, seed=seed, n_jobs=n_jobs) for k in names], {"target": "numeric"}
    raise ParameterError(f"target={target!r}: train_target_heads takes 'multi' or 'numeric'; single labels go "
                         "through featx.heads.select_head")


def multilabel_predict(estimator, X, labels, threshold) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """``(scores (n, L), predicted label sets)`` of a multi-label head, with its kept threshold."""
    scores = scores_of(estimator, X)
    cuts = np.asarray(threshold, dtype=np.float64)
    if scores.shape[1] != len(labels) or cuts.shape != (len(labels),):
        raise DataSourceError(f"the head gives {scores.shape[1]} scores for {len(labels)} labels and "
                              f"{cuts.size} thresholds: its metadata does not match it; train it again")
    picked = scores >= cuts
    return scores, [tuple(label for label, on in zip(labels, row) if on) for row in picked]


def _plain(params: dict) -> dict:
    return {k.rsplit("__", 1)[-1]: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
