"""featx.fuse: text encoders exported into ONNX Runtime's fused attention kernels compute the same
embeddings as the op-by-op graph and as PyTorch."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest

import featx
from featx.torchmodels.export import _wrappers, export, export_module
from featx.specs.exported import spec_path_for
from featx.torchmodels.fuse import eager_attention, encoder_shape
from featx.specs.spec import BackboneSpec, TextPreprocess

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "I bought these dog treats for my puppy and she absolutely loves them.",
    "ok",
    "The package arrived damaged and half the chips were crushed, " * 3,
    "Café crème, naïve façade.",
    "Best green tea I have had in years; smooth, not bitter at all.",
]


def tiny_bert(layers: int = 2, heads: int = 4, hidden: int = 32):
    _, MeanPooledText = _wrappers()
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=48)
    return MeanPooledText(transformers.BertModel(config).eval(), normalize=True).eval()


def ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, minilm_tokenizer_json):
    """The same tiny BERT exported fused and unfused, and the torch module."""
    module = tiny_bert()
    spec = BackboneSpec(name="tiny-bert", modality="text", source={"kind": "test"},
                        preprocess=TextPreprocess(max_length=64), normalize=True)
    out = {}
    for fuse in (True, False):
        folder = tmp_path_factory.mktemp(f"fuse-{fuse}")
        out[fuse] = export_module(module, spec, folder, tokenizer_json=minilm_tokenizer_json, fuse=fuse).onnx_path
    return module, out


def test_encoder_shape_reads_the_config():
    assert encoder_shape(tiny_bert(heads=4, hidden=32)) == (4, 32)
    assert encoder_shape(torch.nn.Sequential(torch.nn.Linear(2, 2))) is None


def test_eager_attention_is_restored():
    module = tiny_bert()
    before = module.model.config._attn_implementation
    assert before != "eager"
    with eager_attention(module):
        assert module.model.config._attn_implementation == "eager"
    assert module.model.config._attn_implementation == before


def test_fused_graph_uses_ort_kernels_and_is_recorded(exports):
    _, paths = exports
    fused, plain = ops(paths[True]), ops(paths[False])
    assert fused["Attention"] == 2 and fused["Softmax"] == 0  # one fused attention per layer
    assert plain["Attention"] == 0 and plain["Softmax"] == 2
    record = json.loads(spec_path_for(paths[True]).read_text())
    assert record["fusion"]["requested"] is True
    assert record["fusion"]["fused_ops"]["Attention"] == 2
    assert record["fusion"]["unfused_max_abs_diff"] <= 1e-4
    assert json.loads(spec_path_for(paths[False]).read_text())["fusion"] == {"requested": False, "fused_ops": {}}


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_fused_equals_unfused_and_torch(exports, batch_size):
    module, paths = exports
    fused = featx.load_backbone(paths[True])
    plain = featx.load_backbone(paths[False])
    got = fused.embed(TEXTS, batch_size=batch_size)
    np.testing.assert_allclose(got, plain.embed(TEXTS, batch_size=batch_size), atol=1e-5)
    feeds = fused.prepare(TEXTS)
    with torch.no_grad():  # the module as the user runs it (its own attention implementation)
        ref = module(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids")))
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)


def test_real_minilm_is_fused(minilm_onnx):
    record = json.loads(spec_path_for(minilm_onnx).read_text())
    assert record["fusion"]["fused_ops"]["Attention"] == 6 == ops(minilm_onnx)["Attention"]
    assert record["parity"]["max_abs_diff"] <= 1e-4


def test_export_redoes_an_export_made_with_the_other_choice(minilm_onnx, tmp_path):
    plain = export("all-minilm-l6-v2", tmp_path, fuse=False)
    assert ops(plain.onnx_path)["Attention"] == 0
    fused = export("all-minilm-l6-v2", tmp_path)  # default fuse=True: the unfused export is not reused
    assert ops(fused.onnx_path)["Attention"] == 6 and fused.sha256 != plain.sha256
    a = featx.load_backbone(fused.onnx_path).embed(TEXTS)
    np.testing.assert_allclose(a, featx.load_backbone(minilm_onnx).embed(TEXTS), atol=1e-6)
