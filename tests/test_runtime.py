"""featx.runtime: providers, input validation and the lazy, picklable session, on real ONNX models."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from featx.errors import ModelInputError, SpecError
from featx.engine.runtime import Session, cuda_status, default_threads, resolve_providers

CPU = "CPUExecutionProvider"


# --------------------------------------------------------------------------- providers
@pytest.mark.parametrize("request_", ["cpu", "CPU", "CPUExecutionProvider", ["cpu"], ["CPUExecutionProvider"], " cpu , "])
def test_cpu_provider_names(request_):
    assert resolve_providers(request_) == [CPU]


def test_cpu_is_always_appended_as_fallback():
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        pytest.skip("no CUDA provider in this onnxruntime build")
    assert resolve_providers("cuda") == ["CUDAExecutionProvider", CPU]
    assert resolve_providers("gpu,cpu") == ["CUDAExecutionProvider", CPU]


@pytest.mark.parametrize("bad", ["npu", "CoreMLExecutionProvider", ["cpu", "quantum"]])
def test_unknown_provider_lists_available(bad):
    with pytest.raises(SpecError, match="is not available in this onnxruntime; available: ") as e:
        resolve_providers(bad)
    assert CPU in str(e.value)


def _have_nvidia_driver() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def test_auto_providers_are_cuda_exactly_when_the_build_and_the_driver_allow():
    """The expectation comes from onnxruntime and the driver directly, not from featx's own cuda_status."""
    cuda_here = "CUDAExecutionProvider" in ort.get_available_providers() and _have_nvidia_driver()
    expected = ["CUDAExecutionProvider", CPU] if cuda_here else [CPU]
    assert resolve_providers(None) == expected
    assert resolve_providers("auto") == expected
    usable, why = cuda_status()
    assert usable is cuda_here and isinstance(why, str) and why


@pytest.mark.skipif(_have_nvidia_driver(), reason="this machine has an NVIDIA driver")
def test_auto_is_cpu_only_without_a_driver():
    assert resolve_providers(None) == [CPU]
    usable, why = cuda_status()
    assert not usable
    assert "libcuda" in why or "no CUDA provider" in why


@pytest.mark.skipif(_have_nvidia_driver(), reason="this machine has an NVIDIA driver")
def test_no_cuda_noise_on_a_cpu_machine(tiny_image_onnx, tmp_path):
    """Loading and running a backbone with default providers prints nothing about CUDA."""
    code = textwrap.dedent(f"""
        import numpy as np, featx
        bb = featx.load_backbone({str(tiny_image_onnx)!r})
        x = bb.embed([np.zeros((20, 30, 3), np.uint8), np.full((9, 9), 200, np.uint8)])
        assert x.shape == (2, 8), x.shape
        print("providers", bb.session.active_providers)
    """)
    env = dict(os.environ, PYTHONWARNINGS="always")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "providers ['CPUExecutionProvider']" in proc.stdout
    noisy = [line for line in proc.stderr.splitlines() if "cuda" in line.lower() or "libcudart" in line.lower()]
    assert noisy == [], proc.stderr


@pytest.mark.skipif(_have_nvidia_driver() or "CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="needs a CUDA-enabled onnxruntime on a machine without a driver")
def test_explicit_cuda_fallback_is_reported(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cuda")
    with pytest.warns(RuntimeWarning, match="fell back from CUDAExecutionProvider to CPUExecutionProvider"):
        assert s.active_providers == [CPU]


# --------------------------------------------------------------------------- session basics
def test_session_is_lazy_and_picklable(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu", threads=1)
    assert s._session is None  # nothing loaded until used
    x = np.random.default_rng(0).normal(size=(3, 3, 20, 24)).astype(np.float32)
    y = s.run({"pixel_values": x})
    assert y.shape == (3, 8) and y.dtype == np.float32
    blob = pickle.dumps(s)
    s2 = pickle.loads(blob)
    assert s2._session is None and s._session is not None
    np.testing.assert_array_equal(s2.run({"pixel_values": x}), y)
    assert s2.input_names == ["pixel_values"]
    assert s2.active_providers == [CPU]


def tiny_image_reference(onnx_path, x: np.ndarray) -> np.ndarray:
    """The tiny image net in numpy: conv 3x3 (pad 1) + relu + global average pool."""
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}
    w, b = weights["conv_w"].astype(np.float64), weights["conv_b"].astype(np.float64)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n, c, h, w, 3, 3
    conv = np.einsum("nchwij,ocij->nohw", patches, w) + b[None, :, None, None]
    return np.maximum(conv, 0).mean(axis=(2, 3))


def test_dynamic_height_width_and_batch(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 8, 8), (5, 3, 33, 17)]:
        x = rng.normal(size=shape).astype(np.float32)
        y = s.run({"pixel_values": x})
        assert y.shape == (shape[0], 8)
        np.testing.assert_allclose(y, tiny_image_reference(tiny_image_onnx, x), atol=1e-5)


def test_default_threads():
    assert 1 <= default_threads() <= (os.cpu_count() or 1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_default_threads_follow_the_cores_this_process_may_use():
    """A process pinned to one core gets one thread, whatever the machine has."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from featx.engine.runtime import default_threads; print(default_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "fake.onnx"
    path.write_bytes(b"definitely not protobuf")
    s = Session(path, providers="cpu")
    with pytest.raises(SpecError, match="onnxruntime cannot load"):
        s.run({"pixel_values": np.zeros((1, 3, 4, 4), np.float32)})


# --------------------------------------------------------------------------- validation
def test_wrong_dtype(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    with pytest.raises(ModelInputError, match="expected dtype float32, got float64") as e:
        s.run({"pixel_values": np.zeros((2, 3, 32, 32), np.float64)})
    assert ".astype(np.float32)" in str(e.value)


def test_text_wrong_dtype(tiny_text_onnx):
    s = Session(tiny_text_onnx, providers="cpu")
    feeds = {n: np.ones((1, 4), np.int32) for n in ("input_ids", "attention_mask", "token_type_ids")}
    with pytest.raises(ModelInputError, match="expected dtype int64, got int32"):
        s.run(feeds)


def test_nhwc(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    with pytest.raises(ModelInputError, match="NHWC") as e:
        s.run({"pixel_values": np.zeros((2, 32, 32, 3), np.float32)})
    assert "transpose(0, 3, 1, 2)" in str(e.value)


def test_wrong_rank(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    with pytest.raises(ModelInputError, match=r"expected rank 4 \(batch, 3, height, width\), got shape \(3, 32, 32\)"):
        s.run({"pixel_values": np.zeros((3, 32, 32), np.float32)})


def test_missing_and_unexpected_input_names(tiny_text_onnx, tiny_image_onnx):
    s = Session(tiny_text_onnx, providers="cpu")
    feeds = {n: np.ones((1, 4), np.int64) for n in ("input_ids", "attention_mask")}
    with pytest.raises(ModelInputError, match=r"missing \['token_type_ids'\]"):
        s.run(feeds)
    with pytest.raises(ModelInputError, match=r"unexpected \['images'\]"):
        Session(tiny_image_onnx, providers="cpu").run({"images": np.zeros((1, 3, 8, 8), np.float32)})
    feeds["token_type_ids"] = np.zeros((1, 4), np.int64)
    assert s.run(feeds).shape == (1, 16)


def test_not_an_array(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    with pytest.raises(ModelInputError, match="must be a numpy array, got list"):
        s.run({"pixel_values": [[[[0.0]]]]})


def test_static_batch_of_one(static_batch_onnx):
    s = Session(static_batch_onnx, providers="cpu")
    assert s.run({"pixel_values": np.zeros((1, 3, 32, 32), np.float32)}).shape == (1, 8)
    with pytest.raises(ModelInputError, match="static batch of 1") as e:
        s.run({"pixel_values": np.zeros((2, 3, 32, 32), np.float32)})
    assert "batch_size=1" in str(e.value)


def test_static_batch_of_one_through_backbone(static_batch_onnx, image_files):
    import featx

    bb = featx.load_backbone(static_batch_onnx)
    paths = sorted(image_files.rglob("*.png"))[:3]
    with pytest.raises(ModelInputError, match="static batch of 1"):
        bb.embed(paths)
    one_by_one = bb.embed(paths, batch_size=1)
    assert one_by_one.shape == (3, 8) and np.isfinite(one_by_one).all()


def test_output_must_be_pooled(tmp_path):
    """A model cut before pooling (4-D output) is refused with a hint, not silently flattened."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Relu", ["pixel_values"], ["features"])], "unpooled", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "unpooled.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelInputError, match="pooled bottleneck"):
        Session(path, providers="cpu").run({"pixel_values": np.zeros((1, 3, 4, 4), np.float32)})


def test_validate_can_be_skipped_but_ort_still_refuses(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # onnxruntime's own (cryptic) error
            s.run({"pixel_values": np.zeros((2, 3, 8, 8), np.float64)}, validate=False)


@pytest.mark.parametrize("env, expected", [(None, True), ("1", True), ("0", False), ("off", False)])
def test_spinning_follows_ort_default_unless_the_environment_says_no(tiny_image_onnx, monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("FEATX_SPINNING", raising=False)
    else:
        monkeypatch.setenv("FEATX_SPINNING", env)
    s = Session(tiny_image_onnx, providers="cpu", threads=1)
    assert s.allow_spinning is expected
    assert Session(tiny_image_onnx, providers="cpu", allow_spinning=not expected).allow_spinning is (not expected)
    x = np.zeros((1, 3, 8, 8), np.float32)
    assert s.run({"pixel_values": x}).shape == (1, 8)  # the option reaches a working session
    cfg = s.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert cfg == ("1" if expected else "0")
