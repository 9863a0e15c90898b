"""Targets beyond one label: label sets and numbers read by the same rules from every source
(CSV, JSONL, Parquet, Hugging Face, WebDataset), ill-formed lists named by item, and the kind
the cache listing keeps under its checksum."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featx.errors import DataSourceError
from featx.sources import open_dataset
from featx.sources.targets import binarize, describe_target, label_sets, numeric_targets, target_kind

TEXTS = ["a dog at night", "a cat indoors", "a dog outdoors", "nothing tagged"]
SETS = [["night", "dog"], ["cat"], ["outdoor", "dog"], []]
KEPT = ['["dog", "night"]', '["cat"]', '["dog", "outdoor"]', "[]"]


def labels_of(ds) -> list:
    return [item.label for item in ds.items]


def test_csv_cells_holding_json_lists_are_label_sets(tmp_path):
    pd.DataFrame({"text": TEXTS, "labels": [json.dumps(s) for s in SETS]}).to_csv(tmp_path / "m.csv", index=False)
    ds = open_dataset(tmp_path / "m.csv")
    assert labels_of(ds) == KEPT
    assert target_kind(labels_of(ds)) == "multi"
    Y, classes = binarize(label_sets(labels_of(ds)))
    assert classes == ("cat", "dog", "night", "outdoor")
    assert Y.tolist() == [[0, 1, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]


def test_jsonl_and_parquet_list_columns_read_the_same(tmp_path):
    with open(tmp_path / "m.jsonl", "w") as f:
        for text, labels in zip(TEXTS, SETS):
            f.write(json.dumps({"text": text, "labels": labels}) + "\n")
    pd.DataFrame({"text": TEXTS, "labels": SETS}).to_parquet(tmp_path / "m.parquet")
    for name in ("m.jsonl", "m.parquet"):
        ds = open_dataset(tmp_path / name)
        assert labels_of(ds) == KEPT, name  # Parquet no longer reads a list as the string "['night' 'dog']"


def test_delimiter_separated_cells_split_when_a_delimiter_is_given(tmp_path):
    pd.DataFrame({"text": TEXTS[:3], "label": ["dog|night", "cat", "dog|outdoor"]}).to_csv(tmp_path / "m.csv",
                                                                                           index=False)
    labels = labels_of(open_dataset(tmp_path / "m.csv"))
    assert target_kind(labels) == "single"  # without a delimiter "dog|night" is one class
    assert label_sets(labels, delimiter="|") == [("dog", "night"), ("cat",), ("dog", "outdoor")]


def test_numeric_labels_from_csv_and_parquet(tmp_path):
    scores = [4.5, 1.0, 3.25, None]
    pd.DataFrame({"text": TEXTS, "score": scores}).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"text": TEXTS, "score": scores}).to_parquet(tmp_path / "m.parquet")
    for name in ("m.csv", "m.parquet"):
        labels = labels_of(open_dataset(tmp_path / name))
        assert labels[3] is None and target_kind(labels) == "numeric"
        assert numeric_targets([v for v in labels if v is not None]).tolist() == [4.5, 1.0, 3.25]
    assert target_kind(["1", "2", "5"]) == "single" and target_kind(["1", "2", "5"], "numeric") == "numeric"
    with pytest.raises(DataSourceError, match=r"target=numeric but the label 'cat' is not a finite number"):
        target_kind(["1.5", "cat"], "numeric")


def test_hf_sequence_of_class_labels_is_a_label_set(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.ClassLabel(names=["cat", "dog", "night"]))})
    ds_hf = datasets.Dataset.from_dict({"text": TEXTS[:3], "labels": [[2, 1], [0], []]}, features=features)
    ds_hf.save_to_disk(tmp_path / "hf")
    for source in (tmp_path / "hf", ds_hf):
        assert labels_of(open_dataset(source)) == ['["dog", "night"]', '["cat"]', "[]"]


def write_shard(path: Path, samples) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_json_lists_and_cls_lists(tmp_path):
    png = b"\x89PNG not decoded when listing"
    shard = write_shard(tmp_path / "000000.tar", [
        ("a", {"png": png, "json": json.dumps({"labels": ["night", "dog"]}).encode()}),
        ("b", {"png": png, "json": json.dumps(["cat"]).encode()}),
        ("c", {"png": png, "json": b'{"caption": "no label field"}'}),
    ])
    assert labels_of(open_dataset(shard)) == ['["dog", "night"]', '["cat"]', None]
    cls = write_shard(tmp_path / "cls.tar", [("a", {"png": png, "cls": b"3 7\n"}), ("b", {"png": png, "cls": b"7"})])
    labels = labels_of(open_dataset(cls))
    assert label_sets(labels, delimiter=" ") == [("3", "7"), ("7",)]


@pytest.mark.parametrize("cell, why", [
    ('["dog", "night"', "not a JSON list"),
    ('[["dog"], "night"]', "not a label"),
    ('["dog", null]', "not a label"),
    ('[""]', "an empty label"),
])
def test_ill_formed_lists_name_the_item(tmp_path, cell, why):
    pd.DataFrame({"id": ["good", "bad"], "text": ["x", "y"], "label": ['["a"]', cell]}).to_csv(
        tmp_path / "m.csv", index=False)
    with pytest.raises(DataSourceError, match=rf"item 'bad': its label is ill-formed: .*{why}"):
        open_dataset(tmp_path / "m.csv")


def test_a_mix_of_sets_and_single_labels_is_refused():
    with pytest.raises(DataSourceError, match=r"the labels mix label sets and single labels \(e.g. 'cat'\)"):
        target_kind(['["a"]', "cat"])


def test_a_label_set_in_one_item_only_is_kept_and_counted():
    labels = ['["a", "b"]', '["a"]', '["a"]', '["c"]']
    Y, classes = binarize(label_sets(labels))
    assert classes == ("a", "b", "c") and Y.sum(axis=0).tolist() == [3, 1, 1]
    assert describe_target(labels) == "multi-label, 3 labels"
    assert describe_target(["2.5", "1"]) == "numeric, 1..2.5"
    assert describe_target(["x", "y", "x"]) == "single-label, 2 classes"
