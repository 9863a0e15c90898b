"""featx.extract + load_features: order, cache hits, growth, mismatch, bad items, workers, text sorting."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

import featx
from featx.engine.backbone import Backbone
from featx.errors import CacheError, CacheMismatchError, DataSourceError, ItemFailedError, ParameterError
from featx.specs.exported import write_spec
from featx.specs.spec import BackboneSpec, ImagePreprocess
from featx.sources import open_dataset, subset


def digits(n=200):
    return subset(open_dataset("builtin:digits"), n, seed=0)


def test_features_equal_direct_embedding_in_dataset_order(tiny_image_onnx, tmp_path):
    ds = digits(150)
    report = featx.extract(ds, tiny_image_onnx, tmp_path / "c", batch_size=16, shard_size=40)
    assert (report.embedded, report.cached, report.shards) == (150, 0, 4)
    X, y, ids = featx.load_features(tmp_path / "c")
    assert X.dtype == np.float32 and X.shape == (150, 8)
    assert list(ids) == [item.id for item in ds.items]
    assert list(y) == [item.label for item in ds.items]
    direct = featx.load_backbone(tiny_image_onnx).embed([item.ref for item in ds.items], batch_size=7)
    np.testing.assert_allclose(X, direct, atol=1e-5)


def test_rerun_is_a_cache_hit_without_inference(tiny_image_onnx, tmp_path):
    ds = digits(120)
    featx.extract(ds, tiny_image_onnx, tmp_path / "c")
    backbone = Backbone(tiny_image_onnx)
    report = featx.extract(ds, backbone, tmp_path / "c")
    assert (report.embedded, report.cached) == (0, 120)
    assert backbone.session._session is None  # no ONNX Runtime session was even created


def test_adding_items_embeds_only_the_new_ones(tiny_image_onnx, tmp_path):
    full = digits(300)
    first = subset(full, 100, seed=1)
    featx.extract(first, tiny_image_onnx, tmp_path / "c")
    report = featx.extract(full, tiny_image_onnx, tmp_path / "c")
    assert (report.embedded, report.cached) == (200, 100)
    X, _, ids = featx.load_features(tmp_path / "c")
    assert list(ids) == full.ids()
    direct = featx.load_backbone(tiny_image_onnx).embed([i.ref for i in full.items])
    np.testing.assert_allclose(X, direct, atol=1e-5)


def test_removing_items_computes_nothing_and_leaves_them_out(tiny_image_onnx, image_files, tmp_path):
    featx.extract(str(image_files), tiny_image_onnx, tmp_path / "c")
    before_X, _, before_ids = featx.load_features(tmp_path / "c")
    gone = image_files / "shapes" / "circle.png"
    gone.unlink()
    report = featx.extract(str(image_files), tiny_image_onnx, tmp_path / "c")
    assert (report.embedded, report.cached) == (0, len(before_ids) - 1)
    X, _, ids = featx.load_features(tmp_path / "c", strict=True)  # strict: nothing of the dataset is missing
    assert "shapes/circle.png" in before_ids and list(ids) == [i for i in before_ids if i != "shapes/circle.png"]
    assert list(ids) == featx.open_dataset(str(image_files)).ids()
    keep = [list(before_ids).index(i) for i in ids]
    np.testing.assert_array_equal(X, before_X[keep])


def test_changed_files_are_re_embedded(tiny_image_onnx, image_files, tmp_path):
    featx.extract(str(image_files), tiny_image_onnx, tmp_path / "c")
    path = image_files / "shapes" / "circle.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(path)
    report = featx.extract(str(image_files), tiny_image_onnx, tmp_path / "c")
    assert (report.embedded, report.cached) == (1, 6)
    X, _, ids = featx.load_features(tmp_path / "c")
    new = featx.load_backbone(tiny_image_onnx).embed([str(path)])
    np.testing.assert_allclose(X[list(ids).index("shapes/circle.png")], new[0], atol=1e-6)


def _copy_model(src, folder, **preprocess):
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "tiny-image.onnx"
    shutil.copyfile(src, dst)
    spec = BackboneSpec.from_dict(json.loads(src.with_suffix(".json").read_text())["spec"])
    if preprocess:
        current = {k: v for k, v in spec.preprocess.to_dict().items() if k != "kind"}
        spec = spec.replace(preprocess=ImagePreprocess(**(current | preprocess)))
    write_spec(dst, spec)
    return dst


def test_changed_model_file_is_refused(tiny_image_onnx, tmp_path):
    ds = digits(50)
    model = _copy_model(tiny_image_onnx, tmp_path / "m")
    featx.extract(ds, model, tmp_path / "c")
    with open(model, "ab") as f:  # a different file under the same name (trailing bytes are ignored by ONNX)
        f.write(b"\0")
    with pytest.raises(CacheMismatchError, match=r"different model file \(sha256 .*will not mix features"):
        featx.extract(ds, model, tmp_path / "c")


def test_changed_preprocessing_is_refused(tiny_image_onnx, tmp_path):
    ds = digits(50)
    featx.extract(ds, _copy_model(tiny_image_onnx, tmp_path / "a"), tmp_path / "c")
    other = _copy_model(tiny_image_onnx, tmp_path / "b", size=24, resize=28)
    with pytest.raises(CacheMismatchError, match=r"different preprocessing \(resize: 36 -> 28; size: 32 -> 24\)"):
        featx.extract(ds, other, tmp_path / "c")


def test_two_backbones_side_by_side(tiny_image_onnx, nan_image_onnx, tmp_path):
    ds = digits(60)
    featx.extract(ds, tiny_image_onnx, tmp_path / "c")
    featx.extract(ds, nan_image_onnx, tmp_path / "c")
    with pytest.raises(CacheError, match="several backbones"):
        featx.load_features(tmp_path / "c")
    Xa, _, _ = featx.load_features(tmp_path / "c", model="tiny-image")
    Xb, _, _ = featx.load_features(tmp_path / "c", model="nan-image")
    np.testing.assert_allclose(Xa, Xb, atol=1e-6)  # same conv weights; no black digit image here
    with h5py.File(tmp_path / "c" / "index.h5", "r") as f:  # plain h5py read view
        assert set(f["models"]) == {"tiny-image", "nan-image"}
        rows = f["models/tiny-image/rows"][()]
        np.testing.assert_array_equal(f["models/tiny-image/embeddings"][()][rows], Xa)
        assert [s.decode() for s in f["dataset/ids"][()]] == ds.ids()


def test_another_dataset_in_the_same_cache_is_refused(tiny_image_onnx, tmp_path):
    featx.extract(digits(30), tiny_image_onnx, tmp_path / "c")
    with pytest.raises(CacheError, match="one cache per dataset"):
        featx.extract("builtin:digits:test", tiny_image_onnx, tmp_path / "c")


def _bad_folder(tmp_path):
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    for k in range(4):
        Image.fromarray(np.full((20, 20, 3), 40 * k + 10, np.uint8)).save(root / "a" / f"a_ok{k}.png")
    (root / "a" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    (root / "a" / "empty.png").write_bytes(b"")
    good = root / "a" / "a_ok0.png"
    (root / "a" / "truncated.png").write_bytes(good.read_bytes()[:60])
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "a" / "black.png")  # NaN in nan_image_onnx
    return root


def test_skip_records_bad_items_and_never_shifts_rows(nan_image_onnx, tmp_path):
    root = _bad_folder(tmp_path)
    report = featx.extract(str(root), nan_image_onnx, tmp_path / "c", on_error="skip", batch_size=3)
    assert set(report.failed) == {"a/random.jpg", "a/empty.png", "a/truncated.png", "a/black.png"}
    assert "NaN/inf" in report.failed["a/black.png"]
    assert "empty file" in report.failed["a/empty.png"]
    assert "truncated" in report.failed["a/truncated.png"] or "damaged" in report.failed["a/truncated.png"]
    X, _, ids = featx.load_features(tmp_path / "c")
    assert list(ids) == [f"a/a_ok{k}.png" for k in range(4)]
    assert np.isfinite(X).all()
    direct = featx.load_backbone(nan_image_onnx).embed([str(root / i) for i in ids])
    np.testing.assert_allclose(X, direct, atol=1e-6)
    again = featx.extract(str(root), nan_image_onnx, tmp_path / "c", on_error="skip")
    assert (again.embedded, again.cached, again.failed_before) == (0, 4, 4)


def test_raise_names_the_item_and_keeps_committed_work(tiny_image_onnx, tmp_path):
    root = _bad_folder(tmp_path)
    (root / "a" / "black.png").unlink()
    with pytest.raises(ItemFailedError, match=r"item 'a/empty.png' failed: .*empty file.*--on-error skip"):
        featx.extract(str(root), tiny_image_onnx, tmp_path / "c", batch_size=1, shard_size=100)
    X, _, ids = featx.load_features(tmp_path / "c")  # the good items before the bad one were committed
    assert list(ids) == [f"a/a_ok{k}.png" for k in range(4)]
    np.testing.assert_allclose(X, featx.load_backbone(tiny_image_onnx).embed([str(root / i) for i in ids]), atol=1e-6)



def test_bad_texts_are_skipped_with_reasons(tiny_text_onnx, tmp_path):
    manifest = tmp_path / "t.jsonl"
    rows = [{"id": "a", "text": "good food"}, {"id": "b", "text": ""}, {"id": "c", "text": None},
            {"id": "d", "text": "   "}, {"id": "e", "text": "tasty \x00 snack 😀"}, {"id": "f", "text": "x " * 100_000}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    report = featx.extract(str(manifest), tiny_text_onnx, tmp_path / "c", on_error="skip")
    assert set(report.failed) == {"b", "c", "d"}
    assert report.truncated == 1
    X, _, ids = featx.load_features(tmp_path / "c")
    assert list(ids) == ["a", "e", "f"]


def test_sorted_dynamic_padding_equals_unsorted_embedding(tiny_text_onnx, tmp_path):
    ds = subset(open_dataset("builtin:fine-foods:test"), 120, seed=0)
    featx.extract(ds, tiny_text_onnx, tmp_path / "c", batch_size=16)
    X, _, ids = featx.load_features(tmp_path / "c")
    assert list(ids) == ds.ids()
    one_by_one = featx.load_backbone(tiny_text_onnx).embed([i.ref for i in ds.items], batch_size=1)
    np.testing.assert_allclose(X, one_by_one, atol=1e-5)


def test_process_workers_give_the_same_features(tiny_image_onnx, tmp_path):
    ds = digits(200)
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        report = featx.extract(ds, tiny_image_onnx, tmp_path / "w", shard_size=50, executor=pool)
    assert (report.embedded, report.shards) == (200, 4)
    featx.extract(ds, tiny_image_onnx, tmp_path / "s")
    Xw, _, idw = featx.load_features(tmp_path / "w")
    Xs, _, ids = featx.load_features(tmp_path / "s")
    assert list(idw) == list(ids)
    np.testing.assert_array_equal(Xw, Xs)


def test_cli_workers_give_the_same_features(tiny_image_onnx, tmp_path, capsys):
    """`featx extract --workers 2` (each worker gets cores/2 ORT threads) equals the in-process run."""
    from featx.cli import main

    args = ["extract", "builtin:digits", "--model", str(tiny_image_onnx), "--limit", "120", "--no-progress"]
    assert main([*args, "--cache", str(tmp_path / "w"), "--workers", "2", "--shard-size", "40"]) == 0
    assert main([*args, "--cache", str(tmp_path / "s")]) == 0
    Xw, _, idw = featx.load_features(tmp_path / "w")
    Xs, _, ids = featx.load_features(tmp_path / "s")
    assert list(idw) == list(ids) and len(ids) == 120
    np.testing.assert_array_equal(Xw, Xs)


def test_float16_storage(tiny_image_onnx, tmp_path):
    ds = digits(64)
    featx.extract(ds, tiny_image_onnx, tmp_path / "h", dtype="float16")
    featx.extract(ds, tiny_image_onnx, tmp_path / "f")
    Xh, _, _ = featx.load_features(tmp_path / "h")
    Xf, _, _ = featx.load_features(tmp_path / "f")
    assert Xh.dtype == np.float32
    np.testing.assert_allclose(Xh, Xf, rtol=1e-3, atol=1e-3)
    with pytest.raises(CacheMismatchError, match="storage dtype"):
        featx.extract(ds, tiny_image_onnx, tmp_path / "h", dtype="float32")


def test_modality_mismatch_and_bad_parameters(tiny_text_onnx, tiny_image_onnx, tmp_path):
    with pytest.raises(DataSourceError,
                       match="builtin:digits holds images but the text backbone tiny-text takes texts: give a .txt"):
        featx.extract("builtin:digits", tiny_text_onnx, tmp_path / "c")
    with pytest.raises(ParameterError, match=r"'batch_size' parameter of extract must be None or an int in \[1, inf\)\. Got 0"):
        featx.extract("builtin:digits", tiny_image_onnx, tmp_path / "c", batch_size=0)
    with pytest.raises(ParameterError, match="'on_error'"):
        featx.extract("builtin:digits", tiny_image_onnx, tmp_path / "c", on_error="ignore")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError, match="is a file"):
        featx.extract(digits(5), tiny_image_onnx, tmp_path / "file")
    with pytest.raises(CacheError, match="no cache at"):
        featx.load_features(tmp_path / "nothing")


def test_cli_extract_info_verify(tiny_image_onnx, image_files, tmp_path, capsys):
    from featx.cli import main

    (image_files / "shapes" / "broken.png").write_bytes(b"not a png")
    cache = tmp_path / "c"
    args = ["extract", str(image_files), "--model", str(tiny_image_onnx), "--cache", str(cache), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "featx: error: item 'shapes/broken.png' failed: image 'shapes/broken.png' is not a readable image" in err
    assert main(args + ["--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "tiny-image on folder:" in out and "1 skipped of 8 items" in out
    assert "skipped shapes/broken.png: image 'shapes/broken.png' is not a readable image" in out
    assert main(["info", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "8 image items, 2 classes" in out and "tiny-image: 7 embedded, 1 failed, 0 missing; dim 8 float32" in out
    assert main(["verify", str(cache)]) == 0
    assert "ok: " in capsys.readouterr().out


def test_real_minilm_fast_path_equals_one_by_one(minilm_onnx, tmp_path):
    """The fused graph, token-sorted batches padded per batch and prefetching threads give the
    embeddings of one text at a time, unpadded and sequential."""
    ds = subset(open_dataset("builtin:fine-foods:test"), 48, seed=1)
    report = featx.extract(ds, minilm_onnx, tmp_path / "c", batch_size=16, decode_workers=2)
    assert report.embedded == 48
    X, _, ids = featx.load_features(tmp_path / "c")
    assert list(ids) == ds.ids()
    one_by_one = featx.load_backbone(minilm_onnx).embed([i.ref for i in ds.items], batch_size=1)
    np.testing.assert_allclose(X, one_by_one, atol=1e-5)


def test_a_dataset_with_a_repeated_id_is_refused_never_misaligned(tiny_image_onnx, tmp_path):
    import dataclasses

    from featx.errors import DataSourceError
    from featx.sources import Dataset, make_dataset, unique_ids

    ds = digits(6)
    items = list(ds.items)
    items[4] = dataclasses.replace(items[4], id=items[1].id)  # two different images under one id
    with pytest.raises(DataSourceError, match=rf"has 1 repeated id\(s\): '{items[1].id}'; each item needs an id"):
        featx.extract(Dataset(ds.name, ds.modality, tuple(items), ds.classes), tiny_image_onnx, tmp_path / "c")
    with pytest.raises(DataSourceError, match="repeated id"):
        make_dataset(ds.name, ds.modality, items)
    assert not (tmp_path / "c").exists()  # refused before anything was written
    ids = unique_ids([item.id for item in items])  # the advice: rename the repeats as the sources do
    renamed = make_dataset(ds.name, ds.modality, [dataclasses.replace(i, id=n) for i, n in zip(items, ids)])
    featx.extract(renamed, tiny_image_onnx, tmp_path / "c")
    X, y, got = featx.load_features(tmp_path / "c", strict=True)
    assert list(got) == ids and list(y) == [item.label for item in items]
    np.testing.assert_allclose(X, featx.load_backbone(tiny_image_onnx).embed([i.ref for i in items]), atol=1e-6)
