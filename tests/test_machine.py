"""featx.machine: the one reader of /proc/cpuinfo and friends, shared by doctor, bench and the throughput script."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from featx import machine
from featx.cli import doctor
from featx.machine import Cpu, MachineFacts, machine_facts, parse_cpuinfo

REPO = Path(__file__).resolve().parents[1]

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8
bogomips\t: 4000.00

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8
"""


def test_parse_cpuinfo_reads_the_first_processor():
    cpu = parse_cpuinfo(CPUINFO)
    assert cpu == Cpu("Intel(R) Xeon(R) Platinum 8480+", frozenset({"fpu", "sse2", "avx2", "avx512f", "avx512_vnni",
                                                                    "amx_int8"}))
    assert (cpu.avx2, cpu.avx512, cpu.vnni) == (True, True, True)
    zen3 = parse_cpuinfo("model name : AMD EPYC\nflags : sse2 avx2 fma\n")
    assert (zen3.model, zen3.avx2, zen3.avx512, zen3.vnni) == ("AMD EPYC", True, False, False)
    assert parse_cpuinfo("flags : avx_vnni\n").vnni  # AVX-VNNI (client CPUs) counts too
    arm = parse_cpuinfo("processor : 0\nFeatures : fp asimd\n", fallback_model="aarch64")
    assert arm == Cpu("aarch64", frozenset())


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo on this platform")
def test_this_machine_as_proc_says():
    text = Path("/proc/cpuinfo").read_text()
    model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    assert machine.cpu().model == model
    flags = next(set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags"))
    assert machine.cpu_flags() == flags
    assert machine.has_vnni() == bool(flags & {"avx512_vnni", "avx_vnni"})


def test_machine_facts_record_and_line():
    facts = machine_facts()
    assert facts.cores == os.cpu_count() and 1 <= facts.usable_cores <= facts.cores
    assert facts.python == platform.python_version()
    assert facts.versions["numpy"] and "featx" in facts.versions
    if Path("/proc/meminfo").is_file():
        assert facts.memory_gib > 0
    assert MachineFacts.from_dict(facts.to_dict()) == facts
    assert list(facts.to_dict()) == ["cpu", "cores", "usable_cores", "memory_gib", "load_average", "python",
                                     "platform", "versions"]
    line = MachineFacts("AMD EPYC", 2, 2, 23.5, [1.0, 1.0, 1.0], "3.11.7", "Linux",
                        {"featx": "0.1.0", "numpy": "2.4.6", "h5py": "3.16.0"}).line()
    assert line == "AMD EPYC, 2 usable cores, 23.5 GiB RAM; Python 3.11.7; featx 0.1.0, numpy 2.4.6"


def test_doctor_and_the_throughput_script_ask_the_same_module():
    assert doctor.has_vnni is machine.has_vnni
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import throughput; "
            "print(json.dumps(throughput.cpu_description()))")
    done = subprocess.run([sys.executable, "-c", code, str(REPO / "benchmarks")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    cpu = machine.cpu()
    assert json.loads(done.stdout) == {"model": cpu.model, "avx2": cpu.avx2, "avx512f": cpu.avx512, "vnni": cpu.vnni}
