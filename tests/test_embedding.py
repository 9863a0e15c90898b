"""featx.embedding: the one routine behind extract, Backbone.embed, EmbeddingTransformer and pipelines."""

from __future__ import annotations

import numpy as np
import pytest

import featx
from featx.engine.embedding import NON_FINITE, Embedded, embed, prepare_batches, run_batches, in_batches
from featx.errors import InputError, ItemFailedError, NonFiniteOutputError
from featx.extraction.shard import ShardJob, ShardTask, compute_shard
from featx.engine.runtime import DeviceBatch
from featx.sources import Item


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """12 items: digit-like images, a missing file (#3), a black image (#7: NaN on nan-image), an empty file (#10)."""
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "empty.png").write_bytes(b"")
    rng = np.random.default_rng(0)
    items = [rng.integers(1, 255, (12, 12), dtype=np.uint8) for _ in range(12)]
    items[3] = str(folder / "missing.png")
    items[7] = np.zeros((12, 12), np.uint8)
    items[10] = str(folder / "empty.png")
    return items


def one_by_one(backbone, items, positions):
    return np.concatenate([backbone.embed([items[p]], batch_size=1) for p in positions])


@pytest.mark.parametrize("batch_size", [1, 4, 5, 64])
def test_skip_keeps_every_row_with_its_item(nan_image_onnx, mixed, batch_size):
    bb = featx.load_backbone(nan_image_onnx)
    ids = [f"item-{i}" for i in range(len(mixed))]
    out = embed(bb, mixed, ids, batch_size=batch_size, on_error="skip")
    good = [i for i in range(12) if i not in (3, 7, 10)]
    assert out.positions.tolist() == good and out.size == 12
    assert [(f.position, f.id) for f in out.failures] == [(3, "item-3"), (7, "item-7"), (10, "item-10")]
    assert "no such file" in out.failures[0].reason and out.failures[1].reason == NON_FINITE
    assert "empty file" in out.failures[2].reason
    assert out.ok.tolist() == [i in good for i in range(12)]
    # each row is its own item's embedding, whatever batch it was computed in
    np.testing.assert_allclose(out.rows, one_by_one(bb, mixed, good), atol=1e-6)
    dense = out.dense()
    assert dense.shape == (12, 8) and np.isnan(dense[[3, 7, 10]]).all()
    np.testing.assert_array_equal(dense[good], out.rows)


def test_raise_names_the_first_bad_item(nan_image_onnx, mixed):
    bb = featx.load_backbone(nan_image_onnx)
    with pytest.raises(InputError, match=r"image '#3': no such file"):
        embed(bb, mixed, batch_size=4)
    with pytest.raises(NonFiniteOutputError, match=r"^the model produced NaN/inf features for item\(s\) #7$"):
        embed(bb, mixed[4:10], [f"#{i}" for i in range(4, 10)], batch_size=4)


def test_prefetch_threads_change_nothing(nan_image_onnx, mixed):
    bb = featx.load_backbone(nan_image_onnx)
    batches = list(in_batches(mixed * 3, [f"i{k}" for k in range(36)], 5))
    plain = [r for r in run_batches(bb, prepare_batches(bb, batches, on_error="skip"), on_error="skip")]
    ahead = [r for r in run_batches(bb, prepare_batches(bb, batches, on_error="skip", workers=3, depth=2),
                                    on_error="skip")]
    assert len(plain) == len(ahead) == 8
    for a, b in zip(plain, ahead):
        assert a.positions.tolist() == b.positions.tolist() and a.failures == b.failures
        np.testing.assert_array_equal(a.rows, b.rows)
    joined = Embedded.concat(ahead, bb.dim)
    assert joined.size == 36 and [f.position for f in joined.failures] == [3, 7, 10, 15, 19, 22, 27, 31, 34]


def test_extract_unit_of_work_records_the_same_failures(nan_image_onnx, mixed, tmp_path):
    bb = featx.load_backbone(nan_image_onnx)
    items = [Item(id=f"x/{i}", ref=ref, label=None, stamp=f"s{i}") for i, ref in enumerate(mixed)]
    data = compute_shard(ShardJob.of(bb, batch_size=4, on_error="skip"), ShardTask.of(bb.fingerprint_id, items)).data
    assert data.failed_ids == ["x/3", "x/7", "x/10"] and data.failed_stamps == ["s3", "s7", "s10"]
    assert data.ids == [f"x/{i}" for i in range(12) if i not in (3, 7, 10)]
    assert data.stamps == [f"s{i}" for i in range(12) if i not in (3, 7, 10)]
    np.testing.assert_array_equal(data.embeddings, embed(bb, mixed, batch_size=4, on_error="skip").rows)
    with pytest.raises(ItemFailedError, match=r"^item 'x/3' failed: image 'x/3': no such file"):
        featx.extract(featx.sources.make_dataset("mixed", "image", items), bb, tmp_path / "c", batch_size=4)
    stopped = compute_shard(ShardJob.of(bb, batch_size=4), ShardTask.of(bb.fingerprint_id, items))
    assert stopped.bad_item[0] == "x/3" and stopped.data.ids == []  # the batch of the bad item is not kept


def test_texts_count_truncation(tiny_text_onnx):
    bb = featx.load_backbone(tiny_text_onnx)
    out = embed(bb, ["short", "word " * 100, "", "also short"], batch_size=2, on_error="skip")
    assert out.positions.tolist() == [0, 1, 3] and out.truncated == 1
    assert out.failures[0].id == "#2" and "empty or blank" in out.failures[0].reason


def test_io_bound_sessions_get_device_batches_from_the_prefetch_threads(tiny_image_onnx, tiny_text_onnx, mixed):
    """The GPU path (batches uploaded in the prefetch threads) on the CPU: same rows as a plain run."""
    for path, items in ((tiny_image_onnx, mixed), (tiny_text_onnx, ["a", "", "bb cc", "d " * 50, "e"] * 3)):
        plain, bound = featx.load_backbone(path), featx.load_backbone(path)
        bound.session.io_binding = True
        batches = list(in_batches(items, [f"#{i}" for i in range(len(items))], 4))
        prepared = list(prepare_batches(bound, batches, on_error="skip", workers=2))
        assert all(isinstance(p.feeds, DeviceBatch) for p in prepared if p.feeds is not None)
        got = Embedded.concat(list(run_batches(bound, prepared, on_error="skip")), bound.dim)
        want = embed(plain, items, batch_size=4, on_error="skip")
        assert got.positions.tolist() == want.positions.tolist() and got.truncated == want.truncated
        np.testing.assert_array_equal(got.rows, want.rows)
