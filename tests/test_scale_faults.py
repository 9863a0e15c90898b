"""Scaled-out extraction under faults, for real: worker processes and Dask workers killed with
SIGKILL, the coordinator killed with SIGKILL. Synchronised on events (a shard appearing, a
process ending), never on sleeps."""

from __future__ import annotations

import signal

import psutil

from test_cache_faults import N_ALL, start, wait_for_shards

#: How long the workers of a killed coordinator may take to notice and exit (they react at once:
#: this only bounds a failing test).
ORPHAN_TIMEOUT_S = 60


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_worker_processes_exit_when_the_coordinator_is_killed(tiny_image_onnx, tmp_path):
    cache = tmp_path / "cache"
    proc = start(tiny_image_onnx, cache, "--workers", "2", limit=N_ALL)
    wait_for_shards(cache, 1, proc)  # the workers are up and computing
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=ORPHAN_TIMEOUT_S)
    assert alive == [], f"orphaned workers still running: {[p.pid for p in alive]}"
