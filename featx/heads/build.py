"""Head pipelines and their grids: featx's vocabulary (``scale``, ``power``, ``C``...) -> scikit-learn.

An exact head is a :class:`sklearn.pipeline.Pipeline` of three steps, ``power``, ``scale``, ``clf``:

- ``power``: ``"sqrt"`` (:class:`SignedSqrt`) or ``"none"``;
- ``scale``: ``"standard"`` (:class:`~sklearn.preprocessing.StandardScaler`), ``"l2"``
  (:class:`~sklearn.preprocessing.Normalizer`, unit-length rows) or ``"none"``;
- ``clf``: ``"logreg"`` (:class:`~sklearn.linear_model.LogisticRegression`), ``"svm"``
  (:class:`~sklearn.svm.SVC`, linear or RBF) or ``"knn"``
  (:class:`~sklearn.neighbors.KNeighborsClassifier`, cosine or euclidean).

An approximate head (``approximate=True``) keeps ``power`` and ``scale`` and swaps the rest for
estimators whose cost grows linearly with the rows (see :mod:`featx.heads` for when):

- ``logreg``: :class:`~sklearn.linear_model.SGDClassifier` (log-loss), with
  ``alpha = 1 / (C n)``: the same objective as the exact head's ``C``;
- ``svm``: a ``kernel`` step, :class:`~sklearn.kernel_approximation.Nystroem` (RBF, ``n_components``
  landmarks) or nothing (linear), then :class:`~sklearn.svm.LinearSVC` in memory or
  :class:`~sklearn.linear_model.SGDClassifier` (hinge) when streamed;
- ``knn``: a ``reduce`` step, :class:`~sklearn.decomposition.PCA` to ``n_components``, then
  :class:`~featx.heads.knn.IVFKNeighborsClassifier` (an inverted-file index) or, to select
  parameters on a sample, the exact kNN on the same reduced rows.

One fixed grid per head and strategy (:func:`head_grid`), the same for every dataset and backbone.
Everything here is pure: no data, no files.

Examples
--------
>>> head_pipeline("logreg", approximate=True, n_train=1000, C=0.1).named_steps["clf"].alpha
0.01
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import ParameterError
from ..validation import check_choice, check_int, invalid
from .knn import IVFKNeighborsClassifier

__all__ = ["HEADS", "SCALERS", "POWERS", "CALIBRATION_FOLDS", "CALIBRATION_ROWS", "calibration_folds", "FEW_SHOT_PARAMS", "NYSTROEM_COMPONENTS", "PCA_COMPONENTS",
           "SignedSqrt",
           "check_kind", "default_params", "head_pipeline", "head_grid", "grid_size", "grid_points", "check_grid", "describe_params"]

#: Head kinds, in the order :func:`~featx.heads.train_heads` runs them.
HEADS = ("logreg", "svm", "knn")
#: Scaling step names.
SCALERS = ("standard", "l2", "none")
#: Power step names.
POWERS = ("none", "sqrt")
#: Most folds of the probability calibration of the SVM head (out-of-fold decision values for a sigmoid).
CALIBRATION_FOLDS = 3
#: From this many rows the calibration takes 2 folds: 5,000 rows or more each is plenty for a sigmoid
#: (2 numbers a class), and the SVM head's refit is then 2 fits in parallel plus the final one, not 3 + 1
#: (at 20,000 Fashion-MNIST rows the approximate SVM's refit was 60 % of its time).
CALIBRATION_ROWS = 10_000


def calibration_folds(n_rows: int) -> int:
    """Folds of the SVM head's probability calibration for ``n_rows`` training rows.

    Examples
    --------
    >>> calibration_folds(2000), calibration_folds(20_000)
    (3, 2)
    """
    return CALIBRATION_FOLDS if n_rows < CALIBRATION_ROWS else 2


#: Landmarks of the approximate RBF kernel: 1000 matched the exact RBF SVM's test accuracy on 8000
#: Fashion-MNIST Lite0 rows (87.0 % both; 2000: 86.6 %), at 1/n of its cost.
NYSTROEM_COMPONENTS = 1000
#: Dimensions the approximate kNN keeps (PCA): 128 scored as the exact kNN on all 1280 (83.2 vs 83.0 %,
#: 8000 Fashion-MNIST Lite0 rows) and makes its index 10x smaller.
PCA_COMPONENTS = 128

# The grids. "power": "sqrt" is the signed square root (power normalisation), which helps pooled
# CNN features (+0.5 to 1 point on Fashion-MNIST / EfficientNet-Lite0). C of the logistic regression
# and of the linear SVM spans a log grid for standardised features (small C) and for unit-length
# rows (large C: their entries are tiny). The RBF kernel gets unit-length rows only: on standardised
# 1280-d features it scored lower and fitted slower on every dataset tried (digits, Fashion-MNIST).
# With unit-length rows, cosine and euclidean neighbours are the same, so kNN tries only one there.
# The approximate grids are the same points, plus the size of the kernel map / reduction.
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

#: What a head is fitted with when no cross-validation is possible (a class with a single item):
#: unit-length rows and a fixed, weakly regularised classifier. Standardising on a handful of items
#: divides each feature by a standard deviation estimated from those items, which wrecks the
#: features: on Fashion-MNIST Lite0 (112 px) features with 1 item per class, held-out training
#: items scored 35.3% with standardisation + C=1 and 52.0% with L2 rows + C=1 (51.6% at C=10, 51.5%
#: at C=100; 20 draws, +-4.5%): flat in C, so C=10 (the middle of the range, best at 2-10 per class:
#: 61.3%, 69.7%, 74.1%). A 1-nearest-neighbour on the same rows equals nearest class mean then (50.7%).
FEW_SHOT_PARAMS: dict[str, dict[str, Any]] = {
    "logreg": {"power": "none", "scale": "l2", "C": 10.0},
    "svm": {"power": "none", "scale": "l2", "kernel": "linear", "C": 10.0},
    "knn": {"power": "none", "scale": "l2", "n_neighbors": 1, "weights": "uniform", "metric": "cosine"},
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1.0, "max_iter": 2000},
    "svm": {"kernel": "rbf", "C": 1.0, "gamma": "scale"},
    "knn": {"n_neighbors": 5, "weights": "uniform", "metric": "euclidean"},
}
# featx's parameters of the approximate heads, with their defaults.
_APPROX_PARAMS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 1.0, "epochs": 10},
    "svm": {"kernel": "rbf", "C": 1.0, "gamma": "scale", "n_components": NYSTROEM_COMPONENTS, "epochs": 10},
    "knn": {"n_neighbors": 5, "weights": "uniform", "metric": "euclidean", "n_components": PCA_COMPONENTS},
}


def default_params(kind: str) -> dict:
    """The parameters of a head fitted without selection (featx vocabulary): :data:`FEW_SHOT_PARAMS`.

    :func:`~featx.heads.select_head` uses them when cross-validation is impossible (a class with a
    single item): unit-length rows and a fixed C, sound for a handful of items.

    Examples
    --------
    >>> default_params("logreg")
    {'power': 'none', 'scale': 'l2', 'C': 10.0}
    >>> default_params("knn")
    {'power': 'none', 'scale': 'l2', 'n_neighbors': 1, 'weights': 'uniform', 'metric': 'cosine'}
    """
    check_kind(kind)
    return dict(FEW_SHOT_PARAMS[kind])


def check_kind(kind) -> str:
    """``kind`` if it is a head kind, else :class:`~featx.errors.ParameterError`."""
    return check_choice(kind, "kind", "head_pipeline", HEADS)


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


# Saved heads name a type by its module: keep the public one, stable across featx's own reorganisations.
SignedSqrt.__module__ = "featx.heads"


def _power(name):
    return SignedSqrt() if check_choice(name, "power", "head_pipeline", POWERS) == "sqrt" else "passthrough"


def _scaler(name):
    from sklearn.preprocessing import Normalizer, StandardScaler

    name = check_choice(name, "scale", "head_pipeline", SCALERS)
    return StandardScaler() if name == "standard" else Normalizer(norm="l2") if name == "l2" else "passthrough"


def _check_names(kind: str, given: Mapping[str, Any], known, where: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for the {kind!r} head ({where}); "
                             f"known: {sorted(known)}, 'scale' and 'power'")


def _classifier(kind: str, params: Mapping[str, Any]):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    cls = {"logreg": LogisticRegression, "svm": SVC, "knn": KNeighborsClassifier}[kind]
    merged = {**_DEFAULTS[kind], **params}
    _check_names(kind, merged, cls().get_params(), cls.__name__)
    return cls(**merged)


def _approximate_steps(kind: str, params: Mapping[str, Any], *, n_train, streamed: bool, index: bool, seed: int):
    """The steps after ``scale`` of an approximate head: ``[(name, step), ...]``."""
    from sklearn.decomposition import PCA
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import SGDClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    _check_names(kind, params, _APPROX_PARAMS[kind], "approximate")
    p = {**_APPROX_PARAMS[kind], **params}
    if kind == "knn":
        neighbours = {k: p[k] for k in ("n_neighbors", "weights", "metric")}
        clf = (IVFKNeighborsClassifier(**neighbours, random_state=seed) if index
               else KNeighborsClassifier(algorithm="brute", **neighbours))
        return [("reduce", PCA(n_components=p["n_components"], random_state=seed)), ("clf", clf)]
    check_int(n_train, "n_train", f"an approximate {kind} head_pipeline (alpha = 1 / (C n_train))", low=1)
    alpha = 1.0 / (float(p["C"]) * int(n_train))
    sgd = dict(alpha=alpha, max_iter=int(p["epochs"]), tol=None, random_state=seed)
    if kind == "logreg":
        return [("clf", SGDClassifier(loss="log_loss", **sgd))]
    if p["kernel"] == "rbf":
        if isinstance(p["gamma"], str):
            raise ParameterError("an approximate RBF svm head needs a numeric 'gamma' (select_head computes "
                                 f"'scale' from the data). Got {p['gamma']!r} instead.")
        kernel = Nystroem(kernel="rbf", gamma=float(p["gamma"]), n_components=int(p["n_components"]),
                          random_state=seed)
    elif p["kernel"] == "linear":
        kernel = "passthrough"
    else:
        check_choice(p["kernel"], "kernel", "an approximate svm head_pipeline", ("linear", "rbf"))
    # dual=True: liblinear's dual coordinate descent. On these dense 1000-1280-d rows the primal
    # Newton solver (what "auto" picks when n > d) took 0.94x to 7.9x its time at the same accuracy
    # (+-0.3 pt; 6,667 Fashion-MNIST Lite0 rows: standardised linear C=0.1 127 s vs 16 s).
    clf = (SGDClassifier(loss="hinge", **sgd) if streamed
           else LinearSVC(C=float(p["C"]), dual=True, random_state=seed))
    return [("kernel", kernel), ("clf", clf)]


def head_pipeline(kind: str, scale: str = "standard", power: str = "none", *, approximate: bool = False,
                  n_train: int | None = None, streamed: bool = False, index: bool = True, seed: int = 0, **params):
    """An unfitted head: ``Pipeline([("power", ...), ("scale", ...), ..., ("clf", ...)])``.

    Parameters
    ----------
    kind : {"logreg", "svm", "knn"}
    scale : {"standard", "l2", "none"}
        Standardise each feature, scale each row to unit L2 norm, or nothing.
    power : {"none", "sqrt"}
        Signed square root of each feature before scaling (:class:`SignedSqrt`).
    approximate : bool
        The head whose cost grows linearly with the rows (see the module's docstring).
    n_train : int, optional
        Rows it will be fitted on; needed by the approximate logreg and svm (``alpha = 1 / (C n)``).
    streamed : bool
        Approximate svm only: an SGD hinge classifier (``partial_fit``) instead of LinearSVC.
    index : bool
        Approximate knn only: the inverted-file index (True) or the exact kNN on the reduced rows.
    seed : int
        ``random_state`` of the approximate steps.
    **params
        Parameters of the classifier (``C=10``, ``kernel="linear"``, ``n_neighbors=5``...), over
        featx's defaults (``max_iter=2000`` for logreg); approximate heads take ``C``, ``kernel``,
        ``gamma``, ``n_components``, ``epochs``, ``n_neighbors``, ``weights``, ``metric``.

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
    >>> [name for name, _ in head_pipeline("svm", approximate=True, n_train=100, gamma=1.0).steps]
    ['power', 'scale', 'kernel', 'clf']
    """
    from sklearn.pipeline import Pipeline

    check_kind(kind)
    steps = [("power", _power(power)), ("scale", _scaler(scale))]
    if approximate:
        steps += _approximate_steps(kind, params, n_train=n_train, streamed=streamed, index=index, seed=seed)
    else:
        steps.append(("clf", _classifier(kind, params)))
    return Pipeline(steps)


def head_grid(kind: str, approximate: bool = False) -> list[dict[str, list]]:
    """The selection grid of a head, in featx's vocabulary (``scale`` + classifier parameters).

    The same grid for every dataset; :func:`~featx.heads.select_head` only prunes values the
    data cannot support (``n_neighbors`` larger than a training fold). The approximate grid has
    the same points, plus ``n_components`` (RBF landmarks, or kNN's reduced dimensions).

    Examples
    --------
    >>> head_grid("logreg")[0]
    {'power': ['none', 'sqrt'], 'scale': ['standard'], 'C': [0.001, 0.01, 0.1, 1.0]}
    >>> head_grid("svm", approximate=True)[2]["n_components"]
    [1000]
    """
    check_kind(kind)
    grid = [{key: list(values) for key, values in part.items()} for part in _GRIDS[kind]]
    if approximate:
        for part in grid:
            if kind == "knn" or part.get("kernel") == ["rbf"]:
                part["n_components"] = [PCA_COMPONENTS if kind == "knn" else NYSTROEM_COMPONENTS]
    return grid


def grid_size(grid: Sequence[Mapping[str, Sequence]]) -> int:
    """Number of grid points."""
    return sum(math.prod(len(v) for v in part.values()) for part in grid)


def grid_points(grid: Sequence[Mapping[str, Sequence]]) -> list[dict]:
    """Every point of a grid, in featx's vocabulary, in a fixed order.

    Examples
    --------
    >>> grid_points([{"scale": ["l2"], "C": [1.0, 10.0]}])
    [{'C': 1.0, 'scale': 'l2'}, {'C': 10.0, 'scale': 'l2'}]
    """
    from sklearn.model_selection import ParameterGrid

    return [dict(point) for point in ParameterGrid([dict(part) for part in grid])]


def check_grid(kind: str, grid, approximate: bool = False) -> list[dict[str, list]]:
    """A grid in featx's vocabulary, checked: every name known, every value list non-empty.

    Raises
    ------
    ParameterError
        Not a dict or a non-empty list of dicts, an empty value list, an unknown name.
    """
    if isinstance(grid, Mapping):
        grid = [grid]
    if not isinstance(grid, (list, tuple)) or not grid:
        raise invalid("grid", "select_head", "a dict or a non-empty list of dicts", grid)
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
        first = {k: v[0] for k, v in part.items() if k not in ("scale", "power")}
        if approximate:
            first = {**first, "gamma": 1.0} if "gamma" in first else first
            _approximate_steps(kind, first, n_train=1, streamed=False, index=True, seed=0)  # names check
        else:
            _classifier(kind, first)  # names check
        checked.append(part)
    return checked


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
            out[key.removeprefix("clf__")] = plain(value)
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


def plain(value):
    """A numpy scalar as the Python number it holds (JSON-ready); anything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value
