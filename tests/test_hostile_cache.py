"""Class 2 of #24: a float16 cache never stores an overflow, and a shard with non-finite rows heals.

A row that is finite in float32 can be ``inf`` in float16 (above 65504): it is the item's recorded
failure at write time, `verify` stays clean, and a committed shard holding non-finite rows (written
by an older featx) is quarantined and recomputed by the next extract, for every storage dtype.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import featx
from featx.cache.shards import read_shard
from featx.cache.verify import verify


@pytest.fixture(scope="module")
def huge_image_onnx(tmp_path_factory) -> Path:
    """Tiny image backbone whose features are ~1e5 for any image but an all-black one (exactly 0)."""
    from onnx import helper, numpy_helper

    from featx.specs.exported import write_spec
    from tests.conftest import _image_graph_parts, _save_model, _tiny_image_spec

    folder = tmp_path_factory.mktemp("huge-image")
    nodes, inits, x = _image_graph_parts(np.random.default_rng(0), out="pooled")
    inits += [numpy_helper.from_array(np.array([1.0], np.float32), "one"),
              numpy_helper.from_array(np.array([1e6], np.float32), "big")]
    nodes += [
        helper.make_node("ReduceMean", ["pixel_values"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["mean4"], ["mean"], axis=1),
        helper.make_node("Add", ["mean", "one"], ["m"]),  # 0 for an all-black image
        helper.make_node("Mul", ["m", "big"], ["scale"]),
        helper.make_node("Add", ["pooled", "one"], ["shifted"]),  # every feature >= 1
        helper.make_node("Mul", ["shifted", "scale"], ["features"]),
    ]
    path = _save_model(nodes, inits, [x], ["batch", 8], folder / "huge-image.onnx", "huge_image")
    write_spec(path, _tiny_image_spec("huge-image"))
    return path


@pytest.fixture
def mixed_images(tmp_path) -> Path:
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (40, 40), (0, 0, 0)).save(root / "black.png")
    Image.new("RGB", (40, 40), (200, 120, 30)).save(root / "orange.png")
    Image.new("RGB", (40, 40), (10, 250, 90)).save(root / "green.png")
    return root


def test_float16_overflow_is_the_items_failure_and_verify_stays_clean(huge_image_onnx, mixed_images, tmp_path):
    cache = tmp_path / "cache"
    report = featx.extract(str(mixed_images), huge_image_onnx, cache, dtype="float16", on_error="skip",
                           progress=False)
    assert report.embedded == 1
    assert sorted(report.failed) == ["green.png", "orange.png"]
    assert all("not finite when stored as float16" in r and "float32" in r for r in report.failed.values())
    assert verify(cache).ok
    X, _, ids = featx.load_features(cache)
    assert list(ids) == ["black.png"] and np.isfinite(X).all()
    again = featx.extract(str(mixed_images), huge_image_onnx, cache, dtype="float16", on_error="skip",
                          progress=False)
    assert again.embedded == 0  # a content failure stays recorded while the file is unchanged
    f32 = featx.extract(str(mixed_images), huge_image_onnx, tmp_path / "c32", dtype="float32", progress=False)
    assert f32.embedded == 3 and not f32.failed  # the same rows are finite as float32


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_shard_with_non_finite_rows_is_recomputed_by_the_next_extract(tiny_image_onnx, image_files, tmp_path,
                                                                       dtype):
    cache = tmp_path / "cache"
    first = featx.extract(str(image_files), tiny_image_onnx, cache, dtype=dtype, shard_size=3, progress=False)
    X0, _, ids0 = featx.load_features(cache)
    shard = sorted(cache.glob("models/*/shards/shard-*.h5"))[0]
    with h5py.File(shard, "r+") as f:  # as an older featx stored it: inf under a valid checksum
        f["embeddings"][0, 0] = np.inf
    data, _ = read_shard(shard)
    with h5py.File(shard, "r+") as f:
        f.attrs["checksum"] = data.checksum()
    report = verify(cache)
    assert not report.ok and any("NaN/inf" in p and "recomputes" in p for p in report.problems)
    rerun = featx.extract(str(image_files), tiny_image_onnx, cache, dtype=dtype, shard_size=3, progress=False)
    assert rerun.embedded == len(data.ids) and rerun.cached == first.embedded - len(data.ids)
    assert verify(cache).ok
    X1, _, ids1 = featx.load_features(cache)
    order = np.argsort(ids1)
    np.testing.assert_array_equal(X1[order], X0[np.argsort(ids0)])
