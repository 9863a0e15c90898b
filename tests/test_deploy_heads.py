"""featx.deploy.head and .converters: every head featx train can select, as ONNX, on real cached features.

Each grid combination is fitted with ``select_head`` on one grid point (the estimator ``featx train``
would save: SVMs inside their sigmoid calibration) and its ONNX graph is run by ONNX Runtime on the
training features and on held-out features: probabilities within 1e-4 of scikit-learn's, labels
identical. Images: Lite0 on digits (10 classes); texts: MiniLM on fine-food reviews (2 classes).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

import featx
from featx.deploy.converters import CONVERTERS, register_converter
from featx.deploy.head import head_to_onnx
from featx.deploy.parity import memorises_training_items
from featx.errors import DeployError
from featx.heads import SignedSqrt, head_pipeline, select_head

TOLERANCE = 1e-4


def grid_points():
    """One point per structural combination of featx's grids (C values do not change the graph)."""
    points = []
    for power in ("none", "sqrt"):
        points += [("logreg", {"power": power, "scale": "standard", "C": 0.1}),
                   ("logreg", {"power": power, "scale": "l2", "C": 100.0}),
                   ("svm", {"power": power, "scale": "standard", "kernel": "linear", "C": 0.1}),
                   ("svm", {"power": power, "scale": "l2", "kernel": "linear", "C": 10.0}),
                   ("svm", {"power": power, "scale": "l2", "kernel": "rbf", "C": 10.0, "gamma": "scale"})]
        for weights in ("uniform", "distance"):
            for k in (1, 5, 20):
                points += [("knn", {"power": power, "scale": "standard", "metric": "euclidean", "n_neighbors": k,
                                    "weights": weights}),
                           ("knn", {"power": power, "scale": "standard", "metric": "cosine", "n_neighbors": k,
                                    "weights": weights}),
                           ("knn", {"power": power, "scale": "l2", "metric": "cosine", "n_neighbors": k,
                                    "weights": weights})]
    return points


#: Run in the default tier; the rest of the matrix is slow.
FAST = {("logreg", "sqrt", "standard", None, None), ("svm", "sqrt", "l2", "rbf", None),
        ("svm", "none", "standard", "linear", None), ("knn", "sqrt", "l2", "cosine", "distance-5"),
        ("knn", "none", "standard", "euclidean", "uniform-5")}


def key(kind, point):
    neighbours = f"{point['weights']}-{point['n_neighbors']}" if kind == "knn" else None
    return kind, point["power"], point["scale"], point.get("kernel") or point.get("metric"), neighbours


def params():
    out = []
    for kind, point in grid_points():
        name = "-".join(str(v) for v in key(kind, point) if v is not None)
        marks = () if key(kind, point) in FAST else (pytest.mark.slow,)
        out.append(pytest.param(kind, point, id=name, marks=marks))
    return out


@pytest.fixture(scope="module")
def image_features(digits_lite0_caches):
    (X, y, _), (Xt, yt, _) = (featx.load_features(c) for c in digits_lite0_caches)
    return X, y, Xt, yt


@pytest.fixture(scope="module")
def text_features(foods_minilm_caches):
    (X, y, _), (Xt, yt, _) = (featx.load_features(c) for c in foods_minilm_caches)
    return X, y, Xt, yt


def run_onnx(model, X):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"features": X})))


def compare(head, X):
    """(max abs difference of probabilities, labels that differ) of the ONNX head vs scikit-learn."""
    out = run_onnx(head_to_onnx(head, X.shape[1], opset=17), X)
    assert out["label"].dtype == object and out["probabilities"].dtype == np.float32
    diff = float(np.abs(out["probabilities"] - head.predict_proba(X)).max())
    return diff, int((out["label"] != head.predict(X)).sum())


def fitted(kind, point, X, y):
    return select_head(kind, X, y, cv=3, n_jobs=1, grid={k: [v] for k, v in point.items()}).best_estimator


def check_head(kind, point, X, y, Xt):
    head = fitted(kind, point, X, y)
    diff, wrong = compare(head, Xt)
    assert wrong == 0 and diff <= TOLERANCE, ("held-out", diff, wrong)
    diff, wrong = compare(head, X)
    assert wrong == 0, ("training", wrong)
    # A distance-weighted kNN scores its own training items by a rounding error (distance to itself
    # ~1e-7 in scikit-learn's float32 cosine, 0 here): the deploy gate uses held-out items for it.
    assert diff <= (1e-3 if memorises_training_items(head) else TOLERANCE), ("training", diff)


@pytest.mark.parametrize("kind, point", params())
def test_image_head_matches_sklearn(image_features, kind, point):
    X, y, Xt, _ = image_features
    check_head(kind, point, X, y, Xt)


@pytest.mark.parametrize("kind, point", params())
def test_text_head_matches_sklearn(text_features, kind, point):
    X, y, Xt, _ = text_features
    check_head(kind, point, X, y, Xt)


#: The approximate heads `featx train` selects past its size thresholds (featx.heads.plan).
APPROXIMATE = [
    ("logreg", {"power": "sqrt", "scale": "standard", "C": 0.1}),
    ("svm", {"power": "none", "scale": "l2", "kernel": "linear", "C": 10.0}),
    ("svm", {"power": "sqrt", "scale": "l2", "kernel": "rbf", "C": 10.0, "gamma": "scale", "n_components": 150}),
    ("knn", {"power": "sqrt", "scale": "l2", "n_neighbors": 5, "weights": "distance", "metric": "cosine",
             "n_components": 64}),
    ("knn", {"power": "none", "scale": "standard", "n_neighbors": 10, "weights": "uniform", "metric": "euclidean",
             "n_components": 64}),
]


@pytest.mark.parametrize("kind, point", [pytest.param(k, p, id=f"{k}-{i}") for i, (k, p) in enumerate(APPROXIMATE)])
@pytest.mark.parametrize("modality", ["image", "text"])
def test_approximate_head_matches_sklearn(modality, kind, point, image_features, text_features):
    X, y, Xt, _ = image_features if modality == "image" else text_features
    head = select_head(kind, X, y, cv=3, n_jobs=1, strategy="approximate",
                       grid={k: [v] for k, v in point.items()}).best_estimator
    steps = [type(step).__name__ for _, step in head.steps]
    assert steps[-1] in ("SGDClassifier", "CalibratedClassifierCV", "IVFKNeighborsClassifier"), steps
    diff, wrong = compare(head, Xt)
    assert wrong == 0 and diff <= TOLERANCE


def test_streamed_svm_has_labels_only(text_features):
    X, y, Xt, _ = text_features
    head = head_pipeline("svm", scale="l2", approximate=True, streamed=True, n_train=len(X), kernel="linear").fit(X, y)
    model = head_to_onnx(head, X.shape[1], opset=17)
    assert [o.name for o in model.graph.output] == ["label"]
    assert np.array_equal(run_onnx(model, Xt)["label"], head.predict(Xt))


def test_the_index_graph_finds_what_the_index_finds(image_features):
    """With one list probed of 16, the index misses true neighbours: the graph misses the same ones."""
    from featx.heads import IVFKNeighborsClassifier

    X, y, Xt, _ = image_features
    ivf = IVFKNeighborsClassifier(n_neighbors=5, n_lists=16, n_probe=1).fit(X, y)
    out = run_onnx(head_to_onnx(ivf, X.shape[1], opset=17), Xt)
    assert np.array_equal(out["label"], ivf.predict(Xt))
    assert np.abs(out["probabilities"] - ivf.predict_proba(Xt)).max() <= TOLERANCE
    exact = ivf.to_exact().predict_proba(Xt)
    assert np.abs(exact - ivf.predict_proba(Xt)).max() > 0.1  # the index is approximate here


def test_scaling_steps_are_bit_identical_to_sklearn(image_features):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    from featx.deploy.converters import conversion_hooks

    X = image_features[0]
    functions, shapes = conversion_hooks()
    for steps in ([SignedSqrt(), StandardScaler()], [StandardScaler()], [SignedSqrt(), Normalizer()]):
        pipe = Pipeline([(f"s{i}", s) for i, s in enumerate(steps)]).fit(X)
        onx = convert_sklearn(pipe, initial_types=[("x", DoubleTensorType([None, X.shape[1]]))], target_opset=17,
                              custom_conversion_functions=functions, custom_shape_calculators=shapes)
        import onnxruntime as ort

        got = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": X.astype(np.float64)})[0]
        want = pipe.transform(X)
        assert want.dtype == np.float32 and np.array_equal(got, got.astype(np.float32))  # float32 values
        if isinstance(steps[-1], Normalizer):  # the norm's float32 sum may differ by an ulp
            assert np.abs(got - want).max() <= 2 * np.finfo(np.float32).eps
        else:
            assert np.array_equal(got.astype(np.float32), want), type(steps[-1]).__name__


def test_calibration_averaged_over_folds(image_features):
    """CalibratedClassifierCV(ensemble=True) averages one calibrated SVM per fold."""
    from sklearn.calibration import CalibratedClassifierCV

    X, y, Xt, _ = image_features
    head = head_pipeline("svm", scale="l2", power="sqrt", kernel="rbf", C=10.0)
    head.steps[-1] = ("clf", CalibratedClassifierCV(head.steps[-1][1], method="sigmoid", cv=3, ensemble=True))
    head.fit(X[:200], y[:200])
    assert len(head.named_steps["clf"].calibrated_classifiers_) == 3
    diff, wrong = compare(head, Xt)
    assert wrong == 0 and diff <= TOLERANCE


def test_uncalibrated_svm_has_labels_only(text_features):
    X, y, Xt, _ = text_features
    head = select_head("svm", X, y, cv=3, n_jobs=1, calibrate=False,
                       grid={"power": ["none"], "scale": ["l2"], "kernel": ["rbf"], "C": [10.0]}).best_estimator
    assert not hasattr(head, "predict_proba")
    model = head_to_onnx(head, X.shape[1], opset=17)
    assert [o.name for o in model.graph.output] == ["label"]
    assert np.array_equal(run_onnx(model, Xt)["label"], head.predict(Xt))


def test_bare_classifier_and_scale_none(image_features):
    X, y, Xt, _ = image_features
    for head in (head_pipeline("knn", scale="none", power="none", n_neighbors=3).fit(X, y),
                 head_pipeline("knn", scale="none", n_neighbors=3, weights="distance").fit(X, y).named_steps["clf"]):
        diff, wrong = compare(head, Xt)
        assert wrong == 0 and diff <= TOLERANCE


def test_integer_classes(image_features):
    X, y, Xt, _ = image_features
    head = head_pipeline("knn", n_neighbors=5, weights="distance").fit(X, y.astype(int))
    out = run_onnx(head_to_onnx(head, X.shape[1], opset=17), Xt)
    assert out["label"].dtype == np.int64 and np.array_equal(out["label"], head.predict(Xt))


class Doubler(TransformerMixin, BaseEstimator):
    """A stateless step skl2onnx does not know."""

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        return np.asarray(X) * 2


def test_unknown_step_is_refused_then_registered(image_features):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, Xt, _ = image_features
    head = Pipeline([("double", Doubler()), ("scale", StandardScaler()),
                     ("clf", KNeighborsClassifier(n_neighbors=3))]).fit(X, y)
    with pytest.raises(DeployError, match=r"this head \(Doubler, StandardScaler, KNeighborsClassifier\)"):
        head_to_onnx(head, X.shape[1], opset=17)

    def convert(b, step):
        b.op("Mul", [b.input, b.const("two", np.array(2.0))], outputs=b.output())

    shape = CONVERTERS[SignedSqrt].shape
    register_converter(Doubler, convert, shape=shape)
    try:
        diff, wrong = compare(head, Xt)
        assert wrong == 0 and diff <= TOLERANCE
    finally:
        del CONVERTERS[Doubler]


def test_knn_metric_and_opset_limits(image_features):
    X, y, _, _ = image_features
    with pytest.raises(DeployError, match="euclidean or cosine metric; this head uses 'manhattan'"):
        head_to_onnx(head_pipeline("knn", metric="manhattan").fit(X, y), X.shape[1], opset=17)
    with pytest.raises(DeployError, match="opset 12; deploying needs 13 or newer"):
        head_to_onnx(head_pipeline("knn").fit(X, y), X.shape[1], opset=12)
