"""Class 6 of #24 and the fuzz tests of the readers of outside files.

A bad WebDataset label member (not UTF-8, over 1 MiB, not JSON) is that sample's failure under
``--on-error``, not a refusal of the whole source. The property tests (Hypothesis, seeded and
bounded) feed the readers random WebDataset members, Parquet cells, CSV/JSONL rows, spec TOML,
processor configs and deployed metadata: each gives a featx error or a correct result, nothing else.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import featx  # noqa: E402
from featx.errors import FeatxError  # noqa: E402
from featx.sources import open_dataset  # noqa: E402

#: Short, seeded runs in `make test`; the `slow` variants run many more examples.
FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, samples) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
    return path


# --------------------------------------------------------------------------- class 6
@pytest.mark.parametrize("bad, reason", [
    ({"cls": b"\xff\xfe\xfa"}, "is not UTF-8 text"),
    ({"cls": b"x" * ((1 << 20) + 1)}, "bytes, over 1,048,576: not a label"),
    ({"json": b"{not json"}, "is not valid JSON"),
])
def test_a_bad_label_member_follows_on_error(tiny_image_onnx, tmp_path, bad, reason):
    image = png_bytes()
    shard = write_tar(tmp_path / "s.tar", [("a", {"png": image, "cls": b"cat"}), ("b", {"png": image, **bad}),
                                           ("c", {"png": image, "cls": b"dog"})])
    dataset = open_dataset(shard)  # listing no longer refuses the source
    assert dataset.ids() == ["a", "b", "c"]
    report = featx.extract(shard, tiny_image_onnx, tmp_path / "cache", on_error="skip", progress=False)
    assert report.embedded == 2 and list(report.failed) == ["b"]
    assert reason in report.failed["b"] and "sample b" in report.failed["b"]
    X, y, ids = featx.load_features(tmp_path / "cache")
    assert list(ids) == ["a", "c"] and list(y) == ["cat", "dog"] and np.isfinite(X).all()
    with pytest.raises(FeatxError, match=reason):
        featx.extract(shard, tiny_image_onnx, tmp_path / "cache2", on_error="raise", progress=False)


# --------------------------------------------------------------------------- fuzz: WebDataset members
member_names = st.sampled_from(["png", "cls", "txt", "json", "jpg", "seg.png", "cls.txt"])
member_data = st.one_of(st.binary(max_size=64), st.text(max_size=32).map(str.encode),
                        st.just(b"\xff\xd8garbage"), st.builds(lambda: png_bytes()))
samples = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d/e", "f"]),
                             st.dictionaries(member_names, member_data, min_size=1, max_size=3)),
                   min_size=1, max_size=5)


def _webdataset_invariant(tmp_path: Path, drawn) -> None:
    path = write_tar(tmp_path / "fuzz.tar", drawn)
    try:
        dataset = open_dataset(path)
    except FeatxError:
        return
    ids = dataset.ids()
    assert len(ids) == len(set(ids))
    for item in dataset.items:
        assert item.label is None or (isinstance(item.label, str) and item.label.strip())
        try:
            featx.engine.decode.decode_image(item.ref, item_id=item.id)
        except FeatxError:
            pass


@FAST
@given(drawn=samples)
def test_fuzz_webdataset_members(tmp_path_factory, drawn):
    _webdataset_invariant(tmp_path_factory.mktemp("wds"), drawn)


@pytest.mark.slow
@LONG
@given(drawn=samples)
def test_fuzz_webdataset_members_long(tmp_path_factory, drawn):
    _webdataset_invariant(tmp_path_factory.mktemp("wds"), drawn)


# --------------------------------------------------------------------------- fuzz: CSV / JSONL rows
cell = st.one_of(st.none(), st.text(max_size=20), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                 st.booleans(), st.lists(st.integers(0, 3), max_size=3))
rows = st.lists(st.dictionaries(st.sampled_from(["text", "label", "id", "path", "other"]), cell, max_size=4),
                min_size=0, max_size=6)


def _table_invariant(tmp_path: Path, drawn, kind: str) -> None:
    import csv

    path = tmp_path / f"rows.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in drawn))
    else:
        keys = sorted({k for r in drawn for k in r})
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys or ["text"])
            writer.writeheader()
            for r in drawn:
                writer.writerow({k: r.get(k) for k in keys})
    try:
        dataset = open_dataset(path)
    except FeatxError:
        return
    ids = dataset.ids()
    assert len(ids) == len(set(ids)) == len(dataset.items)
    for item in dataset.items:
        assert item.label is None or (isinstance(item.label, str) and item.label.strip())


@FAST
@given(drawn=rows, kind=st.sampled_from(["jsonl", "csv"]))
def test_fuzz_csv_and_jsonl_rows(tmp_path_factory, drawn, kind):
    _table_invariant(tmp_path_factory.mktemp("rows"), drawn, kind)


# --------------------------------------------------------------------------- fuzz: Parquet cells
@FAST
@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=30)), min_size=1, max_size=6),
       labels=st.lists(st.one_of(st.none(), st.text(max_size=5), st.integers(0, 3)), min_size=1, max_size=6),
       garbage=st.binary(max_size=200))
def test_fuzz_parquet_cells_and_garbage_files(tmp_path_factory, texts, labels, garbage):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("pq")
    n = min(len(texts), len(labels))
    table = pa.table({"text": pa.array(texts[:n], pa.string()),
                      "label": pa.array([None if v is None else str(v) for v in labels[:n]], pa.string())})
    pq.write_table(table, tmp / "t.parquet")
    try:
        dataset = open_dataset(tmp / "t.parquet")
    except FeatxError:
        dataset = None
    if dataset is not None:
        assert len(dataset.items) == n
        for item, label in zip(dataset.items, labels[:n]):
            expected = None if label is None or not str(label).strip() else str(label)
            assert item.label == expected
    (tmp / "g.parquet").write_bytes(b"PAR1" + garbage + b"PAR1")
    with pytest.raises(FeatxError):
        open_dataset(tmp / "g.parquet")


# --------------------------------------------------------------------------- fuzz: spec TOML, processor configs
toml_values = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=8), st.booleans(), st.lists(st.floats(-2, 2), max_size=4))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else
                                             "-inf" if value == float("-inf") else repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@FAST
@given(preprocess=st.dictionaries(st.sampled_from(["size", "resize", "mean", "std", "interpolation",
                                                   "max_length", "padding", "jpeg_draft"]), toml_values, max_size=4),
       modality=st.sampled_from(["image", "text", "audio"]), dim=toml_values)
def test_fuzz_spec_toml(tmp_path_factory, preprocess, modality, dim):
    from featx.specs.registry import load_spec_file

    path = tmp_path_factory.mktemp("spec") / "fuzz.toml"
    body = "\n".join(f"{k} = {_toml(v)}" for k, v in preprocess.items())
    path.write_text(f'name = "fuzz"\nmodality = "{modality}"\ndim = {_toml(dim)}\n'
                    f'[source]\nkind = "onnx"\npath = "x.onnx"\n[preprocess]\n{body}\n')
    try:
        spec = load_spec_file(path).resolve()
    except FeatxError:
        return
    pre = spec.preprocess
    if modality == "image":
        assert 1 <= pre.size <= 2048 and (pre.resize is None or pre.size <= pre.resize <= 2048)
        assert all(np.isfinite(pre.mean)) and all(s > 0 for s in pre.std)
    else:
        assert 2 <= pre.max_length <= 16384


@FAST
@given(config=st.dictionaries(
    st.sampled_from(["image_processor_type", "do_resize", "size", "crop_size", "do_center_crop", "image_mean",
                     "image_std", "resample", "crop_pct", "rescale_factor", "do_normalize"]),
    st.one_of(toml_values, st.fixed_dictionaries({"height": st.integers(-3, 10**5), "width": st.integers(-3, 10**5)}),
              st.fixed_dictionaries({"shortest_edge": st.integers(-3, 10**5)}),
              st.sampled_from(["ViTImageProcessor", "CLIPImageProcessor", "ConvNextImageProcessor"])),
    max_size=8))
def test_fuzz_processor_configs(config):
    from featx.specs.hfspec import preprocess_from_processor
    from featx.specs.registry import preprocess_from_dict

    try:
        out = preprocess_from_processor(config)
        pre = preprocess_from_dict(out, "image")
    except FeatxError:
        return
    assert 1 <= pre.size <= 2048 and (pre.resize is None or pre.resize <= 2048)


# --------------------------------------------------------------------------- fuzz: deployed metadata
metadata_values = st.one_of(st.none(), st.text(max_size=10), st.integers(-5, 10**5),
                            st.lists(st.one_of(st.text(max_size=4), st.integers(0, 12)), max_size=12),
                            st.dictionaries(st.sampled_from(["size", "resize", "max_length", "file", "sha256",
                                                             "mean", "name"]),
                                            st.one_of(st.integers(-2, 10**5), st.text(max_size=12)), max_size=3))


@FAST
@given(metadata=st.dictionaries(st.sampled_from(["modality", "classes", "preprocess", "tokenizer", "backbone"]),
                                metadata_values, max_size=5),
       width=st.one_of(st.none(), st.integers(1, 12)))
def test_fuzz_deployed_metadata(metadata, width):
    from featx.deploy.trust import check_metadata
    from featx.specs.registry import preprocess_from_dict

    try:
        check_metadata("m.onnx", metadata, probabilities_width=width)
        preprocess_from_dict(metadata["preprocess"], metadata["modality"])
    except FeatxError:
        return
    assert metadata["modality"] in ("image", "text")
    assert isinstance(metadata["classes"], list) and (width is None or len(metadata["classes"]) == width)


def test_fuzz_readers_under_an_address_space_limit():
    """The metadata fuzzers again, in a child whose address space is capped at 8 GiB (the acceptance's bound):
    a reader that allocated from what a file says would die here instead of raising a featx error."""
    import os
    import resource
    import subprocess
    import sys

    if os.environ.get("FEATX_FUZZ_CHILD"):
        pytest.skip("already the child")
    limit = 8 << 30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    selected = "fuzz_spec_toml or fuzz_processor_configs or fuzz_deployed_metadata"
    out = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-m", "not slow",
                          "-k", f"({selected}) and not long"],
                         env=os.environ | {"FEATX_FUZZ_CHILD": "1"}, preexec_fn=cap, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout
