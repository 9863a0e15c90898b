"""A fitted head -> an ONNX graph: float32 features in, ``label`` and ``probabilities`` out.

::

    features (n, d) float32 --Cast--> float64 --[power]--[scale]--[classifier]--> label (n,)
                                                                            \\--> probabilities (n, C) float32

skl2onnx walks the pipeline (``"passthrough"`` steps dropped) with featx's converters
(:mod:`featx.deploy.converters`) for the steps featx decides. A head without
``predict_proba`` (an SVM too small to calibrate) has a ``label`` output only.

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from featx.heads import head_pipeline
>>> X, y = load_digits(return_X_y=True)
>>> head = head_pipeline("logreg", scale="standard", power="sqrt").fit(X[:300], y[:300].astype(str))
>>> graph = head_to_onnx(head, X.shape[1], opset=17)
>>> [i.name for i in graph.graph.input], [o.name for o in graph.graph.output]
(['features'], ['label', 'probabilities'])
"""

from __future__ import annotations

import warnings

from ..errors import DeployError
from .converters import conversion_hooks, require_skl2onnx

__all__ = ["head_to_onnx", "INPUT", "LABEL", "PROBABILITIES", "ML_OPSET", "MIN_OPSET"]

INPUT = "features"
LABEL = "label"
PROBABILITIES = "probabilities"
#: Version of the ``ai.onnx.ml`` domain the head graph uses (SVM, array feature extraction).
ML_OPSET = 3
#: Oldest default-domain opset a head graph can use (``ReduceSum`` and ``Unsqueeze`` take axes as inputs).
MIN_OPSET = 13


def head_steps(head):
    """The head as a pipeline without ``"passthrough"`` steps (a bare classifier when one step is left)."""
    from sklearn.pipeline import Pipeline

    if not isinstance(head, Pipeline):
        return head
    steps = [(name, step) for name, step in head.steps if step not in (None, "passthrough")]
    return steps[0][1] if len(steps) == 1 else Pipeline(steps)


def head_to_onnx(head, dim: int, *, opset: int):
    """Convert a fitted head into an ONNX model (see the module docstring for its interface).

    Parameters
    ----------
    head : fitted estimator
        A featx head (pipeline of power, scale and classifier steps) or any classifier
        skl2onnx or :data:`featx.deploy.converters.CONVERTERS` can convert.
    dim : int
        Features per row.
    opset : int
        Default-domain opset (the backbone's, so the two graphs merge).

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    DeployError
        A step no converter handles, or an opset under :data:`MIN_OPSET`.
    """
    from onnx import TensorProto, helper

    require_skl2onnx()
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    if opset < MIN_OPSET:
        raise DeployError(f"the backbone uses ONNX opset {opset}; deploying needs {MIN_OPSET} or newer: "
                          "re-export it with `featx export NAME --opset 17`")
    model = head_steps(head)
    steps = [step for _, step in model.steps] if hasattr(model, "steps") else [model]
    classifier = steps[-1]
    if not hasattr(classifier, "classes_"):
        raise DeployError(f"the head's last step ({type(classifier).__name__}) is not a fitted classifier")
    functions, shapes = conversion_hooks()
    try:
        with warnings.catch_warnings():  # skl2onnx reads SVC attributes scikit-learn 1.9 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            onx = convert_sklearn(
                model, initial_types=[("head_input", DoubleTensorType([None, int(dim)]))],
                target_opset={"": int(opset), "ai.onnx.ml": ML_OPSET}, options={id(classifier): {"zipmap": False}},
                custom_conversion_functions=functions, custom_shape_calculators=shapes)
    except (MissingConverter, MissingShapeCalculator):
        raise DeployError(
            f"no ONNX converter for a step of this head ({', '.join(type(s).__name__ for s in steps)}): featx "
            "deploys the heads featx.heads builds (SignedSqrt, StandardScaler, Normalizer, PCA, Nystroem; "
            "LogisticRegression, SGDClassifier, SVC or LinearSVC, calibrated or not, KNeighborsClassifier, "
            "IVFKNeighborsClassifier); featx.deploy.converters.register_converter adds others"
        ) from None
    graph = onx.graph
    _rename(graph, {graph.output[0].name: "head_label", graph.output[1].name: "head_scores"})
    nodes = [helper.make_node("Cast", [INPUT], ["head_input"], to=TensorProto.DOUBLE, name="featx_cast_features"),
             *graph.node, helper.make_node("Identity", ["head_label"], [LABEL], name="featx_label")]
    outputs = [helper.make_tensor_value_info(LABEL, graph.output[0].type.tensor_type.elem_type, ["batch"])]
    if hasattr(head, "predict_proba"):
        nodes.append(helper.make_node("Cast", ["head_scores"], [PROBABILITIES], to=TensorProto.FLOAT,
                                      name="featx_probabilities"))
        outputs.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT,
                                                     ["batch", len(classifier.classes_)]))
    features = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", int(dim)])
    out = helper.make_graph(nodes, "featx_head", [features], outputs, initializer=list(graph.initializer))
    # skl2onnx imports the oldest opset its nodes need; every node it wrote is valid up to ``opset``,
    # and the backbone's graph needs exactly that one to merge.
    imports = [helper.make_opsetid("", int(opset))] + [o for o in onx.opset_import if o.domain not in ("", "ai.onnx")]
    result = helper.make_model(out, opset_imports=imports, producer_name="featx")
    result.ir_version = onx.ir_version
    return result


def _rename(graph, mapping: dict) -> None:
    """Rename edges of a graph (node inputs and outputs)."""
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
