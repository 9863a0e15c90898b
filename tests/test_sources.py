"""Tests of featx.sources (featx.sources.builtins included) on real files (no mocks)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import featx.sources.builtins
from featx.sources.builtins import fashion_mnist_dir, fashion_mnist_files, fine_foods_dir, MODELDATA_RDATA_PREFIX
from featx.errors import DataSourceError
from featx.sources import Dataset, Item, open_dataset, subset, text_id, unique_ids


def touch(path: Path, content: bytes = b"not really an image") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def sha16(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- folders

@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    touch(root / "cats" / "a.png")
    touch(root / "cats" / "sub" / "b.JPG")
    touch(root / "dogs" / "c.jpeg")
    touch(root / "loose.webp")
    touch(root / ".hidden" / "x.png")
    touch(root / "cats" / ".y.png")
    touch(root / "dogs" / "notes.txt")
    touch(root / "dogs" / "empty_dir_marker.json")
    (root / "birds").mkdir()
    return root


def test_folder_lists_images_recursively_with_first_level_labels(image_folder: Path):
    ds = open_dataset(image_folder)
    assert ds.name == f"folder:{image_folder}"
    assert ds.modality == "image"
    assert ds.ids() == ["cats/a.png", "cats/sub/b.JPG", "dogs/c.jpeg", "loose.webp"]
    assert [item.label for item in ds.items] == ["cats", "cats", "dogs", None]
    assert ds.classes == ("cats", "dogs")
    assert list(ds.labels()) == ["cats", "cats", "dogs", None]
    assert ds.labels().dtype == object
    first = ds.items[0]
    assert first.ref == str(image_folder / "cats" / "a.png") and os.path.isabs(first.ref)
    st = os.stat(first.ref)
    assert first.stamp == f"{st.st_size}:{st.st_mtime_ns}"


def test_folder_with_all_files_in_root_is_unlabelled(tmp_path: Path):
    touch(tmp_path / "b.png")
    touch(tmp_path / "a.TIFF")
    ds = open_dataset(str(tmp_path))
    assert ds.ids() == ["a.TIFF", "b.png"]
    assert ds.classes is None
    assert ds.labels() is None


def test_empty_folder_error_names_folder_and_extensions(tmp_path: Path):
    with pytest.raises(DataSourceError) as info:
        open_dataset(tmp_path)
    message = str(info.value)
    assert f"no images found in folder {tmp_path}: looked recursively for .jpg, .jpeg, .png" in message
    assert ".tif, .tiff (any case), skipping hidden files and folders" in message


def test_folder_without_images_is_an_error(tmp_path: Path):
    touch(tmp_path / "readme.md")
    touch(tmp_path / ".hidden.png")
    with pytest.raises(DataSourceError, match="no images found in folder"):
        open_dataset(tmp_path)


def test_stamp_changes_when_file_changes(tmp_path: Path):
    path = touch(tmp_path / "cls" / "a.png", b"one")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = open_dataset(tmp_path).items[0].stamp
    assert before == "3:1000000000"
    path.write_bytes(b"three")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert open_dataset(tmp_path).items[0].stamp == "5:1000000000"
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert open_dataset(tmp_path).items[0].stamp == "5:2000000000"


def test_column_options_are_refused_for_folders(image_folder: Path):
    with pytest.raises(DataSourceError,
                       match=r"text_column='text' applies to manifests and tables only, not to folder "):
        open_dataset(image_folder, text_column="text")


# --------------------------------------------------------------------------- manifests

def test_csv_image_manifest_resolves_relative_paths_and_stamps_existing_files(tmp_path: Path):
    touch(tmp_path / "m" / "imgs" / "a.png", b"abc")
    touch(tmp_path / "b.png")
    manifest = tmp_path / "m" / "list.csv"
    manifest.write_text("path,label\nimgs/a.png,cat\n../b.png,dog\n/nowhere/c.png,cat\n")
    ds = open_dataset(manifest)
    assert ds.name == f"csv:{manifest}"
    assert ds.modality == "image"
    assert ds.ids() == ["imgs/a.png", "../b.png", "/nowhere/c.png"]
    assert [item.ref for item in ds.items] == [
        str(tmp_path / "m" / "imgs" / "a.png"), str(tmp_path / "b.png"), "/nowhere/c.png"]
    assert ds.items[0].stamp.startswith("3:")
    assert ds.items[1].stamp is not None
    assert ds.items[2].stamp is None  # missing files are the decoder's business
    assert ds.classes == ("cat", "dog")


def test_jsonl_text_manifest_keeps_missing_texts_and_stringifies_labels(tmp_path: Path):
    manifest = tmp_path / "texts.jsonl"
    rows = [{"text": "good", "label": 7}, {"text": None, "label": 3}, {"text": "bad", "label": None}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = open_dataset(manifest)
    assert ds.name == f"jsonl:{manifest}"
    assert ds.modality == "text"
    assert [item.ref for item in ds.items] == ["good", None, "bad"]
    assert [item.label for item in ds.items] == ["7", "3", None]
    assert ds.classes == ("3", "7")
    assert ds.items[0].id == sha16("good")
    assert all(item.stamp is None for item in ds.items)


def test_jsonl_line_that_is_not_json_is_named(tmp_path: Path):
    manifest = tmp_path / "bad.ndjson"
    manifest.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(DataSourceError, match=r"line 2 of manifest .*bad.ndjson is not valid JSON"):
        open_dataset(manifest)


def test_parquet_manifests_for_images_and_texts(tmp_path: Path):
    touch(tmp_path / "pics" / "x.png")
    images = tmp_path / "images.parquet"
    pd.DataFrame({"image_path": ["pics/x.png", "pics/y.png"], "category": [1, 2]}).to_parquet(images)
    ds = open_dataset(images)
    assert ds.modality == "image" and ds.name == f"parquet:{images}"
    assert [item.ref for item in ds.items] == [str(tmp_path / "pics" / "x.png"), str(tmp_path / "pics" / "y.png")]
    assert [item.label for item in ds.items] == ["1", "2"]

    texts = tmp_path / "texts.parquet"
    pd.DataFrame({"id": ["r1", "r2"], "review": ["tasty", None], "score": [1.0, np.nan]}).to_parquet(texts)
    ds = open_dataset(texts)
    assert ds.modality == "text"
    assert ds.ids() == ["r1", "r2"]
    assert [item.ref for item in ds.items] == ["tasty", None]
    assert [item.label for item in ds.items] == ["1", None]


def test_tsv_with_explicit_columns(tmp_path: Path):
    manifest = tmp_path / "data.tsv"
    manifest.write_text("key\tphrase\tmood\nk1\thello, world\tup\nk2\tNA\tdown\n")
    ds = open_dataset(manifest, text_column="phrase", label_column="mood", id_column="key")
    assert ds.ids() == ["k1", "k2"]
    assert [item.ref for item in ds.items] == ["hello, world", "NA"]  # "NA" is a text, not a gap
    assert ds.classes == ("down", "up")


def test_manifest_without_path_or_text_column_lists_columns_and_flags(tmp_path: Path):
    manifest = tmp_path / "x.csv"
    manifest.write_text("a,b\n1,2\n")
    with pytest.raises(DataSourceError) as info:
        open_dataset(manifest)
    message = str(info.value)
    assert f"manifest {manifest} has no path or text column; columns found: 'a', 'b'." in message
    assert "path_column= / --path-column" in message and "text_column= / --text-column" in message


def test_manifest_missing_requested_column(tmp_path: Path):
    manifest = tmp_path / "x.csv"
    manifest.write_text("text\nhi\n")
    with pytest.raises(DataSourceError, match=r"label_column='mood' not found in manifest .*columns found: 'text'"):
        open_dataset(manifest, label_column="mood")


def test_duplicate_text_ids_get_suffixes_in_order(tmp_path: Path):
    manifest = tmp_path / "t.csv"
    manifest.write_text("text\nsame\nother\nsame\nsame\n")
    ds = open_dataset(manifest)
    h = sha16("same")
    assert ds.ids() == [h, sha16("other"), f"{h}~2", f"{h}~3"]
    assert ds.classes is None and ds.labels() is None


def test_duplicate_id_column_is_rejected(tmp_path: Path):
    manifest = tmp_path / "t.csv"
    manifest.write_text("id,text\na,one\nb,two\na,three\nb,four\nc,five\n")
    with pytest.raises(DataSourceError) as info:
        open_dataset(manifest)
    assert f"id column 'id' of manifest {manifest} has 2 duplicated id(s): 'a', 'b'; ids must be unique" == str(info.value)


def test_unique_ids_skips_suffixes_that_clash():
    assert unique_ids(["a", "a", "a~2"]) == ["a", "a~3", "a~2"]
    assert unique_ids(["x", "y"]) == ["x", "y"]


# --------------------------------------------------------------------------- text files and bad sources

def test_txt_file_one_item_per_line(tmp_path: Path):
    path = tmp_path / "lines.txt"
    path.write_bytes("first line  \r\nsecond\n\nfirst line  \n".encode())
    ds = open_dataset(path)
    assert ds.name == f"txt:{path}" and ds.modality == "text"
    assert [item.ref for item in ds.items] == ["first line  ", "second", "", "first line  "]
    assert ds.ids()[3] == ds.ids()[0] + "~2"
    assert ds.ids()[2] == text_id("")
    assert ds.classes is None


def test_missing_source_and_unknown_extension(tmp_path: Path):
    with pytest.raises(DataSourceError) as info:
        open_dataset(tmp_path / "nope")
    assert f"dataset source '{tmp_path / 'nope'}' not found; expected a folder of images, a manifest" in str(info.value)
    odd = touch(tmp_path / "data.xlsx")
    with pytest.raises(DataSourceError, match=r"has an unknown extension '.xlsx'; expected a folder of images"):
        open_dataset(odd)


def test_unknown_builtin_lists_known_ones():
    with pytest.raises(DataSourceError) as info:
        open_dataset("builtin:cifar")
    assert str(info.value) == (
        "unknown builtin dataset 'cifar'; known: builtin:digits[:train|:test], "
        "builtin:fashion-mnist[:train|:test], builtin:fine-foods[:train|:test]"
    )
    with pytest.raises(DataSourceError, match=r"unknown split 'val' of builtin:digits; known splits: train, test"):
        open_dataset("builtin:digits:val")


# --------------------------------------------------------------------------- builtins

def test_digits_splits_are_disjoint_and_cover_everything():
    full = open_dataset("builtin:digits")
    train = open_dataset("builtin:digits:train")
    test = open_dataset("builtin:digits:test")
    assert (len(full), len(train), len(test)) == (1797, 1347, 450)
    assert (full.name, train.name, test.name) == ("builtin:digits", "builtin:digits:train", "builtin:digits:test")
    assert set(train.ids()).isdisjoint(test.ids())
    assert set(train.ids()) | set(test.ids()) == set(full.ids())
    assert train.ids() == sorted(train.ids())
    assert full.classes == tuple(str(d) for d in range(10))
    image = full.items[0].ref
    assert image.dtype == np.uint8 and image.shape == (8, 8) and image[1, 3] == round(15 * 255 / 16)
    assert max(item.ref.max() for item in full.items) == 255
    assert full.items[0].id == "digits/0000" and full.items[0].label == "0"


def fashion_mnist_available() -> bool:
    root = fashion_mnist_dir()
    return all(p.is_file() for p in fashion_mnist_files(root, "test"))


@pytest.mark.skipif(not fashion_mnist_available(),
                    reason="Debian package dataset-fashion-mnist not installed (sudo apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_test_split():
    ds = open_dataset("builtin:fashion-mnist:test")
    assert len(ds) == 10000 and ds.name == "builtin:fashion-mnist:test"
    assert ds.classes == tuple(sorted(featx.sources.builtins.FASHION_MNIST_CLASSES))
    assert ds.items[0].id == "fashion-mnist/test/00000"
    assert ds.items[0].label == "Ankle boot"  # first test image of Fashion-MNIST
    assert ds.items[0].ref.shape == (28, 28) and ds.items[0].ref.dtype == np.uint8
    assert Counter(ds.labels()) == {name: 1000 for name in featx.sources.builtins.FASHION_MNIST_CLASSES}


def test_fashion_mnist_missing_says_how_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FEATX_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataSourceError) as info:
        open_dataset("builtin:fashion-mnist")
    message = str(info.value)
    assert "needs the Debian package dataset-fashion-mnist" in message
    assert "Install it with: sudo apt-get install dataset-fashion-mnist" in message


def fine_foods_rdb() -> Path:
    return Path(f"{fine_foods_dir() / MODELDATA_RDATA_PREFIX}.rdb")


@pytest.mark.skipif(not fine_foods_rdb().is_file(),
                    reason="fine-foods data not fetched: run `featx data fetch fine-foods`")
def test_fine_foods_train_split():
    ds = open_dataset("builtin:fine-foods")
    assert ds.name == "builtin:fine-foods:train" and ds.modality == "text"
    assert len(ds) == 4000
    assert Counter(ds.labels()) == {"great": 2600, "other": 1400}
    assert ds.items[0].id == "fine-foods/train/0000"
    assert all(isinstance(item.ref, str) for item in ds.items)
    assert len(open_dataset("builtin:fine-foods:test")) == 1000


@pytest.mark.skipif(not fine_foods_rdb().is_file(),
                    reason="fine-foods data not fetched: run `featx data fetch fine-foods`")
def test_fine_foods_keeps_a_fast_copy(tmp_path: Path, monkeypatch):
    real_package = fine_foods_dir()
    package = tmp_path / "data" / "r-cran-modeldata"
    package.mkdir(parents=True)
    (package / "usr").symlink_to(real_package / "usr")
    monkeypatch.delenv("FEATX_DATA", raising=False)
    monkeypatch.setenv("FEATX_HOME", str(tmp_path))
    first = open_dataset("builtin:fine-foods:test")
    assert (package / "featx-fine-foods.json").is_file()
    copy = (package / "featx-fine-foods.json").stat()
    second = open_dataset("builtin:fine-foods:test")
    assert second == first
    again = (package / "featx-fine-foods.json").stat()  # read, not parsed and written again
    assert (again.st_ino, again.st_mtime_ns) == (copy.st_ino, copy.st_mtime_ns)
    (package / "featx-fine-foods.json").write_text("{broken")  # a damaged copy is rebuilt, not fatal
    assert open_dataset("builtin:fine-foods:test") == first


def test_fine_foods_missing_says_how_to_fetch(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("FEATX_DATA", raising=False)
    monkeypatch.setenv("FEATX_HOME", str(tmp_path))
    with pytest.raises(DataSourceError) as info:
        open_dataset("builtin:fine-foods")
    message = str(info.value)
    assert "builtin:fine-foods needs the Debian package r-cran-modeldata" in message
    assert "Run: featx data fetch fine-foods" in message
    assert "apt-get download r-cran-modeldata && dpkg-deb -x r-cran-modeldata_*.deb r-cran-modeldata" in message


# --------------------------------------------------------------------------- subset

def labelled_texts(counts: dict[str, int]) -> Dataset:
    items = [Item(id=f"{label}-{k}", ref=f"{label} {k}", label=label)
             for label, n in counts.items() for k in range(n)]
    items.sort(key=lambda item: item.id[::-1])  # interleave classes
    return Dataset(name="test", modality="text", items=tuple(items), classes=tuple(sorted(counts)))


def test_subset_is_stratified_deterministic_and_keeps_order():
    ds = labelled_texts({"a": 60, "b": 30, "c": 10})
    small = subset(ds, 20, seed=3)
    assert Counter(small.labels()) == {"a": 12, "b": 6, "c": 2}
    assert subset(ds, 20, seed=3).ids() == small.ids()
    assert subset(ds, 20, seed=4).ids() != small.ids()
    positions = [ds.ids().index(i) for i in small.ids()]
    assert positions == sorted(positions)
    assert small.name == ds.name and small.classes == ("a", "b", "c")
    assert subset(ds, 1000) is ds


def test_subset_per_class_and_limit():
    ds = labelled_texts({"a": 60, "b": 30, "c": 3})
    few = subset(ds, per_class=5)
    assert Counter(few.labels()) == {"a": 5, "b": 5, "c": 3}
    assert len(open_dataset("builtin:digits", limit=50, seed=1)) == 50
    assert open_dataset("builtin:digits", limit=50, seed=1).ids() == open_dataset("builtin:digits", limit=50, seed=1).ids()


def test_subset_unlabelled_and_bad_parameters(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(f"line {k}" for k in range(30)) + "\n")
    ds = open_dataset(path)
    assert len(subset(ds, 7)) == 7
    with pytest.raises(DataSourceError, match=r"per_class=2 needs a labelled dataset; txt:.* has no labels"):
        subset(ds, per_class=2)
    with pytest.raises(DataSourceError) as info:
        subset(ds, 0)
    assert str(info.value) == "The 'n' parameter of subset must be an int in [1, inf). Got 0 instead."
