"""Class 4 of #24: a deployed file's featx.* metadata is checked against its graph before use.

Reversed or wrong-length classes, ill-typed modality/preprocess/classes, a preprocess asking for a
huge input, and a tokenizer path that leaves the folder are each a DeployError naming the file and
the key, never a KeyError, a wrong column name, or a file opened outside the model's folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

import onnx  # noqa: E402

import featx  # noqa: E402
from featx.cli import main  # noqa: E402
from featx.deploy import DeployedModel, deploy_head  # noqa: E402
from featx.errors import DeployError  # noqa: E402
from featx.sources import open_dataset, subset  # noqa: E402


@pytest.fixture(scope="module")
def tiny_deployed(tiny_image_onnx, tmp_path_factory) -> Path:
    """A logistic-regression head on the tiny image backbone's features of 120 digits, deployed."""
    root = tmp_path_factory.mktemp("hostile-deploy")
    featx.extract(subset(open_dataset("builtin:digits:train"), 120, seed=0), tiny_image_onnx, root / "cache",
                  progress=False)
    assert main(["train", str(root / "cache"), "--head", "logreg", "--cv", "3", "--out", str(root / "heads"),
                 "--jobs", "1", "--model", str(tiny_image_onnx)]) == 0
    out = root / "tiny.onnx"
    deploy_head(root / "heads" / "logreg.skops", out, parity_items=16)
    return out


def edited(src: Path, tmp_path: Path, **props) -> Path:
    model = onnx.load(str(src))
    current = {p.key: p.value for p in model.metadata_props}
    for key, value in props.items():
        current[f"featx.{key}"] = value if isinstance(value, str) else json.dumps(value)
        if value is None:
            del current[f"featx.{key}"]
    del model.metadata_props[:]
    for key, value in current.items():
        model.metadata_props.add(key=key, value=value)
    out = tmp_path / "edited.onnx"
    onnx.save(model, str(out))
    return out


def classes_of(path: Path) -> list:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["featx.classes"])


def test_the_untouched_file_loads(tiny_deployed):
    model = DeployedModel(tiny_deployed)
    assert model.classes == [str(c) for c in classes_of(tiny_deployed)] and len(model.classes) == 10


@pytest.mark.parametrize("change, match", [
    ("reversed", r"are not the classes its graph predicts, in order"),
    ("shorter", r"names 9 classes but the graph outputs 10 probabilities"),
    ("renamed", r"are not the classes its graph predicts"),
    ("not-a-list", r"featx.classes must be a non-empty JSON list"),
    ("missing", r"featx.classes must be a non-empty JSON list"),
    ("repeated", r"repeats a class name"),
])
def test_edited_classes_are_refused(tiny_deployed, tmp_path, change, match):
    classes = classes_of(tiny_deployed)
    value = {"reversed": classes[::-1], "shorter": classes[:-1], "renamed": ["x" + str(c) for c in classes],
             "not-a-list": "abc", "missing": None, "repeated": [classes[0]] * len(classes)}[change]
    with pytest.raises(DeployError, match=match):
        DeployedModel(edited(tiny_deployed, tmp_path, classes=value))


@pytest.mark.parametrize("props, match", [
    ({"modality": None}, r"featx.modality must be one of \('image', 'text'\), got None"),
    ({"modality": 7}, r"featx.modality must be one of"),
    ({"preprocess": "big"}, r"featx.preprocess must be a JSON object"),
    ({"preprocess": {"size": 60000, "resize": 60000}}, r"preprocess.size=60000 is above featx's bound"),
    ({"preprocess": {"size": 32, "std": ["x", 1, 1]}}, r"preprocess.std=.* must be 3 finite numbers"),
    ({"backbone": [1, 2]}, None),
])
def test_ill_typed_metadata_is_refused_or_ignored(tiny_deployed, tmp_path, props, match):
    path = edited(tiny_deployed, tmp_path, **props)
    if match is None:  # an ill-typed backbone record only names the file
        assert DeployedModel(path).spec.name == path.stem
        return
    with pytest.raises(DeployError, match=match):
        DeployedModel(path)


def test_a_tokenizer_path_leaving_the_folder_is_never_opened(tiny_deployed, tmp_path):
    path = edited(tiny_deployed, tmp_path, modality="text", preprocess={"max_length": 16},
                  tokenizer={"file": "../../../../etc/passwd"})
    with pytest.raises(DeployError, match=r"featx.tokenizer.file='../../../../etc/passwd' leaves its folder"):
        DeployedModel(path)


def test_cli_predict_with_edited_classes_exits_1(tiny_deployed, tmp_path, capsys):
    shutil.copy(tiny_deployed, tmp_path / "orig.onnx")
    path = edited(tiny_deployed, tmp_path, classes=classes_of(tiny_deployed)[::-1])
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "x.png")
    assert main(["predict", str(path), str(folder)]) == 1
    err = capsys.readouterr().err
    assert "not the classes its graph predicts" in err and "Traceback" not in err
