"""featx.evaluate: metrics (checked by hand and against scikit-learn), Markdown, saved reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import classification_report

import featx
from featx.errors import InputError
from featx.heads.evaluate import evaluate, evaluate_predictions, save_report, to_markdown
from featx.heads import head_pipeline
from featx.sources import open_dataset, subset


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_image_onnx):
    """A logistic-regression head on tiny-backbone features of real digits, and held-out features."""
    cache = tmp_path_factory.mktemp("eval") / "cache"
    ds = subset(open_dataset("builtin:digits"), 600, seed=0)
    featx.extract(ds, tiny_image_onnx, cache, progress=False)
    X, y, _ = featx.load_features(cache)
    head = head_pipeline("logreg", scale="standard", C=1.0).fit(X[:400], y[:400])
    return head, X[400:], y[400:]


def test_hand_computed_example():
    r = evaluate_predictions(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert r["n"] == 4 and r["classes"] == ["a", "b"]
    assert r["accuracy"] == 0.75
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert r["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": 0.8, "support": 2}
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert r["confusion_matrix"] == [[1, 1], [0, 2]]


def test_a_predicted_class_absent_from_the_truth_does_not_count_in_the_averages():
    r = evaluate_predictions(["a", "a", "b"], ["a", "c", "b"], labels=["a", "b", "c"])
    assert r["classes"] == ["a", "b", "c"] and r["per_class"]["c"]["support"] == 0
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # over a and b only
    assert r["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


def test_evaluate_a_real_head_matches_sklearn(fitted):
    head, X, y = fitted
    r = evaluate(head, X, y)
    pred = head.predict(X)
    assert r["n"] == 200 and r["accuracy"] == pytest.approx(np.mean(pred == y))
    assert r["accuracy"] > 0.3  # ten classes, tiny random-conv backbone: well above chance
    assert r["classes"] == [str(c) for c in head.classes_]
    ref = classification_report(y, pred, output_dict=True, zero_division=0)
    assert r["macro_f1"] == pytest.approx(ref["macro avg"]["f1-score"])
    for c in r["classes"]:
        assert r["per_class"][c]["recall"] == pytest.approx(ref[c]["recall"])
        assert r["per_class"][c]["support"] == ref[c]["support"]
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == 200 and np.trace(cm) == int(np.sum(pred == y))
    assert [row.sum() for row in cm] == [r["per_class"][c]["support"] for c in r["classes"]]
    json.dumps(r)  # plain JSON types only


def test_unseen_test_label_is_reported(fitted):
    head, X, y = fitted
    y = y.copy()
    y[:3] = "unknown"
    r = evaluate(head, X, y)
    assert r["classes"][-1] == "unknown" and r["per_class"]["unknown"]["support"] == 3
    assert r["per_class"]["unknown"]["recall"] == 0.0


def test_markdown_rendering(fitted):
    head, X, y = fitted
    r = {"head": "logreg", **evaluate(head, X, y)}
    md = to_markdown(r, title="digits")
    assert md.startswith("# digits\n")
    assert "- **head**: logreg" in md and f"- **accuracy**: {r['accuracy']:.4f}" in md
    assert md.count("\n| 3 |") == 2  # a per-class row and a confusion-matrix row
    piped = evaluate_predictions(["x|y", "z"], ["x|y", "z"])
    assert "| x\\|y |" in to_markdown(piped)


def test_save_report_writes_json_markdown_and_png(fitted, tmp_path):
    head, X, y = fitted
    r = {"head": "logreg", "backbone": "tiny-image", **evaluate(head, X, y)}
    files = save_report(r, tmp_path / "out", title="tiny digits")
    assert set(files) == {"json", "markdown", "png"}
    assert json.loads(files["json"].read_text()) == r
    assert files["markdown"].read_text() == to_markdown(r, title="tiny digits")
    png = files["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    from PIL import Image

    with Image.open(files["png"]) as im:
        assert im.size[0] > 300 and im.size[1] > 300
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report-confusion.png", "report.json", "report.md"]


def test_confusion_png_colours_are_fractions_of_the_true_class(tmp_path):
    """sklearn's ConfusionMatrixDisplay with row-normalised colours: a class always right is the darkest
    blue, a class split in halves gets the middle blue twice, a class never predicted stays white."""
    import matplotlib
    from PIL import Image

    from featx.heads.evaluate import plot_confusion

    r = evaluate_predictions(["bird"] * 2 + ["cat"] * 4 + ["dog"] * 3,
                             ["bird", "cat"] + ["cat"] * 4 + ["dog"] * 3)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 4, 0], [0, 0, 3]]
    path = plot_confusion(r, tmp_path / "cm.png")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)

    def area(fraction: float) -> int:
        rgb = np.array(matplotlib.colormaps["Blues"](fraction)[:3]) * 255
        return int((np.abs(pixels - rgb).max(axis=1) <= 2).sum())

    cell = area(1.0)
    assert cell > 1000  # the cat and dog cells (and the top of the colour bar)
    assert area(0.5) > 0.3 * cell  # the two halves of the bird row, not 1/4 of the largest count
    assert area(0.25) < 0.1 * cell  # colours by count would paint the bird cells at 1/4 of cat's 4


def test_errors():
    with pytest.raises(InputError, match="same length"):
        evaluate_predictions(["a"], ["a", "b"])
    with pytest.raises(InputError, match="no labelled rows"):
        evaluate_predictions([], [])
    head = head_pipeline("knn", n_neighbors=1).fit(np.eye(3), ["a", "b", "c"])
    with pytest.raises(InputError, match="without labels"):
        evaluate(head, np.eye(3), None)
    with pytest.raises(InputError, match="X has 3 rows but y has 2 labels"):
        evaluate(head, np.eye(3), ["a", "b"])
