"""Scaled-out extraction under faults, for real: pool processes and Dask workers killed with SIGKILL,
the coordinator killed with SIGKILL. Synchronised on events (a shard appearing, a process ending),
never on sleeps. The coordinator is the real `featx extract` CLI in a subprocess; a Dask cluster
that must outlive it lives in the test process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import psutil
import pytest
from distributed import Client, LocalCluster

import featx
from featx.cache.verify import verify
from featx.cli import main
from test_cache_faults import (N_ALL, SHARD, assert_whole_split_embedded, extract_cmd, start, wait_for_shards,
                               whole_split)  # whole_split: a fixture, used by name

#: How long the workers of a killed coordinator may take to notice and exit (they react at once:
#: this only bounds a failing test).
ORPHAN_TIMEOUT_S = 60


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def assert_exit_soon(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=ORPHAN_TIMEOUT_S)
    for p in alive:  # leave nothing behind, then fail
        p.kill()
    assert alive == [], f"orphaned workers still running: {[p.pid for p in alive]}"


def test_worker_processes_exit_when_the_coordinator_is_killed(tiny_image_onnx, tmp_path):
    cache = tmp_path / "cache"
    proc = start(tiny_image_onnx, cache, "--workers", "2", limit=N_ALL)
    wait_for_shards(cache, 1, proc)  # the workers are up and computing
    workers = descendants(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_exit_soon(workers)


def dask_cluster(**scheduler_kwargs) -> LocalCluster:
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.ERROR, scheduler_kwargs=scheduler_kwargs)


def no_duplicate_ids(cache) -> bool:
    ids = featx.load_features(cache)[2]
    return len(set(ids)) == len(ids)


@pytest.mark.slow
def test_sigkill_of_a_dask_worker_its_shard_is_recomputed_elsewhere(tiny_image_onnx, tmp_path, whole_split):
    cache = tmp_path / "cache"
    with dask_cluster() as cluster, Client(cluster) as client:
        proc = start(tiny_image_onnx, cache, "--dask", cluster.scheduler_address, limit=N_ALL)
        wait_for_shards(cache, 1, proc)
        victim = psutil.Process(next(iter(client.run(os.getpid).values())))
        victim.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert not victim.is_running()
    assert f"{N_ALL} embedded, 0 cached already of {N_ALL} items" in out
    assert main(["verify", str(cache)]) == 0
    assert no_duplicate_ids(cache)
    assert_whole_split_embedded(cache, whole_split)


@pytest.mark.slow
def test_a_shard_that_cannot_be_done_keeps_what_finished_and_says_how_to_resume(tiny_image_onnx, tmp_path, whole_split):
    # allowed_failures=0: the first death of a worker running a shard is that shard's KilledWorker.
    cache = tmp_path / "cache"
    with dask_cluster(allowed_failures=0) as cluster, Client(cluster) as client:
        proc = start(tiny_image_onnx, cache, "--dask", cluster.scheduler_address, limit=N_ALL)
        wait_for_shards(cache, 1, proc)
        psutil.Process(next(iter(client.run(os.getpid).values()))).send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, err
        assert err.startswith(f"featx: error: the shard of {SHARD} items (") and "Traceback" not in err
        assert "could not be computed: every worker that ran it died" in err
        assert "Everything that finished is committed: run the same command again to resume" in err
        committed = len(featx.load_features(cache)[2])
        assert committed >= SHARD and committed % SHARD == 0 and verify(cache).ok
        rerun = subprocess.run(extract_cmd(tiny_image_onnx, cache, "--dask", cluster.scheduler_address,
                                           limit=N_ALL), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_ALL - committed} embedded, {committed} cached already of {N_ALL} items" in rerun.stdout
    assert no_duplicate_ids(cache)
    assert_whole_split_embedded(cache, whole_split)


@pytest.mark.slow
def test_kill_9_of_a_dask_coordinator_then_the_same_command_resumes(tiny_image_onnx, tmp_path, whole_split):
    cache = tmp_path / "cache"
    proc = start(tiny_image_onnx, cache, "--dask", "local:2", limit=N_ALL)
    wait_for_shards(cache, 1, proc)
    cluster = descendants(proc.pid)  # the local cluster's nannies and workers
    assert len(cluster) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_exit_soon(cluster)
    committed = len(featx.load_features(cache)[2])
    assert committed >= SHARD and verify(cache).ok
    rerun = subprocess.run(extract_cmd(tiny_image_onnx, cache, "--dask", "local:2", limit=N_ALL),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_ALL - committed} embedded, {committed} cached already of {N_ALL} items" in rerun.stdout
    assert main(["verify", str(cache)]) == 0
    assert no_duplicate_ids(cache)
    assert_whole_split_embedded(cache, whole_split)


def start_dask(tmp_path, name: str) -> tuple[list[subprocess.Popen], str]:
    """A `dask scheduler` and one `dask worker` as processes of their own; returns them and the address
    (read from the scheduler file once it exists: an event, not a delay)."""
    import json
    import sys
    import time

    file = tmp_path / f"{name}.json"
    bin_dir = os.path.dirname(sys.executable)
    scheduler = subprocess.Popen([f"{bin_dir}/dask", "scheduler", "--port", "0", "--dashboard-address", ":0",
                                  "--scheduler-file", str(file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not file.exists() or not file.read_text().strip():
        assert scheduler.poll() is None and time.time() - t0 < 120, "the scheduler did not start"
        time.sleep(0.01)
    worker = subprocess.Popen([f"{bin_dir}/dask", "worker", "--scheduler-file", str(file), "--nthreads", "1",
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [scheduler, worker], json.loads(file.read_text())["address"]


@pytest.mark.slow
def test_a_lost_scheduler_is_a_message_and_the_same_command_resumes_on_a_new_one(tiny_image_onnx, tmp_path, whole_split):
    cache = tmp_path / "cache"
    processes, address = start_dask(tmp_path, "first")
    try:
        proc = start(tiny_image_onnx, cache, "--dask", address, limit=N_ALL)
        wait_for_shards(cache, 1, proc)
        processes[0].kill()  # the scheduler
        _, err = proc.communicate(timeout=300)  # the client gives up reconnecting after 30 s
    finally:
        for p in processes:
            p.kill()
            p.wait()
    assert proc.returncode == 1, err
    assert err.startswith(f"featx: error: lost the Dask scheduler at {address}") and "Traceback" not in err
    assert "Committed work is kept: restart the scheduler and its workers if they died, then run the same command " \
           "again to resume." in err
    committed = len(featx.load_features(cache)[2])
    assert committed >= SHARD and verify(cache).ok
    processes, address = start_dask(tmp_path, "second")
    try:
        rerun = subprocess.run(extract_cmd(tiny_image_onnx, cache, "--dask", address, limit=N_ALL),
                               capture_output=True, text=True, timeout=600)
    finally:
        for p in processes:
            p.kill()
            p.wait()
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_ALL - committed} embedded, {committed} cached already of {N_ALL} items" in rerun.stdout
    assert no_duplicate_ids(cache)
    assert_whole_split_embedded(cache, whole_split)
