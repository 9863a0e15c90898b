"""featx's own skl2onnx converters: the head steps whose ONNX form featx decides.

skl2onnx converts the logistic regression, the SVMs (libsvm, linear, SGD; calibrated or not) and
PCA of a head as it ships them;
the steps in :data:`CONVERTERS` are converted by featx, handed to skl2onnx for one
conversion at a time (skl2onnx's own registry is left alone, except for featx's
:class:`~featx.heads.SignedSqrt`, which skl2onnx cannot know):

====================  ======================================================================
step                  why featx converts it
====================  ======================================================================
SignedSqrt            featx's own transformer: skl2onnx has no converter for it.
StandardScaler        float32 arithmetic, as scikit-learn does on featx's float32 features:
                      the scaled features are bit-identical.
Normalizer            the same rounding; the L2 norm agrees within one float32 ulp.
KNeighborsClassifier  a neighbour at distance zero takes all the weight (scikit-learn's
                      rule; skl2onnx clamps the distance instead, which moved the
                      probabilities of training items by up to 0.9 on digits); distances
                      by one matrix product (skl2onnx loops over the training set with
                      ``Scan`` for the euclidean metric); ties go to the lower training
                      index, as in scikit-learn's brute-force search.
IVFKNeighborsClassifier  featx's approximate kNN: the graph probes the lists the index
                      probes, so it finds the neighbours the index finds (not the exact ones).
Nystroem              the RBF kernel map of the approximate SVM: skl2onnx has no converter.
====================  ======================================================================

A head graph computes in float64 (the backbone's float32 features are cast once), so its
arithmetic error stays far below the deploy gate's 1e-4, and near-ties between neighbours
or SVM votes flip far less often than in float32.

Adding a step (a kernel map, an approximate-kNN index, ...) is one function
``convert(builder, estimator)`` that reads ``builder.input`` and writes
``builder.output(i)``, passed to :func:`register_converter`; a classifier also writes
its label (output 0) and probabilities (output 1).

Examples
--------
>>> from featx.heads import SignedSqrt
>>> sorted(cls.__name__ for cls in CONVERTERS)  # doctest: +NORMALIZE_WHITESPACE
['IVFKNeighborsClassifier', 'KNeighborsClassifier', 'Normalizer', 'Nystroem', 'SignedSqrt',
 'StandardScaler']
>>> CONVERTERS[SignedSqrt].alias
'FeatxSignedSqrt'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import DeployError
from ..extras import require
from ..heads import IVFKNeighborsClassifier, SignedSqrt

__all__ = ["CONVERTERS", "Converter", "GraphBuilder", "register_converter", "require_skl2onnx", "conversion_hooks"]

#: Values under this are a zero norm or scale for scikit-learn on float32 data (``10 * eps``).
_TINY32 = 10 * float(np.finfo(np.float32).eps)


def require_skl2onnx():
    """Import skl2onnx, or say which extra installs it."""
    return require("skl2onnx", "deploy", "deploying a head")


class GraphBuilder:
    """Adds one converter's nodes and constants to skl2onnx's container, under unique names.

    Parameters
    ----------
    scope, operator, container :
        What skl2onnx passes a converter.
    """

    def __init__(self, scope, operator, container):
        self.scope = scope
        self.operator = operator
        self.container = container

    @property
    def input(self) -> str:
        """The step's input (float64 (n, d))."""
        return self.operator.inputs[0].full_name

    def output(self, i: int = 0) -> str:
        """Name of the step's ``i``-th output: a classifier's label (0) and probabilities (1)."""
        return self.operator.outputs[i].full_name

    def const(self, hint: str, value) -> str:
        """A constant tensor (numpy array or scalar; strings become a STRING tensor)."""
        from onnx import TensorProto, numpy_helper

        name = self.scope.get_unique_variable_name(hint)
        array = np.asarray(value)
        if array.dtype.kind in "OUS":
            values = [str(v).encode("utf-8") for v in array.ravel()]
            self.container.add_initializer(name, TensorProto.STRING, list(array.shape), values)
        else:
            self.container.add_initializer(name, None, list(array.shape), numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs, *, outputs=None, n_outputs: int = 1, domain: str = "", **attrs):
        """Add a node; return its output name (a list when it has several)."""
        if outputs is None:
            outputs = [self.scope.get_unique_variable_name(op_type.lower()) for _ in range(n_outputs)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.container.add_node(op_type, list(inputs), list(outputs), op_domain=domain,
                                name=self.scope.get_unique_operator_name(op_type), **attrs)
        return outputs[0] if len(outputs) == 1 else outputs

    def float32_round(self, x: str) -> str:
        """Round float64 values to float32 and back: what scikit-learn's float32 arrays hold."""
        from onnx import TensorProto

        return self.op("Cast", [self.op("Cast", [x], to=TensorProto.FLOAT)], to=TensorProto.DOUBLE)

    def row_sum(self, x: str, keepdims: int = 1) -> str:
        return self.op("ReduceSum", [x, self.const("axis1", np.array([1], np.int64))], keepdims=keepdims)


# ------------------------------------------------------------------------ the converters
def convert_signed_sqrt(b: GraphBuilder, step) -> None:
    """``sign(x) * sqrt(|x|)``; the square root rounded to float32, as numpy computes it on float32."""
    root = b.float32_round(b.op("Sqrt", [b.op("Abs", [b.input])]))
    b.op("Mul", [b.op("Sign", [b.input]), root], outputs=b.output())


def convert_standard_scaler(b: GraphBuilder, scaler) -> None:
    """``(x - mean_) / scale_`` in float32 arithmetic, as scikit-learn (1.9) does on float32 features.

    scikit-learn casts ``mean_`` and ``scale_`` to the features' float32 and works in place; one
    float64 operation rounded to float32 gives the same bits as the float32 operation.
    """
    x = b.input
    if scaler.mean_ is not None and scaler.with_mean:
        mean = scaler.mean_.astype(np.float32).astype(np.float64)
        x = b.float32_round(b.op("Sub", [x, b.const("mean", mean)]))
    if scaler.scale_ is not None and scaler.with_std:
        scale = scaler.scale_.astype(np.float32).astype(np.float64)
        x = b.float32_round(b.op("Div", [x, b.const("scale", scale)]))
    b.op("Identity", [x], outputs=b.output())


def _l2_normalised(b: GraphBuilder, x: str) -> str:
    """Rows divided by their float32-rounded L2 norm (norms under 10 eps count as 1, as in scikit-learn)."""
    norm = b.float32_round(b.op("Sqrt", [b.row_sum(b.op("Mul", [x, x]))]))
    tiny = b.op("Less", [norm, b.const("tiny", np.array(_TINY32))])
    safe = b.op("Where", [tiny, b.const("one", np.array(1.0)), norm])
    return b.op("Div", [x, safe])


def convert_normalizer(b: GraphBuilder, normalizer) -> None:
    """L2 row normalisation (the only norm featx heads use), rounded to float32."""
    if normalizer.norm != "l2":
        raise DeployError(f"featx deploys Normalizer(norm='l2') only; this head has norm={normalizer.norm!r}")
    b.op("Identity", [b.float32_round(_l2_normalised(b, b.input))], outputs=b.output())


def _training_rows(b: GraphBuilder, rows) -> str:
    """Training rows as a float64 tensor, stored as fitted (float32: half the bytes) and cast once.

    The cast (and any normalisation of the rows) is constant-folded when the runtime loads the model.
    """
    from onnx import TensorProto

    rows = np.asarray(rows)
    exact32 = rows.astype(np.float32)
    stored = exact32 if np.array_equal(exact32, rows) else rows.astype(np.float64)
    return b.op("Cast", [b.const("rows", stored)], to=TensorProto.DOUBLE)


def _squared_distances(b: GraphBuilder, x: str, rows, rows_name: str) -> str:
    """``||x - r||^2`` (n, m) as ``||x||^2 - 2 x.r + ||r||^2``, clipped at 0 (scikit-learn's expansion)."""
    rows_sq = (np.asarray(rows, np.float64) ** 2).sum(axis=1)
    cross = b.op("Gemm", [x, rows_name, b.const("rows_sq", rows_sq)], alpha=-2.0, beta=1.0, transB=1)
    return b.op("Max", [b.op("Add", [cross, b.row_sum(b.op("Mul", [x, x]))]), b.const("zero", np.array(0.0))])


def _neighbour_distances(b: GraphBuilder, knn, metric: str):
    """(sorted distances, indices) of the ``n_neighbors`` nearest training rows, in float64."""
    fit_x = np.asarray(knn._fit_X)  # scikit-learn keeps the training rows only here
    train = _training_rows(b, fit_x)
    k = b.const("k", np.array([knn.n_neighbors], np.int64))
    if metric == "euclidean":
        values, idx = b.op("TopK", [_squared_distances(b, b.input, fit_x, train), k], n_outputs=2, largest=0,
                           sorted=1)
        return b.op("Sqrt", [values]), idx
    similarity = b.op("Gemm", [_l2_normalised(b, b.input), _l2_normalised(b, train)], transB=1)
    distance = b.op("Sub", [b.const("one", np.array(1.0)), similarity])
    clipped = b.op("Clip", [distance, b.const("zero", np.array(0.0)), b.const("two", np.array(2.0))])
    values, idx = b.op("TopK", [clipped, k], n_outputs=2, largest=0, sorted=1)
    return values, idx


def _neighbour_weights(b: GraphBuilder, distances: str) -> str:
    """``1 / d``; a row with a neighbour at distance 0 weights those neighbours 1 and the others 0."""
    from onnx import TensorProto

    at_zero = b.op("Equal", [distances, b.const("zero", np.array(0.0))])
    at_zero64 = b.op("Cast", [at_zero], to=TensorProto.DOUBLE)
    any_zero = b.op("Greater", [b.row_sum(at_zero64), b.const("zero", np.array(0.0))])
    inverse = b.op("Div", [b.const("one", np.array(1.0)), distances])
    return b.op("Where", [any_zero, at_zero64, inverse])


def classes_constant(b: GraphBuilder, classes) -> str:
    """The class labels as a constant: STRING for text labels, INT64 for integers."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "OUS" and all(isinstance(c, str) for c in classes.tolist()):
        return b.const("classes", classes.astype(object))
    if classes.dtype.kind in "iu":
        return b.const("classes", classes.astype(np.int64))
    raise DeployError(f"class labels must be strings or integers to deploy; this head has {classes.dtype} labels")


def _vote(b: GraphBuilder, distances: str, idx: str, codes, classes, weights: str) -> None:
    """Probabilities (output 1) and label (output 0) from the neighbours' class codes, as kNN votes."""
    from onnx import TensorProto

    if weights not in ("uniform", "distance"):
        raise DeployError(f"featx deploys kNN heads weighted 'uniform' or 'distance'; this head uses {weights!r}")
    neighbour_class = b.op("Gather", [b.const("train_class", np.asarray(codes, np.int64)), idx])  # (n, k)
    one_hot = b.op("Equal", [b.op("Unsqueeze", [neighbour_class, b.const("axis2", np.array([2], np.int64))]),
                             b.const("class_index", np.arange(len(classes), dtype=np.int64))])  # (n, k, C)
    votes = b.op("Cast", [one_hot], to=TensorProto.DOUBLE)
    if weights == "distance":
        weight = b.op("Unsqueeze", [_neighbour_weights(b, distances), b.const("axis2", np.array([2], np.int64))])
        votes = b.op("Mul", [votes, weight])
    totals = b.row_sum(votes, keepdims=0)  # (n, C)
    b.op("Div", [totals, b.row_sum(totals)], outputs=b.output(1))
    best = b.op("ArgMax", [b.output(1)], axis=1, keepdims=0)
    b.op("Gather", [classes_constant(b, classes), best], outputs=b.output(0))


def convert_knn(b: GraphBuilder, knn) -> None:
    """kNN probabilities and label, as scikit-learn computes them (brute force, float64)."""
    metric = knn.effective_metric_
    if metric not in ("euclidean", "cosine") or knn.effective_metric_params_:
        raise DeployError(f"featx deploys kNN heads with the euclidean or cosine metric; this head uses {metric!r}")
    if knn.outputs_2d_:
        raise DeployError("featx deploys single-output kNN heads; this one predicts several outputs")
    distances, idx = _neighbour_distances(b, knn, metric)
    _vote(b, distances, idx, knn._y, knn.classes_, knn.weights)


def convert_ivf_knn(b: GraphBuilder, knn) -> None:
    """featx's inverted-file kNN, answering as its index does: the rows of the probed lists only.

    The ``n_probe`` lists whose centroids are nearest to the query are probed; among their rows
    the ``n_neighbors`` nearest are the neighbours (all rows when the probed lists hold fewer).
    Each row's list is read from the index itself, so the graph probes exactly what faiss
    probes; distances are computed for every row and the others masked out, so the graph costs
    a brute-force search, not the index's fraction of one.
    """
    from onnx import TensorProto

    knn.check_state()
    index = knn._get_index()
    _, lists = index.quantizer.search(knn.vectors_, 1)  # the list faiss put each row in
    cosine = knn.metric == "cosine"
    x = _l2_normalised(b, b.input) if cosine else b.input
    centroids, rows = _training_rows(b, knn.centroids_), _training_rows(b, knn.vectors_)
    probe = b.const("n_probe", np.array([knn.n_probe_], np.int64))
    if cosine:  # inner products: the largest are the nearest
        to_centroids = b.op("Gemm", [x, centroids], transB=1)
        scores = b.op("Gemm", [x, rows], transB=1)
    else:
        to_centroids = _squared_distances(b, x, knn.centroids_, centroids)
        scores = _squared_distances(b, x, knn.vectors_, rows)
    _, probed = b.op("TopK", [to_centroids, probe], n_outputs=2, largest=int(cosine), sorted=1)  # (n, P)
    hits = b.op("Cast", [b.op("Equal", [b.op("Unsqueeze", [probed, b.const("axis2", np.array([2], np.int64))]),
                                        b.const("list_index", np.arange(knn.n_lists_, dtype=np.int64))])],
                to=TensorProto.DOUBLE)  # (n, P, lists)
    is_probed = b.op("Greater", [b.row_sum(hits, keepdims=0), b.const("zero", np.array(0.0))])  # (n, lists)
    in_probed = b.op("Gather", [is_probed, b.const("row_list", lists[:, 0].astype(np.int64))], axis=1)  # (n, m)
    k = min(int(knn.n_neighbors), len(knn.vectors_))
    worst = b.const("worst", np.array(-np.inf if cosine else np.inf))
    masked = b.op("Where", [in_probed, scores, worst])
    probed_rows = b.row_sum(b.op("Cast", [in_probed], to=TensorProto.DOUBLE))
    short = b.op("Less", [probed_rows, b.const("k_float", np.array(float(k)))])
    searched = b.op("Where", [short, scores, masked])  # too few rows probed: every list, as featx does
    values, idx = b.op("TopK", [searched, b.const("k", np.array([k], np.int64))], n_outputs=2, largest=int(cosine),
                       sorted=1)
    if cosine:
        distances = b.op("Sub", [b.const("one", np.array(1.0)), values])
    else:
        distances = b.op("Sqrt", [values])
    _vote(b, distances, idx, knn.labels_, knn.classes_, knn.weights)


def convert_nystroem(b: GraphBuilder, nystroem) -> None:
    """The RBF kernel map: ``exp(-gamma ||x - c||^2) @ normalization_.T`` (the kernel featx's SVM uses)."""
    if nystroem.kernel != "rbf":
        raise DeployError(f"featx deploys the Nystroem kernel map with the rbf kernel; this one is {nystroem.kernel!r}")
    gamma = nystroem.gamma if nystroem.gamma is not None else 1.0 / nystroem.components_.shape[1]
    components = _training_rows(b, nystroem.components_)
    kernel = b.op("Exp", [b.op("Mul", [_squared_distances(b, b.input, nystroem.components_, components),
                                       b.const("minus_gamma", np.array(-float(gamma)))])])
    b.op("MatMul", [kernel, b.const("normalization", np.asarray(nystroem.normalization_, np.float64).T)],
         outputs=b.output())


# ------------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Converter:
    """How featx converts one estimator type.

    ``convert(builder, estimator)``; ``alias`` names the type for skl2onnx; ``shape``
    is skl2onnx's shape calculator (None: skl2onnx's own for a type it knows); ``options``
    are skl2onnx's converter options (a classifier declares ``zipmap`` so that skl2onnx
    parses it into a label and probabilities).
    """

    convert: Callable
    alias: str
    shape: Callable | None = None
    options: dict | None = None


#: Estimator type -> featx's converter. Extend with :func:`register_converter`.
CONVERTERS: dict[type, Converter] = {}


def register_converter(estimator_type: type, convert: Callable, *, alias: str | None = None,
                       shape: Callable | None = None, classifier: bool = False) -> None:
    """Make featx convert ``estimator_type`` with ``convert(builder, estimator)``.

    A type skl2onnx does not know needs ``shape`` (a skl2onnx shape calculator, e.g.
    ``skl2onnx.common.shape_calculator.calculate_linear_classifier_output_shapes`` for a
    classifier); it is then registered with skl2onnx under ``alias`` at the first deploy. A
    classifier (``classifier=True``) writes its label to ``builder.output(0)`` and its
    probabilities to ``builder.output(1)``.
    """
    options = {"zipmap": [True, False, "columns"], "nocl": [False, True], "output_class_labels": [False, True]} \
        if classifier else None
    CONVERTERS[estimator_type] = Converter(convert, alias or f"Featx{estimator_type.__name__}", shape, options)


def _skl2onnx_function(converter: Converter):
    def convert(scope, operator, container):
        converter.convert(GraphBuilder(scope, operator, container), operator.raw_operator)
    return convert


def conversion_hooks() -> tuple[dict, dict]:
    """``(custom_conversion_functions, custom_shape_calculators)`` for ``skl2onnx.convert_sklearn``.

    Types skl2onnx does not know are registered with it here (once): its parser needs their alias.
    """
    require_skl2onnx()
    from skl2onnx import get_model_alias, update_registered_converter

    functions, shapes = {}, {}
    for cls, converter in CONVERTERS.items():
        function = _skl2onnx_function(converter)
        try:
            get_model_alias(cls)
        except RuntimeError:  # a type skl2onnx does not know: its parser needs the alias
            if converter.shape is None:
                raise DeployError(f"the featx converter of {cls.__name__} needs a shape calculator") from None
            update_registered_converter(cls, converter.alias, converter.shape, function, options=converter.options)
        functions[cls] = function
        if converter.shape is not None:
            shapes[cls] = converter.shape
    return functions, shapes


def _classifier_shape(operator) -> None:
    """skl2onnx shape calculator of a classifier: label and probabilities."""
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    calculate_linear_classifier_output_shapes(operator)


def _nystroem_shape(operator) -> None:
    """skl2onnx shape calculator of a kernel map: (n, n_components), the input's type."""
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = operator.inputs[0].type.__class__([n, operator.raw_operator.normalization_.shape[0]])


def _same_shape(operator) -> None:
    """skl2onnx shape calculator of a step that keeps its input's shape and type."""
    from skl2onnx.shape_calculators.scaler import calculate_sklearn_scaler_output_shapes

    calculate_sklearn_scaler_output_shapes(operator)


def _register_featx_steps() -> None:
    from sklearn.kernel_approximation import Nystroem
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import Normalizer, StandardScaler

    register_converter(SignedSqrt, convert_signed_sqrt, shape=_same_shape)
    register_converter(StandardScaler, convert_standard_scaler)
    register_converter(Normalizer, convert_normalizer)
    register_converter(KNeighborsClassifier, convert_knn)
    register_converter(IVFKNeighborsClassifier, convert_ivf_knn, shape=_classifier_shape, classifier=True)
    register_converter(Nystroem, convert_nystroem, shape=_nystroem_shape)


_register_featx_steps()
