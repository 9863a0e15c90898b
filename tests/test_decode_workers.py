"""Decoding that scales with the cores: decoding threads change no feature, share a pixel budget,
and the GPU-side staging (reused host and device buffers) gives what a plain run gives.

The staging runs here with CPU ``OrtValue`` s (``io_binding=True``), the code path a CUDA
session takes with device buffers; page-locking (``cudaHostRegister``) and the device itself are
not tested on a machine without a GPU.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import featx
from featx.cli import main
from featx.engine.decode import PixelBudget
from featx.engine.defaults import device_defaults
from featx.engine.embedding import embed, prepare_batches, run_batches, in_batches
from featx.errors import InputError, ModelInputError, SpecError
from featx.engine.runtime import Session, cuda_status, default_threads, device_index, resolve_providers
from featx.engine.staging import Staging, cuda_runtime, pin


def wait_until(predicate, timeout=30.0):
    """Poll a condition another thread brings about (a state, not a duration); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        tick.wait(0.001)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_rgbs):
    """A folder of 12 real photo files (JPEG and PNG crops of sklearn's two photos, various sizes)."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(12):
        rgb = sample_rgbs[i % 2]
        h, w, _ = rgb.shape
        crop = Image.fromarray(rgb[i * 10:h - i * 7, i * 13:w - i * 5])
        crop = crop.resize((crop.width * (3 + i % 3) // 4, crop.height * (3 + i % 3) // 4))
        crop.save(folder / f"p{i:02d}.{'jpg' if i % 3 else 'png'}", quality=92)
    return folder


# --------------------------------------------------------------------------- same features
def test_decode_workers_give_the_features_of_one_worker(lite0_onnx, photos, tmp_path):
    bb = featx.load_backbone(lite0_onnx, providers="cpu")
    one = featx.extract(photos, bb, tmp_path / "one", batch_size=5, decode_workers=1, progress=False)
    four = featx.extract(photos, bb, tmp_path / "four", batch_size=5, decode_workers=4, progress=False)
    assert one.embedded == four.embedded == 12
    X1, _, ids1 = featx.load_features(tmp_path / "one")
    X4, _, ids4 = featx.load_features(tmp_path / "four")
    assert list(ids1) == list(ids4)
    np.testing.assert_array_equal(X1, X4)
    items = sorted(str(p) for p in photos.iterdir())
    items[3] = Image.open(items[3])
    items[5] = open(items[5], "rb").read()
    items[7] = np.asarray(Image.open(items[7]).convert("RGB"))
    np.testing.assert_array_equal(bb.embed(items, batch_size=5, decode_workers=1),
                                  bb.embed(items, batch_size=5, decode_workers=3))
    np.testing.assert_array_equal(bb.embed(items[:5], batch_size=5, decode_workers=1), X1[:5])


def test_the_first_bad_item_in_order_is_named_whatever_thread_fails_first(tiny_image_onnx, tmp_path):
    bb = featx.load_backbone(tiny_image_onnx)
    big = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "slow.png")
    items = [str(tmp_path / "slow.png"), str(tmp_path / "missing-a.png"), np.zeros((9, 9), np.uint8),
             str(tmp_path / "missing-b.png")]
    for workers in (1, 4):
        with pytest.raises(InputError, match=r"^image '#1': no such file"):
            embed(bb, items, batch_size=4, workers=workers)
        out = embed(bb, items, batch_size=4, workers=workers, on_error="skip")
        assert out.positions.tolist() == [0, 2] and [f.id for f in out.failures] == ["#1", "#3"]


def test_device_defaults_decode_workers_and_batch_size():
    cores = default_threads()
    assert device_defaults(Session("unused.onnx", providers="cpu", threads=1)).decode_workers == max(1, cores - 1)
    assert device_defaults(Session("unused.onnx", providers="cpu")).decode_workers == max(1, cores // 4)
    assert Session("unused.onnx", providers="cpu").requested_device == "cpu"
    if "CUDAExecutionProvider" in ort.get_available_providers():  # asked for a GPU: every core decodes
        assert device_defaults(Session("unused.onnx", providers="cuda:0", threads=2)).decode_workers == cores


def test_cpu_backbones_default_to_batches_of_16(tiny_image_onnx):
    bb = featx.load_backbone(tiny_image_onnx, providers="cpu")
    assert bb.default_batch_size == 16


# --------------------------------------------------------------------------- the pixel budget
def test_pixel_budget_bounds_what_threads_hold_and_serves_them_in_order():
    budget = PixelBudget(100)
    entered = {name: threading.Event() for name in "abc"}
    leave = {name: threading.Event() for name in "abc"}

    def hold(name, pixels):
        with budget.hold(pixels):
            entered[name].set()
            leave[name].wait(30)

    threads = {"a": threading.Thread(target=hold, args=("a", 60))}
    threads["a"].start()
    assert entered["a"].wait(30)
    threads["b"] = threading.Thread(target=hold, args=("b", 60))
    threads["b"].start()
    wait_until(lambda: budget.waiting == 1)  # b does not fit beside a
    threads["c"] = threading.Thread(target=hold, args=("c", 10))
    threads["c"].start()
    wait_until(lambda: budget.waiting == 2)  # c would fit, but b came first
    assert not entered["b"].is_set() and not entered["c"].is_set() and budget.held == 60
    leave["a"].set()
    assert entered["b"].wait(30) and entered["c"].wait(30)
    assert budget.held == 70 and budget.peak == 70
    leave["b"].set()
    leave["c"].set()
    for t in threads.values():
        t.join(30)
    assert budget.held == 0 and budget.waiting == 0


def test_an_image_larger_than_the_budget_decodes_alone():
    budget = PixelBudget(100)
    with budget.hold(10_000):
        assert budget.held == 100  # the whole budget, no more
    assert budget.held == 0 and budget.peak == 100


def test_decoding_threads_hold_at_most_the_budget(tiny_image_onnx, tmp_path):
    bb = featx.load_backbone(tiny_image_onnx)
    files = []
    for i in range(8):
        Image.new("RGB", (300 + 10 * i, 200), (i * 30, 100, 50)).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    budget = PixelBudget(2 * 400 * 200)  # two of these images at a time, never three
    prepared = list(prepare_batches(bb, in_batches(files, [str(i) for i in range(8)], 4), workers=6, budget=budget))
    assert 300 * 200 <= budget.peak <= 2 * 400 * 200 and budget.held == 0
    got = np.concatenate([e.rows for e in run_batches(bb, prepared)])
    np.testing.assert_array_equal(got, bb.embed(files, decode_workers=1))


# --------------------------------------------------------------------------- staging (the CUDA path, on CPU values)
def test_bound_runs_reuse_their_device_buffers(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu", io_binding=True)
    plain = Session(tiny_image_onnx, providers="cpu")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = {"pixel_values": rng.normal(size=(4, 3, 16, 16)).astype(np.float32)}
        np.testing.assert_array_equal(s.run(x), plain.run(x))
    assert s.staging.allocated == 1  # one device buffer for the five batches of one shape
    s.run({"pixel_values": np.zeros((2, 3, 16, 16), np.float32)})
    assert s.staging.allocated == 2  # a new shape: one more


def test_a_reused_device_batch_runs_once(tiny_image_onnx):
    s = Session(tiny_image_onnx, providers="cpu", io_binding=True)
    buf = s.host_buffer("pixel_values", (3, 3, 8, 8))
    buf[:] = np.random.default_rng(1).normal(size=buf.shape)
    want = Session(tiny_image_onnx, providers="cpu").run({"pixel_values": buf.copy()})
    batch = s.to_device({"pixel_values": buf}, reuse=True)
    assert s.staging.lent(buf) is not None and s.staging.hosts == 1
    np.testing.assert_array_equal(batch.values["pixel_values"].numpy(), buf)  # uploaded from the lent buffer
    np.testing.assert_array_equal(s.run(batch), want)
    assert s.staging.lent(buf) is None  # given back after the run
    with pytest.raises(ModelInputError, match="has run already"):
        s.run(batch)
    again = s.host_buffer("pixel_values", (3, 3, 8, 8))
    assert again is buf  # the same host buffer, reused


def test_extraction_through_staging_equals_a_plain_one_and_allocates_nothing_more(tiny_image_onnx, photos,
                                                                                  tmp_path):
    plain = featx.load_backbone(tiny_image_onnx, providers="cpu")
    bound = featx.load_backbone(tiny_image_onnx, providers="cpu")
    bound.session.io_binding = True
    featx.extract(photos, plain, tmp_path / "plain", batch_size=2, progress=False)
    for cache in ("a", "b"):  # 2 x 6 batches of one shape
        featx.extract(photos, bound, tmp_path / cache, batch_size=2, decode_workers=3, progress=False)
    # How many batches are in flight at once depends on timing; never more than the 3 prepared
    # ahead plus the one running, so 12 batches made at most 4 buffers of each kind: reused.
    staging = bound.session.staging
    assert 1 <= staging.hosts <= 4 and 1 <= staging.allocated <= 4
    X, _, _ = featx.load_features(tmp_path / "plain")
    for cache in ("a", "b"):
        np.testing.assert_array_equal(featx.load_features(tmp_path / cache)[0], X)


def test_staging_keeps_few_free_buffers_per_shape():
    staging = Staging(("cpu", 0))
    slots = [staging.take("x", (4, 2), np.float32) for _ in range(10)]
    assert staging.allocated == 10
    for slot in slots:
        staging.give(slot)
    again = [staging.take("x", (4, 2), np.float32) for _ in range(10)]
    assert staging.allocated == 16  # 4 kept free and reused, 6 made anew
    assert len({id(s) for s in again} & {id(s) for s in slots}) == 4


@pytest.mark.skipif(cuda_status()[0], reason="a GPU is usable here: page-locking succeeds (test_runtime_gpu)")
def test_page_locking_fails_softly_without_a_gpu():
    """``cudaHostRegister`` for real where a CUDA runtime loads (it fails without a driver), else no call."""
    array = np.zeros(1024, np.float32)
    assert pin(array) is False  # the array stays ordinary memory...
    array[:] = 1.0  # ...and usable
    assert array.sum() == 1024
    assert Staging(("cpu", 0)).pin is False and Staging(("cuda", 0), pinned=False).pin is False
    assert cuda_runtime() is None or hasattr(cuda_runtime(), "cudaHostRegister")


# --------------------------------------------------------------------------- devices
def test_device_names_carry_the_gpu_index():
    assert device_index("cuda:1") == 1 and device_index("cuda:0,cpu") == 0 and device_index(["cpu", "cuda:3"]) == 3
    assert device_index("CUDAExecutionProvider:2") == 2 and device_index(None) == 0
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu, with or without a GPU
        assert resolve_providers("cuda:1") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert Session("unused.onnx", providers="cuda:1").requested_device == "cuda"
    else:
        with pytest.raises(SpecError, match="provider 'cuda:1' is not available in this onnxruntime"):
            resolve_providers("cuda:1")


def test_cli_extract_decode_workers_and_device(tiny_image_onnx, photos, tmp_path, capsys):
    assert main(["extract", str(photos), "--model", str(tiny_image_onnx), "--cache", str(tmp_path / "c"),
                 "--device", "cpu", "--decode-workers", "3", "--no-progress"]) == 0
    assert "12 embedded" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["extract", str(photos), "--model", str(tiny_image_onnx), "--cache", str(tmp_path / "d"),
              "--device", "cpu", "--providers", "cpu"])
    assert info.value.code == 2


@pytest.mark.skipif(cuda_status()[0], reason="a GPU is usable here")
def test_cli_extract_on_a_gpu_that_is_not_there_falls_back_loudly(tiny_image_onnx, photos, tmp_path, capsys):
    args = ["extract", str(photos), "--model", str(tiny_image_onnx), "--cache", str(tmp_path / "e"),
            "--device", "cuda:1", "--no-progress"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert main(args) == 1
        assert "provider 'cuda:1' is not available" in capsys.readouterr().err
        return
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "12 embedded" in out
    assert "featx: warning: onnxruntime fell back from CUDAExecutionProvider to CPUExecutionProvider" in err
