"""Heads beyond one label, end to end through the CLI on real caches: a multi-label CSV of texts
and a numeric (regression) CSV extract, train by CV, evaluate, predict; saved heads load through
the trust checks; a label set seen in one item only; damaged regressors are refused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from featx.cli import main
from featx.errors import HeadError
from featx.heads.persist import load_head, read_metadata, save_head
from featx.heads.target_report import multilabel_metrics
from featx.heads.targets import choose_threshold, select_multilabel, select_regressor

WORDS = {"dog": "dog", "night": "night", "rain": "rain"}
FILLER = ["the", "a", "big", "small", "house", "garden", "street", "window", "tree", "car", "river", "hill"]


def tagged_texts(n: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = [t for t in WORDS if rng.random() < 0.4]
        words = list(rng.choice(FILLER, size=4)) + [WORDS[t] for t in tags] * 2
        rng.shuffle(words)
        rows.append({"id": f"t{i}", "text": " ".join(words), "labels": json.dumps(tags)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def multilabel_caches(tmp_path_factory, tiny_text_onnx):
    root = tmp_path_factory.mktemp("multilabel")
    train = tagged_texts(60, 0)
    train.loc[0, "labels"] = json.dumps(["dog", "unique"])  # a label in one item only
    train.to_csv(root / "train.csv", index=False)
    tagged_texts(30, 1).to_csv(root / "test.csv", index=False)
    for split in ("train", "test"):
        assert main(["extract", str(root / f"{split}.csv"), "--model", str(tiny_text_onnx), "--cache",
                     str(root / split), "-q"]) == 0
    return root


def test_multilabel_text_csv_trains_evaluates_and_predicts(multilabel_caches, tiny_text_onnx, capsys):
    root = multilabel_caches
    assert main(["info", str(root / "train")]) == 0
    assert "multi-label, 4 labels" in capsys.readouterr().out
    assert main(["train", str(root / "train"), "--model", str(tiny_text_onnx), "--head", "logreg", "--cv", "3",
                 "--jobs", "1", "--out", str(root / "heads"), "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"] == "multi" and doc["labels"] == ["dog", "night", "rain", "unique"]
    head = doc["heads"][0]
    assert 0 <= head["cv_micro_f1"] <= 1 and 0 < head["cv_map"] <= 1
    meta = read_metadata(root / "heads" / "logreg.skops")
    assert meta["target"] == "multi" and len(meta["threshold"]) == 4

    assert main(["evaluate", str(root / "heads" / "logreg.skops"), "--cache", str(root / "test"),
                 "--out", str(root / "report"), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["per_label"]) == {"dog", "night", "rain", "unique"}
    assert report["per_label"]["unique"]["auc"] is None  # never in the test set: no AUC, no NaN
    assert report["per_label"]["dog"]["auc"] is not None and 0 <= report["micro_f1"] <= 1
    assert (root / "report" / "report.md").read_text().count("| dog |") == 1

    out = root / "pred.csv"
    assert main(["predict", str(root / "heads" / "logreg.skops"), str(root / "test.csv"), "--out", str(out),
                 "-q"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30 and {"p_dog", "p_night", "p_rain", "p_unique"} <= set(rows[0])
    for row in rows:  # the predicted set is the labels whose probability reaches the head's threshold
        picked = [x for x, cut in zip(meta["labels"], meta["threshold"]) if float(row[f"p_{x}"]) >= cut - 1e-6]
        assert json.loads(row["prediction"]) == picked

    # deployed: one ONNX file, gated on the head's probabilities, predicting the same sets
    assert main(["deploy", str(root / "heads" / "logreg.skops"), "--out", str(root / "ml.onnx"), "-q"]) == 0
    deployed = root / "pred-onnx.csv"
    assert main(["predict", str(root / "ml.onnx"), str(root / "test.csv"), "--out", str(deployed), "-q"]) == 0
    onnx_rows = list(csv.DictReader(deployed.open()))
    assert [r["id"] for r in onnx_rows] == [r["id"] for r in rows]
    gap = max(abs(float(a[f"p_{x}"]) - float(b[f"p_{x}"])) for a, b in zip(rows, onnx_rows) for x in meta["labels"])
    assert gap <= 1e-4
    assert [r["prediction"] for r in onnx_rows] == [r["prediction"] for r in rows]


def test_regression_csv_trains_ridge_svr_knn_and_reports_mae_r2(tmp_path, tiny_text_onnx, capsys):
    frame = tagged_texts(60, 2)
    frame["score"] = [1.5 * t.split().count("dog") + 0.25 * t.split().count("rain") + 0.1 for t in frame["text"]]
    frame.drop(columns="labels").to_csv(tmp_path / "r.csv", index=False)
    assert main(["extract", str(tmp_path / "r.csv"), "--model", str(tiny_text_onnx), "--cache", str(tmp_path / "c"),
                 "-q"]) == 0
    assert main(["train", str(tmp_path / "c"), "--model", str(tiny_text_onnx), "--cv", "3", "--jobs", "1",
                 "--out", str(tmp_path / "heads"), "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"] == "numeric" and [h["head"] for h in doc["heads"]] == ["ridge", "svr", "knn"]
    assert all(h["cv_mae"] >= 0 and h["cv_rmse"] >= h["cv_mae"] for h in doc["heads"])
    assert max(h["cv_r2"] for h in doc["heads"]) > 0.5  # the score is a function of the words
    assert main(["evaluate", str(tmp_path / "heads" / "ridge.skops"), "--cache", str(tmp_path / "c"),
                 "--out", str(tmp_path / "rep"), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    y, pred = np.array(report["true"]), np.array(report["predicted"])
    assert report["mae"] == pytest.approx(np.abs(y - pred).mean())
    assert np.allclose(sorted(y), sorted(frame["score"]))
    with pytest.raises(Exception, match=r"numeric \(regression\) heads are not deployed yet"):
        from featx.deploy import deploy_head
        deploy_head(tmp_path / "heads" / "ridge.skops")
    for kind in ("ridge", "svr", "knn"):
        head = load_head(tmp_path / "heads" / f"{kind}.skops")  # through the trust checks
        assert head.predict(np.zeros((1, 16))).shape == (1,)


def test_a_label_in_one_item_gets_a_constant_head_and_a_note():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    Y = np.c_[X[:, 0] > 0, np.zeros(30)].astype(np.uint8)
    Y[3, 1] = 1
    r = select_multilabel("knn", X, Y, cv=3)
    assert r.estimator.predict_proba(X).shape == (30, 2)
    assert any("one item" in note for note in r.notes)


def test_per_label_thresholds_differ_when_labels_need_it():
    Y = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.1], [0.8, 0.15], [0.2, 0.12], [0.1, 0.02], [0.7, 0.01]])
    cuts = choose_threshold(Y, s, "per-label")
    assert cuts[0] > cuts[1]
    assert multilabel_metrics(Y, s, cuts, ["a", "b"])["macro_f1"] == 1.0


def test_a_damaged_regressor_is_refused(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3))
    r = select_regressor("ridge", X, X[:, 0], cv=3)
    r.estimator.steps[-1][1].coef_ = np.zeros(5)
    save_head(r.estimator, tmp_path / "h.skops")
    with pytest.raises(HeadError, match=r"coef_ has shape \(5,\), expected \(3,\)"):
        load_head(tmp_path / "h.skops")


def test_multilabel_image_manifest_trains_predicts_and_deploys(tmp_path, tiny_image_onnx, capsys):
    from PIL import Image

    from featx.sources import open_dataset, subset

    rows = []
    for item in subset(open_dataset("builtin:digits:train"), 60, seed=0).items:
        d, name = int(item.label), item.id.replace("/", "-") + ".png"
        Image.fromarray(item.ref).save(tmp_path / name)
        rows.append({"path": name, "label": json.dumps([t for t, on in (("even", d % 2 == 0), ("large", d >= 5))
                                                        if on])})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    assert main(["extract", str(tmp_path / "m.csv"), "--model", str(tiny_image_onnx), "--cache", str(tmp_path / "c"),
                 "-q"]) == 0
    assert main(["train", str(tmp_path / "c"), "--model", str(tiny_image_onnx), "--head", "knn", "--cv", "3",
                 "--threshold", "per-label", "--jobs", "1", "--out", str(tmp_path / "h"), "-q"]) == 0
    head = tmp_path / "h" / "knn.skops"
    assert read_metadata(head)["labels"] == ["even", "large"]
    assert main(["predict", str(head), str(tmp_path / "m.csv"), "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert main(["deploy", str(head), "--out", str(tmp_path / "m.onnx"), "-q"]) == 0
    assert main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "m.csv"), "--out", str(tmp_path / "q.csv"),
                 "-q"]) == 0
    by_head, by_onnx = (list(csv.DictReader((tmp_path / f).open())) for f in ("p.csv", "q.csv"))
    assert len(by_head) == 60 and [r["prediction"] for r in by_head] == [r["prediction"] for r in by_onnx]
    assert max(abs(float(a[c]) - float(b[c])) for a, b in zip(by_head, by_onnx) for c in ("p_even", "p_large")) <= 1e-4
