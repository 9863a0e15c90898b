"""Wall time and peak memory of a block of work (one benchmark row).

The resident set size (RSS) is sampled every :data:`MEMORY_INTERVAL_S` by a background
thread and once more at the end; the row's peak is the highest sample above its starting
RSS. With psutil the RSS is this process's plus its child processes' (joblib workers);
without it, this process's alone from ``/proc/self/statm`` (Linux). Where neither exists:
the rise of the process's own high-water mark (``resource.getrusage``), which is 0 unless
the row sets a new high. :func:`memory_method` states which one a report used.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

MEMORY_INTERVAL_S = 0.05


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def proc_rss_bytes() -> int | None:
    """This process's resident memory from ``/proc/self/statm`` (Linux), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int | None:
    """Resident memory of this process and its child processes (joblib workers) with psutil; of this
    process alone without it (:func:`proc_rss_bytes`); None where neither can be read."""
    psutil = _psutil()
    if psutil is None:
        return proc_rss_bytes()
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total


def max_rss_mib() -> float:
    """This process's high-water mark of resident memory, MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def memory_method() -> str:
    """How :class:`Meter` measures memory here, in words for a report."""
    sampled = (f"above the row's starting RSS, sampled every {MEMORY_INTERVAL_S * 1000:.0f} ms by a background "
               "thread")
    if _psutil() is not None:
        return ("peak resident set size (RSS, this process + its child processes such as joblib workers) "
                f"{sampled} (psutil)")
    if proc_rss_bytes() is not None:
        return (f"peak resident set size (RSS) of this process, not its child processes (psutil not installed), "
                f"{sampled} (/proc/self/statm)")
    return ("rise of the process's peak RSS (resource.getrusage ru_maxrss) during the row: "
            "0 unless the row sets a new high-water mark (psutil not installed)")


class Meter:
    """Wall time (``seconds``) and peak memory above the start (``peak_mb``, MiB) of a ``with`` block.

    Examples
    --------
    >>> with Meter() as m:
    ...     total = sum(range(1000))
    >>> m.seconds > 0 and m.peak_mb >= 0
    True
    """

    def __init__(self, interval: float = MEMORY_INTERVAL_S):
        self.interval = interval
        self.seconds = 0.0
        self.peak_mb = 0.0

    def __enter__(self):
        self._start_rss = rss_bytes()
        self._peak = self._start_rss or 0
        self._stop = threading.Event()
        if self._start_rss is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._start_max = max_rss_mib()
        self._t0 = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            rss = rss_bytes()
            if rss and rss > self._peak:
                self._peak = rss

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        if self._start_rss is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, rss_bytes() or 0)
            self.peak_mb = max(0.0, (self._peak - self._start_rss) / 2**20)
        else:
            self.peak_mb = max(0.0, max_rss_mib() - self._start_max)
        return False
