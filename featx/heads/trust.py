"""A loaded head is checked, step by step, before any of its numbers reach native code.

::

    load_head(path) -> skops.io.load (trusted types only) -> checked_head(estimator)
      Pipeline                  every step one of the families below; widths chained step to step
      SignedSqrt, Normalizer    stateless (a width)
      StandardScaler, PCA,      arrays of the right shapes and dtypes, finite
      Nystroem, LogisticRegression, SGDClassifier, LinearSVC
      SVC                       libsvm's arrays agree (support vectors, their counts per class,
                                dual coefficients, intercepts, probability pairs), kernel not precomputed
      CalibratedClassifierCV    each calibrated classifier checked, one calibrator per class scored
      KNeighborsClassifier      rebuilt: a fresh fit on the stored training vectors (the KD/Ball
                                tree in the file is never used)
      IVFKNeighborsClassifier   its vectors, codes and centroids checked; the index is rebuilt on use
      then                      predict (and predict_proba) on one row of zeros

The guarantee: skops' trusted-type check stops code from running, not bad numbers; scikit-learn's
Cython code (trees, libsvm) trusts its arrays, so an edited file could read out of bounds and crash
the process. A head that passes here holds only arrays that fit together, or what was rebuilt from
them; anything else is :class:`~featx.errors.HeadError` naming the step and the array.

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from featx.heads import head_pipeline
>>> X, y = load_digits(return_X_y=True)
>>> head = head_pipeline("logreg", max_iter=200).fit(X[:300], y[:300])
>>> checked_head(head) is head
True
>>> head[-1].coef_ = head[-1].coef_[:, :10]
>>> checked_head(head, "logreg.skops")
Traceback (most recent call last):
...
featx.errors.HeadError: logreg.skops: step 'clf' (LogisticRegression): coef_ has shape (10, 10), expected (10, 64); ...
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np

from ..errors import HeadError
from .build import SignedSqrt
from .knn import IVFKNeighborsClassifier

__all__ = ["checked_head", "KNN_METRICS", "SVC_KERNELS"]

#: Distances a saved exact kNN head may use (scikit-learn's own, checked against the data on refit).
KNN_METRICS = ("euclidean", "cosine", "minkowski", "manhattan", "chebyshev", "l1", "l2", "cityblock")
#: SVC kernels a saved head may use ("precomputed" indexes the training rows by the stored indices).
SVC_KERNELS = ("linear", "rbf", "poly", "sigmoid")
_DAMAGED = "the file was edited or damaged: train the head again"


class _Damaged(Exception):
    """One finding; :func:`checked_head` adds where it was found."""


def checked_head(estimator, source: str = "the head"):
    """The estimator, checked (and its exact kNN rebuilt) so that predicting with it cannot crash.

    Parameters
    ----------
    estimator : a fitted head
        As loaded by :func:`featx.heads.persist.load_head`: a :class:`~sklearn.pipeline.Pipeline` of featx's
        steps, or one of its classifiers alone.
    source : str
        How to name the head in errors (its file).

    Returns
    -------
    The same estimator, with every exact kNN classifier replaced by one refitted on its stored vectors.

    Raises
    ------
    HeadError
        A step of an unknown kind, or arrays that do not fit together (shapes, dtypes, index ranges,
        non-finite values), or a head that fails on a row of zeros.
    """
    try:
        estimator, _ = _check_step(estimator, None, "")
    except _Damaged as e:
        raise HeadError(f"{source}: {e}; {_DAMAGED}") from None
    probe = np.zeros((1, _input_width(estimator)))
    for method in ("predict", "predict_proba"):
        if hasattr(estimator, method):
            try:
                getattr(estimator, method)(probe)
            except Exception as e:  # what is left: values no shape check catches
                raise HeadError(f"{source}: {method} fails on a row of zeros ({type(e).__name__}: {e}); "
                                f"{_DAMAGED}") from None
    return estimator


# --------------------------------------------------------------------------- helpers
def _input_width(est) -> int:
    """Features a checked head takes: those of its first step that is not 'passthrough'."""
    if not hasattr(est, "steps"):
        return int(est.n_features_in_)
    return next(_input_width(step) for _, step in est.steps if not (step is None or isinstance(step, str)))


def _where(name: str, est) -> str:
    return f"step {name!r} ({type(est).__name__})" if name else type(est).__name__


def _width(est, width: int | None, where: str) -> int:
    """``n_features_in_``, which must equal the width coming in (when known)."""
    n = getattr(est, "n_features_in_", None)
    if not _is_int(n) or n < 1:
        raise _Damaged(f"{where}: n_features_in_ is {n!r}, expected an int >= 1")
    if width is not None and n != width:
        raise _Damaged(f"{where}: takes {n} features but the step before gives {width}")
    return int(n)


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _array(est, attr: str, where: str, shape: tuple, kind: str = "f", *, finite: bool = True,
           dtype=None) -> np.ndarray:
    """``est.attr``: an ndarray of ``shape`` (None: any length), of a dtype kind in ``kind``, finite."""
    value = getattr(est, attr, None)
    if not isinstance(value, np.ndarray):
        raise _Damaged(f"{where}: {attr} is a {type(value).__name__}, expected an array")
    if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        expected = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise _Damaged(f"{where}: {attr} has shape {value.shape}, expected {expected}")
    if value.dtype.kind not in kind or (dtype is not None and value.dtype != np.dtype(dtype)):
        raise _Damaged(f"{where}: {attr} has dtype {value.dtype}, expected "
                       f"{np.dtype(dtype) if dtype is not None else 'a number'}")
    if finite and value.dtype.kind == "f" and not np.isfinite(value).all():
        raise _Damaged(f"{where}: {attr} holds NaN or infinite values")
    return value


def _classes(est, where: str) -> np.ndarray:
    classes = getattr(est, "classes_", None)
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) < 2:
        raise _Damaged(f"{where}: classes_ must be a 1-D array of at least 2 classes")
    if len(np.unique(classes)) != len(classes):
        raise _Damaged(f"{where}: classes_ holds a class twice")
    return classes


def _choice(est, attr: str, where: str, allowed) -> None:
    value = getattr(est, attr, None)
    if not isinstance(value, str) or value not in allowed:
        raise _Damaged(f"{where}: {attr} is {value!r}, expected one of {tuple(allowed)}")


def _positive_float(est, attr: str, where: str) -> float:
    value = getattr(est, attr, None)
    if not isinstance(value, (numbers.Real, np.floating)) or isinstance(value, (bool, np.bool_)) \
            or not np.isfinite(value) or value <= 0:
        raise _Damaged(f"{where}: {attr} is {value!r}, expected a positive number")
    return float(value)


# --------------------------------------------------------------------------- the families
def _passthrough(est, width, where):
    return est, _width(est, width, where)


def _standard_scaler(est, width, where):
    d = _width(est, width, where)
    for attr in ("mean_", "var_", "scale_"):
        if getattr(est, attr, None) is not None:
            _array(est, attr, where, (d,))
    scale = getattr(est, "scale_", None)
    if scale is not None and (scale <= 0).any():
        raise _Damaged(f"{where}: scale_ holds values <= 0")
    return est, d


def _normalizer(est, width, where):
    _choice(est, "norm", where, ("l1", "l2", "max"))
    return est, _width(est, width, where)


def _pca(est, width, where):
    d = _width(est, width, where)
    components = _array(est, "components_", where, (None, d))
    k = len(components)
    _array(est, "mean_", where, (d,))
    if getattr(est, "whiten", False):
        variance = _array(est, "explained_variance_", where, (k,))
        if (variance <= 0).any():
            raise _Damaged(f"{where}: explained_variance_ holds values <= 0")
    if getattr(est, "n_components_", k) != k or k < 1:
        raise _Damaged(f"{where}: n_components_ is {getattr(est, 'n_components_', None)!r}, "
                       f"but components_ has {k} rows")
    return est, k


def _nystroem(est, width, where):
    d = _width(est, width, where)
    _choice(est, "kernel", where, ("rbf", "linear", "poly", "sigmoid", "laplacian", "chi2", "cosine"))
    if getattr(est, "kernel_params", None) not in (None, {}):
        raise _Damaged(f"{where}: kernel_params must be empty")
    m = len(_array(est, "components_", where, (None, d)))
    _array(est, "normalization_", where, (m, m))
    if getattr(est, "gamma", None) is not None:
        _positive_float(est, "gamma", where)
    return est, m


def _linear(est, width, where):
    """LogisticRegression, SGDClassifier, LinearSVC: coef_ (1 or n_classes, d), intercept_."""
    d = _width(est, width, where)
    rows = 1 if len(_classes(est, where)) == 2 else len(est.classes_)
    _array(est, "coef_", where, (rows, d))
    _array(est, "intercept_", where, (rows,))
    return est, d


def _svc(est, width, where):
    d = _width(est, width, where)
    n_classes = len(_classes(est, where))
    _choice(est, "kernel", where, SVC_KERNELS)
    if getattr(est, "_sparse", False) is not False:
        raise _Damaged(f"{where}: a head fitted on sparse data is not a featx head")
    vectors = _array(est, "support_vectors_", where, (None, d), dtype=np.float64)
    n_sv = len(vectors)
    counts = _array(est, "_n_support", where, (n_classes,), "i", dtype=np.int32)
    if (counts < 0).any() or int(counts.sum()) != n_sv:
        raise _Damaged(f"{where}: the support vectors per class ({counts.tolist()}) do not add up to the "
                       f"{n_sv} support vectors")
    support = _array(est, "support_", where, (n_sv,), "i", dtype=np.int32)
    shape_fit = getattr(est, "shape_fit_", None)
    if not (isinstance(shape_fit, tuple) and len(shape_fit) == 2 and _is_int(shape_fit[0])
            and shape_fit[1] == d):
        raise _Damaged(f"{where}: shape_fit_ is {shape_fit!r}, expected (rows, {d})")
    if n_sv and (support.min() < 0 or support.max() >= shape_fit[0]):
        raise _Damaged(f"{where}: support_ indexes rows outside the {shape_fit[0]} training rows")
    pairs = n_classes * (n_classes - 1) // 2
    _array(est, "_dual_coef_", where, (n_classes - 1, n_sv), dtype=np.float64)
    _array(est, "_intercept_", where, (pairs,), dtype=np.float64)
    for attr in ("_probA", "_probB"):
        value = _array(est, attr, where, (None,), dtype=np.float64)
        if len(value) not in (0, pairs):
            raise _Damaged(f"{where}: {attr} has {len(value)} values, expected 0 or {pairs}")
    _positive_float(est, "_gamma", where)
    _positive_float(est, "cache_size", where)
    if not _is_int(getattr(est, "degree", None)) or not 0 <= est.degree <= 100:
        raise _Damaged(f"{where}: degree is {getattr(est, 'degree', None)!r}, expected an int in [0, 100]")
    coef0 = getattr(est, "coef0", None)
    if not isinstance(coef0, (numbers.Real, np.floating)) or not np.isfinite(coef0):
        raise _Damaged(f"{where}: coef0 is {coef0!r}, expected a finite number")
    return est, d


def _calibrated(est, width, where):
    from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
    from sklearn.isotonic import IsotonicRegression

    d = _width(est, width, where)
    classes = _classes(est, where)
    parts = getattr(est, "calibrated_classifiers_", None)
    if not isinstance(parts, list) or not parts:
        raise _Damaged(f"{where}: calibrated_classifiers_ must be a non-empty list")
    for i, part in enumerate(parts):
        inner = f"{where}, calibrated classifier {i}"
        if type(part) is not _CalibratedClassifier:
            raise _Damaged(f"{inner}: a {type(part).__name__}, expected a _CalibratedClassifier")
        part.estimator, _ = _check_step(part.estimator, d, "", inner + " ")
        own = part.estimator.classes_
        if not isinstance(part.classes, np.ndarray) or not np.array_equal(part.classes, classes) \
                or not np.isin(own, classes).all():
            raise _Damaged(f"{inner}: its classes are not the head's")
        _choice(part, "method", inner, ("sigmoid", "isotonic"))
        calibrators = getattr(part, "calibrators", None)
        expected = 1 if len(own) == 2 else len(own)
        if not isinstance(calibrators, list) or len(calibrators) != expected:
            raise _Damaged(f"{inner}: expected {expected} calibrator(s)")
        for calibrator in calibrators:
            if type(calibrator) is _SigmoidCalibration:
                for attr in ("a_", "b_"):
                    value = getattr(calibrator, attr, None)
                    if not isinstance(value, (numbers.Real, np.floating)) or not np.isfinite(value):
                        raise _Damaged(f"{inner}: the sigmoid's {attr} is {value!r}, expected a finite number")
            elif type(calibrator) is IsotonicRegression:
                x = _array(calibrator, "X_thresholds_", inner, (None,))
                _array(calibrator, "y_thresholds_", inner, (len(x),))
            else:
                raise _Damaged(f"{inner}: a calibrator of kind {type(calibrator).__name__}")
    return est, d


def _knn(est, width, where):
    """The exact kNN, refitted on its stored vectors: the tree in the file is never used."""
    from sklearn.neighbors import KNeighborsClassifier

    d = _width(est, width, where)
    classes = _classes(est, where)
    vectors = _array(est, "_fit_X", where, (None, d))
    codes = _array(est, "_y", where, (len(vectors),), "iu")
    if getattr(est, "outputs_2d_", False) is not False:
        raise _Damaged(f"{where}: a multi-output kNN is not a featx head")
    if len(codes) and (codes.min() < 0 or codes.max() >= len(classes)):
        raise _Damaged(f"{where}: _y holds class codes outside [0, {len(classes)})")
    _choice(est, "metric", where, KNN_METRICS)
    if getattr(est, "metric_params", None) not in (None, {}):
        raise _Damaged(f"{where}: metric_params must be empty")
    k = getattr(est, "n_neighbors", None)
    if not _is_int(k) or not 1 <= k <= len(vectors):
        raise _Damaged(f"{where}: n_neighbors is {k!r}, expected an int in [1, {len(vectors)}] (the stored rows)")
    params = {**est.get_params(), "n_jobs": None}
    try:
        fresh = KNeighborsClassifier(**params).fit(vectors, classes[codes])
    except (TypeError, ValueError) as e:
        raise _Damaged(f"{where}: cannot be rebuilt from its stored vectors ({e})") from None
    if not np.array_equal(fresh.classes_, classes):
        raise _Damaged(f"{where}: classes_ are not the classes of its stored vectors")
    return fresh, d


def _ivf_knn(est, width, where):
    d = _width(est, width, where)
    _classes(est, where)
    try:  # the index is never loaded: it is built from these arrays on first use
        est.check_state()
    except (HeadError, ValueError, AttributeError, TypeError) as e:
        raise _Damaged(f"{where}: {e}") from None
    return est, d


def _pipeline(est, width, where):
    steps = getattr(est, "steps", None)
    if not isinstance(steps, list) or not steps:
        raise _Damaged(f"{where}: steps must be a non-empty list")
    checked = []
    for step in steps:
        if not (isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str)):
            raise _Damaged(f"{where}: each step must be a (name, estimator) pair")
        name, inner = step
        if inner is None or (isinstance(inner, str) and inner == "passthrough"):
            checked.append(step)
            continue
        inner, width = _check_step(inner, width, name)
        checked.append((name, inner))
    est.steps = checked
    if width is None:
        raise _Damaged(f"{where}: every step is 'passthrough'")
    return est, width


def _one_vs_rest(est, width, where):
    """OneVsRestClassifier of a multi-label head (featx.heads.targets): one checked binary head per label."""
    from sklearn.multiclass import _ConstantPredictor

    d = _width(est, width, where)
    inner = getattr(est, "estimators_", None)
    if not isinstance(inner, list) or not inner:
        raise _Damaged(f"{where}: estimators_ must be a non-empty list")
    if getattr(getattr(est, "label_binarizer_", None), "y_type_", None) != "multilabel-indicator":
        raise _Damaged(f"{where}: not a multi-label head (its label binarizer is not multilabel-indicator)")
    checked = []
    for j, each in enumerate(inner):
        if type(each) is _ConstantPredictor:
            _array(each, "y_", f"{where} label {j}", (1,), "iuf")
            checked.append(each)
        else:
            each, got = _check_step(each, d, f"label {j}", where + " ")
            checked.append(each)
    est.estimators_ = checked
    return est, d


def _ridge(est, width, where):
    d = _width(est, width, where)
    _array(est, "coef_", where, (d,))
    if not isinstance(getattr(est, "intercept_", None), (numbers.Real, np.floating)):
        raise _Damaged(f"{where}: intercept_ must be a number")
    return est, d


def _svr(est, width, where):
    d = _width(est, width, where)
    _choice(est, "kernel", where, SVC_KERNELS)
    if getattr(est, "_sparse", False) is not False:
        raise _Damaged(f"{where}: a head fitted on sparse data is not a featx head")
    n_sv = len(_array(est, "support_vectors_", where, (None, d), dtype=np.float64))
    _array(est, "_dual_coef_", where, (1, n_sv), dtype=np.float64)
    _array(est, "_intercept_", where, (1,), dtype=np.float64)
    _array(est, "support_", where, (n_sv,), "i", dtype=np.int32)
    _positive_float(est, "_gamma", where)
    return est, d


def _knn_regressor(est, width, where):
    """The exact kNN regressor, refitted on its stored vectors and targets."""
    from sklearn.neighbors import KNeighborsRegressor

    d = _width(est, width, where)
    vectors = _array(est, "_fit_X", where, (None, d))
    targets = _array(est, "_y", where, (len(vectors),))
    _choice(est, "metric", where, KNN_METRICS)
    k = getattr(est, "n_neighbors", None)
    if not _is_int(k) or not 1 <= k <= len(vectors):
        raise _Damaged(f"{where}: n_neighbors is {k!r}, expected an int in [1, {len(vectors)}] (the stored rows)")
    try:
        return KNeighborsRegressor(**{**est.get_params(), "n_jobs": None}).fit(vectors, targets), d
    except (TypeError, ValueError) as e:
        raise _Damaged(f"{where}: cannot be rebuilt from its stored vectors ({e})") from None


def _families() -> dict[type, Callable]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.decomposition import PCA
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.linear_model import Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.svm import SVC, SVR, LinearSVC

    return {OneVsRestClassifier: _one_vs_rest, Ridge: _ridge, SVR: _svr, KNeighborsRegressor: _knn_regressor,
            Pipeline: _pipeline, SignedSqrt: _passthrough, StandardScaler: _standard_scaler,
            Normalizer: _normalizer, PCA: _pca, Nystroem: _nystroem, LogisticRegression: _linear,
            SGDClassifier: _linear, LinearSVC: _linear, SVC: _svc, CalibratedClassifierCV: _calibrated,
            KNeighborsClassifier: _knn, IVFKNeighborsClassifier: _ivf_knn}


def _check_step(est, width, name: str, prefix: str = ""):
    """``(estimator, width out)`` of one step, by its exact type (trusted types have no subclasses here)."""
    check = _families().get(type(est))
    where = prefix + _where(name, est)
    if check is None:
        raise _Damaged(f"{where}: not a kind of step featx heads are made of")
    return check(est, width, where)
