"""featx.persist: heads saved with skops and loaded only when every type in the file is trusted."""

from __future__ import annotations

import json
import pickle
import zipfile

import joblib
import numpy as np
import pytest
import skops.io as sio

import featx
from featx.errors import HeadError, UntrustedTypeError
from featx.heads import HEADS, select_head
from featx.heads.persist import TRUSTED_TYPES, file_types, load_head, metadata_path, read_metadata, save_head
from featx.sources import open_dataset, subset


class SideEffect:
    """Writes a marker file when unpickled/unserialised: stands for code run by loading a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        with open(state["marker"], "w") as f:
            f.write("code ran")
        self.__dict__.update(state)


@pytest.fixture(scope="module")
def features(tmp_path_factory, tiny_image_onnx):
    """Tiny-backbone features (8-d) of 300 real digits, through the cache; 8-d makes kNN build a KD-tree."""
    cache = tmp_path_factory.mktemp("persist") / "cache"
    featx.extract(subset(open_dataset("builtin:digits"), 300, seed=1), tiny_image_onnx, cache, progress=False)
    X, y, _ = featx.load_features(cache)
    return X, y


@pytest.fixture(scope="module")
def heads(features):
    X, y = features
    grids = {"logreg": {"power": ["sqrt"], "scale": ["l2"], "C": [10.0]},
             "svm": {"power": ["none"], "scale": ["standard"], "kernel": ["rbf"], "C": [10.0]},
             "knn": {"power": ["sqrt"], "scale": ["standard"], "n_neighbors": [3], "metric": ["euclidean"]}}
    return {kind: select_head(kind, X, y, cv=3, n_jobs=1, grid=grids[kind]) for kind in HEADS}


@pytest.mark.parametrize("kind", HEADS)
def test_round_trip_gives_identical_predictions(kind, heads, features, tmp_path):
    X, y = features
    result = heads[kind]
    path = save_head(result.best_estimator, tmp_path / kind, metadata={"backbone": "tiny-image", **result.summary()})
    assert path == tmp_path / f"{kind}.skops" and metadata_path(path) == tmp_path / f"{kind}.json"
    loaded = load_head(path)
    assert type(loaded) is type(result.best_estimator)
    np.testing.assert_array_equal(loaded.predict(X), result.best_estimator.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), result.best_estimator.predict_proba(X))
    meta = read_metadata(path)
    assert meta["backbone"] == "tiny-image" and meta["kind"] == kind
    assert meta["classes"] == sorted(set(y)) and meta["format"] == 1
    assert meta["featx"] == featx.__version__ and len(meta["sha256"]) == 64
    assert set(file_types(path)) <= TRUSTED_TYPES


def test_file_types_of_a_knn_head_name_its_tree(heads, tmp_path):
    path = save_head(heads["knn"].best_estimator, tmp_path / "knn")
    types = file_types(path)
    assert "sklearn.neighbors._kd_tree.KDTree" in types and "featx.heads.SignedSqrt" in types


def test_loading_never_unpickles(heads, features, tmp_path, monkeypatch):
    path = save_head(heads["svm"].best_estimator, tmp_path / "svm")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle/joblib must not be used to load a head")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (joblib, "load")):
        monkeypatch.setattr(module, name, forbidden)
    X, _ = features
    assert load_head(path).predict(X[:5]).shape == (5,)


def test_untrusted_code_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.skops"
    sio.dump({"head": SideEffect(marker)}, path)
    name = f"{SideEffect.__module__}.SideEffect"
    with pytest.raises(UntrustedTypeError, match=f"not loaded: {name}\\."):
        load_head(path)
    assert not marker.exists()
    # what the refusal prevented: trusting the type runs its code
    sio.load(path, trusted=[name])
    assert marker.read_text() == "code ran"


def test_functions_and_foreign_estimators_are_refused(features, tmp_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = features
    forest = make_pipeline(FunctionTransformer(np.sqrt), RandomForestClassifier(n_estimators=2, random_state=0))
    path = tmp_path / "forest.skops"
    sio.dump(forest.fit(np.abs(X), y), path)
    with pytest.raises(UntrustedTypeError) as info:
        load_head(path)
    msg = str(info.value)
    for name in ("numpy.sqrt", "sklearn.ensemble._forest.RandomForestClassifier",
                 "sklearn.preprocessing._function_transformer.FunctionTransformer", "sklearn.tree._tree.Tree"):
        assert name in msg
    assert "sklearn.pipeline.Pipeline" not in msg.split("not loaded:")[1].split(".")[0]

    evil = tmp_path / "eval.skops"
    sio.dump(make_pipeline(FunctionTransformer(eval)), evil)
    with pytest.raises(UntrustedTypeError, match="builtins.eval"):
        load_head(evil)
    # an explicitly widened list is honoured
    assert load_head(path, trusted_types=TRUSTED_TYPES | set(file_types(path))).predict(np.abs(X[:3])).shape == (3,)


def test_damaged_missing_and_foreign_files(heads, tmp_path):
    with pytest.raises(HeadError, match="no saved head at"):
        load_head(tmp_path / "missing.skops")
    (tmp_path / "junk.skops").write_bytes(b"not a zip file at all")
    with pytest.raises(HeadError, match="is not a skops head file"):
        load_head(tmp_path / "junk.skops")
    with zipfile.ZipFile(tmp_path / "noschema.skops", "w") as z:
        z.writestr("other.json", "{}")
    with pytest.raises(HeadError, match="is not a skops head file"):
        load_head(tmp_path / "noschema.skops")

    path = save_head(heads["logreg"].best_estimator, tmp_path / "logreg")
    other = save_head(heads["knn"].best_estimator, tmp_path / "other")
    path.write_bytes(other.read_bytes())  # replaced after saving: the metadata no longer matches
    with pytest.raises(HeadError, match="sha256 differs"):
        load_head(path)
    metadata_path(path).unlink()  # without metadata the file still loads (it is checked type by type)
    assert load_head(path) is not None
    with pytest.raises(HeadError, match="no metadata beside the head"):
        read_metadata(path)

    sio.dump({"just": "data"}, tmp_path / "data.skops")
    with pytest.raises(HeadError, match="holds a dict, not a fitted head"):
        load_head(tmp_path / "data.skops")


def test_save_errors(heads, tmp_path):
    from featx.heads import head_pipeline

    with pytest.raises(HeadError, match="cannot save an unfitted head"):
        save_head(head_pipeline("logreg"), tmp_path / "x")
    with pytest.raises(HeadError, match="JSON-serialisable"):
        save_head(heads["logreg"].best_estimator, tmp_path / "y", metadata={"bad": object()})
    assert not (tmp_path / "y.skops").exists()
    future = save_head(heads["logreg"].best_estimator, tmp_path / "z")
    meta = json.loads(metadata_path(future).read_text())
    metadata_path(future).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(HeadError, match="head format 99"):
        read_metadata(future)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
