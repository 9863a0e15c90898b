"""An item without a label (an image beside the class folders; an empty, NaN or null label cell) stays
unlabelled through the real commands: listed, extracted and predicted, left out of training and
evaluation with a count, and never a class (it was stored as the string "None" and trained as one)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import featx
from featx.cli import main
from featx.heads.evaluate import evaluate
from featx.heads import head_pipeline, select_head
from featx.heads.persist import read_metadata
from featx.sources import open_dataset


@pytest.fixture
def folder(image_files, sample_rgbs):
    """The image_files tree (photos/, shapes/) plus one image in its root: no class folder, no label."""
    Image.fromarray(sample_rgbs[1]).resize((50, 40)).save(image_files / "loose.png")
    return image_files


def run_json(capsys, *argv) -> dict:
    assert main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_image_beside_the_class_folders_stays_unlabelled(folder, tiny_image_onnx, tmp_path, capsys):
    cache, heads = tmp_path / "cache", tmp_path / "heads"
    assert main(["extract", str(folder), "--model", str(tiny_image_onnx), "--cache", str(cache), "--no-progress"]) == 0
    capsys.readouterr()
    info = run_json(capsys, "info", cache)["dataset"]
    assert info["classes"] == ["photos", "shapes"] and info["unlabelled"] == 1 and info["items"] == 8
    X, y, ids = featx.load_features(cache)
    assert len(ids) == 8 and y[list(ids).index("loose.png")] is None  # extracted, and unlabelled
    assert sorted(set(y) - {None}) == ["photos", "shapes"]

    train = run_json(capsys, "train", cache, "--head", "logreg", "--cv", "2", "--jobs", "1", "--out", heads)
    assert (train["n"], train["unlabelled"], train["classes"]) == (7, 1, 2)
    assert read_metadata(heads / "logreg.skops")["classes"] == ["photos", "shapes"]

    report = run_json(capsys, "evaluate", heads / "logreg.skops", "--cache", cache, "--out", tmp_path / "report")
    assert (report["n"], report["unlabelled"], report["classes"]) == (7, 1, ["photos", "shapes"])
    assert main(["evaluate", str(heads / "logreg.skops"), "--cache", str(cache), "--out", str(tmp_path / "r2")]) == 0
    out = capsys.readouterr().out
    assert "on 7 items (1 unlabelled items left out)" in out and "unlabelled items left out**: 1" in out

    predictions = tmp_path / "p.csv"
    done = run_json(capsys, "predict", heads / "logreg.skops", folder, "--model", tiny_image_onnx,
                    "--out", predictions)
    assert done["predicted"] == 8  # the unlabelled item is predicted too
    rows = {row["id"]: row for row in csv.DictReader(predictions.open())}
    assert rows["loose.png"]["label"] == "" and rows["loose.png"]["prediction"] in ("photos", "shapes")
    scored = [r for r in rows.values() if r["label"]]
    assert done["accuracy"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in scored]))


def test_empty_nan_and_null_labels_of_manifests_are_unlabelled(tiny_text_onnx, folder, tiny_image_onnx, tmp_path,
                                                              capsys):
    texts = tmp_path / "reviews.jsonl"
    rows = [("great food", "good"), ("awful", "bad"), ("lovely", "good"), ("horrid", "bad"), ("tasty", "good"),
            ("bland", "bad"), ("no label", ""), ("null label", None), ("blank label", "  ")]
    lines = [json.dumps({"text": t, "label": label}) for t, label in rows] + ['{"text": "nan label", "label": NaN}']
    texts.write_text("\n".join(lines) + "\n")
    assert open_dataset(texts).classes == ("bad", "good")
    cache = tmp_path / "texts"
    assert main(["extract", str(texts), "--model", str(tiny_text_onnx), "--cache", str(cache), "--no-progress"]) == 0
    capsys.readouterr()
    X, y, ids = featx.load_features(cache)
    assert len(ids) == 10 and sum(label is None for label in y) == 4
    train = run_json(capsys, "train", cache, "--head", "knn", "--cv", "2", "--jobs", "1", "--out", tmp_path / "h")
    assert (train["n"], train["unlabelled"], train["classes"]) == (6, 4, 2)
    assert read_metadata(tmp_path / "h" / "knn.skops")["classes"] == ["bad", "good"]

    images = tmp_path / "images.csv"  # an empty cell in a CSV
    with images.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for path in sorted(folder.rglob("*.png")) + sorted(folder.rglob("*.jpg")):
            writer.writerow([path, "" if path.parent == folder else path.parent.name])
    cache = tmp_path / "image-cache"
    assert main(["extract", str(images), "--model", str(tiny_image_onnx), "--cache", str(cache),
                 "--no-progress"]) == 0
    capsys.readouterr()
    info = run_json(capsys, "info", cache)["dataset"]
    assert info["classes"] == ["photos", "shapes"] and info["unlabelled"] == 1


def test_the_library_leaves_unlabelled_rows_out_with_a_count():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    y = y[:300].astype(str).astype(object)
    y[::10] = None
    result = select_head("logreg", X[:300], y, cv=3, n_jobs=1, grid={"C": [0.1]})
    assert list(result.best_estimator.classes_) == [str(d) for d in range(10)]
    assert "logreg: 30 unlabelled row(s) left out of training" in result.notes
    head = head_pipeline("logreg", C=0.1).fit(X[300:600], load_digits().target[300:600].astype(str))
    y_test = load_digits().target[600:700].astype(str).astype(object)
    y_test[:5] = [None, float("nan"), "", " ", None]
    report = evaluate(head, X[600:700], y_test)
    assert (report["n"], report["unlabelled"]) == (95, 5) and "None" not in report["classes"]
