"""Facts about the machine featx runs on: CPU model and instruction sets, cores, memory, load, versions.

One place reads ``/proc/cpuinfo``, ``/proc/meminfo`` and the installed package versions;
``featx doctor`` (VNNI), ``featx bench`` (the machine line of every report) and
``benchmarks/throughput.py`` (the CPU of its environment record) ask here.

    /proc/cpuinfo  -> parse_cpuinfo(text) -> Cpu(model, flags)   (pure; cpu() reads and caches it)
    /proc/meminfo  -> memory_gib()
    os / platform  -> usable_cores(), load_average()
    importlib      -> library_versions()
                   -> machine_facts() -> MachineFacts            (one snapshot, as recorded in reports)

Everything degrades to ``None`` (or no flags) where the platform does not say: a report then
shows what is known and never fails for want of a fact.

Examples
--------
>>> cpu = parse_cpuinfo("processor : 0\\nmodel name : Example CPU\\nflags : sse2 avx2 avx512f avx512_vnni\\n")
>>> cpu.model, cpu.avx2, cpu.avx512, cpu.vnni
('Example CPU', True, True, True)
>>> parse_cpuinfo("").flags
frozenset()
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

#: Flags of AVX-512 VNNI and AVX-VNNI: the instructions that make int8 GEMMs fastest.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
#: The distributions whose versions a benchmark report records (those installed).
LIBRARIES = ("featx", "numpy", "scikit-learn", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "transformers",
             "tokenizers", "efficientnet-lite-pytorch", "h5py", "psutil")


@dataclass(frozen=True)
class Cpu:
    """The CPU model name and its instruction-set flags (as ``/proc/cpuinfo`` names them)."""

    model: str
    flags: frozenset[str] = frozenset()

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        """AVX-512 Foundation (``avx512f``)."""
        return "avx512f" in self.flags

    @property
    def vnni(self) -> bool:
        """AVX-512 VNNI or AVX-VNNI."""
        return bool(self.flags & VNNI_FLAGS)


def parse_cpuinfo(text: str, fallback_model: str = "") -> Cpu:
    """The first processor's model name and flags in the text of ``/proc/cpuinfo`` (x86 layout)."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
        if model is not None and flags is not None:
            break
    return Cpu(model or fallback_model, flags or frozenset())


@functools.lru_cache(maxsize=1)
def cpu() -> Cpu:
    """This machine's CPU (read once per process)."""
    fallback = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return Cpu(fallback)
    return parse_cpuinfo(text, fallback)


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (empty where ``/proc/cpuinfo`` is missing)."""
    return cpu().flags


def has_vnni() -> bool:
    """Whether the CPU has AVX-512 VNNI or AVX-VNNI, the instructions that make int8 GEMMs fastest."""
    return cpu().vnni


def usable_cores() -> int | None:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def memory_gib() -> float | None:
    """Total memory in GiB (one decimal), from ``/proc/meminfo``; None where it is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> tuple[float, float, float] | None:
    """The 1-, 5- and 15-minute load averages; None where the platform has none."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``VmHWM``), MB; NaN where ``/proc`` has no such line."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def library_versions(distributions=LIBRARIES) -> dict[str, str]:
    """``{distribution: version}`` of those installed, in the order asked."""
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class MachineFacts:
    """A snapshot of the machine, as a benchmark report records it (:meth:`to_dict` keys)."""

    cpu: str
    cores: int | None
    usable_cores: int | None
    memory_gib: float | None
    load_average: list[float] | None
    python: str
    platform: str
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cpu": self.cpu, "cores": self.cores, "usable_cores": self.usable_cores,
                "memory_gib": self.memory_gib, "load_average": self.load_average, "python": self.python,
                "platform": self.platform, "versions": dict(self.versions)}

    @classmethod
    def from_dict(cls, record: dict) -> MachineFacts:
        return cls(**{k: record.get(k) for k in ("cpu", "cores", "usable_cores", "memory_gib", "load_average",
                                                   "python", "platform")}, versions=dict(record.get("versions") or {}))

    def line(self) -> str:
        """One line for a report: CPU, usable cores, memory, Python and the main libraries."""
        libs = ", ".join(f"{k} {self.versions[k]}" for k in ("featx", "torch", "onnxruntime", "onnxruntime-gpu",
                                                             "scikit-learn", "numpy", "transformers")
                         if k in self.versions)
        return (f"{self.cpu}, {self.usable_cores} usable cores, {self.memory_gib} GiB RAM; "
                f"Python {self.python}; {libs}")


def rounded_load_average() -> list[float] | None:
    """:func:`load_average` rounded to two decimals, as reports record it."""
    load = load_average()
    return None if load is None else [round(v, 2) for v in load]


def machine_facts() -> MachineFacts:
    """CPU model, cores, memory, load average, Python and library versions, now."""
    return MachineFacts(cpu=cpu().model, cores=os.cpu_count(), usable_cores=usable_cores(), memory_gib=memory_gib(),
                        load_average=rounded_load_average(), python=platform.python_version(),
                        platform=platform.platform(), versions=library_versions())
