"""tests/CATALOGUE.md names, for each entry of the reliability catalogue, the tests that cover it.

This keeps it from rotting: every node id it names must be a test that exists (found with ast in
the test files, parametrised tests by their base name), and every row must name at least one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
CATALOGUE = TESTS / "CATALOGUE.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)(\[[^\]`]*\])?`")


def names_in(path: Path) -> set[str]:
    """``name`` of each test function and ``Class::name`` of each test method in a test file."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{m.name}" for m in node.body
                      if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name.startswith("test")}
    return names


def rows(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(entry number, node ids (file, name)) of each table row whose first cell is a number."""
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            found.append((cells[0], [(m[1], m[2]) for m in NODE_ID.finditer(line)]))
    return found


def test_node_ids_are_found_in_markdown():
    line = ("| 7 | an entry | `tests/test_a.py::test_one`, `tests/test_a.py::test_two[PNG-.png]` (slow), "
            "`tests/test_b.py::TestX::test_three` |")
    assert rows(line) == [("7", [("tests/test_a.py", "test_one"), ("tests/test_a.py", "test_two"),
                                 ("tests/test_b.py", "TestX::test_three")])]
    assert rows("| # | entry | tests |\n|---|---|---|\n| x | `tests/test_a.py::test_one` |") == []


def test_the_collector_sees_plain_parametrised_and_class_tests(tmp_path):
    path = tmp_path / "test_sample.py"
    path.write_text("import pytest\n"
                    "@pytest.mark.parametrize('x', [1, 2])\n"
                    "def test_cases(x):\n    assert x\n"
                    "def helper():\n    pass\n"
                    "class TestGroup:\n    def test_inside(self):\n        assert True\n")
    assert names_in(path) == {"test_cases", "TestGroup::test_inside"}


def test_every_row_of_the_catalogue_names_tests_that_exist():
    catalogue = rows(CATALOGUE.read_text(encoding="utf-8"))
    numbers = [int(n) for n, _ in catalogue]
    assert numbers == list(range(1, len(numbers) + 1)), "catalogue rows must be numbered 1, 2, 3, ... in order"
    assert len(catalogue) >= 60
    empty = [n for n, ids in catalogue if not ids]
    assert not empty, f"rows without a test: {empty}"
    known: dict[str, set[str]] = {}
    missing = []
    for number, ids in catalogue:
        for file, name in ids:
            path = TESTS.parent / file
            if file not in known:
                known[file] = names_in(path) if path.is_file() else set()
            if name not in known[file]:
                missing.append(f"row {number}: {file}::{name}")
    assert not missing, "tests/CATALOGUE.md names tests that do not exist:\n" + "\n".join(missing)
