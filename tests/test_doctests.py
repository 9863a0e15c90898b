"""The docstring examples of featx/ run under pytest (--doctest-modules), and never vacuously."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_a_module_with_examples_runs_them():
    import featx.validation

    with_examples = [t for t in doctest.DocTestFinder().find(featx.validation) if t.examples]
    assert len(with_examples) >= 5
    proc = run_pytest("featx/validation.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(with_examples)} passed" in proc.stdout and "skipped" not in proc.stdout


def test_examples_not_collected_is_an_error():
    """Without --doctest-modules the examples would silently not run: the root conftest refuses that."""
    proc = run_pytest("-o", "addopts=", "featx/validation.py")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "docstring examples not collected from featx/validation.py" in proc.stdout + proc.stderr
