"""Classes 1, 3 and 5 of #24: a model folder or spec file that lies is refused with a clear SpecError,
before anything is allocated from what it says (featx/specs/bounds.py)."""

from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from featx.errors import SpecError  # noqa: E402
from featx.specs.bounds import safetensors_header  # noqa: E402
from featx.specs.hfspec import preprocess_from_processor  # noqa: E402
from featx.specs.registry import get_spec  # noqa: E402


def copy(folder: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


def edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("changes, match", [
    ({"size": {"height": 40000, "width": 40000}}, r"size/crop_size=40000 is above featx's bound of 2048.*FEATX_MAX_IMAGE_SIDE=40000"),
    ({"size": {"height": 30000, "width": 30000}}, r"above featx's bound"),
    ({"image_std": ["a", "b", "c"]}, r"image_std=\['a', 'b', 'c'\] must be 3 finite positive numbers"),
    ({"image_std": [0.5, 0.0, 0.5]}, r"image_std=.* must be 3 finite positive numbers"),
    ({"image_mean": [0.5, 0.5]}, r"image_mean=.* must be 3 finite numbers"),
    ({"size": {"height": "huge", "width": "huge"}}, r"preprocessor_config.json\): a setting has the wrong type"),
])
def test_a_processor_config_that_lies_is_refused_before_allocation(hf_models, tmp_path, changes, match):
    folder = copy(hf_models["vit"], tmp_path, "vit")
    edit_json(folder / "preprocessor_config.json", **changes)
    with pytest.raises(SpecError, match=match):
        get_spec(f"hf:{folder}")


def test_the_image_bound_is_overridable(monkeypatch):
    d = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 3000, "width": 3000}}
    with pytest.raises(SpecError, match="FEATX_MAX_IMAGE_SIDE=3000"):
        preprocess_from_processor(d)
    monkeypatch.setenv("FEATX_MAX_IMAGE_SIDE", "3000")
    assert preprocess_from_processor(d)["size"] == 3000


def test_a_spec_file_asking_for_a_huge_input_is_refused_under_a_memory_limit(tmp_path):
    """The spec's own size is checked before any array exists: a child under a 2 GiB address-space limit."""
    (tmp_path / "huge.toml").write_text(
        'name = "huge"\nmodality = "image"\ndim = 8\n[source]\nkind = "onnx"\npath = "x.onnx"\n'
        '[preprocess]\nsize = 50000\nresize = 60000\n')
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from featx.specs.registry import load_spec_file\n"
            "from featx.errors import SpecError\n"
            "try:\n    load_spec_file(sys.argv[1]).resolve()\nexcept SpecError as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "huge.toml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "preprocess.size=50000 is above featx's bound" in out.stdout


def test_a_text_folder_without_its_tokenizer_is_refused(hf_models, tmp_path):
    folder = copy(hf_models["bert"], tmp_path, "bert")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(SpecError, match=r"no tokenizer files.*every word would become \[UNK\]"):
        get_spec(f"hf:{folder}")


def test_a_garbage_tokenizer_is_a_spec_error(hf_models, tmp_path):
    folder = copy(hf_models["bert"], tmp_path, "bert")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    (folder / "vocab.txt").unlink(missing_ok=True)
    with pytest.raises(SpecError, match="its tokenizer cannot be loaded"):
        get_spec(f"hf:{folder}")


def test_max_length_above_the_position_embeddings_is_refused_at_spec_time(hf_models, tmp_path, monkeypatch):
    folder = hf_models["bert"]  # 128 position embeddings
    (tmp_path / "long.toml").write_text(
        f'name = "long"\nmodality = "text"\n[source]\nkind = "hf"\nmodel = "{folder}"\n'
        '[preprocess]\nmax_length = 4096\n')
    monkeypatch.setenv("FEATX_MODELS", str(tmp_path))
    with pytest.raises(SpecError, match=r"max_length 4096 is more than the model's 128 position embeddings"):
        get_spec("long")


def test_pickle_only_weights_are_refused(hf_models, tmp_path):
    folder = copy(hf_models["vit"], tmp_path, "vit")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(SpecError, match=r"pytorch_model.bin \(pickle files, which can run code"):
        get_spec(f"hf:{folder}")


@pytest.mark.parametrize("damage", ["truncated", "oversized", "not-json", "short"])
def test_a_bad_safetensors_header_is_refused(hf_models, tmp_path, damage):
    folder = copy(hf_models["vit"], tmp_path, "vit")
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    if damage == "truncated":
        path.write_bytes(raw[: 8 + n + 100])
    elif damage == "oversized":
        path.write_bytes(struct.pack("<Q", 1 << 60) + raw[8:])
    elif damage == "not-json":
        path.write_bytes(raw[:8] + b"\xff" * n + raw[8 + n:])
    else:
        path.write_bytes(raw[:5])
    with pytest.raises(SpecError, match=r"model.safetensors: not a valid safetensors file"):
        get_spec(f"hf:{folder}")
    with pytest.raises(SpecError):
        safetensors_header(path)


def test_a_config_that_disagrees_with_the_weights_is_a_spec_error(hf_models, tmp_path):
    import featx

    folder = copy(hf_models["vit"], tmp_path, "vit")
    edit_json(folder / "config.json", hidden_size=64, intermediate_size=74)
    with pytest.raises(SpecError, match="config.json and weights must come from the same save_pretrained"):
        featx.load_backbone(f"hf:{folder}")


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused(tmp_path):
    """MiniLM's 30,522-token tokenizer beside a model with 1,000 input embeddings: ids past 999 would index
    nothing (or, in ONNX Runtime, garbage); refused at export, naming both sizes."""
    import featx
    from tiny_hf import build_bert

    folder = build_bert(tmp_path / "bert-1000", vocab_size=1000)
    with pytest.raises(SpecError, match=r"the tokenizer has 30522 tokens but the model only 1000 input embeddings"):
        featx.load_backbone(f"hf:{folder}")
    matched = build_bert(tmp_path / "bert-30522")  # the same folder with its own vocabulary exports
    assert featx.load_backbone(f"hf:{matched}").embed(["a tokenizer that fits its model"]).shape == (1, 32)


def test_the_parity_gate_is_relative_to_the_features_scale(tmp_path):
    """Features ~1e6 differ by ~0.1 in float32 arithmetic between torch and ONNX Runtime: they export."""
    torch = pytest.importorskip("torch")
    from featx.specs.registry import BackboneSpec, ImagePreprocess
    from featx.torchmodels.export import export_module

    class Huge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x).mean((2, 3)) * 1e6 + 3e6

    spec = BackboneSpec(name="huge", modality="image", dim=8, source={"kind": "test"},
                        preprocess=ImagePreprocess(size=32, resize=36))
    result = export_module(Huge(), spec, tmp_path / "out", fuse=False)
    assert result.max_abs_diff <= 1e-4 * 4e6 and result.onnx_path.is_file()


def test_zero_shot_refuses_duplicate_prompts_and_missing_labels(hf_models):
    import featx
    from featx.errors import InputError, ParameterError

    model = f"hf:{hf_models['clip']}"
    with pytest.raises(ParameterError, match=r"classes whose prompts differ \(several give 'a photo of a cat.'\)"):
        featx.ZeroShotClassifier(model=model, classes={0: "cat", 1: "cat"}).fit()
    with pytest.raises(ParameterError, match=r"not None/NaN \(a missing label is never a class\)"):
        featx.ZeroShotClassifier(model=model, classes=["dog", None]).fit()
    with pytest.raises(InputError, match=r"y holds None/NaN labels"):
        featx.ZeroShotClassifier(model=model).fit(None, ["dog", None, "cat"])
    fitted = featx.ZeroShotClassifier(model=model).fit(None, [3, 10, 2])
    assert fitted.classes_.tolist() == [2, 3, 10]
