"""Declared dependencies are exactly what is imported; a missing optional part names its extra.

The imports are read from the source with ``ast`` (function-level imports included), plus the
modules featx imports by name: string literals given to ``importlib.import_module``,
``featx.extras.require`` and ``export._import``, and the ``source.module`` of each backbone
spec in ``models/`` (and the module of its ``source.weights``). Import names map to distributions through the installed metadata.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from featx.errors import MissingDependencyError

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: Declared and needed, though featx never imports them itself; each with its reason.
NOT_IMPORTED = {
    "joblib": "the design card's core: heads run their n_jobs on joblib, through scikit-learn",
}
#: Tools the test suite uses without importing them.
DEV_TOOLS = {"pytest-timeout": "the `timeout` option in [tool.pytest.ini_options]"}
DYNAMIC_IMPORTERS = {"import_module", "require", "_import"}
#: Import names that more than one declared distribution provides (pyproject picks one per platform).
PROVIDED_BY = {"onnxruntime": {"onnxruntime", "onnxruntime-gpu"}}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9._-]+", req.strip()).group(0))


def imported_modules(root: Path) -> dict[str, set[str]]:
    """Top-level third-party module -> files importing it (any level of the file, or by name)."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if func in DYNAMIC_IMPORTERS and not node.args[0].value.startswith("."):
                    names = [node.args[0].value]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "featx":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def top_level_imports(root: Path) -> dict[str, set[str]]:
    """Modules imported when a featx module is imported: statements at module level, outside ``try``."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("featx", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def spec_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "models").glob("*.toml")):
        source = tomllib.loads(path.read_text()).get("source", {})
        for module in (source.get("module"), source.get("weights")):  # weights: "module.Class"
            if module:
                found.setdefault(module.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def distributions(module: str) -> set[str]:
    """Distributions that provide an import name (the name itself when it is not installed here)."""
    installed = importlib.metadata.packages_distributions().get(module, [module])
    return {normalize(d) for d in installed} | PROVIDED_BY.get(module, set())


def declared() -> tuple[set[str], dict[str, set[str]]]:
    core = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {extra: {requirement_name(r) for r in reqs if requirement_name(r) != "featx"}
              for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    return core, extras


def test_every_import_of_featx_is_declared():
    core, extras = declared()
    everything = core.union(*extras.values())
    modules = imported_modules(REPO / "featx")
    for module, files in spec_modules().items():
        modules.setdefault(module, set()).update(files)
    undeclared = {m: sorted(files) for m, files in modules.items() if not distributions(m) & everything}
    assert undeclared == {}, "imported but not declared in pyproject.toml"


def test_module_level_imports_are_core():
    """`import featx.<anything>` works with the core dependencies alone."""
    core, _ = declared()
    optional = {m: sorted(files) for m, files in top_level_imports(REPO / "featx").items()
                if not distributions(m) & core}
    assert optional == {}, "imported at module level but only in an extra: import inside the function instead"


def test_every_declared_dependency_is_imported():
    core, extras = declared()
    dev = extras.pop("dev")
    used = set()
    for module in list(imported_modules(REPO / "featx")) + list(spec_modules()):
        used |= distributions(module)
    unused = sorted((core.union(*extras.values()) - used) - set(NOT_IMPORTED))
    assert unused == [], "declared but never imported by featx: remove them, or say why in NOT_IMPORTED"
    assert set(NOT_IMPORTED) <= core
    tests_use = set()
    for root in ("tests", "benchmarks"):
        for module in imported_modules(REPO / root):
            tests_use |= distributions(module)
    assert "timeout" in PYPROJECT["tool"]["pytest"]["ini_options"]  # why pytest-timeout is declared
    assert sorted(dev - tests_use - set(DEV_TOOLS)) == [], "dev dependencies that no test or benchmark uses"


def test_the_audit_sees_imports_inside_functions_and_by_name(tmp_path, monkeypatch):
    """The audit itself: a function-level import, a require(...) and a spec's module all count."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "a.py").write_text("import os\nimport numpy\n\ndef f():\n    import yaml\n    from x.y import z\n"
                               "    require('pyarrow', 'parquet', 'p')\n    importlib.import_module('.rel', 'pkg')\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert set(imported_modules(root)) == {"numpy", "yaml", "x", "pyarrow"}
    assert set(top_level_imports(root)) == {"numpy"}


@pytest.mark.parametrize("blocked, extra, call", [
    ("matplotlib", "plots", lambda tmp: __import__("featx.heads.evaluate").heads.evaluate.plot_confusion(
        {"confusion_matrix": [[1]], "classes": ["a"], "accuracy": 1.0, "macro_f1": 1.0}, tmp / "c.png")),
    ("pyarrow", "parquet", lambda tmp: __import__("featx.sources").sources.open_dataset(
        (tmp / "m.parquet").write_bytes(b"PAR1") and tmp / "m.parquet")),
    ("rdata", "fine-foods", lambda tmp: __import__("featx.sources.builtins").sources.builtins.read_lazyload_database(tmp / "x")),
    ("skl2onnx", "deploy", lambda tmp: __import__("featx.deploy.converters").deploy.converters.require_skl2onnx()),
    ("onnxruntime_extensions", "deploy", lambda tmp: __import__("featx.deploy.raw").deploy.raw.raw_session(tmp / "x")),
])
def test_a_missing_optional_part_names_its_extra(blocked, extra, call, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, blocked, None)  # `import blocked` now raises ImportError
    with pytest.raises(MissingDependencyError, match=rf"needs {blocked}: pip install 'featx\[{extra}\]'$"):
        call(tmp_path)
    assert extra in PYPROJECT["project"]["optional-dependencies"]


def test_reports_without_matplotlib_keep_the_numbers(tmp_path, monkeypatch):
    from featx.heads.evaluate import evaluate_predictions, save_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = evaluate_predictions(np.array(["a", "b", "a"]), np.array(["a", "b", "b"]))
    with pytest.warns(UserWarning, match=r"needs matplotlib: pip install 'featx\[plots\]'; wrote report.json"):
        files = save_report(report, tmp_path)
    assert files["png"] is None and files["json"].is_file() and files["markdown"].is_file()
    assert not list(tmp_path.glob("*.png"))
