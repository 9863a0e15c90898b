"""The CUDA path's decisions, on machines without a GPU: precision (fp16 where parity allows),
the fallback when a GPU is asked for and missing, and the one-command GPU benchmark.

Where onnxruntime-gpu is installed without a usable GPU (these development machines), asking
for CUDA goes through ONNX Runtime's CUDA provider up to its failure, then featx's loud fallback.
What runs on a real GPU is in tests/test_runtime_gpu.py (skipped here) and benchmarks/gpu.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import featx
from featx.cli import main
from featx.errors import ParameterError
from featx.torchmodels.quantize import cosine_rows
from featx.engine.runtime import cuda_status

ROOT = Path(__file__).resolve().parents[1]
CUDA_BUILT = "CUDAExecutionProvider" in ort.get_available_providers()
CUDA_USABLE = cuda_status()[0]


@pytest.fixture
def tiny_copy(tiny_image_onnx, tmp_path) -> Path:
    """The tiny image backbone in a folder of its own (variants are written beside it)."""
    folder = tmp_path / "models"
    folder.mkdir()
    for path in tiny_image_onnx.parent.glob("tiny-image.*"):
        shutil.copy(path, folder / path.name)
    return folder / "tiny-image.onnx"


def photos(n=6):
    from featx.specs.samples import sample_photos

    p = sample_photos()
    return [np.ascontiguousarray(p[i % 2][i * 20:, i * 30:]) for i in range(n)]


# --------------------------------------------------------------------------- precision
def test_fp16_precision_loads_the_parity_checked_variant(tiny_copy):
    fp32 = featx.load_backbone(tiny_copy, providers="cpu")
    fp16 = featx.load_backbone(tiny_copy, providers="cpu", precision="fp16")
    assert fp16.name == "tiny-image-fp16" and fp16.onnx_path == tiny_copy.with_name("tiny-image-fp16.onnx")
    assert fp16.record["quantization"]["precision"] == "fp16"
    assert fp16.fingerprint_id != fp32.fingerprint_id  # cached apart
    items = photos()
    assert cosine_rows(fp16.embed(items), fp32.embed(items)).min() >= 0.999
    again = featx.load_backbone(fp16.onnx_path, providers="cpu", precision="fp16")  # the variant itself
    assert again.onnx_path == fp16.onnx_path


def test_auto_precision_is_fp32_on_the_cpu(tiny_copy):
    bb = featx.load_backbone(tiny_copy, providers="cpu", precision="auto")
    assert bb.name == "tiny-image"
    assert not tiny_copy.with_name("tiny-image-fp16.onnx").exists()  # no variant made for nothing


@pytest.mark.skipif(not CUDA_BUILT or CUDA_USABLE, reason="needs onnxruntime-gpu without a usable GPU")
def test_auto_precision_on_a_requested_gpu_takes_fp16_and_the_fallback_is_loud(tiny_copy):
    bb = featx.load_backbone(tiny_copy, providers="cuda", precision="auto")
    assert bb.name == "tiny-image-fp16"
    assert bb.default_batch_size == 128  # a GPU was asked for
    with pytest.warns(RuntimeWarning, match="fell back from CUDAExecutionProvider to CPUExecutionProvider"):
        rows = bb.embed(photos(2))
    assert rows.shape == (2, 8) and bb.session.device == ("cpu", 0)


def test_precision_is_checked_and_belongs_to_loading(tiny_copy, tmp_path):
    with pytest.raises(ParameterError, match=r"^The 'precision' parameter of load_backbone must be one of "
                                             r"\('fp32', 'fp16', 'auto'\)\. Got 'half' instead\.$"):
        featx.load_backbone(tiny_copy, precision="half")
    bb = featx.load_backbone(tiny_copy, providers="cpu")
    with pytest.raises(ParameterError, match=r"precision='fp16' with a loaded Backbone: load it with "
                                             r"featx.load_backbone\(\.\.\., precision='fp16'\) instead"):
        featx.extract("builtin:digits:test", bb, tmp_path / "c", precision="fp16")


def test_cli_extract_with_fp16_caches_the_variant_apart(tiny_copy, tmp_path, capsys):
    assert main(["extract", "builtin:digits:test", "--limit", "40", "--model", str(tiny_copy),
                 "--cache", str(tmp_path / "c"), "--precision", "fp16", "--no-progress"]) == 0
    assert "tiny-image-fp16 on builtin:digits:test: 40 embedded" in capsys.readouterr().out
    X, _, _ = featx.load_features(tmp_path / "c", model="tiny-image-fp16")
    assert X.shape == (40, 8)


# --------------------------------------------------------------------------- the GPU benchmark
@pytest.mark.skipif(CUDA_USABLE, reason="a GPU is usable here: the benchmark would run for minutes")
def test_gpu_benchmark_says_no_gpu_and_exits_0():
    result = ROOT / "benchmarks" / "results" / "gpu.json"
    before = result.stat().st_mtime_ns if result.exists() else None
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no GPU: ") and "Nothing measured" in proc.stdout
    assert (result.stat().st_mtime_ns if result.exists() else None) == before  # nothing written


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_section(tmp_path):
    """``--smoke``: tiny sizes, on the CPU here, through the bound (GPU) code path; every section gives rows."""
    out = tmp_path / "gpu.smoke.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["errors"] == {} and record["skipped"] == []
    assert {row["section"] for row in record["table"]} == {"a", "b", "c", "d", "e"}
    assert record["results"]["parity"]["fp32_max_abs_diff"] <= 1e-3
    assert record["results"]["parity"]["fp16_cosine_min"] >= 0.999
    staging = record["results"]["extract_arrays"]["staging"]
    assert staging is not None and staging["device_buffers"] >= 1 and staging["host_buffers"] >= 1
