"""featx.preprocess: pure image and text preprocessing, checked against plain numpy/Pillow."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from featx.engine.decode import decode_image
from featx.engine.preprocess import TextTokenizer, normalize_batch, normalize_into, resize_and_crop
from featx.specs.registry import get_spec
from featx.specs.spec import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

SMALL = ImagePreprocess(size=32, resize=36, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_normalize_matches_formula(sample_rgbs):
    cfg = ImagePreprocess(size=224, resize=256)  # ImageNet mean/std
    rgb = resize_and_crop(sample_rgbs[0], cfg)
    out = normalize_into(np.empty((3, 224, 224), np.float32), rgb, cfg)
    ref = (rgb.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out, ref.transpose(2, 0, 1), atol=1e-5)
    assert out.dtype == np.float32


def test_black_and_white_extremes(image_batch):
    x = image_batch([np.zeros((40, 50, 3), np.uint8)], SMALL)
    assert (x == -1.0).all()
    x = image_batch([np.full((40, 50, 3), 255, np.uint8)], SMALL)
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_resize_shorter_side_then_centre_crop(sample_rgbs):
    """Same as resizing the whole image with Pillow, then cropping the centre (torchvision's recipe)."""
    cfg = get_spec("efficientnet-lite0").preprocess
    rgb = sample_rgbs[0]  # 427 x 640
    img = Image.fromarray(rgb).resize((round(640 * 256 / 427), 256), Image.Resampling.BICUBIC)
    left, top = (img.width - 224) // 2, (256 - 224) // 2
    ref = np.asarray(img.crop((left, top, left + 224, top + 224)))
    np.testing.assert_array_equal(resize_and_crop(rgb, cfg), ref)


def test_crop_is_centred():
    rgb = np.zeros((36, 72, 3), np.uint8)
    rgb[:, 36:] = 255  # right half white
    out = resize_and_crop(rgb, SMALL)  # no resize needed: 36 is already the short side
    assert out.shape == (32, 32, 3)
    assert (out[:, :16] == 0).all() and (out[:, 16:] == 255).all()


def test_resize_none_squashes():
    cfg = ImagePreprocess(size=16, resize=None, interpolation="nearest")
    rgb = np.zeros((10, 40, 3), np.uint8)
    rgb[:, 20:] = 200
    out = resize_and_crop(rgb, cfg)
    assert out.shape == (16, 16, 3)
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 200).all()  # whole width kept


def test_small_image_upsampled_in_its_crop_window_equals_full_resize():
    """A 28 x 28 Fashion-MNIST-sized image: resampling only the crop window is exact when upsampling."""
    rgb = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    cfg = get_spec("efficientnet-lite0").preprocess
    full = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(resize_and_crop(rgb, cfg), full[16:240, 16:240])


def test_extreme_aspect_ratio_matches_full_resize():
    """A very long strip is resampled only in its crop window, with the same result as a full resize."""
    yy, xx = np.mgrid[0:40, 0:1200]
    rgb = np.stack([xx % 256, yy * 6, xx // 5 % 256], -1).astype(np.uint8)  # 30:1
    out = resize_and_crop(rgb, SMALL)
    full = np.asarray(Image.fromarray(rgb).resize((1080, 36), Image.Resampling.BICUBIC))
    ref = full[2:34, 524:556]
    assert out.shape == (32, 32, 3)
    assert np.abs(out.astype(int) - ref).max() <= 2


def test_image_batch_equals_stacked_singles(sample_rgbs, image_batch):
    rgbs = [sample_rgbs[0], sample_rgbs[1], np.zeros((5, 7, 3), np.uint8)]
    batch = image_batch(rgbs, SMALL)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == np.float32
    for i, rgb in enumerate(rgbs):
        np.testing.assert_array_equal(batch[i], image_batch([rgb], SMALL)[0])
    assert normalize_batch([], SMALL).shape == (0, 3, 32, 32)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"])
def test_every_interpolation(interpolation, sample_rgbs, image_batch):
    cfg = ImagePreprocess(size=24, resize=28, interpolation=interpolation)
    x = image_batch([sample_rgbs[1]], cfg)[0]
    assert x.shape == (3, 24, 24) and np.isfinite(x).all()


def test_decoded_file_to_batch(image_files, image_batch):
    paths = sorted(image_files.rglob("*.*"))
    batch = image_batch([decode_image(p) for p in paths], SMALL)
    assert batch.shape == (len(paths), 3, 32, 32)
    assert batch.min() >= -1.0 and batch.max() <= 1.0 + 1e-6


# --------------------------------------------------------------------------- text
def test_tokenizer_pads_to_longest(minilm_tokenizer_json):
    tok = TextTokenizer(minilm_tokenizer_json, max_length=256)
    batch = tok.encode(["hello", "a somewhat longer sentence with more tokens in it"])
    n, L = batch.input_ids.shape
    assert n == 2
    counts = tok.count_tokens(["hello", "a somewhat longer sentence with more tokens in it"])
    assert L == counts.max() and counts[0] == 3  # [CLS] hello [SEP]
    assert batch.attention_mask.sum(1).tolist() == counts.tolist()
    assert (batch.input_ids[0, 3:] == tok.pad_id).all() and tok.pad_id == 0
    assert batch.input_ids[0, 0] == tok._tok.token_to_id("[CLS]")
    for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids):
        assert a.dtype == np.int64
    assert batch.n_truncated == 0
    assert list(batch.feeds(["input_ids", "attention_mask"])) == ["input_ids", "attention_mask"]


def test_tokenizer_truncates_and_counts(minilm_tokenizer_json):
    tok = TextTokenizer(minilm_tokenizer_json, max_length=16)
    batch = tok.encode(["x " * 100_000, "short", "y " * 20])
    assert batch.input_ids.shape == (3, 16)
    assert batch.n_truncated == 2
    assert batch.input_ids[0, -1] == tok._tok.token_to_id("[SEP]")  # truncation keeps the end token


def test_tokenizer_pickles(minilm_tokenizer_json):
    tok = TextTokenizer(minilm_tokenizer_json, max_length=20)
    tok2 = pickle.loads(pickle.dumps(tok))
    a, b = tok.encode(["café 🙂 ok"]), tok2.encode(["café 🙂 ok"])
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    assert tok2.max_length == 20
