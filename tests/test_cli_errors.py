"""What an adversarial run fed the CLI, and what it must get back: a message that says what to do
and an exit code, never a traceback. Real files (damaged on purpose), real processes where a
permission or a crash is involved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import featx
from featx.cli import main
from featx.sources import open_dataset, subset


def featx_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "featx", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture
def digits_cache(tiny_image_onnx, tmp_path):
    cache = tmp_path / "cache"
    featx.extract(subset(open_dataset("builtin:digits"), 120, seed=0), tiny_image_onnx, cache, progress=False)
    return cache


def extract_digits(tiny_image_onnx, cache, capsys):
    code = main(["extract", "builtin:digits", "--limit", "120", "--model", str(tiny_image_onnx), "--cache",
                 str(cache), "--no-progress"])
    return code, capsys.readouterr()


# --------------------------------------------------------------------------- texts and names
def test_a_lone_surrogate_in_a_text_is_that_items_failure(tiny_text_onnx, tmp_path, capsys):
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "fine"}\n{"text": "bad \\ud800 half"}\n{"text": "also fine"}\n')
    cache = tmp_path / "cache"
    args = ["extract", str(texts), "--model", str(tiny_text_onnx), "--cache", str(cache), "--no-progress"]
    assert main(args) == 1  # --on-error raise: the item is named, nothing else fails
    err = capsys.readouterr().err
    assert "is not valid Unicode: character 4 is a lone surrogate (U+D800" in err and "Traceback" not in err
    assert main(args + ["--on-error", "skip"]) == 0
    assert "2 embedded, 0 cached already, 1 skipped of 3 items" in capsys.readouterr().out
    transformer = featx.EmbeddingTransformer(str(tiny_text_onnx), on_error="nan")
    with pytest.warns(UserWarning, match="1 item\\(s\\) failed and got NaN rows: #1: .* lone surrogate"):
        X = transformer.fit_transform(["fine", "bad \ud800 half"])
    assert np.isfinite(X[0]).all() and np.isnan(X[1]).all()


def test_a_file_name_that_is_not_utf8_gets_an_escaped_id(tiny_image_onnx, image_files, tmp_path, capsys):
    strange = os.path.join(os.fsencode(image_files / "shapes"), b"caf\xe9.png")
    os.rename(image_files / "shapes" / "circle.png", strange)
    cache = tmp_path / "cache"
    assert main(["extract", str(image_files), "--model", str(tiny_image_onnx), "--cache", str(cache),
                 "--no-progress"]) == 0, capsys.readouterr().err
    X, y, ids = featx.load_features(cache)
    row = list(ids).index("shapes/caf\\xe9.png")
    assert y[row] == "shapes"
    direct = featx.load_backbone(tiny_image_onnx).embed([os.fsdecode(strange)])
    np.testing.assert_allclose(X[row], direct[0], atol=1e-6)


# --------------------------------------------------------------------------- damaged cache files
@pytest.mark.parametrize("damaged", ["featx-cache.json", "models/tiny-image/model.json"])
def test_a_garbage_json_file_is_reported_and_the_advice_works(tiny_image_onnx, digits_cache, tmp_path, capsys,
                                                             damaged):
    (digits_cache / damaged).write_text('{"format": 1, "name": ')  # cut short
    for args in (["info", digits_cache], ["train", digits_cache, "--head", "logreg", "--cv", "2",
                                          "--out", tmp_path / "h"]):
        assert main([str(a) for a in args]) == 1
        err = capsys.readouterr().err
        assert f"{digits_cache / damaged} (" in err and ") is damaged (not JSON" in err and "Traceback" not in err
    assert main(["verify", str(digits_cache)]) == 1
    assert f"DAMAGED: {digits_cache / damaged} (" in capsys.readouterr().err
    code, out = extract_digits(tiny_image_onnx, digits_cache, capsys)  # what the advice says
    assert code == 0 and "0 embedded, 120 cached already" in out.out and "rewriting it" in out.err
    assert main(["verify", str(digits_cache)]) == 0
    X, _, _ = featx.load_features(digits_cache, strict=True)
    assert X.shape == (120, 8)


def test_model_json_of_another_model_is_not_rewritten_over_its_shards(tiny_image_onnx, digits_cache, tmp_path,
                                                                      capsys):
    other = tmp_path / "other.onnx"  # same name and spec, other weights: another fingerprint
    import onnx
    from onnx import numpy_helper

    from featx.specs.exported import write_spec
    from featx.specs.spec import BackboneSpec

    model = onnx.load(str(tiny_image_onnx))
    weights = model.graph.initializer[0]
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 2, weights.name))
    onnx.save(model, str(other))
    write_spec(other, BackboneSpec.from_dict(json.loads(tiny_image_onnx.with_suffix(".json").read_text())["spec"]))
    (digits_cache / "models/tiny-image/model.json").write_text("garbage")
    assert main(["extract", "builtin:digits", "--limit", "120", "--model", str(other), "--cache", str(digits_cache),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "shards were made by another model file or preprocessing" in err and "Traceback" not in err


def test_a_garbage_listing_is_reported_and_the_advice_works(tiny_image_onnx, digits_cache, capsys):
    (digits_cache / "dataset.h5").write_bytes(b"not an HDF5 file")
    assert main(["info", str(digits_cache)]) == 1
    err = capsys.readouterr().err
    assert "dataset.h5 (the dataset listing) is damaged" in err and "run the `featx extract` that made it again" in err
    code, out = extract_digits(tiny_image_onnx, digits_cache, capsys)  # what the advice says
    assert code == 0 and "0 embedded, 120 cached already" in out.out
    assert main(["verify", str(digits_cache)]) == 0
    assert len(featx.load_features(digits_cache, strict=True)[2]) == 120


def test_labels_edited_inside_the_listing_are_caught_by_verify_and_readers(tiny_image_onnx, digits_cache, capsys):
    _, y, _ = featx.load_features(digits_cache)
    with h5py.File(digits_cache / "dataset.h5", "r+") as f:  # flip two labels in place; the file stays valid HDF5
        labels = f["labels"].asstr()[()]
        labels[:2] = labels[:2][::-1] if labels[0] != labels[1] else ["9", "8"]
        f["labels"][:2] = labels[:2]
    assert main(["verify", str(digits_cache)]) == 1
    err = capsys.readouterr().err
    assert "DAMAGED: " in err and "checksum mismatch: its ids, labels or stamps were changed" in err
    with pytest.raises(featx.FeatxError, match="the dataset it lists \\(builtin:digits\\)"):
        featx.load_features(digits_cache)  # never the edited labels
    code, out = extract_digits(tiny_image_onnx, digits_cache, capsys)  # what the advice says
    assert code == 0 and "0 embedded, 120 cached already" in out.out
    assert main(["verify", str(digits_cache)]) == 0
    assert list(featx.load_features(digits_cache)[1]) == list(y)


def test_a_cache_that_cannot_be_written_or_created_is_a_message(tiny_image_onnx, digits_cache, tmp_path,
                                                                 obeying_file_modes):
    args = ["extract", "builtin:digits", "--limit", "130", "--model", tiny_image_onnx, "--no-progress", "--cache"]
    (tmp_path / "file.txt").write_text("a file, not a folder")
    for cache in (tmp_path / "file.txt" / "cache", "/proc/no-such-process/cache"):
        done = featx_cli(*args, cache)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert (f"featx: error: cannot create cache {cache}: a folder above it does not exist or is not a folder"
                in done.stderr)
    for path in [digits_cache, *digits_cache.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        done = featx_cli(*args, digits_cache, preexec_fn=obeying_file_modes)
    finally:
        for path in [digits_cache, *digits_cache.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (f"featx: error: cannot write to cache {digits_cache}: permission denied ({digits_cache / 'LOCK'}). "
            "featx needs write access") in done.stderr


def test_evaluate_and_train_on_a_cache_whose_items_all_failed(tiny_image_onnx, tmp_path, capsys):
    from featx.heads import head_pipeline
    from featx.heads.persist import save_head

    folder = tmp_path / "broken"
    for name in ("a/1.png", "a/2.png", "b/1.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x89PNG not really")
    cache = tmp_path / "cache"
    assert main(["extract", str(folder), "--model", str(tiny_image_onnx), "--cache", str(cache), "--on-error", "skip",
                 "--no-progress"]) == 0
    head = save_head(head_pipeline("logreg").fit(np.eye(8), list("abababab")), tmp_path / "h.skops",
                     metadata={"backbone": "tiny-image"})
    capsys.readouterr()
    assert main(["evaluate", str(head), "--cache", str(cache)]) == 1
    err = capsys.readouterr().err
    assert (f"cache {cache} holds no features of 'tiny-image' to evaluate: 3 item(s) failed extraction" in err
            and "Traceback" not in err)
    assert main(["train", str(cache), "--out", str(tmp_path / "heads")]) == 1
    assert "holds no features of 'tiny-image' to train on: 3 item(s) failed extraction" in capsys.readouterr().err


# --------------------------------------------------------------------------- flags and modalities
@pytest.mark.parametrize("argv, message", [
    (["extract", "d", "--model", "m", "--cache", "c", "--threads", "0"], "argument --threads: expected an int >= 1"),
    (["extract", "d", "--model", "m", "--cache", "c", "--threads", "-1"], "argument --threads: expected an int >= 1"),
    (["extract", "d", "--model", "m", "--cache", "c", "--workers", "-2"], "argument --workers: expected an int >= 0"),
    (["bench", "--threads", "0"], "argument --threads: expected an int >= 1"),
    (["train", "c", "--cv", "1"], "argument --cv: expected an int >= 2"),
    (["train", "c", "--jobs", "0"], "argument --jobs: expected an int other than 0"),
    (["train", "c", "--seed", "-1"], "argument --seed: expected an int >= 0"),
])
def test_impossible_counts_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_an_image_head_given_a_text_csv_says_so(tiny_image_onnx, tmp_path, capsys):
    from featx.heads import head_pipeline
    from featx.heads.persist import save_head

    head = save_head(head_pipeline("logreg").fit(np.eye(8), list("abababab")), tmp_path / "h.skops",
                     metadata={"backbone": "tiny-image", "model": str(tiny_image_onnx)})
    notes = tmp_path / "notes.csv"
    notes.write_text("text,label\nhello,a\nworld,b\n")
    assert main(["predict", str(head), str(notes)]) == 1
    err = capsys.readouterr().err
    assert f"csv:{notes} holds texts but {head} (on the image backbone tiny-image) takes images: give a folder" in err
    assert "no such file" not in err
