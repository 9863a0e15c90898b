"""Sources of the ecosystem, on real files made here: Hugging Face ``datasets`` (``save_to_disk``
folders and ``Dataset`` objects), WebDataset tar shards (brace patterns too), Parquet and Arrow
tables with image bytes. Each gives the same features and labels as the same images in a folder,
the same ids on every run, and a corrupt member follows ``on_error``."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import multiprocessing as mp
import pickle
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import featx
from featx.errors import DataSourceError, ItemFailedError
from featx.sources import open_dataset
from featx.sources.refs import FileRange, TableCell, read_bytes

CLASSES = ["photos", "shapes"]
NOT_AN_IMAGE = b"\x89PNG\r\n\x1a\n but the rest is garbage"


# --------------------------------------------------------------------------- the same images, five ways
def folder_images(image_files: Path) -> list[tuple[str, bytes, str]]:
    """``(file name, encoded bytes, class)`` of the folder's images, in the folder source's order."""
    folder = open_dataset(image_files)
    return [(Path(item.ref).name, Path(item.ref).read_bytes(), item.label) for item in folder.items]


def hf_image_dataset(images) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": data, "path": name} for name, data, _ in images],
         "label": [CLASSES.index(label) for _, _, label in images]}, features=features)


def write_shards(folder: Path, samples, per_shard: int) -> list[Path]:
    """WebDataset shards ``000000.tar``...: each sample's members ``{key}.{ext}``, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, len(samples), per_shard)):
        shards.append(folder / f"{number:06d}.tar")
        with tarfile.open(shards[-1], "w") as tar:
            for key, members in samples[start:start + per_shard]:
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size, info.mtime = len(data), 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))
    return shards


def image_samples(images) -> list[tuple[str, dict]]:
    return [(f"{k:06d}", {Path(name).suffix[1:]: data, "cls": label.encode() + b"\n"})
            for k, (name, data, label) in enumerate(images)]


def struct_table(images) -> pa.Table:
    """Hugging Face's image struct ``{bytes, path}`` and a str label, as ``datasets`` writes it to Parquet."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table({"image": pa.array([{"bytes": d, "path": n} for n, d, _ in images], image_type),
                     "label": [label for _, _, label in images]})


def features_of(source, onnx: Path, cache: Path, **options):
    report = featx.extract(source, onnx, cache, batch_size=3, **options)
    X, y, ids = featx.load_features(cache)
    return report, X, list(y), list(ids)


@pytest.fixture
def folder_features(image_files, tiny_image_onnx, tmp_path):
    """Features and labels of the folder of images: what every other source must give."""
    _, X, y, _ = features_of(image_files, tiny_image_onnx, tmp_path / "folder.cache")
    return X, y


def assert_like_the_folder(source, folder_features, onnx, cache: Path, ids: list[str]) -> None:
    """Same features and labels as the folder; the same ids on a second listing and run (nothing recomputed)."""
    X_folder, y_folder = folder_features
    report, X, y, got_ids = features_of(source, onnx, cache)
    assert (report.embedded, report.failed) == (len(ids), {})
    assert got_ids == ids and y == y_folder
    np.testing.assert_allclose(X, X_folder, atol=1e-5)
    again = featx.extract(source, onnx, cache, batch_size=3)
    assert (again.embedded, again.cached) == (0, len(ids))
    assert open_dataset(source).ids() == ids


# --------------------------------------------------------------------------- Hugging Face datasets
def test_save_to_disk_folder_gives_the_folders_features_labels_and_stable_ids(image_files, folder_features,
                                                                               tiny_image_onnx, tmp_path):
    images = folder_images(image_files)
    hf_image_dataset(images).save_to_disk(tmp_path / "hf", num_shards=2)
    ds = open_dataset(tmp_path / "hf")
    assert ds.name == f"hf-datasets:{tmp_path / 'hf'}" and ds.modality == "image"
    assert ds.classes == tuple(CLASSES)
    first = ds.items[0]
    assert isinstance(first.ref, FileRange) and first.ref.path.endswith(".arrow")  # read in place, not copied
    assert read_bytes(first.ref) == images[0][1]
    assert {Path(item.ref.path).name for item in ds.items} == {"data-00000-of-00002.arrow", "data-00001-of-00002.arrow"}
    assert_like_the_folder(tmp_path / "hf", folder_features, tiny_image_onnx, tmp_path / "hf.cache",
                           [str(row) for row in range(len(images))])


def test_dataset_object_through_the_python_api(image_files, folder_features, tiny_image_onnx, tmp_path):
    images = folder_images(image_files)
    ds = open_dataset(hf_image_dataset(images))
    assert ds.name == "hf-dataset:in-memory" and ds.classes == tuple(CLASSES)
    assert ds.items[2].ref == images[2][1] and ds.items[2].stamp.startswith("sha1:")
    hf_image_dataset(images).save_to_disk(tmp_path / "hf")
    loaded = open_dataset(datasets.load_from_disk(tmp_path / "hf"))
    assert loaded.name == f"hf-dataset:{tmp_path / 'hf'}" and loaded.items == ds.items
    assert_like_the_folder(hf_image_dataset(images), folder_features, tiny_image_onnx, tmp_path / "object.cache",
                           [str(row) for row in range(len(images))])


def test_hf_texts_with_a_class_label_and_missing_labels(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    texts = datasets.Dataset.from_dict({"text": ["great", "awful", "no label yet", "fine"],
                                        "label": [1, 0, -1, None]}, features=features)
    texts.save_to_disk(tmp_path / "texts")
    for source in (tmp_path / "texts", texts):
        ds = open_dataset(source)
        assert ds.modality == "text" and ds.classes == ("neg", "pos")
        assert [item.label for item in ds.items] == ["pos", "neg", None, None]  # -1 and null: unlabelled
        assert ds.ids() == [featx.sources.text_id(t) for t in ["great", "awful", "no label yet", "fine"]]
        assert [item.ref for item in ds.items] == ["great", "awful", "no label yet", "fine"]


def test_dataset_dict_folder_names_its_splits(image_files, tmp_path):
    images = folder_images(image_files)
    split = hf_image_dataset(images)
    datasets.DatasetDict({"train": split, "test": split.select(range(3))}).save_to_disk(tmp_path / "dd")
    with pytest.raises(DataSourceError, match=r"DatasetDict with the splits train, test: pass the folder of one "
                                              r"split, e.g. .*dd/train"):
        open_dataset(tmp_path / "dd")
    assert len(open_dataset(tmp_path / "dd" / "test")) == 3
    with pytest.raises(DataSourceError, match=r"datasets.DatasetDict is not a dataset featx lists: pass one split"):
        open_dataset(datasets.DatasetDict({"train": split}))


def test_hf_folder_with_a_missing_data_file_is_named(image_files, tmp_path):
    hf_image_dataset(folder_images(image_files)).save_to_disk(tmp_path / "hf")
    (tmp_path / "hf" / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(DataSourceError,
                       match=r"the data file data-00000-of-00001.arrow listed in state.json is missing"):
        open_dataset(tmp_path / "hf")


# --------------------------------------------------------------------------- WebDataset shards
def test_brace_pattern_over_shards_gives_the_folders_features_and_extracts_nothing(image_files, folder_features,
                                                                                   tiny_image_onnx, tmp_path):
    images = folder_images(image_files)
    shards = write_shards(tmp_path / "shards", image_samples(images), per_shard=4)
    assert [s.name for s in shards] == ["000000.tar", "000001.tar"]
    pattern = str(tmp_path / "shards" / "{000000..000001}.tar")
    ds = open_dataset(pattern)
    assert ds.name == f"webdataset:{pattern}" and ds.classes == tuple(CLASSES)
    assert isinstance(ds.items[5].ref, FileRange) and ds.items[5].ref.path == str(shards[1])
    assert pickle.loads(pickle.dumps(ds.items[5])) == ds.items[5]  # small refs travel to worker processes
    assert_like_the_folder(pattern, folder_features, tiny_image_onnx, tmp_path / "wds.cache",
                           [f"{k:06d}" for k in range(len(images))])
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["000000.tar", "000001.tar"]
    single = open_dataset(shards[0])
    assert single.ids() == ds.ids()[:4] and single.name == f"webdataset:{shards[0]}"


def test_shards_in_worker_processes_give_the_same_features(image_files, tiny_image_onnx, tmp_path):
    write_shards(tmp_path / "shards", image_samples(folder_images(image_files)), per_shard=3)
    pattern = tmp_path / "shards" / "{000000..000002}.tar"
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        report = featx.extract(pattern, tiny_image_onnx, tmp_path / "w", shard_size=3, executor=pool)
    assert report.embedded == 7
    featx.extract(pattern, tiny_image_onnx, tmp_path / "s")
    (Xw, _, idw), (Xs, _, ids) = featx.load_features(tmp_path / "w"), featx.load_features(tmp_path / "s")
    assert list(idw) == list(ids)
    np.testing.assert_array_equal(Xw, Xs)


def test_a_corrupt_member_follows_on_error(image_files, tiny_image_onnx, tmp_path):
    samples = image_samples(folder_images(image_files))
    samples[3] = (samples[3][0], {"png": NOT_AN_IMAGE, "cls": b"shapes"})
    write_shards(tmp_path / "shards", samples, per_shard=4)
    pattern = tmp_path / "shards" / "{000000..000001}.tar"
    with pytest.raises(ItemFailedError, match=r"'000003'.*not a readable image"):
        featx.extract(pattern, tiny_image_onnx, tmp_path / "raise", batch_size=2)
    report = featx.extract(pattern, tiny_image_onnx, tmp_path / "skip", on_error="skip")
    assert report.embedded == 6 and list(report.failed) == ["000003"]
    assert "not a readable image" in report.failed["000003"]
    _, _, ids = featx.load_features(tmp_path / "skip")
    assert "000003" not in list(ids) and len(ids) == 6


def test_shard_labels_from_cls_txt_json_and_missing_ones(image_files, tmp_path):
    data = folder_images(image_files)[0][1]
    samples = [
        ("a", {"jpg": data, "cls": b"3\n"}),
        ("b", {"jpg": data, "json": json.dumps({"url": "x", "label": 7}).encode()}),
        ("c", {"jpg": data, "txt": b"a caption"}),
        ("d", {"jpg": data, "cls": b"  \n"}),  # empty: no label, never a class "None"
        ("e", {"jpg": data, "json": b'{"caption": "no label field"}'}),
        ("f", {"jpg": data, "json": b'{"label": null}'}),
        ("g", {"jpg": data}),
        ("h", {"cls": b"1"}),  # no image: listed, reported by the decoder
    ]
    write_shards(tmp_path / "s", samples, per_shard=100)
    ds = open_dataset(tmp_path / "s" / "000000.tar")
    assert [item.label for item in ds.items] == ["3", "7", "a caption", None, None, None, None, "1"]
    assert ds.classes == ("1", "3", "7", "a caption")
    assert ds.items[7].ref is None
    with_json = open_dataset(tmp_path / "s" / "000000.tar", label_column="json")
    assert [item.label for item in with_json.items] == [None, "7", None, None, None, None, None, None]
    with pytest.raises(DataSourceError,
                       match=r"text_column='x' applies to manifests and tables only, not to WebDataset shards"):
        open_dataset(tmp_path / "s" / "000000.tar", text_column="x")


def test_a_sample_without_an_image_is_a_failure_under_skip(image_files, tiny_image_onnx, tmp_path):
    data = folder_images(image_files)[0][1]
    write_shards(tmp_path / "s", [("a", {"jpg": data, "cls": b"x"}), ("b", {"cls": b"y"})], per_shard=10)
    report = featx.extract(tmp_path / "s" / "000000.tar", tiny_image_onnx, tmp_path / "c", on_error="skip")
    assert report.embedded == 1
    assert report.failed == {"b": "image 'b' is missing (an empty cell, or a sample without an image); "
                                  "give it an image or remove it"}


def test_missing_shard_duplicate_keys_and_damaged_shards_are_named(image_files, tmp_path):
    data = folder_images(image_files)[0][1]
    shards = write_shards(tmp_path / "s", [("a", {"jpg": data}), ("b", {"jpg": data}), ("a", {"jpg": data})],
                          per_shard=2)
    with pytest.raises(DataSourceError,
                       match=r"1 of the 3 files of .*\{000000..000002\}.tar are missing: .*000002.tar"):
        open_dataset(str(tmp_path / "s" / "{000000..000002}.tar"))
    with pytest.raises(DataSourceError, match=r"1 key\(s\) used by more than one sample: 'a'; keys are the ids"):
        open_dataset(str(tmp_path / "s" / "{000000..000001}.tar"))
    whole = shards[0].read_bytes()
    truncated = tmp_path / "t" / "cut.tar"
    truncated.parent.mkdir()
    truncated.write_bytes(whole[:1024 + len(data) + 700])  # the second member's header, half its data
    with pytest.raises(DataSourceError, match=r"WebDataset shard .*cut.tar is damaged after 1 samples"):
        open_dataset(truncated)
    (tmp_path / "t" / "gz.tar").write_bytes(__import__("gzip").compress(whole))
    with pytest.raises(DataSourceError, match=r"must be an uncompressed tar \(decompress a .tar.gz first\)"):
        open_dataset(tmp_path / "t" / "gz.tar")


def test_data_show_names_the_kind_of_source(image_files, tmp_path, capsys):
    from featx.cli import main

    write_shards(tmp_path / "shards", image_samples(folder_images(image_files)), per_shard=4)
    assert main(["data", "show", str(tmp_path / "shards" / "{000000..000001}.tar")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"webdataset:{tmp_path / 'shards' / '{000000..000001}.tar'}: 7 image items\n")
    assert "classes: photos (3), shapes (4)" in out and "  000000  label=photos" in out


# --------------------------------------------------------------------------- Parquet and Arrow tables
def test_parquet_with_hf_image_structs_in_row_groups(image_files, folder_features, tiny_image_onnx, tmp_path):
    images = folder_images(image_files)
    pq.write_table(struct_table(images), tmp_path / "images.parquet", row_group_size=3)
    ds = open_dataset(tmp_path / "images.parquet")
    assert ds.name == f"parquet:{tmp_path / 'images.parquet'}" and ds.classes == tuple(CLASSES)
    assert ds.items[4].ref == TableCell(str(tmp_path / "images.parquet"), "parquet", 1, 1, "image", "bytes")
    assert_like_the_folder(tmp_path / "images.parquet", folder_features, tiny_image_onnx, tmp_path / "pq.cache",
                           [str(row) for row in range(len(images))])


def test_parquet_written_by_datasets_keeps_its_class_names(image_files, tmp_path):
    images = folder_images(image_files)
    hf_image_dataset(images).to_parquet(tmp_path / "hf.parquet")
    ds = open_dataset(tmp_path / "hf.parquet")
    assert [item.label for item in ds.items] == [label for _, _, label in images]
    assert [read_bytes(item.ref) for item in ds.items] == [data for _, data, _ in images]


def test_binary_column_with_a_corrupt_cell_follows_on_error(image_files, tiny_image_onnx, tmp_path):
    images = folder_images(image_files)
    table = pa.table({"id": [f"img-{k}" for k in range(len(images))],
                      "jpeg": pa.array([NOT_AN_IMAGE if k == 2 else d for k, (_, d, _) in enumerate(images)]),
                      "class": [label for _, _, label in images]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=4)
    ds = open_dataset(tmp_path / "t.parquet")
    assert ds.ids()[:3] == ["img-0", "img-1", "img-2"] and ds.items[0].label == images[0][2]
    with pytest.raises(ItemFailedError, match=r"'img-2'"):
        featx.extract(tmp_path / "t.parquet", tiny_image_onnx, tmp_path / "raise")
    report = featx.extract(tmp_path / "t.parquet", tiny_image_onnx, tmp_path / "skip", on_error="skip")
    assert report.embedded == 6 and list(report.failed) == ["img-2"]


def test_arrow_files_compressed_or_not_read_the_same_bytes(image_files, tmp_path):
    images = folder_images(image_files)
    table = struct_table(images)
    feather.write_feather(table, tmp_path / "plain.arrow", compression="uncompressed")
    feather.write_feather(table, tmp_path / "lz4.feather", compression="lz4")
    plain, packed = open_dataset(tmp_path / "plain.arrow"), open_dataset(tmp_path / "lz4.feather")
    assert isinstance(plain.items[0].ref, FileRange) and isinstance(packed.items[0].ref, TableCell)
    assert plain.name == f"arrow:{tmp_path / 'plain.arrow'}"
    for ds in (plain, packed):
        assert [read_bytes(item.ref) for item in ds.items] == [data for _, data, _ in images]
        assert [item.label for item in ds.items] == [label for _, _, label in images]


def test_table_without_images_or_texts_says_what_to_name(tmp_path):
    feather.write_feather(pa.table({"x": [1, 2]}), tmp_path / "n.arrow")
    with pytest.raises(DataSourceError, match=r"Arrow file .*n.arrow has no image or text column; columns found: "
                                              r"'x' \(int64\). Name one with path_column="):
        open_dataset(tmp_path / "n.arrow")


def test_plain_parquet_manifests_stay_manifests(tmp_path):
    import pandas as pd

    pd.DataFrame({"text": ["a", "b"], "label": ["x", ""]}).to_parquet(tmp_path / "m.parquet")
    ds = open_dataset(tmp_path / "m.parquet")
    assert ds.modality == "text" and ds.items[0].label == "x"
