"""Issue #24's bound: every test ``tests/CATALOGUE.md`` lists for files featx did not write (its section
"Files featx did not write", one row per class of hostile file) passes again in a child process whose
address space is capped at 8 GiB. A reader that allocated from what a file says (a 40000-pixel
processor size is 19 GB per image) would die there with a MemoryError instead of raising a featx error."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LIMIT = 8 << 30  # the bound README's "Files featx did not write" states
SECTION = "## Files featx did not write"


def hostile_file_tests() -> list[str]:
    """The test ids of the catalogue's section on files featx did not write (``tests/x.py::name``)."""
    text = (HERE / "CATALOGUE.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    ids = re.findall(r"`(tests/test_\w+\.py::\w+)`", section)
    return sorted({i for i in ids if not i.startswith("tests/test_hostile_memory.py")})


def test_the_catalogue_section_names_a_test_for_every_class_and_each_exists():
    ids = hostile_file_tests()
    rows = re.findall(r"^\| (\d+) \|", (HERE / "CATALOGUE.md").read_text().split(SECTION, 1)[1].split("\n## ")[0],
                      re.MULTILINE)
    assert len(rows) >= 11 and len(ids) >= 30  # classes 1-7, the smaller ones, the fuzzers, the new user's list
    for test_id in ids:
        path, name = test_id.split("::")
        assert re.search(rf"^def {name}\(", (HERE.parent / path).read_text(), re.MULTILINE), f"{test_id} does not exist"


@pytest.mark.slow
def test_every_hostile_file_test_passes_under_an_8_gib_address_space_limit():
    if os.environ.get("FEATX_MEMORY_CHILD"):
        pytest.skip("already the child")

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    ids = hostile_file_tests()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *ids],
                         cwd=HERE.parent, env=os.environ | {"FEATX_MEMORY_CHILD": "1", "FEATX_FUZZ_CHILD": "1"},
                         preexec_fn=cap, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed and int(passed.group(1)) >= len(ids), out.stdout[-2000:]
    assert "MemoryError" not in out.stdout + out.stderr
