"""int8 and fp16 variants (featx.torchmodels.quantize, `featx export --quantize/--precision`): real ONNX Runtime
quantization of the tiny fixture models and of the real Lite0 / MiniLM exports, parity measured on
real images and sentences, specs and fingerprints that keep variants apart from fp32."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import featx
from featx.cli import main
from featx.machine import has_vnni
from featx.errors import ExportError, ParameterError, SpecError
from featx.files import sha256_file
from featx.specs.exported import variant_stem
from featx.torchmodels.provision import export_backbone
from featx.torchmodels.quantize import DEFAULT_CALIBRATION, MIN_COSINE, cosine_rows, default_calibration_images, quantize


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _initializer_types(path) -> set[int]:
    return {t.data_type for t in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def tiny_int8(tiny_image_onnx, tmp_path_factory):
    """tiny-image quantized to static int8 on 16 items of the default calibration set."""
    out = tmp_path_factory.mktemp("tiny-int8")
    return quantize(tiny_image_onnx, "int8", calibration_size=16, out_dir=out)


# --------------------------------------------------------------------------- tiny models
def test_tiny_image_int8_is_static_qdq_and_embeds(tiny_image_onnx, tiny_int8, sample_rgbs):
    r = tiny_int8
    assert r.onnx_path.name == "tiny-image-int8.onnx" and r.spec_path.name == "tiny-image-int8.json"
    assert r.method == "static-qdq-int8"
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _ops(r.onnx_path)
    assert onnx.TensorProto.INT8 in _initializer_types(r.onnx_path)  # int8 weights really stored
    fp32 = featx.load_backbone(tiny_image_onnx)
    int8 = featx.load_backbone(r.onnx_path)
    a, b = fp32.embed(sample_rgbs), int8.embed(sample_rgbs)
    assert b.shape == (2, 8) and b.dtype == np.float32 and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # it really is another model
    assert cosine_rows(a, b).min() >= 0.99


def test_quantized_spec_records_method_calibration_and_parity(tiny_image_onnx, tiny_int8):
    record = json.loads(tiny_int8.spec_path.read_text())
    q = record["quantization"]
    assert q["method"] == "static-qdq-int8" and q["precision"] == "int8"
    assert q["format"] == "QDQ" and q["per_channel"] is True and q["reduce_range"] is True
    assert q["base"] == {"name": "tiny-image", "file": "tiny-image.onnx", "sha256": sha256_file(tiny_image_onnx)}
    assert q["calibration"]["source"] == DEFAULT_CALIBRATION
    assert q["calibration"]["size"] == 16 and q["calibration"]["skipped"] == 0
    assert q["calibration"]["method"] == "minmax"
    assert q["exporting_cpu_vnni"] == has_vnni()
    p = record["parity"]
    assert p["n"] >= 3 and "real photos" in p["inputs"]
    assert MIN_COSINE["int8"] <= p["cosine_min"] <= p["cosine_mean"] <= 1.0 + 1e-9
    assert p["max_abs_diff"] > 0
    assert q["parity"]["cosine_mean"] == p["cosine_mean"]
    assert record["onnx"]["sha256"] == sha256_file(tiny_int8.onnx_path) == tiny_int8.sha256
    assert record["spec"]["name"] == "tiny-image-int8"
    assert record["onnx"]["inputs"][0]["type"] == "tensor(float)"


def test_variant_fingerprint_differs_from_fp32(tiny_image_onnx, tiny_int8):
    fp32, int8 = featx.load_backbone(tiny_image_onnx), featx.load_backbone(tiny_int8.onnx_path)
    assert int8.sha256 != fp32.sha256
    assert int8.name == "tiny-image-int8" != fp32.name
    assert int8.fingerprint_id != fp32.fingerprint_id
    assert int8.spec.preprocess == fp32.spec.preprocess  # same inputs, different model


def test_cache_keeps_fp32_and_int8_features_apart(tiny_image_onnx, tiny_int8, image_files, tmp_path):
    cache = tmp_path / "cache"
    featx.extract(image_files, model=tiny_image_onnx, cache=cache, progress=False)
    featx.extract(image_files, model=tiny_int8.onnx_path, cache=cache, progress=False)
    x32, _, ids32 = featx.load_features(cache, model="tiny-image")
    x8, _, ids8 = featx.load_features(cache, model="tiny-image-int8")
    assert list(ids32) == list(ids8) and x32.shape == x8.shape == (7, 8)
    assert not np.array_equal(x32, x8)
    np.testing.assert_array_equal(x8, featx.load_backbone(tiny_int8.onnx_path).embed(
        [str(image_files / i) for i in ids8]))


def test_tiny_image_fp16_keeps_fp32_io(tiny_image_onnx, tmp_path, sample_rgbs):
    r = quantize(tiny_image_onnx, "fp16", out_dir=tmp_path)
    assert r.onnx_path.name == "tiny-image-fp16.onnx" and r.method == "fp16"
    assert onnx.TensorProto.FLOAT16 in _initializer_types(r.onnx_path)
    model = onnx.load(str(r.onnx_path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    a = featx.load_backbone(tiny_image_onnx).embed(sample_rgbs)
    b = featx.load_backbone(r.onnx_path).embed(sample_rgbs)
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=5e-3, atol=5e-3)
    record = json.loads(r.spec_path.read_text())
    assert record["quantization"]["method"] == "fp16" and record["quantization"]["calibration"] is None
    assert record["parity"]["cosine_mean"] >= MIN_COSINE["fp16"]


def test_tiny_text_int8_is_dynamic_and_fp16(tiny_text_onnx, tmp_path):
    texts = ["The cookies were stale.", "Great coffee, would buy again!", "ok"]
    ref = featx.load_backbone(tiny_text_onnx).embed(texts)
    r8 = quantize(tiny_text_onnx, "int8", out_dir=tmp_path)
    assert r8.method == "dynamic-int8" and "DequantizeLinear" in _ops(r8.onnx_path)
    rec = json.loads(r8.spec_path.read_text())
    assert rec["quantization"]["calibration"] is None  # dynamic: ranges computed at run time
    assert rec["tokenizer"]["file"] == "tiny-text-int8.tokenizer.json"
    assert (tmp_path / "tiny-text-int8.tokenizer.json").is_file()
    got8 = featx.load_backbone(r8.onnx_path).embed(texts)
    assert cosine_rows(ref, got8).min() >= 0.99
    r16 = quantize(tiny_text_onnx, "fp16", out_dir=tmp_path)
    got16 = featx.load_backbone(r16.onnx_path).embed(texts)
    np.testing.assert_allclose(got16, ref, rtol=5e-3, atol=5e-3)


# --------------------------------------------------------------------------- calibration data
def test_calibration_on_a_user_folder_holds_items_out_for_parity(tiny_image_onnx, image_files, tmp_path):
    r = quantize(tiny_image_onnx, "int8", calibration=image_files, calibration_size=4, out_dir=tmp_path)
    q = r.record["quantization"]
    assert q["calibration"]["source"] == str(image_files.resolve())
    assert q["calibration"]["size"] == 4 and q["calibration"]["dataset_items"] == 7
    assert r.record["parity"]["inputs"].startswith("3 held-out items of ")
    assert r.record["parity"]["n"] >= 3 + 2  # + sklearn's two photos (and matplotlib's when present)


def test_undecodable_calibration_items_are_left_out_and_counted(tiny_image_onnx, image_files, tmp_path):
    (image_files / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.warns(RuntimeWarning, match="could not be decoded and were left out"):
        r = quantize(tiny_image_onnx, "int8", calibration=image_files, calibration_size=8, out_dir=tmp_path)
    calib = r.record["quantization"]["calibration"]
    assert calib["skipped"] == 1 and calib["size"] == 7


def test_calibration_data_that_never_decodes_is_an_export_error(tiny_image_onnx, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a.jpg", "b.png"):
        (bad / name).write_bytes(b"random bytes, not an image")
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parity set has the same bad files
        with pytest.raises(ExportError, match=r"none of the 2 calibration images could be decoded, e\.g\. a\.jpg"):
            quantize(tiny_image_onnx, "int8", calibration=bad, calibration_size=2, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == []


def test_calibration_of_the_wrong_modality_is_refused(tiny_image_onnx, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one sentence\nanother one\n")
    with pytest.raises(SpecError, match="holds texts but the model is an image backbone; give an image dataset"):
        quantize(tiny_image_onnx, "int8", calibration=texts, out_dir=tmp_path)


def test_default_calibration_set_is_real_and_deterministic():
    a = default_calibration_images(10, seed=3)
    b = default_calibration_images(10, seed=3)
    assert [i for i, _ in a] == [i for i, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert sum(i.startswith("photo-crop-") for i, _ in a) == 5
    assert sum(i.startswith("digits/") for i, _ in a) == 5
    assert all(rgb.dtype == np.uint8 and rgb.ndim in (2, 3) for _, rgb in a)


# --------------------------------------------------------------------------- reuse, refusal, errors
def test_a_matching_variant_is_reused_and_a_different_request_rebuilds(tiny_image_onnx, tmp_path):
    r1 = quantize(tiny_image_onnx, "int8", calibration_size=8, out_dir=tmp_path)
    mtime = os.stat(r1.onnx_path).st_mtime_ns
    r2 = quantize(tiny_image_onnx, "int8", calibration_size=8, out_dir=tmp_path)
    assert r2.sha256 == r1.sha256 and os.stat(r2.onnx_path).st_mtime_ns == mtime
    assert r2.base_path == r1.base_path == Path(tiny_image_onnx)
    r3 = quantize(tiny_image_onnx, "int8", calibration_size=12, out_dir=tmp_path)
    assert r3.record["quantization"]["calibration"]["size"] == 12
    # a damaged variant file is rebuilt, not reused
    r3.onnx_path.write_bytes(r3.onnx_path.read_bytes()[:-10])
    r4 = quantize(tiny_image_onnx, "int8", calibration_size=12, out_dir=tmp_path)
    assert sha256_file(r4.onnx_path) == r4.sha256


def test_a_variant_under_the_cosine_floor_is_not_saved(tiny_image_onnx, tmp_path):
    with pytest.raises(ExportError, match=r"under the floor 1; the variant was not saved"):
        quantize(tiny_image_onnx, "int8", calibration_size=8, out_dir=tmp_path, min_cosine=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no model, no spec, no temp folder


def test_a_variant_is_not_quantized_again(tiny_int8):
    with pytest.raises(SpecError, match="already a static-qdq-int8 variant"):
        quantize(tiny_int8.onnx_path, "int8")


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "int4"}, "The 'mode' parameter of quantize must be one of ('int8', 'fp16'). Got 'int4' instead."),
    ({"calibration_size": 0}, "The 'calibration_size' parameter of quantize must be an int in [1, inf). Got 0 instead."),
    ({"calibration_method": "entropy"}, "The 'calibration_method' parameter of quantize must be one of "
                                        "('minmax', 'percentile'). Got 'entropy' instead."),
])
def test_parameter_errors(tiny_image_onnx, kwargs, message):
    with pytest.raises(ParameterError) as e:
        quantize(tiny_image_onnx, **kwargs)
    assert str(e.value) == message


def test_variant_stem():
    assert variant_stem("efficientnet-lite0", "int8") == "efficientnet-lite0-int8"


def test_cosine_rows():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 1.0, -1.0])


# --------------------------------------------------------------------------- CLI
def test_cli_export_quantize_an_onnx_file(tiny_image_onnx, tmp_path, capsys):
    code = main(["export", str(tiny_image_onnx), "--quantize", "int8", "--calibration-size", "8",
                 "--out", str(tmp_path)])
    assert code == 0
    out, err = capsys.readouterr()
    assert f"int8      {tmp_path / 'tiny-image-int8.onnx'} (static-qdq-int8)" in out
    assert "calibrated on 8 items of default" in out
    assert "parity    cosine vs fp32 mean" in out
    assert ("has no VNNI" in err) == (not has_vnni())


def test_cli_export_rejects_int8_with_fp16(tiny_image_onnx, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(tiny_image_onnx), "--quantize", "int8", "--precision", "fp16"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_export_of_an_onnx_file_needs_a_variant(tiny_image_onnx, capsys):
    assert main(["export", str(tiny_image_onnx)]) == 2
    assert "give --quantize int8 or --precision fp16" in capsys.readouterr().err


def test_cli_calibration_without_a_variant_is_an_error(capsys):
    assert main(["export", "efficientnet-lite0", "--calibration", "builtin:digits"]) == 2
    assert "--calibration and --calibration-size go with --quantize int8" in capsys.readouterr().err


def test_export_api_rejects_both_variants():
    with pytest.raises(ParameterError, match="not both"):
        export_backbone("efficientnet-lite0", quantize="int8", precision="fp16")


def test_export_backbone_of_an_onnx_file_makes_only_the_variant(tiny_image_onnx, tmp_path):
    with pytest.raises(ParameterError, match="already an ONNX file"):
        export_backbone(tiny_image_onnx)
    made = export_backbone(tiny_image_onnx, tmp_path, quantize="int8", calibration_size=16)
    assert made.export is None and made.variant.method == "static-qdq-int8"
    assert made.onnx_path == made.variant.onnx_path == tmp_path / "tiny-image-int8.onnx"
    assert (made.sha256, made.max_abs_diff) == (made.variant.sha256, made.variant.max_abs_diff)


# --------------------------------------------------------------------------- real backbones
@pytest.mark.slow
def test_lite0_int8_close_to_fp32_on_real_photos(lite0_onnx, tmp_path, sample_rgbs):
    """Static int8 Lite0 (64 default calibration images): cosine >= 0.95 to fp32 on real photos."""
    from matplotlib import cbook

    r = quantize(lite0_onnx, "int8", calibration_size=64, out_dir=tmp_path)
    assert r.onnx_path.stat().st_size < 0.4 * Path(lite0_onnx).stat().st_size  # int8 weights
    photos = list(sample_rgbs) + [str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    a = featx.load_backbone(lite0_onnx).embed(photos)
    b = featx.load_backbone(r.onnx_path).embed(photos)
    assert b.shape == (3, 1280)
    cos = cosine_rows(a, b)
    assert cos.min() >= 0.95, cos
    assert r.record["parity"]["cosine_mean"] >= 0.9


@pytest.mark.slow
def test_lite0_fp16_and_export_api(lite0_onnx, tmp_path, sample_rgbs):
    import shutil

    models = tmp_path / "models"  # a copy of the session's export, so that export_backbone() reuses it
    models.mkdir()
    for path in (Path(lite0_onnx), Path(lite0_onnx).with_suffix(".json")):
        shutil.copy(path, models / path.name)
    result = export_backbone("efficientnet-lite0", out_dir=models, precision="fp16")
    assert result.onnx_path == models / "efficientnet-lite0-fp16.onnx"
    assert sorted(p.name for p in models.iterdir()) == [
        "efficientnet-lite0-fp16.json", "efficientnet-lite0-fp16.onnx", "efficientnet-lite0.json",
        "efficientnet-lite0.onnx"]
    a = featx.load_backbone(lite0_onnx).embed(sample_rgbs)
    b = featx.load_backbone(result.onnx_path).embed(sample_rgbs)
    assert cosine_rows(a, b).min() >= 0.999
    assert result.max_abs_diff < 0.1


@pytest.mark.slow
def test_minilm_int8_dynamic_and_fp16(minilm_onnx, tmp_path):
    texts = ["These cookies arrived stale and crumbled, I would not order them again.",
             "Best green tea I have had in years: fresh, fragrant and fairly priced.",
             "The dog loves these treats."]
    ref = featx.load_backbone(minilm_onnx).embed(texts)
    r8 = quantize(minilm_onnx, "int8", out_dir=tmp_path)
    assert r8.method == "dynamic-int8"
    assert r8.onnx_path.stat().st_size < 0.4 * Path(minilm_onnx).stat().st_size
    got = featx.load_backbone(r8.onnx_path).embed(texts)
    assert cosine_rows(ref, got).min() >= 0.97
    r16 = quantize(minilm_onnx, "fp16", out_dir=tmp_path)
    got16 = featx.load_backbone(r16.onnx_path).embed(texts)
    assert cosine_rows(ref, got16).min() >= 0.999


def test_a_variant_in_featx_home_loads_by_name(tiny_image_onnx, featx_home, sample_rgbs):
    result = quantize(tiny_image_onnx, "int8", calibration_size=16, out_dir=featx_home / "models")
    backbone = featx.load_backbone("tiny-image-int8")
    assert backbone.onnx_path == result.onnx_path and backbone.name == "tiny-image-int8"
    assert backbone.embed(sample_rgbs).shape == (2, 8)
