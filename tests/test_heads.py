"""featx.heads: pipelines, grids and model selection on real cached features; the train/evaluate/predict CLI."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest

import featx
from featx.cli import main
from featx.errors import HeadError, InputError, ParameterError
from featx.heads import (FEW_SHOT_PARAMS, HEADS, SignedSqrt, grid_size, head_grid, head_pipeline, resolve_heads, select_head,
                         train_heads)
from featx.heads.persist import load_head
from featx.sources import open_dataset, subset


def cached_digits(tmp_path_factory, onnx, split, n):
    """Features of ``n`` digits of a split, extracted into a session-wide cache (reused across tests)."""
    cache = tmp_path_factory.getbasetemp() / f"heads-cache-{onnx.stem}-{split}-{n}"
    featx.extract(subset(open_dataset(f"builtin:digits:{split}"), n, seed=0), onnx, cache, progress=False)
    return cache


@pytest.fixture(scope="module")
def lite0_digits(tmp_path_factory, lite0_onnx):
    """Real EfficientNet-Lite0 features: 240 training and 100 test digits, through the cache."""
    train = cached_digits(tmp_path_factory, lite0_onnx, "train", 240)
    test = cached_digits(tmp_path_factory, lite0_onnx, "test", 100)
    return featx.load_features(train), featx.load_features(test), train, test


@pytest.fixture(scope="module")
def tiny_caches(tmp_path_factory, tiny_image_onnx):
    """Caches of the tiny image backbone (8-d features): 400 training and 150 test digits."""
    return (cached_digits(tmp_path_factory, tiny_image_onnx, "train", 400),
            cached_digits(tmp_path_factory, tiny_image_onnx, "test", 150))


@pytest.fixture(scope="module")
def tiny_digits(tiny_caches):
    X, y, _ = featx.load_features(tiny_caches[0])
    return X, y


# --------------------------------------------------------------------------- building blocks
def test_head_pipeline_steps_and_parameters():
    pipe = head_pipeline("svm", scale="l2", power="sqrt", kernel="linear", C=3.0)
    assert [name for name, _ in pipe.steps] == ["power", "scale", "clf"]
    assert isinstance(pipe.named_steps["power"], SignedSqrt)
    assert type(pipe.named_steps["scale"]).__name__ == "Normalizer"
    assert pipe.named_steps["clf"].get_params()["kernel"] == "linear"
    assert pipe.named_steps["clf"].C == 3.0
    assert head_pipeline("logreg").named_steps["clf"].max_iter == 2000
    assert head_pipeline("knn", scale="none").named_steps["scale"] == "passthrough"


def test_bad_kind_scale_and_parameter_are_named():
    with pytest.raises(ParameterError, match=r"The 'kind' parameter of head_pipeline must be one of \('logreg', 'svm', 'knn'\)\. "
                                             r"Got 'tree' instead\."):
        head_pipeline("tree")
    with pytest.raises(ParameterError, match=r"The 'scale' parameter of head_pipeline must be one of .*Got 'minmax' instead"):
        head_pipeline("logreg", scale="minmax")
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['n_neighbours'\] for the 'knn' head"):
        head_pipeline("knn", n_neighbours=3)
    with pytest.raises(ParameterError, match="'heads' parameter must hold kinds"):
        resolve_heads(["logreg", "forest"])
    assert resolve_heads("all") == HEADS
    assert resolve_heads(["svm", "svm"]) == ("svm",)


def test_one_fixed_grid_per_head():
    assert [grid_size(head_grid(kind)) for kind in HEADS] == [16, 18, 48]
    grid = head_grid("logreg")
    grid[0]["C"].append(123.0)  # a copy: the next caller gets the fixed grid
    assert 123.0 not in head_grid("logreg")[0]["C"]
    for kind in HEADS:
        for part in head_grid(kind):
            assert set(part["power"]) == {"none", "sqrt"}
            assert set(part["scale"]) <= {"standard", "l2"}


def test_signed_sqrt_values_dtype_and_names():
    X = np.array([[4.0, -9.0, 0.0]], np.float32)
    out = SignedSqrt().fit(X).transform(X)
    np.testing.assert_array_equal(out, [[2.0, -3.0, 0.0]])
    assert out.dtype == np.float32
    assert list(SignedSqrt().fit(X).get_feature_names_out()) == ["x0", "x1", "x2"]


def test_signed_sqrt_passes_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(SignedSqrt(), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert not failed and len(results) > 30


# --------------------------------------------------------------------------- selection on real features
def test_select_logreg_on_real_lite0_features(lite0_digits):
    (X, y, ids), (Xt, yt, _), _, _ = lite0_digits
    assert X.shape == (240, 1280) and y.dtype == object
    grid = {"power": ["none", "sqrt"], "scale": ["l2"], "C": [10.0, 100.0]}
    r = select_head("logreg", X, y, cv=3, n_jobs=1, grid=grid)
    assert r.kind == "logreg" and r.n_splits == 3
    assert r.best_params["scale"] == "l2" and r.best_params["C"] in (10.0, 100.0)
    assert len(r.cv_results["params"]) == 4 and sorted(r.cv_results["rank_test_score"])[0] == 1
    best = r.cv_results["rank_test_score"].index(1)
    assert r.cv_mean == pytest.approx(r.cv_results["mean_test_score"][best])
    assert r.cv_mean > 0.85 and 0 <= r.cv_std < 0.1
    assert list(r.best_estimator.classes_) == sorted(set(y))
    assert np.mean(r.best_estimator.predict(Xt) == yt) > 0.85  # held-out digits
    json.dumps(r.summary())  # JSON-ready


def test_train_heads_all_three_with_default_grids(tiny_digits):
    X, y = tiny_digits
    results = train_heads(X, y, cv=3, n_jobs=1)
    assert [r.kind for r in results] == ["logreg", "svm", "knn"]
    for r in results:
        assert len(r.cv_results["params"]) == grid_size(head_grid(r.kind))
        assert r.cv_mean > 0.3  # 10 classes: chance is 0.1, even with a tiny random-conv backbone
        assert r.fit_seconds > 0
    svm = results[1].best_estimator
    proba = svm.predict_proba(X[:50])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(svm.predict(X[:50]), svm.classes_[proba.argmax(axis=1)])


def test_selection_is_deterministic_for_a_seed(tiny_digits):
    X, y = tiny_digits
    grid = {"n_neighbors": [1, 5], "metric": ["cosine"]}
    a = select_head("knn", X, y, cv=4, n_jobs=1, seed=3, grid=grid)
    b = select_head("knn", X, y, cv=4, n_jobs=1, seed=3, grid=grid)
    c = select_head("knn", X, y, cv=4, n_jobs=1, seed=4, grid=grid)
    assert a.cv_results["mean_test_score"] == b.cv_results["mean_test_score"]
    assert a.cv_results["mean_test_score"] != c.cv_results["mean_test_score"]


def test_small_classes_reduce_the_folds(tiny_digits):
    X, y = tiny_digits
    keep = np.concatenate([np.flatnonzero(y == c)[:3] for c in sorted(set(y))])  # 3 per class
    with pytest.warns(UserWarning, match="smallest class has 3 items, fewer than cv=5; using 3-fold"):
        r = select_head("knn", X[keep], y[keep], cv=5, n_jobs=1)
    assert r.n_splits == 3
    # 20 rows per training fold: k=20 cannot be used, and the notes say so
    assert any("n_neighbors [20] dropped" in note for note in r.notes)
    assert all(p["n_neighbors"] <= 10 for p in r.cv_results["params"])


def test_one_item_per_class_fits_the_few_shot_default_without_cv():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    keep = np.array([np.flatnonzero(y == c)[0] for c in sorted(set(y))])
    rest = np.setdiff1d(np.arange(len(y)), keep)
    for kind in HEADS:
        with pytest.warns(UserWarning, match="single item, so no cross-validation is possible"):
            r = select_head(kind, X[keep], y[keep], cv=5, n_jobs=1)
        assert r.n_splits == 0 and np.isnan(r.cv_mean) and r.cv_results == {}
        assert r.best_params == FEW_SHOT_PARAMS[kind]  # unit-length rows, a fixed C
        assert r.best_estimator.named_steps["scale"].__class__.__name__ == "Normalizer"
        assert (r.best_estimator.predict(X[keep]) == y[keep]).all()
        # one image per class: far above chance (10%) on the other 1787 images (0.605; standardising
        # on the 10 items instead, the old default, scores 0.572 with logreg here)
        assert r.best_estimator.score(X[rest], y[rest]) > 0.59
        assert r.summary()["cv_mean"] is None


def test_bad_inputs_are_named(tiny_digits):
    X, y = tiny_digits
    with pytest.raises(InputError, match="X has 400 rows but y has 399 labels"):
        select_head("logreg", X, y[:-1])
    with pytest.raises(InputError, match="2-D array"):
        select_head("logreg", X[:, 0], y)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(InputError, match=r"NaN/inf in 1 row\(s\) \(first: \[7\]\)"):
        select_head("logreg", bad, y)
    with pytest.raises(InputError, match="at least 2 classes"):
        select_head("logreg", X[:5], np.array(["a"] * 5, dtype=object))
    with pytest.raises(InputError, match="y is None"):
        select_head("logreg", X, None)
    with pytest.raises(ParameterError, match=r"The 'cv' parameter of select_head must be an int in \[2, inf\)\. Got 1 instead\."):
        select_head("logreg", X, y, cv=1)
    with pytest.raises(ParameterError, match="'n_jobs' parameter of select_head must be None or a non-zero int"):
        select_head("logreg", X, y, n_jobs=0)
    with pytest.raises(ParameterError, match="grid entry 'C' of the 'logreg' head has no values"):
        select_head("logreg", X, y, grid={"C": []})
    with pytest.raises(ParameterError, match="grids given for head"):
        train_heads(X, y, heads=["knn"], grids={"svm": {"C": [1.0]}})


# --------------------------------------------------------------------------- the CLI
def test_cli_train_evaluate_predict(tiny_caches, tiny_image_onnx, tmp_path, capsys):
    train_cache, test_cache = tiny_caches
    Xt, yt, _ = featx.load_features(test_cache)
    heads = tmp_path / "heads"
    assert main(["train", str(train_cache), "--model", str(tiny_image_onnx), "--head", "all", "--cv", "3",
                 "--out", str(heads), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "| logreg |" in out and "| svm |" in out and "| knn |" in out and "best by CV:" in out
    for kind in HEADS:
        meta = json.loads((heads / f"{kind}.json").read_text())
        assert meta["backbone"] == "tiny-image" and meta["n_train"] == 400 and meta["dim"] == 8
        assert meta["model"] == str(tiny_image_onnx.resolve())
        assert meta["fingerprint_id"] == featx.load_backbone(tiny_image_onnx).fingerprint_id
        assert meta["classes"] == [str(d) for d in range(10)] and 0.3 < meta["cv_mean"] <= 1

    assert main(["evaluate", str(heads / "svm.skops"), "--cache", str(test_cache), "--out",
                 str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["n"] == 150 and report["accuracy"] > 0.3 and f"**accuracy**: {report['accuracy']:.4f}" in out
    head = load_head(heads / "svm.skops")
    assert report["accuracy"] == pytest.approx(np.mean(head.predict(Xt) == yt))
    assert (tmp_path / "rep" / "report-confusion.png").stat().st_size > 1000

    # predict a manifest of real PNG files: in memory to a CSV file, then through a cache to stdout
    from PIL import Image

    rows = ["path,label"]
    for item in open_dataset("builtin:digits:test").items[:12]:
        path = tmp_path / f"{item.id.replace('/', '_')}.png"
        Image.fromarray(item.ref).save(path)
        rows.append(f"{path},{item.label}")
    data = tmp_path / "few.csv"
    data.write_text("\n".join(rows) + "\n")
    assert main(["predict", str(heads / "svm.skops"), str(data), "--out", str(tmp_path / "pred.csv")]) == 0
    assert "accuracy against the dataset's labels" in capsys.readouterr().err
    table = list(csv.DictReader(io.StringIO((tmp_path / "pred.csv").read_text())))
    assert len(table) == 12 and set(table[0]) == {"id", "prediction", "label", *[f"p_{d}" for d in range(10)]}
    for row in table:
        probs = np.array([float(row[f"p_{d}"]) for d in range(10)])
        assert abs(probs.sum() - 1) < 1e-3 and row["prediction"] == str(probs.argmax())
    assert np.mean([row["prediction"] == row["label"] for row in table]) > 0.3
    for attempt in ("first", "cached"):
        assert main(["predict", str(heads / "svm.skops"), str(data), "--cache", str(tmp_path / "pc")]) == 0
        captured = capsys.readouterr()
        assert list(csv.DictReader(io.StringIO(captured.out))) == table
        assert ("12 embedded" if attempt == "first" else "0 embedded, 12 cached already") in captured.err


def test_cli_refuses_features_of_another_backbone(lite0_digits, tiny_caches, tiny_image_onnx, tmp_path, capsys):
    _, _, lite0_train, _ = lite0_digits
    heads = tmp_path / "heads"
    assert main(["train", str(lite0_train), "--head", "knn", "--cv", "3", "--out", str(heads), "--jobs", "1"]) == 0
    assert json.loads((heads / "knn.json").read_text())["model"] == "efficientnet-lite0"
    assert main(["evaluate", str(heads / "knn.skops"), "--cache", str(tiny_caches[1])]) == 1
    err = capsys.readouterr().err
    assert "trained on 'efficientnet-lite0' features but cache" in err and "holds tiny-image" in err
    assert main(["predict", str(heads / "knn.skops"), "builtin:digits:test", "--model", str(tiny_image_onnx)]) == 1
    assert "features of two models must not be mixed" in capsys.readouterr().err


def test_cli_train_needs_labels(tiny_image_onnx, image_files, tmp_path, capsys):
    featx.extract(image_files / "shapes", tiny_image_onnx, tmp_path / "c", progress=False)
    assert main(["train", str(tmp_path / "c"), "--out", str(tmp_path / "h")]) == 1
    assert "unlabelled dataset; heads need labels" in capsys.readouterr().err


def test_heads_errors_subclass_builtins():
    assert issubclass(HeadError, ValueError) and issubclass(ParameterError, ValueError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head_grid("svm")  # no warnings from merely building grids
