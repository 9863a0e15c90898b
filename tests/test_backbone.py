"""featx.backbone: Backbone.embed on the real exports and the tiny models, loading, pickling, fingerprints."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import featx
from featx.engine.backbone import Backbone
from featx.errors import InputError, NonFiniteOutputError, ParameterError, SpecError
from featx.specs.exported import exported_path
from featx.torchmodels.provision import resolve_onnx

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "These cookies arrived stale; I would not order them again.",
    "Great coffee, fast shipping, five stars.",
    "a",
    "Le café était délicieux et le service impeccable.",
    "My dog loves these treats more than anything else in the world, and he is very picky about food.",
    "🙂",
    "Terrible.",
]


def files_of(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- real backbones
def test_lite0_embed_basic(lite0_onnx, image_files):
    bb = featx.load_backbone("efficientnet-lite0")
    assert bb.onnx_path == lite0_onnx  # found in $FEATX_HOME/models, not exported again
    assert (bb.name, bb.modality, bb.dim) == ("efficientnet-lite0", "image", 1280)
    paths = files_of(image_files)
    X = bb.embed(paths)
    assert X.shape == (len(paths), 1280) and X.dtype == np.float32 and np.isfinite(X).all()
    assert len({row.tobytes() for row in X}) == len(paths)  # different images, different features


def test_lite0_order_and_batch_size(lite0_onnx, image_files):
    bb = featx.load_backbone(lite0_onnx)
    paths = files_of(image_files)
    assert len(paths) == 7
    ref = bb.embed(paths, batch_size=7)
    for bs in (1, 4):
        np.testing.assert_allclose(bb.embed(paths, batch_size=bs), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(bb.embed(paths[::-1], batch_size=4), ref[::-1], atol=1e-5, rtol=0)


def test_minilm_embed_order_and_batch_size(minilm_onnx):
    """Texts of very different lengths: dynamic padding must not change any embedding."""
    bb = featx.load_backbone("all-minilm-l6-v2")
    assert bb.onnx_path == minilm_onnx and bb.dim == 384 and bb.modality == "text"
    texts = SENTENCES[:7]
    ref = bb.embed(texts, batch_size=7)
    assert ref.shape == (7, 384) and ref.dtype == np.float32 and np.isfinite(ref).all()
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)  # L2-normalised
    for bs in (1, 4):
        np.testing.assert_allclose(bb.embed(texts, batch_size=bs), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(bb.embed(texts[::-1], batch_size=3), ref[::-1], atol=1e-5, rtol=0)


def test_pickle_round_trip_real_backbones(lite0_onnx, minilm_onnx, image_files):
    paths = files_of(image_files)[:3]
    for bb, items in ((featx.load_backbone(lite0_onnx), paths), (featx.load_backbone(minilm_onnx), SENTENCES[:4])):
        before = bb.embed(items)  # session (and tokenizer) created
        clone = pickle.loads(pickle.dumps(bb))
        assert clone.session._session is None
        np.testing.assert_array_equal(clone.embed(items), before)
        assert clone.fingerprint_id == bb.fingerprint_id


def _embed_in_worker(bb, items):
    return bb.embed(items)


def test_backbone_travels_to_a_spawned_process(tiny_image_onnx, image_files):
    bb = featx.load_backbone(tiny_image_onnx)
    paths = files_of(image_files)
    here = bb.embed(paths)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        there = pool.submit(_embed_in_worker, bb, paths).result(timeout=120)
    np.testing.assert_array_equal(there, here)


# --------------------------------------------------------------------------- tiny backbones
def test_every_input_kind_gives_the_same_embedding(tiny_image_onnx, image_files, image_batch):
    bb = featx.load_backbone(tiny_image_onnx)
    path = image_files / "photos" / "china_crop.png"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    X = bb.embed([path, str(path), path.read_bytes(), Image.open(path), rgb])
    for row in X[1:]:
        np.testing.assert_array_equal(row, X[0])
    # a uint8 batch (n, H, W, 3) is a sequence of images
    np.testing.assert_array_equal(bb.embed(np.stack([rgb, rgb])), X[:2])
    # a pre-made float32 NCHW batch skips preprocessing
    np.testing.assert_allclose(bb.embed(image_batch([rgb], bb.spec.preprocess)), X[:1], atol=1e-6)


def test_embed_empty_and_argument_errors(tiny_image_onnx, tiny_text_onnx):
    bb = featx.load_backbone(tiny_image_onnx)
    assert bb.embed([]).shape == (0, 8)
    assert bb.embed(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 8)
    for bad in (0, True, 2.0):
        with pytest.raises(ParameterError) as info:
            bb.embed([np.zeros((4, 4), np.uint8)], batch_size=bad)
        assert str(info.value) == (f"The 'batch_size' parameter of Backbone.embed must be None or an int in [1, inf). "
                                   f"Got {bad!r} instead.")
    with pytest.raises(InputError, match="got 2 inputs but 1 ids"):
        bb.embed([np.zeros((4, 4), np.uint8)] * 2, ids=["a"])
    tb = featx.load_backbone(tiny_text_onnx)
    assert tb.embed([]).shape == (0, 16)


def test_text_embedding_is_the_masked_mean(tiny_text_onnx):
    """The tiny text model's output is the mean of its embedding rows over the real tokens only."""
    import onnx
    from onnx import numpy_helper

    bb = featx.load_backbone(tiny_text_onnx)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tiny_text_onnx)).graph.initializer}
    texts = ["short", "a much longer text that needs padding for the short one"]
    X = bb.embed(texts)
    ids = bb.tokenizer.encode(texts[:1]).input_ids[0]
    ref = (weights["word_emb"][ids] + weights["type_emb"][0]).mean(0)
    np.testing.assert_allclose(X[0], ref, atol=1e-5)


def test_nan_output_names_the_item(nan_image_onnx, tiny_image_onnx, image_files):
    bad = featx.load_backbone(nan_image_onnx)
    good = featx.load_backbone(tiny_image_onnx)
    paths = files_of(image_files)[:3]
    np.testing.assert_array_equal(bad.embed(paths), good.embed(paths))  # finite where it should be
    black = np.zeros((24, 24, 3), np.uint8)
    with pytest.raises(NonFiniteOutputError, match="item.s. black-one"):
        bad.embed([paths[0], black, paths[1]], ids=["ok-1", "black-one", "ok-2"])
    with pytest.raises(NonFiniteOutputError, match="#4"):
        bad.embed(paths + [paths[0], black], batch_size=2)
    x = np.full((3, 3, 32, 32), -1.0, np.float32)
    x[0] = 0.0
    with pytest.raises(NonFiniteOutputError, match=r"#1, #2"):
        bad.embed(x)
    assert issubclass(NonFiniteOutputError, ValueError)


def test_fingerprint(tiny_image_onnx, nan_image_onnx, tiny_text_onnx):
    a, a2 = Backbone(tiny_image_onnx), featx.load_backbone(str(tiny_image_onnx))
    assert a.fingerprint == a2.fingerprint and a.fingerprint_id == a2.fingerprint_id
    assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint_id)
    assert a.fingerprint["preprocess"]["size"] == 32 and a.fingerprint["dim"] == 8
    assert a.fingerprint_id != Backbone(nan_image_onnx).fingerprint_id
    t = Backbone(tiny_text_onnx)
    assert set(t.fingerprint) >= {"onnx_sha256", "tokenizer_sha256", "preprocess"}
    assert "tiny-image" in repr(a) and "dim=8" in repr(a)


def test_fingerprint_follows_the_model_bytes(tiny_image_onnx, tmp_path):
    """Same spec, different weights -> a different fingerprint (features from both never mix)."""
    import onnx
    from onnx import numpy_helper

    from featx.specs.exported import write_spec

    model = onnx.load(str(tiny_image_onnx))
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))
    path = tmp_path / "tiny-image.onnx"
    onnx.save(model, str(path))
    write_spec(path, Backbone(tiny_image_onnx).spec)
    assert Backbone(path).fingerprint_id != Backbone(tiny_image_onnx).fingerprint_id


# --------------------------------------------------------------------------- loading
def test_load_errors(tmp_path, tiny_image_onnx, tiny_text_onnx):
    with pytest.raises(SpecError, match="no ONNX model"):
        featx.load_backbone(tmp_path / "missing.onnx")
    lone = tmp_path / "lone.onnx"
    shutil.copyfile(tiny_image_onnx, lone)
    with pytest.raises(SpecError, match="no spec file .*write_spec"):
        featx.load_backbone(lone)
    (tmp_path / "lone.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        featx.load_backbone(lone)
    # a text model whose tokenizer went missing
    folder = tmp_path / "text"
    folder.mkdir()
    shutil.copyfile(tiny_text_onnx, folder / "tiny-text.onnx")
    shutil.copyfile(tiny_text_onnx.with_suffix(".json"), folder / "tiny-text.json")
    with pytest.raises(SpecError, match="no tokenizer file"):
        featx.load_backbone(folder / "tiny-text.onnx")
    with pytest.raises(SpecError, match="unknown backbone 'no-such-model'"):
        featx.load_backbone("no-such-model")


def test_resolve_without_export(featx_home):
    assert exported_path("timm:resnet50") == featx_home / "models" / "timm-resnet50.onnx"
    with pytest.raises(SpecError, match="not exported yet; run `featx export timm:resnet50`"):
        resolve_onnx("timm:resnet50", export_if_missing=False)
