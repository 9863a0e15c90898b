"""Save and load heads without ever executing code from a file.

A saved head is two files side by side:

- ``NAME.skops``: the fitted scikit-learn pipeline, written with :func:`skops.io.dump`;
- ``NAME.json``: metadata: the backbone that made its features (name, how to load it,
  fingerprint), classes, cross-validation score, versions, and the sha256 of ``NAME.skops``.

Loading never calls ``pickle.load``/``joblib.load``. :func:`load_head` lists every type named
in the file (and every type skops itself does not trust) and refuses the file, with
:class:`~featx.errors.UntrustedTypeError` naming them, when any is outside
:data:`TRUSTED_TYPES`: the scikit-learn classes featx heads are made of, featx's own
:class:`~featx.heads.SignedSqrt`, and the builtin and numpy containers they hold.
Only then is the file loaded with :func:`skops.io.load`, trusting exactly the types found, and
the loaded head is checked step by step (:func:`featx.heads.trust.checked_head`: arrays that fit
together, exact kNN rebuilt from its stored vectors) before any of its numbers reach native code.

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from featx.heads import head_pipeline
>>> X, y = load_digits(return_X_y=True)
>>> head = head_pipeline("logreg").fit(X[:500], y[:500])
>>> path = save_head(head, "heads/logreg.skops", metadata={"backbone": "raw-pixels"})
>>> loaded = load_head(path)
>>> bool((loaded.predict(X[500:]) == head.predict(X[500:])).all())
True
>>> read_metadata(path)["backbone"]
'raw-pixels'
"""

from __future__ import annotations

import datetime as _dt
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ..errors import HeadError, UntrustedTypeError
from ..files import json_default, sha256_file, write_atomically, write_text_atomically
from .trust import checked_head
from ..version import __version__

__all__ = ["TRUSTED_TYPES", "save_head", "load_head", "read_metadata", "metadata_path", "file_types",
           "HEAD_FORMAT"]

HEAD_FORMAT = 1
SUFFIX = ".skops"
#: Deepest nesting of a head file's schema: featx's heads nest about 22 levels (a calibrated SVM).
MAX_SCHEMA_DEPTH = 200

_SKLEARN_TYPES = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.Normalizer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.svm._classes.SVC",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.model_selection._split.KFold",
    # approximate heads (featx.heads): SGD, kernel map, reduction
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn.linear_model._sgd_fast.Hinge",
    "sklearn.kernel_approximation.Nystroem",
    "sklearn.decomposition._pca.PCA",
    # multi-label and numeric targets (featx.heads.targets)
    "sklearn.multiclass.OneVsRestClassifier",
    "sklearn.multiclass._ConstantPredictor",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.svm._classes.SVR",
    "sklearn.neighbors._regression.KNeighborsRegressor",
)
# The kNN index holds plain arrays, checked before faiss reads them, and is rebuilt on load.
_FEATX_TYPES = ("featx.heads.SignedSqrt", "featx.heads.IVFKNeighborsClassifier")
_BUILTIN_TYPES = tuple(f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool",
                                                  "NoneType", "bytes"))
_NUMPY_TYPES = ("numpy.ndarray", "numpy.dtype") + tuple(
    f"numpy.{t}" for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                           "uint16", "uint32", "uint64", "bool", "bool_", "str_", "bytes_", "object_")
) + tuple(f"numpy.dtypes.{t}DType" for t in ("Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64",
                                              "UInt8", "UInt16", "UInt32", "UInt64", "Bool", "Str", "Bytes",
                                              "Object"))

#: Every type a featx head file may name; anything else is refused.
TRUSTED_TYPES: frozenset[str] = frozenset(_SKLEARN_TYPES + _FEATX_TYPES + _BUILTIN_TYPES + _NUMPY_TYPES)


def _head_path(path) -> Path:
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


def metadata_path(path) -> Path:
    """``NAME.skops`` -> ``NAME.json``."""
    return _head_path(path).with_suffix(".json")


def save_head(estimator, path, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a fitted head to ``NAME.skops`` and its metadata to ``NAME.json`` beside it.

    Parameters
    ----------
    estimator : fitted scikit-learn estimator
        Normally a head from :mod:`featx.heads`; other types are saved but :func:`load_head`
        will refuse them unless they are in :data:`TRUSTED_TYPES`.
    path : path
        Where to write; ``.skops`` is appended when missing. Folders are created.
    metadata : dict, optional
        JSON-ready facts to keep beside the head (backbone, fingerprint_id, cv score...).
        ``classes``, the versions, the file's sha256 and a timestamp are added.

    Returns
    -------
    pathlib.Path
        The ``.skops`` file.

    Raises
    ------
    HeadError
        The estimator is not fitted, or the metadata is not JSON-serialisable.
    """
    import sklearn
    import skops
    import skops.io as sio
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except Exception as e:
        raise HeadError(f"cannot save an unfitted head: {e}") from None
    meta = dict(metadata or {})
    try:
        json.dumps(meta, default=json_default)  # refuse bad metadata before writing anything
    except TypeError as e:
        raise HeadError(f"head metadata must be JSON-serialisable: {e}") from None
    path = _head_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: sio.dump(estimator, tmp))
    classes = getattr(estimator, "classes_", None)
    meta.setdefault("classes", None if classes is None else [str(c) for c in classes])
    meta.update({
        "format": HEAD_FORMAT,
        "file": path.name,
        "sha256": sha256_file(path),
        "featx": __version__,
        "sklearn": sklearn.__version__,
        "skops": skops.__version__,
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    text = json.dumps(meta, indent=2, default=json_default)
    write_text_atomically(metadata_path(path), text + "\n")
    return path


def file_types(path) -> list[str]:
    """Every type named in a skops file's schema (``module.Class``), sorted; loads nothing.

    Raises
    ------
    HeadError
        Not a readable skops file.
    """
    path = Path(path)
    too_deep = HeadError(f"{path} nests its content more than {MAX_SCHEMA_DEPTH} levels deep; featx heads nest "
                         "about 20: it is not a head featx saved")
    try:
        with zipfile.ZipFile(path) as z:
            schema = json.loads(z.read("schema.json"))
    except FileNotFoundError:
        raise HeadError(f"no saved head at {path}") from None
    except RecursionError:
        raise too_deep from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise HeadError(f"{path} is not a skops head file ({type(e).__name__}: {e}); "
                        "save heads with featx.heads.persist.save_head or `featx train`") from None
    found: set[str] = set()
    stack = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise too_deep
        if isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str):
                found.add(f"{module}.{cls}")
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    return sorted(found)


def load_head(path, *, trusted_types=TRUSTED_TYPES):
    """Load a saved head, refusing any file that names a type outside the trusted list.

    Parameters
    ----------
    path : path
        The ``.skops`` file (``.skops`` appended when missing).
    trusted_types : collection of str
        ``module.Class`` names allowed; default :data:`TRUSTED_TYPES`.

    Returns
    -------
    The fitted estimator, checked by :func:`featx.heads.trust.checked_head` when every type in the
    file is on featx's own list (a list widened by the caller trusts the file's author instead).

    Raises
    ------
    UntrustedTypeError
        The file names types outside the list; the message names them. Nothing was loaded.
    HeadError
        No such file, or not a skops file, or its metadata's sha256 does not match, or its content
        is nested too deeply, or its arrays do not fit together (an edited or damaged file).
    """
    import skops.io as sio

    path = _head_path(path)
    if not path.is_file():
        raise HeadError(f"no saved head at {path}")
    meta_file = metadata_path(path)
    if meta_file.is_file():
        expected = read_metadata(path).get("sha256")
        if expected and expected != sha256_file(path):
            raise HeadError(f"{path} does not match {meta_file.name} (sha256 differs): the head was replaced or "
                            "damaged after saving; save it again")
    named = set(file_types(path))
    try:
        untrusted_by_skops = set(sio.get_untrusted_types(file=path))
    except Exception as e:
        raise HeadError(f"{path} is not a readable skops head file ({type(e).__name__}: {e})") from None
    refused = sorted((named | untrusted_by_skops) - set(trusted_types))
    if refused:
        raise UntrustedTypeError(
            f"{path} holds types outside featx's trusted list, so it was not loaded: {', '.join(refused)}. "
            "featx heads are scikit-learn pipelines of StandardScaler/Normalizer/SignedSqrt and "
            "LogisticRegression/SVC/KNeighborsClassifier; if you trust this file's author, load it yourself "
            "with skops.io.load(path, trusted=[...])."
        )
    try:
        estimator = sio.load(path, trusted=sorted(untrusted_by_skops))
    except Exception as e:
        raise HeadError(f"cannot load {path}: {type(e).__name__}: {e}") from None
    if not hasattr(estimator, "predict"):
        raise HeadError(f"{path} holds a {type(estimator).__name__}, not a fitted head (no predict method)")
    if named | untrusted_by_skops <= TRUSTED_TYPES:
        estimator = checked_head(estimator, str(path))
    return estimator


def read_metadata(path) -> dict:
    """The metadata saved beside a head (``NAME.json``).

    Raises
    ------
    HeadError
        Missing or unreadable.
    """
    meta_file = metadata_path(path)
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        if not _head_path(path).is_file():  # name what the user gave, not the file beside it
            raise HeadError(f"no saved head at {_head_path(path)}; `featx train CACHE --out DIR` writes DIR/HEAD.skops"
                            ) from None
        raise HeadError(f"no metadata beside the head: {meta_file} is missing; heads saved by featx have one") from None
    except (ValueError, OSError) as e:
        raise HeadError(f"cannot read {meta_file}: {e}") from None
    if not isinstance(meta, dict):
        raise HeadError(f"{meta_file} must hold a JSON object")
    if meta.get("format", 0) > HEAD_FORMAT:
        raise HeadError(f"{meta_file} has head format {meta['format']}; this featx reads up to {HEAD_FORMAT}: "
                        "upgrade featx")
    return meta
