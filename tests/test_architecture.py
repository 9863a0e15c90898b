"""The shape of the house: no import cycle among featx modules, no oversized module.

The import graph is read from the source with ``ast``: every ``import featx.x`` and
``from .x import y`` counts, at module level and inside functions alike (a cycle dodged by an
import inside a function is still a cycle). ``from . import name`` points at the submodule
``name`` when there is one, else at the package's ``__init__``. A module is not taken to import
the packages above it: a package's ``__init__`` importing its own submodules is how packages
work. Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import featx

ROOT = Path(featx.__file__).resolve().parent
MAX_LINES = 600


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported featx module: first line}}`` for every ``.py`` file under ``root``."""
    package = root.name
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: dict[str, int] = {}
        for node, line in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, name, is_package, package, files):
                if target != name:
                    edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _imports(tree: ast.AST):
    """``(Import or ImportFrom node, line)`` anywhere in the tree, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, node.lineno
        stack.extend(ast.iter_child_nodes(node))


def _targets(node, module: str, is_package: bool, package: str, files: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [_existing(alias.name, files) for alias in node.names
                if alias.name == package or alias.name.startswith(package + ".")]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    elif node.module and (node.module == package or node.module.startswith(package + ".")):
        origin = node.module
    else:
        return []  # not a featx module
    # `from origin import name`: the submodule origin.name when it exists, else origin itself
    return [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in files else _existing(origin, files)
            for alias in node.names]


def _existing(dotted: str, files: dict) -> str:
    """The module itself, or the nearest package above it that exists (``featx.x.y`` -> ``featx.x``)."""
    while dotted not in files and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


def knots(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module: modules that all import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(components)


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per knot (:func:`knots`)."""
    return [_a_cycle_in(graph, set(c), c[0]) for c in knots(graph)]


def _a_cycle_in(graph, component: set[str], start: str) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside the component (breadth first)."""
    previous = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if w in component and w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def describe(cycle: list[str], graph, root: Path) -> str:
    steps = [f"{a} -> {b} ({root.name}/{_relative(a, root)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def _relative(module: str, root: Path) -> str:
    parts = module.split(".")[1:]
    folder = root.joinpath(*parts)
    return "/".join(parts + ["__init__.py"]) if folder.is_dir() else "/".join(parts) + ".py"


# --------------------------------------------------------------------------- featx itself
def test_no_import_cycle_among_featx_modules():
    graph = import_graph(ROOT)
    assert "featx.engine.backbone" in graph and "featx.specs.record" in graph["featx.engine.backbone"]  # the graph is read
    found = knots(graph)
    assert not found, "import cycles among featx modules (function-level imports count):\n" + "\n".join(
        f"{len(knot)} modules import each other: {', '.join(knot)}; for example\n  "
        + describe(cycle, graph, ROOT) for knot, cycle in zip(found, find_cycles(graph)))


def test_no_featx_module_over_600_lines():
    over = {str(p.relative_to(ROOT)): n for p in sorted(ROOT.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert len(list(ROOT.rglob("*.py"))) > 40  # the files are read
    assert not over, f"featx files over {MAX_LINES} lines: {over}; split them along their concerns"


# --------------------------------------------------------------------------- the graph reader
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import f\n",
        "b.py": "def f():\n    from .c import g\n    return g\n",
        "c.py": "import pkg.a\n",
        "d.py": "from . import a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.b"] == {"pkg.c": 2}
    cycles = find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    text = describe(cycles[0], graph, root)
    assert "pkg.b -> pkg.c (pkg/b.py:2)" in text and "pkg.c -> pkg.a (pkg/c.py:1)" in text


def test_packages_relative_imports_and_type_checking(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from .version import V\nfrom .sub import thing\n",
        "version.py": "V = 1\n",
        "sub/__init__.py": "from .inner import thing\nfrom .. import version\n",
        "sub/inner.py": ("from typing import TYPE_CHECKING\nfrom ..version import V\nimport numpy\n"
                         "if TYPE_CHECKING:\n    from .. import sub\nthing = V\n"),
        "uses_init.py": "from . import V\n",
    })
    graph = import_graph(root)
    assert graph["pkg"] == {"pkg.version": 1, "pkg.sub": 2}
    assert graph["pkg.sub"] == {"pkg.sub.inner": 1, "pkg.version": 2}
    assert graph["pkg.sub.inner"] == {"pkg.version": 2}  # numpy and the TYPE_CHECKING import are not edges
    assert graph["pkg.uses_init"] == {"pkg": 1}  # V is a name of the package, not a submodule
    assert find_cycles(graph) == []
    (root / "version.py").write_text("from . import uses_init\n")  # pkg.version -> uses_init -> pkg -> version
    cycles = find_cycles(import_graph(root))
    assert len(cycles) == 1 and set(cycles[0]) == {"pkg", "pkg.version", "pkg.uses_init"}


# --------------------------------------------------------------------------- layering
#: The stages of the data flow, lowest first: a module imports its own stage or lower ones, never a
#: higher one (imports inside functions count). A package names every module under it.
STAGES = (
    ("foundation", ("featx.errors", "featx.validation", "featx.extras", "featx.files", "featx.version",
                    "featx.progress", "featx.interrupts", "featx.machine")),
    ("descriptions", ("featx.specs", "featx.sources")),
    ("engine", ("featx.engine",)),
    ("storage", ("featx.cache",)),
    ("torch side", ("featx.torchmodels",)),
    ("factory", ("featx.factory",)),
    ("extraction", ("featx.extraction",)),
    ("heads", ("featx.heads",)),
    ("estimators and deployment", ("featx.estimators", "featx.deploy")),
    ("jobs", ("featx.pipeline", "featx.bench", "featx.strategy", "featx.quality")),
    ("interface", ("featx.cli", "featx.__main__", "featx")),
)
#: Libraries of the torch side: the engine must never reach a module that imports one of them.
TORCH_SIDE = ("torch", "transformers", "timm", "torchvision", "sentence_transformers", "setfit")


def stage_of(module: str, stages=STAGES) -> int:
    """The rank of the stage a module belongs to (the longest matching prefix decides)."""
    best, rank = "", None
    for r, (_, prefixes) in enumerate(stages):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, r
    if rank is None:
        raise AssertionError(f"{module} belongs to no stage: add it to STAGES in tests/test_architecture.py")
    return rank


def upward_imports(graph, stages=STAGES) -> list[str]:
    """``"a (stage) -> b (higher stage), line N"`` for every import that climbs."""
    out = []
    for module, edges in sorted(graph.items()):
        here = stage_of(module, stages)
        for target, line in sorted(edges.items()):
            there = stage_of(target, stages)
            if there > here:
                out.append(f"{module} ({stages[here][0]}) -> {target} ({stages[there][0]}), line {line}")
    return out


def imports_torch_side(path: Path, libraries=TORCH_SIDE) -> int | None:
    """The first line of ``path`` that imports a torch-side library (``import_module("torch")`` included)."""
    for node, line in _imports(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if not getattr(node, "level", 0) and any(n.split(".")[0] in libraries for n in names):
            return line
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                and node.args and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).split(".")[0] in libraries):
            return node.lineno
    return None


def reach(graph, start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one import path to it."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, {})):
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return paths


def test_no_stage_imports_a_higher_one():
    graph = import_graph(ROOT)
    assert stage_of("featx.engine.backbone") < stage_of("featx.factory") < stage_of("featx.extraction.extract")
    climbs = upward_imports(graph)
    assert not climbs, "imports that climb the stages (see STAGES):\n" + "\n".join(climbs)


def test_the_engine_reaches_nothing_that_imports_torch():
    graph = import_graph(ROOT)
    files = {module_name(p, ROOT): p for p in ROOT.rglob("*.py")}
    assert imports_torch_side(files["featx.torchmodels.export"])  # the check sees what it looks for
    for start in ("featx.engine.backbone", "featx.engine.runtime", "featx.engine.embedding"):
        reached = reach(graph, start)
        assert "featx.engine.inputs" in reached or start != "featx.engine.backbone"
        torchy = {m: imports_torch_side(files[m]) for m in reached if m in files}
        found = [f"{' -> '.join(reached[m])} (line {line})" for m, line in sorted(torchy.items()) if line]
        assert not found, f"{start} reaches modules that import the torch side:\n" + "\n".join(found)


def test_at_most_twelve_modules_at_the_top():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert "factory.py" in top and len(top) <= 12, top


def test_the_layering_check_finds_a_climb_and_a_torch_import(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    from .high import g\n",
        "high.py": "import torch\nfrom . import low\n",
    })
    graph = import_graph(root)
    stages = (("low", ("pkg.low",)), ("high", ("pkg.high", "pkg")))
    assert upward_imports(graph, stages) == ["pkg.low (low) -> pkg.high (high), line 2"]
    assert imports_torch_side(root / "high.py") == 1 and imports_torch_side(root / "low.py") is None
    assert reach(graph, "pkg.low")["pkg.high"] == ["pkg.low", "pkg.high"]
