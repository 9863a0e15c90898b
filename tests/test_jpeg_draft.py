"""jpeg_draft: JPEGs decoded at a reduced scale are close to full decoding, and never share a cache with it."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import featx
from featx.engine.decode import decode_image
from featx.errors import CacheError, ParameterError
from featx.specs.spec import ImagePreprocess


@pytest.fixture
def photos(tmp_path, sample_rgbs) -> Path:
    """sklearn's two photos as 1600x1067 JPEGs and one as a PNG of the same size, in one class folder."""
    folder = tmp_path / "photos" / "all"
    folder.mkdir(parents=True)
    for i, rgb in enumerate(sample_rgbs):
        Image.fromarray(rgb).resize((1600, 1067), Image.Resampling.BICUBIC).save(folder / f"p{i}.jpg", quality=90)
    Image.fromarray(sample_rgbs[0]).resize((1600, 1067)).save(folder / "p0.png")
    return folder.parent


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_decode_reduces_jpegs_only_and_keeps_the_shorter_side(photos):
    jpg, png = photos / "all" / "p0.jpg", photos / "all" / "p0.png"
    assert decode_image(jpg).shape == (1067, 1600, 3)
    reduced = decode_image(jpg, jpeg_min_side=256)
    assert reduced.shape == (267, 400, 3)  # libjpeg's 1/4 scale: the largest keeping >= 256
    assert decode_image(jpg, jpeg_min_side=600).shape == (1067, 1600, 3)  # 1/2 would go below 600
    assert decode_image(png, jpeg_min_side=256).shape == (1067, 1600, 3)
    # the reduced image looks like the full one, downscaled
    full_small = np.asarray(Image.fromarray(decode_image(jpg)).resize((400, 267), Image.Resampling.BOX), float)
    assert np.abs(full_small - reduced).mean() < 4


def test_preprocess_records_jpeg_draft_only_when_on():
    cfg = ImagePreprocess(size=224, resize=256)
    assert "jpeg_draft" not in cfg.to_dict() and cfg.jpeg_min_side is None  # earlier records unchanged
    on = ImagePreprocess(size=224, resize=256, jpeg_draft=True)
    assert on.to_dict()["jpeg_draft"] is True and on.jpeg_min_side == 512
    assert ImagePreprocess(size=32, resize=None, jpeg_draft=True).jpeg_min_side == 64


def test_lite0_features_stay_close_and_fingerprints_differ(lite0_onnx, photos):
    files = sorted(str(p) for p in (photos / "all").glob("*"))
    full = featx.load_backbone(lite0_onnx)
    draft = featx.load_backbone(lite0_onnx, jpeg_draft=True)
    assert draft.fingerprint_id != full.fingerprint_id
    assert draft.fingerprint["preprocess"]["jpeg_draft"] is True
    a, b = full.embed(files), draft.embed(files)
    assert cosine(a, b).min() > 0.995
    np.testing.assert_array_equal(a[files.index(str(photos / "all" / "p0.png"))],
                                  b[files.index(str(photos / "all" / "p0.png"))])  # PNGs decode as before


def test_cache_refuses_to_mix_draft_and_full_decoding(tiny_image_onnx, photos, tmp_path):
    cache = tmp_path / "cache"
    featx.extract(photos, tiny_image_onnx, cache, progress=False)
    with pytest.raises(CacheError, match="jpeg_draft: None -> True"):
        featx.extract(photos, tiny_image_onnx, cache, progress=False, jpeg_draft=True)


def test_executor_workers_decode_as_the_coordinator(tiny_image_onnx, photos, tmp_path):
    local = featx.extract(photos, tiny_image_onnx, tmp_path / "a", progress=False, jpeg_draft=True)
    with cf.ThreadPoolExecutor(2) as pool:
        spread = featx.extract(photos, tiny_image_onnx, tmp_path / "b", progress=False, jpeg_draft=True,
                               executor=pool, shard_size=1)
    assert local.embedded == spread.embedded == 3
    xa, _, ia = featx.load_features(tmp_path / "a")
    xb, _, ib = featx.load_features(tmp_path / "b")
    assert list(ia) == list(ib)
    np.testing.assert_array_equal(xa, xb)
    full = featx.extract(photos, tiny_image_onnx, tmp_path / "c", progress=False)
    assert full.embedded == 3
    xc, _, _ = featx.load_features(tmp_path / "c")
    assert not np.array_equal(xa, xc)  # the workers really decoded with draft


def test_worker_with_another_model_file_refuses(tiny_image_onnx, tmp_path):
    from featx.sources import open_dataset
    from featx.extraction.shard import ShardJob, ShardTask, compute_shard

    items = open_dataset("builtin:digits", limit=4).items
    result = compute_shard(ShardJob(str(tiny_image_onnx), "0" * 16, "cpu", 1, batch_size=4),
                           ShardTask.of("0" * 16, items))
    assert isinstance(result.error, CacheError) and not result.data.ids
    assert "give every worker the same model file" in str(result.error)


def test_jpeg_draft_is_for_images(tiny_text_onnx, tiny_image_onnx):
    with pytest.raises(ParameterError, match="image backbones"):
        featx.load_backbone(tiny_text_onnx, jpeg_draft=True)
    with pytest.raises(ParameterError, match="load_backbone"):
        featx.extract("builtin:digits", featx.load_backbone(tiny_image_onnx), "unused", jpeg_draft=True)


def test_transformer_and_pipeline_config_take_jpeg_draft(tiny_image_onnx, photos):
    from featx import EmbeddingTransformer
    from featx.pipeline import PipelineConfig

    files = sorted(str(p) for p in (photos / "all").glob("*"))
    est = EmbeddingTransformer(model=str(tiny_image_onnx), jpeg_draft=True)
    assert est.get_params()["jpeg_draft"] is True
    np.testing.assert_array_equal(est.fit_transform(files),
                                  featx.load_backbone(tiny_image_onnx, jpeg_draft=True).embed(files))
    assert not np.array_equal(est.transform(files), EmbeddingTransformer(model=str(tiny_image_onnx)).fit_transform(files))
    with pytest.raises(ParameterError, match="'jpeg_draft' parameter"):
        EmbeddingTransformer(model=str(tiny_image_onnx), jpeg_draft="yes").fit()
    config = PipelineConfig.from_dict({"dataset": {"train": "x"}, "backbone": {"model": "m", "jpeg_draft": True}})
    assert config.jpeg_draft is True


def test_finetune_inputs_decode_as_the_backbone(tiny_image_onnx, photos):
    from featx.torchmodels.finetune import training_inputs
    from featx.engine.preprocess import resize_and_crop

    jpg = str(photos / "all" / "p0.jpg")
    for draft in (False, True):
        bb = featx.load_backbone(tiny_image_onnx, jpeg_draft=draft)
        data = training_inputs([jpg], bb.spec)
        np.testing.assert_array_equal(data.pixels[0], resize_and_crop(bb.decode(jpg), bb.spec.preprocess))
