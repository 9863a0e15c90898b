"""Classifier heads on frozen embeddings: scikit-learn pipelines and their selection grids.

A head is a :class:`sklearn.pipeline.Pipeline` of two steps, ``scale`` then ``clf``:

- ``scale``: ``"standard"`` (:class:`~sklearn.preprocessing.StandardScaler`), ``"l2"``
  (:class:`~sklearn.preprocessing.Normalizer`, unit-length rows) or ``"none"``;
- ``clf``: ``"logreg"`` (:class:`~sklearn.linear_model.LogisticRegression`), ``"svm"``
  (:class:`~sklearn.svm.SVC`, linear or RBF) or ``"knn"``
  (:class:`~sklearn.neighbors.KNeighborsClassifier`, cosine or euclidean).

One fixed grid per head (:func:`head_grid`), the same for every dataset and backbone;
:func:`select_head` picks the best point by stratified, shuffled, seeded k-fold
cross-validation and refits it on all the data. Everything here is pure: arrays in, fitted
estimators and numbers out.

The selected SVM is refitted inside :class:`~sklearn.calibration.CalibratedClassifierCV`
(sigmoid, ``ensemble=False``) so that it has ``predict_proba``; its predictions are the argmax
of those probabilities (scikit-learn deprecated ``SVC(probability=True)`` in 1.9).

Examples
--------
>>> from sklearn.datasets import load_digits
>>> X, y = load_digits(return_X_y=True)
>>> result = select_head("logreg", X[:300], y[:300], cv=3, n_jobs=1)
>>> result.kind, sorted(result.best_params)
('logreg', ['C', 'power', 'scale'])
>>> 0.8 < result.cv_mean <= 1.0
True
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import InputError, ParameterError

__all__ = ["HEADS", "SCALERS", "POWERS", "SignedSqrt", "SelectionResult", "head_pipeline", "head_grid",
           "select_head", "train_heads", "resolve_heads", "describe_params", "grid_size"]

#: Head kinds, in the order :func:`train_heads` runs them.
HEADS = ("logreg", "svm", "knn")
#: Scaling step names.
SCALERS = ("standard", "l2", "none")
#: Power step names.
POWERS = ("none", "sqrt")
#: Most folds of the probability calibration of the SVM head.
CALIBRATION_FOLDS = 3

# The grids. "power": "sqrt" is the signed square root (power normalisation), which helps pooled
# CNN features (+0.5 to 1 point on Fashion-MNIST / EfficientNet-Lite0). C of the logistic regression
# and of the linear SVM spans a log grid for standardised features (small C) and for unit-length
# rows (large C: their entries are tiny). The RBF kernel gets unit-length rows only: on standardised
# 1280-d features it scored lower and fitted slower on every dataset tried (digits, Fashion-MNIST).
# With unit-length rows, cosine and euclidean neighbours are the same, so kNN tries only one there.
_POWER = ["none", "sqrt"]
_GRIDS: dict[str, list[dict[str, list]]] = {
    "logreg": [
        {"power": _POWER, "scale": ["standard"], "C": [0.001, 0.01, 0.1, 1.0]},
        {"power": _POWER, "scale": ["l2"], "C": [1.0, 10.0, 100.0, 1000.0]},
    ],
    "svm": [
        {"power": _POWER, "scale": ["standard"], "kernel": ["linear"], "C": [0.01, 0.1, 1.0]},
        {"power": _POWER, "scale": ["l2"], "kernel": ["linear"], "C": [1.0, 10.0, 100.0]},
        {"power": _POWER, "scale": ["l2"], "kernel": ["rbf"], "C": [1.0, 10.0, 100.0], "gamma": ["scale"]},
    ],
    "knn": [
        {"power": _POWER, "scale": ["standard"], "n_neighbors": [1, 5, 10, 20], "weights": ["uniform", "distance"],
         "metric": ["cosine", "euclidean"]},
        {"power": _POWER, "scale": ["l2"], "n_neighbors": [1, 5, 10, 20], "weights": ["uniform", "distance"],
         "metric": ["cosine"]},
    ],
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1.0, "max_iter": 2000},
    "svm": {"kernel": "rbf", "C": 1.0, "gamma": "scale"},
    "knn": {"n_neighbors": 5, "weights": "uniform", "metric": "euclidean"},
}


@dataclass
class SelectionResult:
    """The outcome of :func:`select_head` for one head.

    Attributes
    ----------
    kind : str
        ``"logreg"``, ``"svm"`` or ``"knn"``.
    best_estimator : sklearn.pipeline.Pipeline
        The best grid point, refitted on all the data.
    best_params : dict
        Its parameters, in the grid's vocabulary (``{"scale": "l2", "C": 10.0}``).
    cv_mean, cv_std : float
        Mean and standard deviation of its accuracy over the folds (NaN without CV).
    fit_seconds : float
        Wall-clock time of the whole selection: search, refit, calibration.
    cv_results : dict
        Per grid point: ``params`` (list of dicts), ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time`` (lists); empty without CV.
    n_splits : int
        Folds used (0 when fitted without CV).
    notes : list of str
        What was adapted to the data (fewer folds, pruned grid values, no CV...).
    """

    kind: str
    best_estimator: Any
    best_params: dict
    cv_mean: float
    cv_std: float
    fit_seconds: float
    cv_results: dict = field(default_factory=dict, repr=False)
    n_splits: int = 0
    notes: list = field(default_factory=list)

    def summary(self) -> dict:
        """A JSON-ready summary (no estimator)."""
        return {"kind": self.kind, "best_params": self.best_params, "cv_mean": _none_if_nan(self.cv_mean),
                "cv_std": _none_if_nan(self.cv_std), "fit_seconds": round(self.fit_seconds, 3),
                "n_splits": self.n_splits, "notes": list(self.notes)}


# ------------------------------------------------------------------------ building blocks
def _check_kind(kind) -> str:
    if kind not in HEADS:
        raise ParameterError(f"The 'kind' parameter must be one of {HEADS}. Got {kind!r} instead.")
    return kind


class SignedSqrt(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Power normalisation: ``sign(x) * sqrt(|x|)``, element-wise (stateless).

    Damps the few large activations of pooled CNN features, a classic gain for linear heads
    (Perronnin et al., 2010).

    Examples
    --------
    >>> SignedSqrt().fit_transform([[4.0, -9.0]])
    array([[ 2., -3.]])
    """

    def fit(self, X, y=None):
        validate_data(self, X, reset=True, dtype=(np.float64, np.float32))
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32), copy=True)
        return np.sign(X) * np.sqrt(np.abs(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _power(name):
    if name == "sqrt":
        return SignedSqrt()
    if name == "none":
        return "passthrough"
    raise ParameterError(f"The 'power' parameter must be one of {POWERS}. Got {name!r} instead.")


def _scaler(name):
    from sklearn.preprocessing import Normalizer, StandardScaler

    if name == "standard":
        return StandardScaler()
    if name == "l2":
        return Normalizer(norm="l2")
    if name == "none":
        return "passthrough"
    raise ParameterError(f"The 'scale' parameter must be one of {SCALERS}. Got {name!r} instead.")


def _classifier(kind: str, params: Mapping[str, Any]):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    cls = {"logreg": LogisticRegression, "svm": SVC, "knn": KNeighborsClassifier}[kind]
    merged = {**_DEFAULTS[kind], **params}
    known = set(cls().get_params())
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for the {kind!r} head ({cls.__name__}); "
                             f"known: {sorted(known)}, 'scale' and 'power'")
    return cls(**merged)


def head_pipeline(kind: str, scale: str = "standard", power: str = "none", **params):
    """An unfitted head: ``Pipeline([("power", ...), ("scale", ...), ("clf", ...)])``.

    Parameters
    ----------
    kind : {"logreg", "svm", "knn"}
    scale : {"standard", "l2", "none"}
        Standardise each feature, scale each row to unit L2 norm, or nothing.
    power : {"none", "sqrt"}
        Signed square root of each feature before scaling (:class:`SignedSqrt`).
    **params
        Parameters of the classifier (``C=10``, ``kernel="linear"``, ``n_neighbors=5``...),
        over featx's defaults (``max_iter=2000`` for logreg).

    Returns
    -------
    sklearn.pipeline.Pipeline

    Raises
    ------
    ParameterError
        Unknown kind, scale or classifier parameter.

    Examples
    --------
    >>> head_pipeline("knn", scale="l2", n_neighbors=3, metric="cosine")  # doctest: +NORMALIZE_WHITESPACE
    Pipeline(steps=[('power', 'passthrough'), ('scale', Normalizer()),
                    ('clf', KNeighborsClassifier(metric='cosine', n_neighbors=3))])
    """
    from sklearn.pipeline import Pipeline

    _check_kind(kind)
    return Pipeline([("power", _power(power)), ("scale", _scaler(scale)), ("clf", _classifier(kind, params))])


def head_grid(kind: str) -> list[dict[str, list]]:
    """The selection grid of a head, in featx's vocabulary (``scale`` + classifier parameters).

    The same grid for every dataset; :func:`select_head` only prunes values the data cannot
    support (``n_neighbors`` larger than a training fold).

    Examples
    --------
    >>> head_grid("logreg")[0]
    {'power': ['none', 'sqrt'], 'scale': ['standard'], 'C': [0.001, 0.01, 0.1, 1.0]}
    """
    _check_kind(kind)
    return [{key: list(values) for key, values in part.items()} for part in _GRIDS[kind]]


def grid_size(grid: Sequence[Mapping[str, Sequence]]) -> int:
    """Number of grid points."""
    return sum(math.prod(len(v) for v in part.values()) for part in grid)


def _check_grid(kind: str, grid) -> list[dict[str, list]]:
    if isinstance(grid, Mapping):
        grid = [grid]
    if not isinstance(grid, (list, tuple)) or not grid:
        raise ParameterError(f"The 'grid' parameter must be a dict or a non-empty list of dicts. Got {grid!r} instead.")
    checked = []
    for part in grid:
        if not isinstance(part, Mapping) or not part:
            raise ParameterError(f"each part of a grid must be a non-empty dict of lists. Got {part!r} instead.")
        part = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in part.items()}
        for key, values in part.items():
            if not values:
                raise ParameterError(f"grid entry {key!r} of the {kind!r} head has no values")
        for scale in part.get("scale", ["standard"]):
            _scaler(scale)
        for power in part.get("power", ["none"]):
            _power(power)
        _classifier(kind, {k: v[0] for k, v in part.items() if k not in ("scale", "power")})  # names check
        checked.append(part)
    return checked


def _to_sklearn_grid(grid: list[dict[str, list]]) -> list[dict[str, list]]:
    out = []
    for part in grid:
        sk = {"power": [_power(p) for p in part.get("power", ["none"])],
              "scale": [_scaler(s) for s in part.get("scale", ["standard"])]}
        sk.update({f"clf__{k}": v for k, v in part.items() if k not in ("scale", "power")})
        out.append(sk)
    return out


def describe_params(params: Mapping[str, Any]) -> dict:
    """Pipeline parameters (``{"scale": StandardScaler(), "clf__C": 1.0}``) -> featx vocabulary.

    Examples
    --------
    >>> from sklearn.preprocessing import Normalizer
    >>> describe_params({"scale": Normalizer(), "clf__C": 10.0})
    {'scale': 'l2', 'C': 10.0}
    """
    out = {}
    for key, value in params.items():
        if key == "scale":
            out["scale"] = _scale_name(value)
        elif key == "power":
            out["power"] = "sqrt" if isinstance(value, SignedSqrt) else "none"
        else:
            out[key.removeprefix("clf__")] = _plain(value)
    return out


def _scale_name(step) -> str:
    from sklearn.preprocessing import Normalizer, StandardScaler

    if isinstance(step, StandardScaler):
        return "standard"
    if isinstance(step, Normalizer):
        return "l2"
    if step in (None, "passthrough"):
        return "none"
    return type(step).__name__


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _none_if_nan(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ------------------------------------------------------------------------ selection
def _check_xy(X, y):
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D array of features (n_samples, n_features); got shape {X.shape}")
    if y is None:
        raise InputError("y is None: heads need labels; extract a labelled dataset (class folders or a label column)")
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"y must be 1-D (one label per row); got shape {y.shape}")
    if len(X) != len(y):
        raise InputError(f"X has {len(X)} rows but y has {len(y)} labels")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"X must be numeric; got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise InputError(f"X has NaN/inf in {len(bad)} row(s) (first: {bad[:5].tolist()}); "
                         "drop or recompute those items")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"a head needs at least 2 classes; y holds {len(classes)} ({classes[:1].tolist()})")
    return X, y, classes, counts


def _check_int(name: str, value, low: int):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(f"The {name!r} parameter must be an int in [{low}, inf). Got {value!r} instead.")


def _prune_neighbors(grid: list[dict[str, list]], max_k: int, notes: list) -> list[dict[str, list]]:
    out = []
    for part in grid:
        if "n_neighbors" in part:
            ks = [k for k in part["n_neighbors"] if k <= max_k]
            if len(ks) < len(part["n_neighbors"]):
                dropped = [k for k in part["n_neighbors"] if k > max_k]
                notes.append(f"n_neighbors {dropped} dropped: a training fold has only {max_k} rows")
            part = {**part, "n_neighbors": ks or [max(1, max_k)]}
        out.append(part)
    return out


def select_head(kind: str, X, y, *, cv: int = 5, n_jobs: int | None = -1, seed: int = 0,
                grid=None, scoring: str = "accuracy", calibrate: bool = True,
                progress: bool | None = None) -> SelectionResult:
    """Pick the best point of a head's grid by cross-validation and refit it on all the data.

    Parameters
    ----------
    kind : {"logreg", "svm", "knn"}
    X : array of shape (n, d)
        Features (embeddings).
    y : array of shape (n,)
        Labels.
    cv : int
        Folds of the stratified, shuffled, seeded k-fold. When the smallest class has fewer
        items, the folds are reduced to that count (with a warning); with a single item in some
        class the head is fitted with its default parameters and no CV (with a warning).
    n_jobs : int or None
        Parallel fits (``-1``: all cores; ``None`` or ``1``: this process). BLAS is limited to
        one thread per fit, which is much faster than oversubscribing on a busy machine.
    seed : int
        Seed of the fold shuffling.
    grid : dict or list of dict, optional
        Replace :func:`head_grid` (featx vocabulary: ``{"scale": ["l2"], "C": [1, 10]}``).
    scoring : str
        A scikit-learn scorer name.
    calibrate : bool
        Refit the selected SVM inside a sigmoid calibration so that it has ``predict_proba``.
    progress : bool or None
        A bar over the fits of the search (None: when stderr is a terminal; see :mod:`featx.progress`).

    Returns
    -------
    SelectionResult

    Raises
    ------
    ParameterError
        Unknown kind, bad ``cv``/``seed``/``grid``.
    InputError
        X and y do not fit together, X has NaN, fewer than 2 classes.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> r = select_head("knn", X[:200], y[:200], cv=3, n_jobs=1)
    >>> r.n_splits, r.cv_mean > 0.8
    (3, True)
    """
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from .search import grid_search

    _check_kind(kind)
    _check_int("cv", cv, 2)
    _check_int("seed", seed, 0)
    _check_n_jobs(n_jobs)
    X, y, classes, counts = _check_xy(X, y)
    grid = _check_grid(kind, head_grid(kind) if grid is None else grid)
    notes: list[str] = []
    t0 = time.perf_counter()
    smallest = int(counts.min())
    n_splits = cv
    if smallest < 2:
        lonely = classes[counts < 2][:5].tolist()
        msg = (f"{kind}: class(es) {lonely} have a single item, so no cross-validation is possible; "
               "fitted the default head without model selection (no CV score)")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)
        params = {"power": "none", "scale": "standard", **{k: v for k, v in _DEFAULTS[kind].items() if k != "max_iter"}}
        if kind == "knn":
            params["n_neighbors"] = min(int(params["n_neighbors"]), smallest)  # 1 neighbour: 1 item per class
        with threadpool_limits(limits=1, user_api="blas"):
            estimator = _refit(kind, params, X, y, smallest, calibrate, notes)
        return SelectionResult(kind, estimator, _plain_params(params), float("nan"), float("nan"),
                               time.perf_counter() - t0, {}, 0, notes)
    if smallest < cv:
        n_splits = smallest
        msg = (f"{kind}: the smallest class has {smallest} items, fewer than cv={cv}; "
               f"using {n_splits}-fold cross-validation")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)
    max_test = math.ceil(len(y) / n_splits) + len(classes)  # stratified folds may be a little larger
    grid = _prune_neighbors(grid, max(1, len(y) - max_test), notes)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    search = grid_search(head_pipeline(kind), _to_sklearn_grid(grid), cv=splitter, scoring=scoring,
                         n_jobs=n_jobs, refit=False, error_score="raise", progress=progress, label=f"featx {kind}")
    from sklearn.exceptions import ConvergenceWarning

    with threadpool_limits(limits=1, user_api="blas"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # of grid points that are not chosen
            search.fit(X, y)
        best = search.best_index_
        params = describe_params(search.cv_results_["params"][best])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            estimator = _refit(kind, params, X, y, smallest, calibrate, notes)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append(f"{kind}: the final fit stopped before converging ({params})")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes[:] = list(dict.fromkeys(notes))
    res = search.cv_results_
    cv_results = {
        "params": [describe_params(p) for p in res["params"]],
        "mean_test_score": [float(v) for v in res["mean_test_score"]],
        "std_test_score": [float(v) for v in res["std_test_score"]],
        "rank_test_score": [int(v) for v in res["rank_test_score"]],
        "mean_fit_time": [float(v) for v in res["mean_fit_time"]],
    }
    return SelectionResult(kind, estimator, params, float(res["mean_test_score"][best]),
                           float(res["std_test_score"][best]), time.perf_counter() - t0, cv_results, n_splits, notes)


def _check_n_jobs(n_jobs) -> None:
    if n_jobs is None:
        return
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ParameterError(f"The 'n_jobs' parameter must be None or a non-zero int (-1: all cores). "
                             f"Got {n_jobs!r} instead.")


def _plain_params(params: Mapping[str, Any]) -> dict:
    return {k: _plain(v) for k, v in params.items()}


def _refit(kind: str, params: Mapping[str, Any], X, y, smallest: int, calibrate: bool, notes: list):
    """Fit the chosen point on all the data (the SVM inside a sigmoid calibration when possible)."""
    params = dict(params)
    scale = params.pop("scale", "standard")
    power = params.pop("power", "none")
    pipe = head_pipeline(kind, scale=scale, power=power, **params)
    if kind == "svm" and calibrate:
        folds = min(CALIBRATION_FOLDS, smallest)
        if folds >= 2:
            from sklearn.calibration import CalibratedClassifierCV

            svc = pipe.named_steps["clf"]
            pipe.steps[-1] = ("clf", CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False))
        else:
            notes.append("svm: too few items per class to calibrate probabilities; the head has no predict_proba")
    return pipe.fit(X, y)


def train_heads(X, y, heads: Sequence[str] = HEADS, *, cv: int = 5, n_jobs: int | None = -1, seed: int = 0,
                grids: Mapping[str, Any] | None = None, progress: bool | None = None) -> list[SelectionResult]:
    """Select every head in ``heads`` on the same folds; see :func:`select_head`.

    Parameters
    ----------
    X, y : arrays
        Features and labels.
    heads : sequence of str, or "all"
        Head kinds, run in this order.
    cv, n_jobs, seed, progress :
        As in :func:`select_head`.
    grids : dict, optional
        ``{kind: grid}`` replacing the default grid of some heads.

    Returns
    -------
    list of SelectionResult
        In the order of ``heads``.
    """
    heads = resolve_heads(heads)
    grids = dict(grids or {})
    unknown = sorted(set(grids) - set(heads))
    if unknown:
        raise ParameterError(f"grids given for head(s) {unknown} that are not trained; heads: {list(heads)}")
    return [select_head(kind, X, y, cv=cv, n_jobs=n_jobs, seed=seed, grid=grids.get(kind), progress=progress)
            for kind in heads]


def resolve_heads(heads) -> tuple[str, ...]:
    """``"all"``, one kind, or a sequence of kinds -> a tuple of kinds (no repeats)."""
    if isinstance(heads, str):
        heads = HEADS if heads == "all" else (heads,)
    heads = tuple(dict.fromkeys(heads))
    if not heads:
        raise ParameterError("The 'heads' parameter must name at least one head. Got an empty list instead.")
    for kind in heads:
        if kind not in HEADS:
            raise ParameterError(f"The 'heads' parameter must hold kinds among {HEADS} or be 'all'. "
                                 f"Got {kind!r} instead.")
    return heads
