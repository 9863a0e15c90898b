"""Deploying a multi-label head (:mod:`featx.heads.targets`): the same fused file as a
single-label head, with ``probabilities`` (n, L) the per-label probabilities and ``label`` the most
probable label; the thresholds travel in the file's metadata, so ``featx predict FILE.onnx``
writes the predicted set as ``featx predict HEAD.skops`` does. Numeric heads are not deployed yet.

Examples
--------
>>> import numpy as np
>>> from featx.heads.targets import select_multilabel
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(40, 3)); Y = np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(np.uint8)
>>> head = MultiLabelAsClassifier(select_multilabel("logreg", X, Y, cv=3).estimator, ["a", "b"])
>>> head.predict_proba(X[:1]).shape, head.predict(X[:1])[0] in ("a", "b")
((1, 2), True)
>>> graph = multilabel_to_onnx(head, 3, opset=17)
>>> [o.name for o in graph.graph.output]
['label', 'probabilities']
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DeployError
from .converters import conversion_hooks, require_skl2onnx
from .head import INPUT, LABEL, ML_OPSET, MIN_OPSET, PROBABILITIES, _rename


class MultiLabelAsClassifier:
    """A multi-label head seen by the deploy gate as a classifier: ``predict_proba`` the per-label
    probabilities (columns in ``classes_`` order), ``predict`` the most probable label."""

    def __init__(self, head, labels):
        self.head = head
        self.classes_ = np.asarray([str(x) for x in labels], dtype=object)
        self.n_features_in_ = head.n_features_in_

    def predict_proba(self, X):
        return np.asarray(self.head.predict_proba(X), dtype=np.float64)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def target_head(estimator, meta: dict):
    """What deploying a head takes: the head itself (one label), or its classifier view (label sets);
    a numeric head or an SVM label-set head (no probabilities) is a :class:`~featx.errors.DeployError`."""
    target = meta.get("target", "single")
    if target == "single":
        return estimator
    if target == "numeric":
        raise DeployError("numeric (regression) heads are not deployed yet: use `featx predict HEAD.skops`")
    if meta.get("kind") == "svm":
        raise DeployError("a multi-label SVM head has scores, not probabilities, so it is not deployed: deploy the "
                          "logreg or knn head (featx train --head logreg)")
    return MultiLabelAsClassifier(estimator, meta["labels"])


def multilabel_to_onnx(head: MultiLabelAsClassifier, dim: int, *, opset: int):
    """The head graph of a multi-label head: float32 features -> ``label`` (str), ``probabilities`` (n, L)."""
    from onnx import TensorProto, helper

    require_skl2onnx()
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    if opset < MIN_OPSET:
        raise DeployError(f"the backbone uses ONNX opset {opset}; deploying needs {MIN_OPSET} or newer")
    model = head.head
    classifier = model.steps[-1][1] if hasattr(model, "steps") else model
    functions, shapes = conversion_hooks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        onx = convert_sklearn(model, initial_types=[("head_input", DoubleTensorType([None, int(dim)]))],
                              target_opset={"": int(opset), "ai.onnx.ml": ML_OPSET},
                              options={id(classifier): {"zipmap": False}}, custom_conversion_functions=functions,
                              custom_shape_calculators=shapes)
    graph = onx.graph
    _rename(graph, {graph.output[0].name: "head_indicators", graph.output[1].name: "head_scores"})
    scores = "head_scores"
    labels = helper.make_tensor("featx_label_names", TensorProto.STRING, [len(head.classes_)],
                                [str(c).encode() for c in head.classes_])
    nodes = [helper.make_node("Cast", [INPUT], ["head_input"], to=TensorProto.DOUBLE, name="featx_cast_features"),
             *graph.node,
             helper.make_node("ArgMax", [scores], ["featx_top"], axis=1, keepdims=0, name="featx_top_label"),
             helper.make_node("Gather", ["featx_label_names", "featx_top"], [LABEL], name="featx_label"),
             helper.make_node("Cast", [scores], [PROBABILITIES], to=TensorProto.FLOAT, name="featx_probabilities")]
    outputs = [helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["batch"]),
               helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", len(head.classes_)])]
    features = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", int(dim)])
    out = helper.make_graph(nodes, "featx_head", [features], outputs, initializer=[*graph.initializer, labels])
    imports = [helper.make_opsetid("", int(opset))] + [o for o in onx.opset_import if o.domain not in ("", "ai.onnx")]
    result = helper.make_model(out, opset_imports=imports, producer_name="featx")
    result.ir_version = onx.ir_version
    return result
