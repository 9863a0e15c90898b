"""The GPU-side runtime: IO binding, device-side batches, session options, and `featx doctor`'s CUDA report.

The IO-binding code path is exercised on every machine with CPU ``OrtValue``s (it must give the
same output as a plain run, bit for bit). Tests that need a CUDA device are skipped, saying so,
where none is usable: on such machines the CUDA path is *not* tested.
"""

from __future__ import annotations

import pickle
import threading
from importlib import metadata

import numpy as np
import onnxruntime as ort
import pytest

import featx
from featx.cli import doctor
from featx.errors import ModelInputError
from featx.engine.runtime import DeviceBatch, Session, cuda_status

CUDA_USABLE, CUDA_WHY = cuda_status()
needs_cuda = pytest.mark.skipif(not CUDA_USABLE, reason=f"CUDA path not tested here: {CUDA_WHY}")


def _image_batch(n=3, h=20, w=24, seed=0):
    return {"pixel_values": np.random.default_rng(seed).normal(size=(n, 3, h, w)).astype(np.float32)}


def _text_batch(tiny_text_onnx):
    bb = featx.load_backbone(tiny_text_onnx)
    return bb.prepare(["a short one", "a somewhat longer sentence, with punctuation!", "ok"])


# --------------------------------------------------------------------------- IO binding on the CPU
def test_cpu_sessions_do_not_bind_by_default(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    assert s.device == ("cpu", 0)
    assert s.uses_io_binding is False


def test_io_binding_path_equals_plain_run_image(tiny_image_onnx):
    plain = Session(tiny_image_onnx, providers="cpu")
    bound = Session(tiny_image_onnx, providers="cpu", io_binding=True)
    assert bound.uses_io_binding
    for shape in [(1, 8, 8), (5, 33, 17)]:
        feeds = _image_batch(shape[0], *shape[1:], seed=shape[0])
        want = plain.run(feeds)
        got = bound.run(feeds)
        assert got.dtype == np.float32 and got.shape == (shape[0], 8)
        np.testing.assert_array_equal(got, want)


def test_io_binding_path_equals_plain_run_text(tiny_text_onnx):
    feeds = _text_batch(tiny_text_onnx)
    want = Session(tiny_text_onnx, providers="cpu").run(feeds)
    got = Session(tiny_text_onnx, providers="cpu", io_binding=True).run(feeds)
    np.testing.assert_array_equal(got, want)


def test_device_batch_runs_like_arrays(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu")
    feeds = _image_batch(4)
    batch = s.to_device(feeds)
    assert isinstance(batch, DeviceBatch) and len(batch) == 4 and batch.device == "cpu:0"
    assert set(batch.values) == {"pixel_values"}
    np.testing.assert_array_equal(s.run(batch), s.run(feeds))
    np.testing.assert_array_equal(s.run(batch), s.run(batch))  # a device batch can be run again


def test_device_batches_from_a_prefetch_thread(tiny_image_onnx):
    """Upload batch i+1 in another thread while batch i runs; results equal the sequential run."""
    s = Session(tiny_image_onnx, providers="cpu", io_binding=True)
    batches = [_image_batch(3, seed=i) for i in range(6)]
    want = [Session(tiny_image_onnx, providers="cpu").run(b) for b in batches]
    ready = [None] * len(batches)

    def upload(i):
        ready[i] = s.to_device(batches[i])

    got = []
    t = threading.Thread(target=upload, args=(0,))
    t.start()
    for i in range(len(batches)):
        t.join()
        if i + 1 < len(batches):
            t = threading.Thread(target=upload, args=(i + 1,))
            t.start()
        got.append(s.run(ready[i]))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_to_device_validates(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu", io_binding=True)
    with pytest.raises(ModelInputError, match="expected dtype float32, got float64"):
        s.to_device({"pixel_values": np.zeros((1, 3, 8, 8), np.float64)})
    with pytest.raises(ModelInputError, match="expected dtype float32, got float64"):
        s.run({"pixel_values": np.zeros((1, 3, 8, 8), np.float64)})


def test_non_contiguous_input_is_bound_correctly(tiny_image_onnx):
    x = _image_batch(4, 16, 16)["pixel_values"]
    strided = x[::2]  # a view that is not C-contiguous
    assert not strided.flags["C_CONTIGUOUS"]
    want = Session(tiny_image_onnx, providers="cpu").run({"pixel_values": np.ascontiguousarray(strided)})
    got = Session(tiny_image_onnx, providers="cpu", io_binding=True).run({"pixel_values": strided})
    np.testing.assert_array_equal(got, want)


def test_new_options_survive_pickling_and_keep_results(tiny_image_onnx):
    feeds = _image_batch(2)
    want = Session(tiny_image_onnx, providers="cpu").run(feeds)
    s = Session(tiny_image_onnx, providers="cpu", threads=1, io_binding=True, allow_spinning=True)
    np.testing.assert_array_equal(s.run(feeds), want)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._session is None and s2.io_binding is True and s2.allow_spinning is True
    np.testing.assert_array_equal(s2.run(feeds), want)


def test_io_binding_on_real_lite0(lite0_onnx, sample_rgbs):
    bb = featx.load_backbone(lite0_onnx)
    feeds = bb.prepare(sample_rgbs)
    want = Session(lite0_onnx, providers="cpu").run(feeds)
    got = Session(lite0_onnx, providers="cpu", io_binding=True).run(feeds)
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- CUDA (skipped without a GPU)
@needs_cuda
def test_cuda_session_binds_inputs_on_the_device(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cuda")
    assert s.active_providers[0] == "CUDAExecutionProvider"
    assert s.device[0] == "cuda" and s.uses_io_binding
    feeds = _image_batch(4)
    batch = s.to_device(feeds)
    assert batch.device.startswith("cuda:")
    assert batch.values["pixel_values"].device_name().lower() == "cuda"
    np.testing.assert_allclose(s.run(batch), Session(tiny_image_onnx, providers="cpu").run(feeds), atol=1e-4)


@needs_cuda
def test_cuda_lite0_matches_cpu(lite0_onnx, sample_rgbs):
    bb = featx.load_backbone(lite0_onnx)
    feeds = bb.prepare(sample_rgbs)
    cpu = Session(lite0_onnx, providers="cpu").run(feeds)
    gpu = Session(lite0_onnx, providers="cuda").run(feeds)
    np.testing.assert_allclose(gpu, cpu, atol=2e-3, rtol=1e-3)


@needs_cuda
def test_cuda_fp16_variant_matches_fp32(lite0_onnx, sample_rgbs, tmp_path):
    from featx.torchmodels.quantize import cosine_rows, quantize

    r = quantize(lite0_onnx, "fp16", out_dir=tmp_path)
    feeds = featx.load_backbone(lite0_onnx).prepare(sample_rgbs)
    fp32 = Session(lite0_onnx, providers="cuda").run(feeds)
    fp16 = Session(r.onnx_path, providers="cuda").run(feeds)
    assert cosine_rows(fp32, fp16).min() >= 0.999


@needs_cuda
def test_cuda_extraction_stages_batches_in_reused_page_locked_buffers(lite0_onnx, sample_rgbs, tmp_path):
    from featx.torchmodels.quantize import cosine_rows
    from featx.sources import Item, make_dataset

    items = [Item(id=f"p{i}", ref=sample_rgbs[i % 2][i * 9:, i * 13:], label=None) for i in range(40)]
    data = make_dataset("photos", "image", items)
    gpu = featx.load_backbone(lite0_onnx, providers="cuda:0")
    assert gpu.default_batch_size == 128 and gpu.session.uses_io_binding
    assert gpu.session.session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == "0"
    featx.extract(data, gpu, tmp_path / "a", batch_size=16, progress=False)
    staging = gpu.session.staging
    made = (staging.allocated, staging.hosts)
    assert staging.pinned == staging.hosts >= 1  # host buffers page-locked
    featx.extract(data, gpu, tmp_path / "b", batch_size=16, progress=False)
    assert (staging.allocated, staging.hosts) == made  # reused, not reallocated
    cpu = featx.load_backbone(lite0_onnx, providers="cpu").embed([i.ref for i in items])
    X, _, _ = featx.load_features(tmp_path / "b")
    np.testing.assert_allclose(X, cpu, atol=2e-3, rtol=1e-3)
    fp16 = featx.load_backbone(lite0_onnx, providers="cuda:0", precision="auto")
    assert fp16.name.endswith("-fp16")
    assert cosine_rows(fp16.embed([i.ref for i in items]), cpu).min() >= 0.999


# --------------------------------------------------------------------------- featx doctor
def test_doctor_reads_the_cuda_libraries_ort_links():
    build = doctor.ort_cuda_build()
    cuda = getattr(ort, "cuda_version", None) or None
    assert build["cuda"] == cuda
    if not cuda:
        assert build["libraries"] == [] and build["cudnn"] is None
        return
    major = cuda.split(".")[0]
    assert f"libcudart.so.{major}" in build["libraries"]
    assert build["cudnn"] is not None and build["cudnn"].isdigit()


def test_elf_needed_reads_real_shared_libraries(tmp_path):
    from pathlib import Path

    pybind = next((Path(ort.__file__).parent / "capi").glob("onnxruntime_pybind11_state*.so"))
    needed = doctor.elf_needed(pybind)
    assert any(n.startswith("libc.so") for n in needed) or any(n.startswith("libstdc++") for n in needed)
    (tmp_path / "fake.so").write_bytes(b"not an elf file at all" * 4)
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF"):
        doctor.elf_needed(tmp_path / "fake.so")


def test_missing_libraries():
    assert doctor.missing_libraries(["libc.so.6", "libfeatx-does-not-exist.so.1"]) == ["libfeatx-does-not-exist.so.1"]


def test_doctor_reports_what_ort_was_built_for():
    report = doctor.diagnose()
    assert all(len(k) <= 22 for k in report)  # `featx doctor` prints "{key:<22} {value}"
    cuda = getattr(ort, "cuda_version", None)
    if cuda:
        assert report["ort built for"].startswith(f"CUDA {cuda}, cuDNN ")
        if doctor.nvidia_driver_cuda() is None:
            assert report["nvidia driver"].startswith("none")
            assert "cuda libraries" not in report
    else:
        assert report["ort built for"].startswith("CPU only")


def test_doctor_flags_onnxruntime_beside_onnxruntime_gpu(monkeypatch):
    """Both wheels installed (they overwrite each other's files): a PROBLEM naming both."""
    real_version = metadata.version

    def version(dist):
        if dist in ("onnxruntime", "onnxruntime-gpu"):
            return "1.31.1"
        return real_version(dist)

    monkeypatch.setattr(doctor.metadata, "version", version)
    report = doctor.diagnose()
    line = report["onnxruntime packages"]
    assert line.startswith("PROBLEM:") and "onnxruntime==1.31.1" in line and "onnxruntime-gpu==1.31.1" in line
    assert "Uninstall all of them" in line
