"""Declarative pipelines (featx.pipeline, `featx run`): validation, shipped examples, end-to-end runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.cli import main
from featx.errors import ParameterError
from featx.heads.persist import load_head, read_metadata
from featx.pipeline import PipelineConfig, format_table, load_pipeline, run_pipeline

REPO = Path(__file__).resolve().parent.parent


def write_toml(path: Path, model, out, *, cache=None, extra_dataset="", heads='["logreg", "svm", "knn"]', cv=3):
    cache_line = "" if cache is None else (f'cache = "{cache}"' if cache is not False else "cache = false")
    grid = "[heads.grids.logreg]\nC = [0.1, 1.0]" if "logreg" in heads else ""
    path.write_text(f"""
name = "tiny-digits"

[dataset]
train = "builtin:digits:train"
limit = 240
{extra_dataset}
seed = 0

[backbone]
model = "{model}"
batch_size = 16

[heads]
kinds = {heads}
cv = {cv}
n_jobs = 1

{grid}

[output]
dir = "{out}"
{cache_line}
""")
    return path


# --------------------------------------------------------------------------- configuration
def test_shipped_pipelines_load():
    digits = load_pipeline(REPO / "pipelines" / "digits.toml")
    assert (digits.train, digits.test, digits.model) == ("builtin:digits:train", "builtin:digits:test",
                                                         "efficientnet-lite0")
    fashion = load_pipeline(REPO / "pipelines" / "fashion-mnist-lite0.toml")
    assert fashion.limit == 2000 and fashion.test == "builtin:fashion-mnist:test" and fashion.test_limit is None
    assert fashion.model == "efficientnet-lite0" and fashion.heads == ("logreg", "svm", "knn") and fashion.cv == 5
    foods = load_pipeline(REPO / "pipelines" / "fine-foods-minilm.toml")
    assert (foods.train, foods.test, foods.model) == ("builtin:fine-foods:train", "builtin:fine-foods:test",
                                                      "all-minilm-l6-v2")
    for config in (digits, fashion, foods):
        assert config.output_dir == Path("runs") / config.name and config.cache_dir == config.output_dir / "cache"


@pytest.mark.parametrize("data, message", [
    ({"dataset": {"train": "x"}, "backbone": {"model": "m"}, "extra": {}}, r"unknown key\(s\) \['extra'\]"),
    ({"dataset": {"train": "x", "limt": 3}, "backbone": {"model": "m"}}, r"unknown key\(s\) \['limt'\] in \[dataset\]"),
    ({"dataset": {}, "backbone": {"model": "m"}}, r"\[dataset\] needs 'train'"),
    ({"dataset": {"train": "x"}}, r"\[backbone\] needs 'model'"),
    ({"dataset": {"train": "x", "test": "y", "test_size": 0.2}, "backbone": {"model": "m"}}, "not both"),
    ({"dataset": {"train": "x"}, "backbone": {"model": "m"}, "heads": {"kinds": ["tree"]}}, "'tree'"),
    ({"dataset": {"train": "x"}, "backbone": {"model": "m"}, "heads": {"kinds": ["knn"], "grids": {"svm": {}}}},
     r"\[heads.grids.svm\] is given but 'svm' is not in kinds"),
    ({"dataset": {"train": "x"}, "backbone": {"model": "m"}, "heads": {"grids": {"logreg": {"gamma": [1]}}}},
     r"unknown parameter\(s\) \['gamma'\] for the 'logreg' head"),
])
def test_bad_configurations_are_named(data, message):
    with pytest.raises(ParameterError, match=message):
        PipelineConfig.from_dict(data, source="p.toml")


@pytest.mark.parametrize("section, key, value, expected", [
    ("dataset", "test_size", 1.5, "None or a float in (0, 1)"),
    ("dataset", "limit", 0, "None or an int in [1, inf)"),
    ("dataset", "seed", -1, "an int in [0, inf)"),
    ("backbone", "batch_size", True, "None or an int in [1, inf)"),
    ("backbone", "threads", 0, "None or an int in [1, inf)"),
    ("heads", "cv", 1, "an int in [2, inf)"),
    ("backbone", "on_error", "ignore", "one of ('raise', 'skip')"),
    ("backbone", "jpeg_draft", "yes", "a bool"),
    ("output", "cache", True, "a directory path or false"),
])
def test_bad_values_are_worded_like_every_parameter(section, key, value, expected):
    data = {"dataset": {"train": "x"}, "backbone": {"model": "m"}}
    data.setdefault(section, {})[key] = value
    with pytest.raises(ParameterError) as info:
        PipelineConfig.from_dict(data, source="p.toml")
    assert str(info.value) == f"The {key!r} parameter of pipeline p.toml must be {expected}. Got {value!r} instead."


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ParameterError, match="no pipeline file at"):
        load_pipeline(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(ParameterError, match="is not valid TOML"):
        load_pipeline(tmp_path / "bad.toml")


def test_table_format():
    rows = [{"head": "logreg", "cv_mean": 0.91234, "cv_std": 0.01, "n_splits": 5, "fit_seconds": 3.21,
             "best_params": {"C": 1.0, "scale": "l2"}, "test_accuracy": 0.9, "test_macro_f1": 0.89},
            {"head": "knn", "cv_mean": None, "cv_std": None, "n_splits": 0, "fit_seconds": 0.1,
             "best_params": {"n_neighbors": 1}, "test_accuracy": None, "test_macro_f1": None}]
    table = format_table(rows).splitlines()
    assert table[0].startswith("| head | CV accuracy (± std) | folds | fit (s) | test accuracy | test macro-F1 |")
    assert table[2] == "| logreg | 0.9123 ± 0.0100 | 5 | 3.2 | 0.9000 | 0.8900 | C=1.0, scale=l2 |"
    assert table[3] == "| knn | n/a | 0 | 0.1 | n/a | n/a | n_neighbors=1 |"
    assert "test accuracy" not in format_table([{**rows[0], "test_accuracy": None}])


# --------------------------------------------------------------------------- end to end
def test_run_end_to_end_with_cache_then_resume(tiny_image_onnx, tmp_path):
    out = tmp_path / "run"
    toml = write_toml(tmp_path / "p.toml", tiny_image_onnx, out, extra_dataset='test = "builtin:digits:test"\n'
                      'test_limit = 90')
    lines = []
    result = run_pipeline(toml, echo=lines.append, progress=False)
    assert [r["head"] for r in result.rows] == ["logreg", "svm", "knn"]
    assert result.n_train == 240 and result.n_test == 90 and result.backbone == "tiny-image"
    for row in result.rows:
        assert 0.2 < row["cv_mean"] <= 1 and 0.2 < row["test_accuracy"] <= 1 and row["n_splits"] == 3
    assert result.rows[0]["best_params"]["C"] in (0.1, 1.0)  # the grid given in the TOML
    text = "\n".join(lines)
    assert "240 embedded, 0 cached already" in text and "| logreg |" in text and "test accuracy" in text
    # files: heads with metadata (loadable), reports, summary
    for kind in ("logreg", "svm", "knn"):
        meta = read_metadata(out / "heads" / f"{kind}.skops")
        assert meta["backbone"] == "tiny-image" and meta["model"] == str(tiny_image_onnx) and meta["n_train"] == 240
        assert meta["fingerprint_id"] == featx.load_backbone(tiny_image_onnx).fingerprint_id
        report = json.loads((out / "reports" / kind / "report.json").read_text())
        assert report["n"] == 90 and report["head"] == kind
        assert (out / "reports" / kind / "report-confusion.png").stat().st_size > 1000
        X, y, _ = featx.load_features(out / "cache" / "test")
        assert report["accuracy"] == pytest.approx(np.mean(load_head(out / "heads" / f"{kind}.skops").predict(X) == y))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == json.loads(json.dumps(result.rows)) and summary["n_test"] == 90
    assert result.table() in (out / "summary.md").read_text()

    # second run: every feature comes from the cache, and the selection is the same
    lines.clear()
    again = run_pipeline(toml, echo=lines.append, progress=False)
    assert "0 embedded, 240 cached already" in "\n".join(lines)
    assert [r["cv_mean"] for r in again.rows] == [r["cv_mean"] for r in result.rows]
    assert [r["test_accuracy"] for r in again.rows] == [r["test_accuracy"] for r in result.rows]


def test_in_memory_run_equals_cached_run_and_test_size_split(tiny_image_onnx, tmp_path):
    kwargs = dict(extra_dataset="test_size = 0.25", heads='["logreg", "knn"]')
    cached = run_pipeline(write_toml(tmp_path / "a.toml", tiny_image_onnx, tmp_path / "a", **kwargs), echo=None,
                          progress=False)
    memory = run_pipeline(write_toml(tmp_path / "b.toml", tiny_image_onnx, tmp_path / "b", cache=False, **kwargs),
                          echo=None, progress=False)
    assert not (tmp_path / "b" / "cache").exists()
    assert cached.n_train == memory.n_train == 180 and cached.n_test == memory.n_test == 60
    for a, b in zip(cached.rows, memory.rows):
        assert a["best_params"] == b["best_params"]
        assert a["cv_mean"] == pytest.approx(b["cv_mean"], abs=1e-6)
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-6)


def test_pipeline_without_test_set(tiny_image_onnx, tmp_path):
    result = run_pipeline(write_toml(tmp_path / "p.toml", tiny_image_onnx, tmp_path / "o", heads='["knn"]'),
                          echo=None, progress=False)
    assert result.n_test == 0 and result.rows[0]["test_accuracy"] is None
    assert not (tmp_path / "o" / "reports").exists() and (tmp_path / "o" / "heads" / "knn.skops").is_file()


def test_cli_run(tiny_image_onnx, tmp_path, capsys):
    toml = write_toml(tmp_path / "p.toml", tiny_image_onnx, tmp_path / "ignored", heads='["logreg"]',
                      extra_dataset='test = "builtin:digits:test"\ntest_limit = 60')
    assert main(["run", str(toml), "--out", str(tmp_path / "cli"), "--jobs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| logreg |" in out and "test accuracy" in out
    assert (tmp_path / "cli" / "summary.md").is_file() and not (tmp_path / "ignored").exists()
    assert main(["run", str(tmp_path / "missing.toml")]) == 1
    assert "no pipeline file at" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real pipelines (slow)
@pytest.mark.slow
def test_digits_pipeline_with_lite0(lite0_onnx, tmp_path):
    result = run_pipeline(REPO / "pipelines" / "digits.toml", out_dir=tmp_path / "digits", echo=None, progress=False)
    assert result.n_train == 1347 and result.n_test == 450
    assert {r["head"]: r["test_accuracy"] for r in result.rows}["logreg"] > 0.9


@pytest.mark.slow
def test_fashion_mnist_acceptance(lite0_onnx, tmp_path):
    """Issue 4's acceptance: EfficientNet-Lite0, 2000 training images, the official 10k test set, logreg >= 0.86."""
    from featx.sources.builtins import fashion_mnist_dir

    try:
        fashion_mnist_dir()
    except Exception as e:  # the Debian package is not installed here
        pytest.skip(f"Fashion-MNIST not available: {e}")
    result = run_pipeline(REPO / "pipelines" / "fashion-mnist-lite0.toml", out_dir=tmp_path / "fm", echo=print,
                          progress=False)
    assert result.n_train == 2000 and result.n_test == 10000
    logreg = next(r for r in result.rows if r["head"] == "logreg")
    assert logreg["test_accuracy"] >= 0.86


def test_embed_dataset_skips_like_the_cache(nan_image_onnx, image_files, tmp_path):
    from PIL import Image

    from featx.pipeline import embed_dataset
    from featx.sources import open_dataset

    Image.new("RGB", (20, 20), (0, 0, 0)).save(image_files / "shapes" / "black.png")  # NaN for this model
    ds = open_dataset(image_files)
    backbone = featx.load_backbone(nan_image_onnx)
    warned = []
    X, y, ids = embed_dataset(backbone, ds, batch_size=3, on_error="skip", warn=warned.append)
    assert len(ds) == 8 and X.shape == (7, 8) and "shapes/black.png" not in ids
    assert len(warned) == 1 and warned[0].startswith("skipped shapes/black.png:")
    featx.extract(ds, backbone, tmp_path / "c", on_error="skip", progress=False)
    Xc, yc, idsc = featx.load_features(tmp_path / "c")
    assert list(idsc) == list(ids) and list(yc) == list(y)
    np.testing.assert_allclose(Xc, X, atol=1e-6)
    with pytest.raises(featx.errors.NonFiniteOutputError, match="shapes/black.png"):
        embed_dataset(backbone, ds, on_error="raise")
