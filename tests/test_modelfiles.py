"""featx.modelfiles: where exported files live, their records, and name -> file (no torch needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from featx.errors import SpecError
from featx.files import sha256_file
from featx.specs.exported import (
    ModelFile,
    copy_tokenizer,
    exported_dir,
    find_onnx,
    locate_onnx,
    model_record,
    publish,
    read_spec_file,
    spec_path_for,
    staging_dir,
    write_spec,
)
from featx.engine.runtime import Session


def test_an_outside_models_record_keeps_its_layout(tiny_image_onnx, tmp_path):
    path = tmp_path / "outside.onnx"
    shutil.copyfile(tiny_image_onnx, path)
    spec = ModelFile.read(tiny_image_onnx).spec
    record = json.loads(write_spec(path, spec).read_text())
    assert record == {"featx_spec_format": 1, "spec": spec.to_dict(),
                      "onnx": {"file": "outside.onnx", "sha256": sha256_file(path)}, "tokenizer": None,
                      "exporter": {"method": "external"}, "parity": {"max_abs_diff": None}}


def test_publish_moves_model_tokenizer_and_record(tiny_text_onnx, tmp_path):
    source = ModelFile.read(tiny_text_onnx)
    out = tmp_path / "models"
    out.mkdir()
    with staging_dir(out, "copy") as tmp:
        staged = Path(tmp) / "copy.onnx"
        shutil.copyfile(tiny_text_onnx, staged)
        record = model_record(source.spec, staged, session=Session(staged, providers="cpu"), opset=17,
                              tokenizer=copy_tokenizer(source.tokenizer_path, tmp, "copy"),
                              exporter={"method": "test"}, parity={"max_abs_diff": 0.0}, fusion={"fused_ops": {}})
        assert not spec_path_for(out / "copy.onnx").exists()
        onnx_path = publish(staged, record, out)
        assert sorted(p.name for p in Path(tmp).iterdir()) == []  # everything moved
    assert onnx_path == out / "copy.onnx"
    assert sorted(p.name for p in out.iterdir()) == ["copy.json", "copy.onnx", "copy.tokenizer.json"]
    written = read_spec_file(spec_path_for(onnx_path))
    assert written["onnx"]["inputs"][0]["name"] == "input_ids" and written["onnx"]["opset"] == 17
    assert written["fusion"] == {"fused_ops": {}} and written["tokenizer"]["file"] == "copy.tokenizer.json"
    model = ModelFile.read(onnx_path)
    assert model.tokenizer_path == out / "copy.tokenizer.json" and model.spec == source.spec


def test_names_find_their_files_and_only_complete_exports(tiny_image_onnx, featx_home):
    assert exported_dir() == featx_home / "models"
    with pytest.raises(SpecError, match="unknown backbone 'no-such-model'"):
        find_onnx("no-such-model")
    with pytest.raises(SpecError, match="no ONNX model at"):
        find_onnx(featx_home / "missing.onnx")
    assert find_onnx(tiny_image_onnx) == tiny_image_onnx
    exported_dir().mkdir(parents=True, exist_ok=True)
    half = exported_dir() / "half-done.onnx"
    shutil.copyfile(tiny_image_onnx, half)  # a model whose record is not published yet
    try:
        with pytest.raises(SpecError, match="unknown backbone 'half-done'"):
            find_onnx("half-done")
        shutil.copyfile(spec_path_for(tiny_image_onnx), spec_path_for(half))
        assert find_onnx("half-done") == half == locate_onnx("half-done")
    finally:
        half.unlink()
        spec_path_for(half).unlink(missing_ok=True)
    with pytest.raises(SpecError, match="not exported yet; run `featx export timm:resnet50`"):
        locate_onnx("timm:resnet50")

