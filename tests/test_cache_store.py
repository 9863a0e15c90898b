"""Unit tests of featx.cache: shards, the writer lock, the listing and the store, on real HDF5 files.

No backbone and no extraction here: the store is driven directly, as :func:`featx.extraction.extract` does.
"""

from __future__ import annotations

import json
import os
import socket

import h5py
import numpy as np
import pytest

from featx.cache import CacheStore, ShardData, WriterLock, load_features, read_shard, write_shard
from featx.cache import layout
from featx.cache.verify import verify
from featx.errors import CacheCorruptError, CacheError, CacheLockedError, CacheMismatchError

DIM = 4
FP = {"name": "toy", "onnx_sha256": "a" * 64, "preprocess": {"size": 32, "resize": 36}, "dim": DIM}
FP_ID = "0123456789abcdef"


def shard(ids, stamps=None, failed=(), seed=0) -> ShardData:
    rng = np.random.default_rng(seed)
    return ShardData(ids=list(ids), stamps=list(stamps or ["s"] * len(ids)),
                     embeddings=rng.normal(size=(len(ids), DIM)).astype(np.float32),
                     failed_ids=[i for i, _ in failed], failed_stamps=["s"] * len(failed),
                     failed_reasons=[r for _, r in failed])


@pytest.fixture
def store(tmp_path) -> CacheStore:
    store = CacheStore(tmp_path / "cache")
    store.create()
    store.register_model(FP, FP_ID, "float32")
    return store


# --------------------------------------------------------------------------- shards
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_shard_round_trip(tmp_path, dtype):
    data = shard(["a", "é/ü", "c"], ["1:2", "", "3:4"], failed=[("bad", "image 'bad' is empty (0 bytes)")])
    path = write_shard(tmp_path / "shard-000000.h5", data, model="toy", fingerprint_id=FP_ID, dtype=dtype)
    back, attrs = read_shard(path)
    assert back.ids == ["a", "é/ü", "c"] and back.stamps == ["1:2", "", "3:4"]
    assert (back.failed_ids, back.failed_reasons) == (["bad"], ["image 'bad' is empty (0 bytes)"])
    assert back.embeddings.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.embeddings, data.embeddings.astype(dtype))
    assert attrs["model"] == "toy" and attrs["fingerprint_id"] == FP_ID and attrs["dtype"] == dtype
    assert attrs["checksum"] == back.checksum()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(layout.TMP_PREFIX)]
    cheap, _ = read_shard(path, embeddings=False)
    assert cheap.ids == back.ids and cheap.embeddings.size == 0


def test_empty_shard_round_trip(tmp_path):
    data = ShardData([], [], np.empty((0, DIM), np.float32), ["x"], ["s"], ["NaN/inf"])
    back, attrs = read_shard(write_shard(tmp_path / "s.h5", data, model="toy", fingerprint_id=FP_ID))
    assert back.ids == [] and back.embeddings.shape == (0, DIM) and back.failed_ids == ["x"]
    assert attrs["checksum"] == data.checksum()


def test_checksum_detects_one_flipped_byte(tmp_path):
    data = shard(["a", "b", "c"])
    path = write_shard(tmp_path / "s.h5", data, model="toy", fingerprint_id=FP_ID)
    with h5py.File(path, "r") as f:
        offset = f["embeddings"].id.get_chunk_info(0).byte_offset  # the raw float32 bytes
    raw = bytearray(path.read_bytes())
    raw[offset + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    back, attrs = read_shard(path)  # still a readable HDF5 file...
    assert not np.array_equal(back.embeddings, data.embeddings)
    assert back.checksum() != attrs["checksum"]  # ...whose content no longer matches


def test_checksum_covers_ids_and_failures():
    base = shard(["a", "b"], failed=[("c", "why")])
    assert base.checksum() == shard(["a", "b"], failed=[("c", "why")]).checksum()
    assert base.checksum() != shard(["b", "a"], failed=[("c", "why")]).checksum()
    assert base.checksum() != shard(["a", "b"], failed=[("c", "other reason")]).checksum()
    assert shard(["ab", "c"]).checksum() != shard(["a", "bc"]).checksum()  # ids are separated, not concatenated


# --------------------------------------------------------------------------- the writer lock
def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with WriterLock(tmp_path):
        holder = json.loads((tmp_path / layout.LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(CacheLockedError) as info:
            with WriterLock(tmp_path):
                pass
        message = str(info.value)
        assert message.startswith(f"cache {tmp_path} is locked by pid {os.getpid()} on {socket.gethostname()} "
                                  f"(since {holder['since']})")
        assert message.endswith("Wait for it to finish, or use another --cache.")
        assert isinstance(info.value, RuntimeError)
    assert (tmp_path / layout.LOCK).read_text() == ""  # released and cleared
    with WriterLock(tmp_path):  # free again
        pass


# --------------------------------------------------------------------------- the listing
@pytest.mark.parametrize("labels", [None, ["cat", "dog", "cat"]])
def test_listing_round_trip(tmp_path, labels):
    store = CacheStore(tmp_path / "c")
    store.create()
    assert store.read_listing() is None
    store.write_listing("folder:x", "image", ["a.png", "b/ü.png", "c.png"], labels, ["1:2", None, "5:6"])
    listing = store.read_listing()
    assert (listing.name, listing.modality) == ("folder:x", "image")
    assert list(listing.ids) == ["a.png", "b/ü.png", "c.png"] and list(listing.stamps) == ["1:2", "", "5:6"]
    assert (listing.labels is None) if labels is None else list(listing.labels) == labels


def test_damaged_listing_is_a_cache_error(store):
    store.write_listing("d", "text", ["a"], None, [None])
    (store.root / layout.DATASET).write_bytes(b"not hdf5")
    with pytest.raises(CacheCorruptError,
                       match=r"dataset.h5 \(the dataset listing\) is damaged .*run the `featx extract` that made it"):
        store.read_listing()


# --------------------------------------------------------------------------- models
def test_resolve_model(tmp_path):
    store = CacheStore(tmp_path / "c")
    store.create()
    with pytest.raises(CacheError, match=r"holds no features yet; run `featx extract` first"):
        store.resolve_model(None)
    store.register_model(FP, FP_ID, "float32")
    assert store.resolve_model(None) == "toy" and store.resolve_model("toy") == "toy"
    store.register_model(dict(FP, name="timm:resnet50"), "f" * 16, "float16")
    assert store.model_names() == ["timm:resnet50", "toy"]
    assert (store.root / "models" / "timm-resnet50" / "model.json").is_file()
    with pytest.raises(CacheError, match=r"several backbones \(timm:resnet50, toy\); pass model=NAME"):
        store.resolve_model(None)
    with pytest.raises(CacheError, match=r"holds no features of 'other'; it holds: timm:resnet50, toy"):
        store.resolve_model("other")


def test_register_model_refuses_another_fingerprint(store):
    store.register_model(FP, FP_ID, "float32")  # the same one: fine
    changed = dict(FP, preprocess={"size": 32, "resize": 40})
    with pytest.raises(CacheMismatchError, match=r"different preprocessing \(resize: 36 -> 40\); featx will not mix"):
        store.register_model(changed, "f" * 16, "float32")
    with pytest.raises(CacheMismatchError, match=r"storage dtype \(float32 -> float16\)"):
        store.register_model(FP, FP_ID, "float16")


# --------------------------------------------------------------------------- scan, quarantine, load
def test_scan_keeps_the_newest_record_per_id(store):
    store.commit("toy", shard(["a", "b"], failed=[("c", "empty text")]), fingerprint_id=FP_ID, dtype="float32")
    later = shard(["c"], seed=1)
    store.commit("toy", later, fingerprint_id=FP_ID, dtype="float32")  # c fixed and re-embedded
    state = store.scan("toy", keep_embeddings=True)
    assert [p.name for p in state.shards] == ["shard-000000.h5", "shard-000001.h5"]
    assert set(state.rows) == {"a", "b", "c"} and state.failed == {} and state.damaged == []
    k, row, _ = state.rows["c"]
    np.testing.assert_array_equal(state.arrays[k][row], later.embeddings[0])
    assert state.is_done("a", "s") and not state.is_done("a", "changed-stamp") and not state.is_done("z", "s")


def test_scan_lists_damage_and_quarantine_moves_it_aside(store):
    store.commit("toy", shard(["a"]), fingerprint_id=FP_ID, dtype="float32")
    second = store.commit("toy", shard(["b"]), fingerprint_id=FP_ID, dtype="float32")
    second.write_bytes(second.read_bytes()[:200])  # truncated
    state = store.scan("toy")
    assert [p for p, _ in state.damaged] == [second] and set(state.rows) == {"a"}
    moved = store.quarantine(second, state.damaged[0][1])
    assert moved == second.parent.parent / "quarantine" / "shard-000001.h5" and not second.exists()
    assert store.scan("toy").damaged == []
    # a new shard never reuses the name of a quarantined one
    assert store.commit("toy", shard(["b"]), fingerprint_id=FP_ID, dtype="float32").name == "shard-000002.h5"
    report = verify(store.root)
    assert report.ok and any("quarantined" in note for note in report.notes)


def test_scan_refuses_a_shard_of_another_model(store):
    path = store.commit("toy", shard(["a"]), fingerprint_id="another-model-id", dtype="float32")
    state = store.scan("toy", verify=False)
    assert state.rows == {} and state.damaged[0][0] == path and "fingerprint another-model-id" in state.damaged[0][1]


def test_load_returns_dataset_order_and_leaves_failures_out(store, caplog):
    store.write_listing("d", "image", ["x", "a", "b", "c"], ["1", "0", "1", "0"], ["s"] * 4)
    data = shard(["a", "b"], failed=[("c", "unreadable")])
    store.commit("toy", data, fingerprint_id=FP_ID, dtype="float32")
    X, y, ids = load_features(store.root, "toy")  # "x" was never extracted: warned about, left out
    assert list(ids) == ["a", "b"] and list(y) == ["0", "1"]
    np.testing.assert_array_equal(X, data.embeddings)
    assert ("2 of 4 items have no features of 'toy': 1 failed extraction (c: unreadable), 1 not extracted yet"
            in caplog.text)
    with pytest.raises(CacheError, match="not extracted yet"):
        load_features(store.root, "toy", strict=True)


def test_rebuilt_index_reads_with_plain_h5py(store):
    store.write_listing("d", "image", ["a", "b", "c"], None, ["s"] * 3)
    first, second = shard(["c"]), shard(["a"], failed=[("b", "bad")], seed=1)
    store.commit("toy", first, fingerprint_id=FP_ID, dtype="float32")
    store.commit("toy", second, fingerprint_id=FP_ID, dtype="float32")
    with h5py.File(store.rebuild_index(), "r") as f:
        rows = f["models/toy/rows"][:]
        X = f["models/toy/embeddings"][:]
        assert list(f["dataset/ids"].asstr()[:]) == ["a", "b", "c"] and "labels" not in f["dataset"]
    assert list(rows) == [1, -1, 0]
    np.testing.assert_array_equal(X[rows[rows >= 0]], np.concatenate([second.embeddings, first.embeddings]))


def test_create_and_temporaries(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="exists, is not empty and is not a featx cache"):
        CacheStore(tmp_path / "busy").create()
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheError, match="is a file"):
        CacheStore(tmp_path / "file").create()
    store = CacheStore(tmp_path / "c")
    store.create()
    store.create()  # idempotent
    marker = json.loads((store.root / layout.MARKER).read_text())
    assert marker["format"] == layout.FORMAT
    leftover = store.root / "models" / f"{layout.TMP_PREFIX}shard-000000.h5.123.abcd"
    leftover.write_bytes(b"partial")
    assert store.remove_temporaries() == 1 and not leftover.exists()
