"""``featx models``, ``featx export``, ``featx doctor`` through ``main(argv)`` and the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from featx.cli import main
from featx.files import sha256_file


def test_models_lists_both_backbones(capsys, lite0_onnx):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["efficientnet-lite0"][1:3] == ["image", "1280"]
    assert lines["all-minilm-l6-v2"][1:3] == ["text", "384"]
    assert lines["efficientnet-lite0"][-2:] == ["yes", "bundled"]  # exported into this session's $FEATX_HOME
    assert "timm:NAME" in out and "hf:MODEL" in out and "hf:MODEL#image|#text" in out


def test_models_via_the_console_entry_point():
    proc = subprocess.run([sys.executable, "-m", "featx", "models"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "efficientnet-lite0" in proc.stdout and "all-minilm-l6-v2" in proc.stdout


def test_export_prints_parity(tmp_path, capsys):
    out_dir = tmp_path / "exports"
    assert main(["export", "efficientnet-lite0", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    onnx_path = out_dir / "efficientnet-lite0.onnx"
    assert f"-> {onnx_path}" in out
    assert f"sha256    {sha256_file(onnx_path)}" in out
    parity_line = next(line for line in out.splitlines() if line.startswith("parity"))
    value = float(parity_line.split("=")[1].split()[0])
    record = json.loads((out_dir / "efficientnet-lite0.json").read_text())
    assert value == pytest.approx(record["parity"]["max_abs_diff"], rel=0.01, abs=1e-9)
    assert value <= 1e-4 and "tolerance 1e-4" in parity_line
    # a second run reuses the export (no --force)
    assert main(["export", "efficientnet-lite0", "--out", str(out_dir)]) == 0
    assert f"sha256    {sha256_file(onnx_path)}" in capsys.readouterr().out


def test_export_unknown_backbone(capsys):
    assert main(["export", "nope"]) == 1  # a featx error (2 is for usage errors)
    err = capsys.readouterr().err
    assert err.startswith("featx: error: unknown backbone 'nope'")
    assert "efficientnet-lite0" in err and "timm:NAME" in err


def test_export_needs_a_name(capsys):
    assert main(["export"]) == 2  # a usage error: a NAME or --spec FILE.toml
    assert "give a backbone NAME or --spec FILE.toml" in capsys.readouterr().err


def test_doctor_reports_providers(capsys):
    import onnxruntime as ort

    code = main(["doctor"])
    out = capsys.readouterr().out
    report = {line[:22].strip(): line[23:].strip() for line in out.splitlines()}  # "{key:<22} {value}"
    assert "CPUExecutionProvider" in report["available providers"]
    assert report["available providers"] == ", ".join(ort.get_available_providers())
    assert "CPUExecutionProvider" in report["auto providers"]
    assert report["cuda"].startswith(("usable", "not used"))
    assert int(report["threads"]) >= 1
    assert ort.__version__ in report["onnxruntime packages"]
    assert code == (1 if "PROBLEM" in out else 0)
