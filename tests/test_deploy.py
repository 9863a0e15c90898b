"""featx deploy end to end: heads trained by `featx train` on real cached features, fused, gated, predicted.

The reference is always today's two-stage path (`featx predict HEAD.skops`, or the backbone's
features fed to the scikit-learn head): probabilities within 1e-4, labels identical.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.cli import main
from featx.deploy import DeployedModel, deploy_head
from featx.errors import DeployError, ParameterError
from featx.heads.persist import load_head
from featx.sources import open_dataset, subset

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4


def train(cache, out: Path, head: str, *extra) -> Path:
    assert main(["train", str(cache), "--head", head, "--cv", "3", "--out", str(out), "--jobs", "1", *extra]) == 0
    return out / f"{head}.skops"


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_same_predictions(rows_a: list[dict], rows_b: list[dict], classes) -> None:
    assert [r["id"] for r in rows_a] == [r["id"] for r in rows_b] and rows_a
    assert [r["prediction"] for r in rows_a] == [r["prediction"] for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        gap = max(abs(float(a[f"p_{c}"]) - float(b[f"p_{c}"])) for c in classes)
        assert gap <= TOLERANCE + 1e-6, (a["id"], gap)  # the CSV rounds to 6 decimals


def digit_files(folder: Path, n: int) -> Path:
    """``n`` real builtin:digits:test scans as PNG files in class sub-folders."""
    from PIL import Image

    for item in subset(open_dataset("builtin:digits:test"), n, seed=3).items:
        path = folder / item.label / f"{item.id.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.ref).save(path)
    return folder


def deployed(head: Path, out: Path) -> Path:
    deploy_head(head, out, parity_items=32)
    return out


@pytest.fixture(scope="module")
def digits_head(digits_lite0_caches, tmp_path_factory) -> Path:
    """A logistic-regression head selected by `featx train` on 400 real Lite0 digits."""
    return train(digits_lite0_caches[0], tmp_path_factory.mktemp("digits"), "logreg")


@pytest.fixture(scope="module")
def foods_head(foods_minilm_caches, tmp_path_factory) -> Path:
    """An SVM head (calibrated) selected by `featx train` on 240 real MiniLM fine-food reviews."""
    return train(foods_minilm_caches[0], tmp_path_factory.mktemp("foods"), "svm")


@pytest.fixture(scope="module")
def digits_model(digits_head, tmp_path_factory) -> Path:
    return deployed(digits_head, tmp_path_factory.mktemp("deployed") / "digits.onnx")


@pytest.fixture(scope="module")
def foods_model(foods_head, tmp_path_factory) -> Path:
    return deployed(foods_head, tmp_path_factory.mktemp("deployed") / "foods.onnx")


@pytest.fixture(scope="module")
def tiny_head(tiny_image_onnx, tmp_path_factory) -> Path:
    """A kNN head on features of the tiny image backbone (100 digits)."""
    cache = tmp_path_factory.mktemp("tiny-cache") / "cache"
    featx.extract(subset(open_dataset("builtin:digits:train"), 100, seed=0), tiny_image_onnx, cache, progress=False)
    return train(cache, tmp_path_factory.mktemp("tiny-heads"), "knn", "--model", str(tiny_image_onnx))


def readme_script(tmp_path: Path) -> Path:
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(# predict\.py .*?)```", text, re.S).group(1)
    path = tmp_path / "predict.py"
    path.write_text(code)
    return path


# --------------------------------------------------------------------------- deploy
def test_cli_deploy_writes_a_gated_file_with_its_facts(digits_head, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "out" / "digits.onnx"
    assert main(["deploy", str(digits_head), "--out", str(out), "--parity-items", "24"]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "efficientnet-lite0 (fp32)" in printed
    assert "0 of 24 labels differ on 24 items of builtin:digits:train" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.onnx"]  # nothing staged is left

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("pixel_values", "tensor(float)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("label", "tensor(string)"),
                                                                  ("probabilities", "tensor(float)")]
    meta = {k: v for k, v in session.get_modelmeta().custom_metadata_map.items()}
    head_meta = json.loads(digits_head.with_suffix(".json").read_text())
    assert json.loads(meta["featx.classes"]) == head_meta["classes"] == [str(d) for d in range(10)]
    assert json.loads(meta["featx.preprocess"]) == featx.load_backbone("efficientnet-lite0").spec.preprocess.to_dict()
    backbone = json.loads(meta["featx.backbone"])
    assert backbone["fingerprint_id"] == head_meta["fingerprint_id"] and backbone["precision"] == "fp32"
    assert backbone["export_parity"]["max_abs_diff"] <= 1e-4  # ONNX vs PyTorch, recorded at export
    assert meta["featx.version"] == featx.__version__ and meta["featx.modality"] == "image"
    parity = json.loads(meta["featx.parity"])
    assert parity["n_items"] == 24 and parity["labels_differ"] == 0 and 0 < parity["max_abs_diff"] <= TOLERANCE
    head = json.loads(meta["featx.head"])
    assert head["kind"] == "logreg" and head["sha256"] == head_meta["sha256"]
    assert head["params"] == head_meta["best_params"] and head["steps"][-1] == "LogisticRegression"
    assert ("SignedSqrt" in head["steps"]) == (head["params"]["power"] == "sqrt")


def test_deployed_image_model_predicts_what_featx_predict_does(digits_head, digits_model, tmp_path, capsys):
    folder = digit_files(tmp_path / "scans", 40)
    assert main(["predict", str(digits_head), str(folder)]) == 0
    two_stage = read_csv(capsys.readouterr().out)
    assert main(["predict", str(digits_model), str(folder)]) == 0
    captured = capsys.readouterr()
    fused = read_csv(captured.out)
    assert set(fused[0]) == {"id", "prediction", "label", *[f"p_{d}" for d in range(10)]}
    assert_same_predictions(fused, two_stage, range(10))
    assert "accuracy against the dataset's labels" in captured.err

    # the Python API on raw arrays, against the backbone + head in memory
    items = [item.ref for item in subset(open_dataset("builtin:digits:test"), 30, seed=5).items]
    model, head = DeployedModel(digits_model), load_head(digits_head)
    X = featx.load_backbone("efficientnet-lite0").embed(items)
    assert np.array_equal(model.predict(items), head.predict(X))
    assert np.abs(model.predict_proba(items, batch_size=7) - head.predict_proba(X)).max() <= TOLERANCE


def test_deployed_text_model_and_its_tokenizer(foods_head, foods_model, tmp_path, capsys):
    tokenizer = foods_model.with_name("foods.tokenizer.json")
    model = DeployedModel(foods_model)
    assert model.modality == "text" and model.classes == ["great", "other"] and tokenizer.is_file()
    assert model.metadata["tokenizer"]["file"] == tokenizer.name
    assert [i.name for i in model.session.inputs] == ["input_ids", "attention_mask", "token_type_ids"]

    reviews = subset(open_dataset("builtin:fine-foods:test"), 40, seed=2)
    manifest = tmp_path / "reviews.jsonl"
    manifest.write_text("".join(json.dumps({"text": i.ref, "label": i.label}) + "\n" for i in reviews.items))
    assert main(["predict", str(foods_head), str(manifest)]) == 0
    two_stage = read_csv(capsys.readouterr().out)
    assert main(["predict", str(foods_model), str(manifest)]) == 0
    assert_same_predictions(read_csv(capsys.readouterr().out), two_stage, ["great", "other"])

    copy = tmp_path / "copy" / "foods.onnx"
    copy.parent.mkdir()
    copy.write_bytes(foods_model.read_bytes())
    with pytest.raises(DeployError, match="its tokenizer foods.tokenizer.json must sit beside it"):
        DeployedModel(copy)
    changed = tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"', 1)  # another tokenizer
    copy.with_name(tokenizer.name).write_text(changed)
    with pytest.raises(DeployError, match="is not the tokenizer foods.onnx was deployed with"):
        DeployedModel(copy)


def test_readme_script_reproduces_featx_predict(digits_model, foods_model, tmp_path, capsys):
    script = readme_script(tmp_path)
    files = sorted(str(p) for p in digit_files(tmp_path / "scans", 12).rglob("*.png"))
    texts = ["These cookies were stale and the box was crushed.", "Best tea I have ever had, will order again!"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    for model, items, data in ((digits_model, files, tmp_path / "scans"), (foods_model, texts, tmp_path / "texts.txt")):
        run = subprocess.run([sys.executable, str(script), str(model), *items], capture_output=True, text=True,
                             check=True, timeout=300)
        printed = [line.split("\t") for line in run.stdout.splitlines()]
        assert main(["predict", str(model), str(data)]) == 0
        rows = read_csv(capsys.readouterr().out)
        classes = DeployedModel(model).classes
        if model == digits_model:  # featx lists the folder by relative path; the script prints what it was given
            rows = sorted(rows, key=lambda r: str(tmp_path / "scans" / r["id"]))
        assert len(printed) == len(rows) == len(items)
        for line, row in zip(printed, rows):
            assert line[1] == row["prediction"]
            assert max(abs(float(p) - float(row[f"p_{c}"])) for p, c in zip(line[2:], classes)) <= TOLERANCE


def test_head_of_another_backbone_is_refused(tiny_head, lite0_onnx, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["deploy", str(tiny_head), "--out", str(out), "--model", str(lite0_onnx)]) == 1
    err = capsys.readouterr().err
    assert "the head was trained on features of 'tiny-image' with fingerprint" in err
    assert "efficientnet-lite0.onnx has fingerprint" in err and not out.exists()
    assert main(["deploy", str(tiny_head), "--out", str(out), "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert "trained on fp32 features (tiny-image)" in err and "featx export tiny-image --quantize int8" in err
    assert not out.exists()


def test_knn_head_of_the_tiny_backbone_deploys(tiny_head, tmp_path, capsys):
    """A kNN head deploys too; weighted by distance it is gated on held-out items (the test split)."""
    out = tmp_path / "knn.onnx"
    assert main(["deploy", str(tiny_head), "--out", str(out), "--parity-items", "40"]) == 0
    printed = capsys.readouterr().out
    head = load_head(tiny_head)
    held_out = head.named_steps["clf"].weights == "distance"
    assert f"items of builtin:digits:{'test' if held_out else 'train'}" in printed


def test_failed_gate_writes_nothing(digits_head, tmp_path):
    out = tmp_path / "digits.onnx"
    with pytest.raises(DeployError, match=r"does not predict what `featx predict` does with the head: max \|fused"):
        deploy_head(digits_head, out, parity_items=8, tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_deploy_parameters_are_named(digits_head, tmp_path):
    with pytest.raises(ParameterError, match=r"The 'precision' parameter of deploy_head must be None or one of "
                                             r"\('fp32', 'fp16', 'int8'\)\. Got 'int4' instead\."):
        deploy_head(digits_head, tmp_path / "x.onnx", precision="int4")
    with pytest.raises(ParameterError, match=r"The 'parity_items' parameter of deploy_head must be an int in "
                                             r"\[1, inf\)\. Got 0 instead\."):
        deploy_head(digits_head, tmp_path / "x.onnx", parity_items=0)
    with pytest.raises(ParameterError, match="The 'out' parameter must name an .onnx file"):
        deploy_head(digits_head, tmp_path / "x.txt")
    assert list(tmp_path.iterdir()) == []


def test_deployed_file_misuse_is_explained(digits_model, lite0_onnx, tmp_path, capsys):
    with pytest.raises(DeployError, match="not a model written by `featx deploy`"):
        DeployedModel(lite0_onnx)
    assert main(["predict", str(digits_model), "builtin:digits:test", "--cache", str(tmp_path / "c")]) == 2
    assert "--cache and --model go with a .skops head" in capsys.readouterr().err
    (tmp_path / "t.txt").write_text("a review\n")
    assert main(["predict", str(digits_model), str(tmp_path / "t.txt")]) == 1
    assert "holds texts but" in capsys.readouterr().err


def test_bad_items_are_skipped_or_named(digits_model, tmp_path, capsys):
    folder = digit_files(tmp_path / "scans", 6)
    (folder / "3" / "broken.png").write_bytes(b"not a png")
    assert main(["predict", str(digits_model), str(folder)]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert main(["predict", str(digits_model), str(folder), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    rows = read_csv(captured.out)
    assert len(rows) == 6 and "broken.png" not in captured.out and "skipped 3/broken.png" in captured.err


# --------------------------------------------------------------------------- every head, every variant
@pytest.mark.slow
@pytest.mark.parametrize("which", ["digits", "foods"])
def test_every_head_featx_train_makes_deploys(which, digits_lite0_caches, foods_minilm_caches, tmp_path, capsys):
    train_cache, test_cache = digits_lite0_caches if which == "digits" else foods_minilm_caches
    assert main(["train", str(train_cache), "--head", "all", "--cv", "3", "--out", str(tmp_path), "--jobs", "1"]) == 0
    X, y, _ = featx.load_features(test_cache)
    for kind in ("logreg", "svm", "knn"):
        result = deploy_head(tmp_path / f"{kind}.skops", tmp_path / f"{kind}.onnx", parity_items=64)
        assert result.parity.passed and result.parity.n_items == 64
        head, model = load_head(tmp_path / f"{kind}.skops"), DeployedModel(result.path)
        # the held-out cache's items, raw, through the deployed file vs its cached features through the head
        items = open_dataset(f"builtin:{'digits' if which == 'digits' else 'fine-foods'}:test")
        refs = {item.id: item.ref for item in items.items}
        _, _, ids = featx.load_features(test_cache)
        got = model.predict_items([refs[i] for i in ids])
        assert np.array_equal(got.labels, head.predict(X))
        assert np.abs(got.probabilities - head.predict_proba(X)).max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name, mode, source", [("efficientnet-lite0", "int8", "builtin:digits:train"),
                                                ("efficientnet-lite0", "fp16", "builtin:digits:train"),
                                                ("all-minilm-l6-v2", "int8", "builtin:fine-foods:train")])
def test_variants_deploy_with_their_recorded_parity(name, mode, source, lite0_onnx, minilm_onnx, tmp_path, capsys):
    from featx.torchmodels.provision import export_backbone

    kwargs = {"quantize": "int8", "calibration_size": 16} if mode == "int8" else {"precision": "fp16"}
    variant = export_backbone(name, out_dir=(lite0_onnx if name.startswith("eff") else minilm_onnx).parent, **kwargs)
    featx.extract(subset(open_dataset(source), 120, seed=0), variant.onnx_path, tmp_path / "cache", progress=False)
    head = train(tmp_path / "cache", tmp_path / "heads", "logreg")
    assert main(["deploy", str(head), "--out", str(tmp_path / "v.onnx"), "--precision", mode,
                 "--parity-items", "32"]) == 0
    assert f"{name}-{mode} ({mode})" in capsys.readouterr().out
    meta = DeployedModel(tmp_path / "v.onnx").metadata
    recorded = json.loads(variant.spec_path.read_text())
    assert meta["backbone"]["precision"] == mode and meta["backbone"]["name"] == f"{name}-{mode}"
    assert meta["backbone"]["export_parity"]["cosine_mean"] == recorded["parity"]["cosine_mean"]
    assert meta["parity"]["labels_differ"] == 0 and meta["parity"]["max_abs_diff"] <= TOLERANCE
    assert main(["deploy", str(head), "--out", str(tmp_path / "w.onnx"), "--precision", "fp32"]) == 1
    assert f"trained on {mode} features" in capsys.readouterr().err and not (tmp_path / "w.onnx").exists()


# --------------------------------------------------------------------------- the raw-input variant
def test_raw_image_variant_agrees_with_featx(digits_head, tmp_path, capsys):
    pytest.importorskip("onnxruntime_extensions")
    from featx.deploy.raw import measure_agreement, raw_session

    out = tmp_path / "digits.onnx"
    assert main(["deploy", str(digits_head), "--out", str(out), "--raw", "--parity-items", "16"]) == 0
    printed = capsys.readouterr().out
    raw = tmp_path / "digits.raw.onnx"
    assert f"raw input {raw}" in printed and "labels agree with featx's preprocessing on 100.0% of 16 items" in printed
    with pytest.raises(DeployError, match="is a raw-input variant"):
        DeployedModel(raw)
    session = raw_session(raw)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("image", "tensor(uint8)")]
    recorded = json.loads(session.get_modelmeta().custom_metadata_map["featx.raw"])
    assert recorded["agreement"]["labels_agree"] == 1.0 and recorded["from"] == "digits.onnx"
    # real scans as PNG files (read as bytes) and as JPEG bytes decoded by another decoder than Pillow's
    from PIL import Image

    from featx.sources import Item

    scans = list(subset(open_dataset("builtin:digits:test"), 60, seed=4).items)
    files = [Item(i.id, str(p)) for i, p in zip(scans, sorted(digit_files(tmp_path / "scans", 60).rglob("*.png")))]
    jpegs = []
    for item in scans[:30]:
        buf = io.BytesIO()
        Image.fromarray(item.ref).convert("RGB").save(buf, format="JPEG", quality=90)
        jpegs.append(Item(item.id, buf.getvalue()))
    agreement = measure_agreement(session, DeployedModel(out), files + jpegs, "digit scans")
    assert agreement.n_items == 90 and agreement.labels_agree >= 0.99


def test_raw_text_variant_agrees_with_featx(foods_model, tmp_path):
    pytest.importorskip("onnxruntime_extensions")
    from featx.deploy.raw import measure_agreement, raw_feed, raw_session, raw_variant

    path, agreement = raw_variant(foods_model, tmp_path / "foods.raw.onnx", data="builtin:fine-foods:test",
                                  n_items=80)
    assert agreement.passed and agreement.n_items == 80 and "builtin:fine-foods:test" in agreement.items
    session, model = raw_session(path), DeployedModel(foods_model)
    label, probabilities = session.run(None, raw_feed("Stale, broken cookies. Never again.", "text"))
    assert label.shape == (1,) and probabilities.shape == (1, 2) and label[0] in model.classes
    long_review = "delicious " * 2000  # truncated at max_length tokens inside the graph, as featx does
    assert session.run(None, raw_feed(long_review, "text"))[0][0] == model.predict([long_review])[0]
    strict = measure_agreement(session, model, [], "nothing", minimum=0.99)
    assert not strict.passed


def test_cli_deploy_json_document(digits_head, tmp_path, capsys):
    out = tmp_path / "d.onnx"
    assert main(["deploy", str(digits_head), "--out", str(out), "--parity-items", "8", "--json", "-q"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["path"] == str(out) and doc["precision"] == "fp32" and doc["raw"] is None
    assert doc["parity"]["n_items"] == 8 and doc["parity"]["labels_differ"] == 0 and captured.err == ""


@pytest.mark.slow
def test_approximate_heads_deploy(digits_lite0_caches, tmp_path, capsys):
    """`featx train --strategy approximate` (SGD, Nystroem + linear SVM, PCA + inverted-file kNN) deploys too."""
    train_cache, test_cache = digits_lite0_caches
    assert main(["train", str(train_cache), "--head", "all", "--strategy", "approximate", "--cv", "3", "--jobs", "1",
                 "--out", str(tmp_path)]) == 0
    X, _, ids = featx.load_features(test_cache)
    refs = {item.id: item.ref for item in open_dataset("builtin:digits:test").items}
    for kind in ("logreg", "svm", "knn"):
        result = deploy_head(tmp_path / f"{kind}.skops", tmp_path / f"{kind}.onnx", parity_items=32)
        head = load_head(tmp_path / f"{kind}.skops")
        assert result.parity.passed and type(head.steps[-1][1]).__name__ in (
            "SGDClassifier", "CalibratedClassifierCV", "IVFKNeighborsClassifier")
        got = DeployedModel(result.path).predict_items([refs[i] for i in ids[:60]])
        assert np.array_equal(got.labels, head.predict(X[:60]))
        assert np.abs(got.probabilities - head.predict_proba(X[:60])).max() <= TOLERANCE
