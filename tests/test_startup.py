"""What each command imports: a command loads only what it uses (a test of imports, not of time).

Each command runs in a fresh interpreter (``featx.cli.main`` in a subprocess) that prints the heavy
modules it loaded; ``featx --help`` needs none of them, ``featx info`` reads HDF5 only, and a
fully cached ``featx extract`` reads HDF5 and hashes the model file: no scikit-learn, no onnx
graph library, no torch, no transformers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import featx

HEAVY = ("sklearn", "h5py", "onnx", "onnxruntime", "torch", "transformers", "dask", "distributed",
         "pandas", "scipy", "skops", "matplotlib", "pyarrow", "tokenizers")
PROBE = ("import json, sys\nfrom featx.cli import main\n"
         "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
         f"print(json.dumps({{'rc': rc, 'loaded': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n")


def loaded_by(*argv: str) -> tuple[int, set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    return last["rc"], set(last["loaded"])


def test_help_loads_no_heavy_module():
    rc, loaded = loaded_by("--help")
    assert rc == 0 and loaded == set(), loaded
    rc, loaded = loaded_by("train", "--help")
    assert rc == 0 and not loaded & {"sklearn", "h5py", "onnx", "torch", "transformers"}, loaded


def test_info_and_a_cached_extract_load_hdf5_and_no_more(tmp_path, tiny_image_onnx, image_files):
    cache = tmp_path / "photos.cache"
    first = featx.extract(image_files, tiny_image_onnx, cache, progress=False)
    assert first.embedded == 7
    rc, loaded = loaded_by("info", str(cache))
    assert rc == 0 and "h5py" in loaded, loaded  # the probe sees what a command loads
    assert not loaded & {"sklearn", "onnx", "onnxruntime", "torch", "transformers", "dask"}, loaded
    rc, loaded = loaded_by("extract", str(image_files), "--model", str(tiny_image_onnx), "--cache", str(cache), "-q")
    assert rc == 0 and "h5py" in loaded, loaded
    assert not loaded & {"sklearn", "onnx", "torch", "transformers", "dask", "scipy"}, loaded


@pytest.mark.parametrize("name", ["load_features", "Backbone", "EmbeddingTransformer", "sources"])
def test_the_package_still_offers_its_names(name):
    assert getattr(featx, name) is not None


def test_advise_and_audit_stay_functions_once_their_packages_are_imported():
    import featx.quality.core  # noqa: F401  (what the CLI imports)
    import featx.strategy.curves  # noqa: F401

    assert featx.audit is featx.quality.audit and callable(featx.audit)
    assert featx.advise is featx.strategy.advise and callable(featx.advise)
