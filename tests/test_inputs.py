"""One decode -> preprocess chain: extraction, fine-tuning and int8 calibration see the same tensors."""

from __future__ import annotations

import dataclasses
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from featx.engine.backbone import Backbone
from featx.errors import InputError, SpecError
from featx.torchmodels.finetune import training_inputs
from featx.engine.inputs import TEXT_INPUTS, InputChain, ItemBatches
from featx.specs.exported import ModelFile, write_spec
from featx.torchmodels.quantize import CalibrationReader


@pytest.fixture
def photo_items(tmp_path, sample_rgbs):
    """sklearn's photos as full-size JPEG files (640x427: big enough for the tiny spec's draft to engage),
    one as a PNG, and one in-memory array."""
    china, flower = sample_rgbs
    Image.fromarray(china).save(tmp_path / "china.jpg", quality=92)
    Image.fromarray(flower).save(tmp_path / "flower.jpg", quality=92)
    Image.fromarray(china).save(tmp_path / "china.png")
    items = [str(tmp_path / "china.jpg"), str(tmp_path / "flower.jpg"), str(tmp_path / "china.png"), flower[:300]]
    return items, ["china.jpg", "flower.jpg", "china.png", "flower-array"]


def model_with_draft(tiny_image_onnx, folder, draft: bool):
    """A copy of the tiny image model whose own spec says ``jpeg_draft``."""
    path = folder / f"tiny-draft-{draft}.onnx"
    shutil.copyfile(tiny_image_onnx, path)
    spec = Backbone(tiny_image_onnx).spec
    write_spec(path, spec.replace(preprocess=dataclasses.replace(spec.preprocess, jpeg_draft=draft)))
    return path


@pytest.mark.parametrize("draft", [False, True])
def test_finetuning_and_calibration_tensors_equal_the_backbones(tiny_image_onnx, tmp_path, photo_items, draft):
    items, ids = photo_items
    path = model_with_draft(tiny_image_onnx, tmp_path, draft)
    bb = Backbone(path)
    assert bb.spec.preprocess.jpeg_draft is draft
    decoded = [bb.decode(item, name) for item, name in zip(items, ids)]
    assert (decoded[0].shape == (107, 160, 3)) is draft  # libjpeg's 1/4 scale when the draft is on
    expected = bb.prepare(decoded)["pixel_values"]

    finetuning = training_inputs(items, bb.spec, ids=ids).arrays(np.arange(len(items)))
    assert len(finetuning) == 1
    np.testing.assert_array_equal(finetuning[0], expected)

    reader = CalibrationReader(ModelFile.read(path), list(zip(ids, items)), batch_size=len(items))
    feeds = reader.get_next()
    assert list(feeds) == ["pixel_values"] and reader.get_next() is None
    np.testing.assert_array_equal(feeds["pixel_values"], expected)
    assert reader.stats == {"ok": len(items), "bad": []}

    full = Backbone(tiny_image_onnx)
    full_tensors = full.prepare([full.decode(item) for item in items])["pixel_values"]
    assert np.array_equal(full_tensors[:2], expected[:2]) is not draft  # the draft changes the JPEGs' pixels
    np.testing.assert_array_equal(full_tensors[2:], expected[2:])  # and only theirs


def test_a_draft_asked_at_load_time_reaches_finetuning(tiny_image_onnx, photo_items):
    items, _ = photo_items
    bb = Backbone(tiny_image_onnx, jpeg_draft=True)
    expected = bb.prepare([bb.decode(item) for item in items])["pixel_values"]
    np.testing.assert_array_equal(training_inputs(items, bb.spec).arrays([0, 1, 2, 3])[0], expected)


def test_calibration_leaves_out_what_does_not_decode(tiny_image_onnx, tmp_path, photo_items):
    items, ids = photo_items
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    pairs = [("broken.jpg", str(tmp_path / "broken.jpg"))] + list(zip(ids, items))
    reader = CalibrationReader(ModelFile.read(tiny_image_onnx), pairs, batch_size=2)
    batches = iter(reader.get_next, None)
    assert [len(b["pixel_values"]) for b in batches] == [1, 2, 1]  # pairs two by two, the broken one left out
    assert reader.stats["ok"] == 4 and reader.stats["bad"][0].startswith("broken.jpg: image 'broken.jpg'")


def test_text_tensors_equal_the_backbones(tiny_text_onnx):
    bb = Backbone(tiny_text_onnx)
    texts = ["short", "a much longer sentence that needs more tokens", "café ☕ naïve"]
    expected = bb.prepare([bb.decode(t) for t in texts])
    data = training_inputs(texts, bb.spec, bb.tokenizer_path)
    got = data.arrays(np.arange(3))
    assert len(got) == len(TEXT_INPUTS)
    for name, array in zip(TEXT_INPUTS, got):
        np.testing.assert_array_equal(array, expected[name])
    assert list(data.order_for_inference()) == [0, 2, 1]  # by token count: less padding


def test_the_chain_names_bad_items_and_needs_a_tokenizer_for_texts(tiny_text_onnx, tiny_image_onnx):
    spec = Backbone(tiny_text_onnx).spec
    with pytest.raises(SpecError, match="text backbone 'tiny-text' has no tokenizer"):
        InputChain(spec)
    chain = InputChain(Backbone(tiny_image_onnx).spec)
    with pytest.raises(InputError, match="image 'row 7'"):
        ItemBatches(chain, [np.zeros((4, 4), np.uint8), "missing.png"], ids=["row 0", "row 7"])


def test_a_pickled_chain_reloads_its_tokenizer(tiny_text_onnx):
    bb = Backbone(tiny_text_onnx)
    chain = bb.inputs
    before = chain.prepare(["hello there"])
    copy = pickle.loads(pickle.dumps(chain))
    assert copy._tokenizer is None
    np.testing.assert_array_equal(copy.prepare(["hello there"])["input_ids"], before["input_ids"])

