"""Saved heads whose numbers were edited (only trusted types in the file): refused with a message or
rebuilt, never a crash. The edits are made to real skops files, and the commands that would have
crashed run in real processes (`featx evaluate`, `featx predict`), so a segfault is an exit code."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.cli import main
from featx.errors import HeadError
from featx.heads import HEADS, select_head
from featx.heads.persist import MAX_SCHEMA_DEPTH, load_head, metadata_path, save_head
from featx.sources import open_dataset, subset


# --------------------------------------------------------------------------- editing a skops file
def _objects(node, cls):
    """Every object node of class ``cls`` in a skops schema: ``{attribute: node}`` of each."""
    if isinstance(node, dict):
        if node.get("__class__") == cls and node.get("__loader__") in ("ObjectNode", "ReduceNode"):
            content = node["content"]
            yield content["content"] if content.get("__loader__") == "DictNode" else content
        for value in node.values():
            yield from _objects(value, cls)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value, cls)


def edit_array(path: Path, cls: str, attr, change) -> None:
    """Replace the array ``attr`` (a name, or the position in a tree's state tuple) of the first ``cls``
    object holding it in the head file with ``change(array)``, keeping every type in the file as it was; the
    sha256 in the metadata is updated as an attacker would."""
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    schema = json.loads(entries["schema.json"])
    node = next(target["content"][attr] if isinstance(attr, int) else target[attr]
                for target in _objects(schema, cls) if isinstance(attr, int) or attr in target)
    array = np.load(io.BytesIO(entries[node["file"]]), allow_pickle=False)
    buffer = io.BytesIO()
    np.save(buffer, change(array.copy()), allow_pickle=False)
    entries[node["file"]] = buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    meta = metadata_path(path)
    record = json.loads(meta.read_text())
    record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta.write_text(json.dumps(record))


def featx_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "featx", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_image_onnx):
    """300 real digits through the tiny backbone: 8-d features, so an exact kNN builds a KD-tree."""
    path = tmp_path_factory.mktemp("trust") / "cache"
    featx.extract(subset(open_dataset("builtin:digits"), 300, seed=1), tiny_image_onnx, path, progress=False)
    return path


@pytest.fixture(scope="module")
def features(cache):
    X, y, _ = featx.load_features(cache)
    return X, y


GRIDS = {"logreg": {"power": ["sqrt"], "scale": ["standard"], "C": [1.0]},
         "svm": {"power": ["none"], "scale": ["l2"], "kernel": ["rbf"], "C": [10.0]},
         "knn": {"power": ["none"], "scale": ["standard"], "n_neighbors": [5], "metric": ["euclidean"]}}


@pytest.fixture(scope="module")
def saved(features, tmp_path_factory):
    """One saved head of each kind, with the metadata `featx train` writes (backbone tiny-image)."""
    X, y = features
    folder = tmp_path_factory.mktemp("saved-heads")
    paths = {}
    for kind in HEADS:
        result = select_head(kind, X, y, cv=3, n_jobs=1, grid=GRIDS[kind])
        paths[kind] = save_head(result.best_estimator, folder / kind,
                                metadata={"kind": kind, "backbone": "tiny-image", "model": "tiny-image"})
    approximate = {kind: select_head(kind, X, y, cv=3, n_jobs=1, strategy="approximate") for kind in HEADS}
    for kind, result in approximate.items():
        paths[f"{kind}-approximate"] = save_head(result.best_estimator, folder / f"{kind}-approximate")
    return paths


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of a saved head (and its metadata) to edit."""
    def make(kind: str) -> Path:
        source = saved[kind]
        target = tmp_path / source.name
        target.write_bytes(source.read_bytes())
        metadata_path(target).write_bytes(metadata_path(source).read_bytes())
        return target

    return make


# --------------------------------------------------------------------------- the crash the issue found
def test_a_knn_head_with_an_edited_tree_cannot_crash_evaluate_or_predict(copy, cache, features, tmp_path,
                                                                          tiny_image_onnx):
    head = copy("knn")
    reference = load_head(head).predict(features[0])
    # The KD-tree's index array points far outside the stored rows: scikit-learn's Cython query read
    # out of bounds (exit 139, a segfault) before featx rebuilt the tree from the stored vectors.
    edit_array(head, "KDTree", 1, lambda idx: np.full_like(idx, 10**9))
    done = featx_cli("evaluate", head, "--cache", cache, "--out", tmp_path / "report", "--json")
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    report = json.loads(done.stdout)
    assert report["accuracy"] == pytest.approx(np.mean(reference == features[1]))
    done = featx_cli("predict", head, "builtin:digits:test", "--model", tiny_image_onnx,
                     "--out", tmp_path / "p.csv")
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 451


EDITS = [  # (head, class in the file, array, edit, what the message names); SVC and kNN arrays reach native code
    ("svm", "SVC", "_n_support", lambda a: a + 3, "do not add up to the"),
    ("svm", "SVC", "_dual_coef_", lambda a: a[:, :5], "_dual_coef_ has shape"),
    ("svm", "SVC", "support_vectors_", lambda a: a[:, :3], "support_vectors_ has shape"),
    ("svm", "SVC", "support_", lambda a: a + 10**6, "support_ indexes rows outside"),
    ("svm", "SVC", "_intercept_", lambda a: a[:2], "_intercept_ has shape"),
    ("knn", "KNeighborsClassifier", "_y", lambda a: a + 50, "_y holds class codes outside"),
    ("knn", "KNeighborsClassifier", "_fit_X", lambda a: a[:, :4], "_fit_X has shape"),
    ("logreg", "LogisticRegression", "coef_", lambda a: a[:, :3], "coef_ has shape (10, 3), expected (10, 8)"),
    ("logreg", "StandardScaler", "scale_", lambda a: a * np.nan, "scale_ holds NaN or infinite values"),
    ("logreg", "LogisticRegression", "intercept_", lambda a: a[:4], "intercept_ has shape (4,), expected (10,)"),
    ("svm-approximate", "Nystroem", "normalization_", lambda a: a[:3], "normalization_ has shape"),
    ("knn-approximate", "PCA", "components_", lambda a: a[:, :5], "components_ has shape"),
    ("knn-approximate", "IVFKNeighborsClassifier", "labels_", lambda a: a + 99,
     "stored vectors, labels or centroids do not fit together"),
    ("logreg-approximate", "SGDClassifier", "intercept_", lambda a: np.concatenate([a, a]), "intercept_ has shape"),
]


@pytest.mark.parametrize("kind, cls, attr, change, message", EDITS,
                         ids=[f"{e[0]}-{e[1]}.{e[2]}" for e in EDITS])
def test_a_head_whose_arrays_were_edited_is_refused_with_a_message(copy, cache, tmp_path, capsys, kind, cls, attr,
                                                                   change, message):
    head = copy(kind)
    edit_array(head, cls, attr, change)
    with pytest.raises(HeadError, match="the file was edited or damaged: train the head again") as info:
        load_head(head)
    assert message in str(info.value) and str(head) in str(info.value)
    command = ["evaluate", head, "--cache", cache, "--out", tmp_path / "report"]
    if cls in ("SVC", "KNeighborsClassifier"):  # libsvm or a tree would read these: a real process
        done = featx_cli(*command)
        code, err = done.returncode, done.stderr
    else:
        code, err = main([str(part) for part in command]), capsys.readouterr().err
    assert code == 1, (code, err[-2000:])  # a message and exit code 1, never a traceback or a signal
    assert "Traceback" not in err and message in err


@pytest.mark.parametrize("kind", ["logreg", "svm", "knn", "logreg-approximate", "svm-approximate", "knn-approximate"])
def test_every_kind_of_head_featx_trains_passes_the_check_unchanged(saved, features, kind):
    X, _ = features
    head = load_head(saved[kind])  # checked on load
    np.testing.assert_array_equal(head.predict(X[:50]), head.predict(X[:50]))
    if kind.startswith("knn") and not kind.endswith("approximate"):  # rebuilt from the stored vectors
        assert head[-1]._tree is not None


def test_a_deeply_nested_schema_is_refused_with_a_message(saved, cache, tmp_path):
    leaf = '{"__class__": "int", "__module__": "builtins", "__loader__": "JsonNode", "content": "1", "is_json": true}'
    for depth in (MAX_SCHEMA_DEPTH, 100_000):  # within json's recursion limit, and far past it
        head = tmp_path / f"deep-{depth}.skops"
        nest = '{"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": ['
        with zipfile.ZipFile(head, "w") as z:
            z.writestr("schema.json", nest * depth + leaf + "]}" * depth)
        meta = json.loads(metadata_path(saved["logreg"]).read_text())
        metadata_path(head).write_text(json.dumps({**meta, "sha256": hashlib.sha256(head.read_bytes()).hexdigest()}))
        with pytest.raises(HeadError, match=f"nests its content more than {MAX_SCHEMA_DEPTH} levels deep"):
            load_head(head)
    done = featx_cli("evaluate", head, "--cache", cache)  # the deepest: a RecursionError's traceback before
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "levels deep; featx heads nest about 20: it is not a head featx saved" in done.stderr
