"""Session set-up shared by the tests (``tests/``) and the docstring examples (``featx/``).

pytest collects both (``testpaths = ["tests", "featx"]``, ``--doctest-modules`` in
``pyproject.toml``). Set when this file is imported, before any test module or featx module:

- ``HF_HUB_OFFLINE=1``: nothing reaches the network;
- ``FEATX_HOME``: a fresh temporary folder for the whole session (removed when pytest exits),
  so nothing reads or writes ``~/.cache/featx``; subprocesses inherit it;
- ``FEATX_DATA``: where ``make data`` / ``featx data fetch`` put the fetched datasets.

Docstring examples run in a fresh temporary working directory, and find these names:

``tiny_onnx``
    The path of a tiny exported image backbone, ``"tiny-cnn"``: conv 3->8 + ReLU + global
    average pool, 8-d features at 32 px, exported once per session with
    :func:`featx.torchmodels.export.export_module` (torch -> ONNX, parity-checked). It stands in for
    ``featx.load_backbone("efficientnet-lite0")`` (1280-d, exported on first use).

The examples must not pass vacuously: every module of ``featx/`` with an example must give
pytest a doctest to run (checked at collection).
"""

from __future__ import annotations

import doctest
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

ROOT = Path(__file__).resolve().parent
os.environ["HF_HUB_OFFLINE"] = "1"
# Fetched datasets (fine-foods) stay where `make data` / `featx data fetch` put them.
from featx.sources.builtins import featx_data_dir  # noqa: E402

os.environ["FEATX_DATA"] = str(featx_data_dir())
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="featx-test-home-"))
os.environ["FEATX_HOME"] = str(_SESSION_HOME)


def pytest_unconfigure(config):
    # Here rather than in a fixture's teardown: runs even when collection fails or no test ran.
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def featx_home() -> Path:
    """``$FEATX_HOME`` for the whole session (a fresh temporary folder, removed when pytest exits)."""
    os.environ["FEATX_HOME"] = str(_SESSION_HOME)
    os.environ["HF_HUB_OFFLINE"] = "1"
    _SESSION_HOME.mkdir(parents=True, exist_ok=True)
    return _SESSION_HOME


# --------------------------------------------------------------------------- docstring examples
@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The ``tiny_onnx`` of the examples (see the module docstring)."""
    torch = pytest.importorskip("torch")
    from featx.torchmodels.export import export_module
    from featx.specs.spec import BackboneSpec, ImagePreprocess

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    spec = BackboneSpec(name="tiny-cnn", modality="image", dim=8, source={"kind": "python"},
                        preprocess=ImagePreprocess(size=32, resize=36, mean=(0.5,) * 3, std=(0.5,) * 3))
    return export_module(net, spec, tmp_path_factory.mktemp("tiny-cnn")).onnx_path


@pytest.fixture(autouse=True)
def _doctest_setting(request):
    """Docstring examples: the names they use, and a fresh working directory of their own."""
    if not isinstance(request.node, DoctestItem):
        return
    if "tiny_onnx" in (request.node.dtest.docstring or ""):
        request.node.dtest.globs["tiny_onnx"] = str(request.getfixturevalue("tiny_onnx"))
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect anything
def pytest_collection_modifyitems(session, config, items):
    """Fail loudly when a requested featx module with examples gave pytest no doctest to run."""
    with_examples = {path for path in _requested_featx_files(config)
                     if path.name != "__main__.py" and doctest.DocTestParser().get_examples(path.read_text())}
    collected = {Path(str(item.path)).resolve() for item in items
                 if isinstance(item, DoctestItem) and item.dtest.examples}
    missing = sorted(str(path.relative_to(ROOT)) for path in with_examples - collected)
    if missing:
        raise pytest.UsageError(f"docstring examples not collected from {', '.join(missing)}: run pytest with "
                                "--doctest-modules (pyproject.toml's addopts has it)")


def _requested_featx_files(config) -> set[Path]:
    featx_dir = ROOT / "featx"
    files: set[Path] = set()
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == featx_dir or path in featx_dir.parents:
            files |= set(featx_dir.rglob("*.py"))
        elif featx_dir in path.parents:
            files |= {path} if path.is_file() else set(path.rglob("*.py"))
    return files
