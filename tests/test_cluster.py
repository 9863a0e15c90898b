"""featx on Dask, for real: a LocalCluster of 2 worker processes of 1 thread each, the tiny ONNX model.

Features equal the in-process run; the coordinator creates no session; a duplicated result is
committed once; a bad item is never retried and the finished shards are kept; a worker with
another model file is refused, named; head selection through joblib's Dask backend picks the
same head. Killing workers and the coordinator: tests/test_scale_faults.py.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess

import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream

import featx
import featx.extraction.cluster
import featx.extraction.dispatch
from featx.cli import main
from featx.errors import CacheMismatchError, ClusterError, ItemFailedError, ParameterError
from featx.sources import Item, make_dataset, open_dataset, subset

N = 300
SHARD = 40


def local_cluster(**kwargs) -> LocalCluster:
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.ERROR, **kwargs)


@pytest.fixture(scope="module")
def client():
    with local_cluster() as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def digits():
    return subset(open_dataset("builtin:digits"), N, seed=0)


@pytest.fixture(scope="module")
def reference(tiny_image_onnx, digits, tmp_path_factory):
    """The in-process run: (X, ids)."""
    cache = tmp_path_factory.mktemp("ref") / "cache"
    featx.extract(digits, tiny_image_onnx, cache, shard_size=SHARD, progress=False)
    X, _, ids = featx.load_features(cache)
    return X, list(ids)


def assert_equals_reference(cache, reference):
    X, _, ids = featx.load_features(cache, strict=True)
    assert list(ids) == reference[1] and len(set(ids)) == len(ids)
    np.testing.assert_allclose(X, reference[0], atol=1e-6)


def test_features_equal_the_in_process_run_and_the_coordinator_creates_no_session(
        client, tiny_image_onnx, digits, reference, tmp_path):
    bb = featx.load_backbone(tiny_image_onnx)
    report = featx.extract(digits, bb, tmp_path / "c", shard_size=SHARD, dask=client, progress=False)
    assert (report.embedded, report.shards) == (N, math.ceil(N / SHARD))
    assert report.providers == ("CPUExecutionProvider",)  # reported by the workers
    assert bb.session._session is None  # the coordinator never opened the model
    assert_equals_reference(tmp_path / "c", reference)
    assert featx.extract(digits, bb, tmp_path / "c", dask=client, progress=False).cached == N


def test_a_duplicated_result_is_committed_once(client, tiny_image_onnx, digits, reference, tmp_path, monkeypatch):
    # One shard in flight, two workers: when the last shard is submitted a worker is idle, and with a
    # straggler factor of 0 that shard is submitted again at once. Both copies run; one result is committed.
    monkeypatch.setattr(featx.extraction.dispatch, "STRAGGLER_FACTOR", 0.0)
    report = featx.extract(digits, tiny_image_onnx, tmp_path / "c", shard_size=SHARD, dask=client,
                           max_in_flight=1, progress=False)
    assert report.resubmitted == 1
    assert (report.embedded, report.shards) == (N, math.ceil(N / SHARD))
    assert len(list((tmp_path / "c").glob("models/tiny-image/shards/shard-*.h5"))) == report.shards
    assert_equals_reference(tmp_path / "c", reference)


def test_a_bad_item_under_raise_runs_once_and_finished_shards_are_kept(client, tiny_image_onnx, digits, reference,
                                                                      tmp_path):
    items = list(digits.items)
    bad = 5 * SHARD + 20  # in the sixth shard, in its second batch of 16
    items[bad] = Item("broken", str(tmp_path / "missing.png"), items[bad].label)
    ds = make_dataset(digits.name, "image", items)
    with get_task_stream(client) as stream:
        with pytest.raises(ItemFailedError, match=r"^item 'broken' failed: image 'broken': no such file"):
            featx.extract(ds, tiny_image_onnx, tmp_path / "c", shard_size=SHARD, dask=client, progress=False)
    runs = [(t["key"], t["status"]) for t in stream.data]
    assert all(status == "OK" for _, status in runs), runs  # never retried
    assert len({key for key, _ in runs}) == len(runs)  # no task ran twice
    _, _, ids = featx.load_features(tmp_path / "c")
    assert set(i.id for i in items[:5 * SHARD + 16]) <= set(ids)  # every shard before it, and its first batch
    assert "broken" not in set(ids)
    ref = dict(zip(reference[1], reference[0]))
    X, _, ids = featx.load_features(tmp_path / "c")
    np.testing.assert_allclose(X, np.stack([ref[i] for i in ids]), atol=1e-6)


def test_a_worker_with_another_model_file_is_refused_naming_it(client, tiny_image_onnx, nan_image_onnx, digits,
                                                              tmp_path):
    # The coordinator loaded the model; then the file at that path changed: every worker now sees another
    # model file there (as a node with another copy would) and is refused before any shard.
    model = tmp_path / "model" / tiny_image_onnx.name
    shutil.copytree(tiny_image_onnx.parent, model.parent)
    bb = featx.load_backbone(model)
    shutil.copyfile(nan_image_onnx, model)
    with pytest.raises(CacheMismatchError, match="give every worker the same model file") as caught:
        featx.extract(digits, bb, tmp_path / "c", dask=client, progress=False)
    workers = client.scheduler_info(n_workers=-1)["workers"]
    assert any(f"worker {address} " in str(caught.value) for address in workers)
    assert bb.fingerprint_id in str(caught.value)
    assert not list((tmp_path / "c").glob("models/*/shards/*.h5"))


def test_gpus_per_worker_needs_gpu_workers(client, tiny_image_onnx, digits, tmp_path):
    with pytest.raises(ClusterError, match=r"no worker .* offers a GPU; start GPU workers with `dask worker "
                                           r"ADDRESS --nthreads 1 --resources GPU=1`"):
        featx.extract(digits, tiny_image_onnx, tmp_path / "c", dask=client, gpus_per_worker=1, progress=False)
    if featx.extraction.cluster.local_gpus() == 0:
        with pytest.raises(ClusterError, match="this machine has no NVIDIA GPU"):
            featx.extract(digits, tiny_image_onnx, tmp_path / "d", dask="local:1", gpus_per_worker=1, progress=False)


def test_parameters_and_an_unreachable_scheduler(tiny_image_onnx, digits, tmp_path, monkeypatch):
    import concurrent.futures as cf

    with pytest.raises(ParameterError, match="The 'dask' parameter of extract must be 'local', 'local:N'"):
        featx.extract(digits, tiny_image_onnx, tmp_path / "c", dask="local:0")
    with pytest.raises(ParameterError, match="pass executor= or dask=, not both"), cf.ThreadPoolExecutor(1) as pool:
        featx.extract(digits, tiny_image_onnx, tmp_path / "c", dask="local", executor=pool)
    with pytest.raises(ParameterError, match="gpus_per_worker applies to a Dask cluster"):
        featx.extract(digits, tiny_image_onnx, tmp_path / "c", gpus_per_worker=1)
    monkeypatch.setattr(featx.extraction.cluster, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ClusterError, match=r"cannot reach a Dask scheduler at tcp://127.0.0.1:1 .*`dask scheduler`"):
        featx.extract(digits, tiny_image_onnx, tmp_path / "c", dask="tcp://127.0.0.1:1", progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2", "--dask", "local"], "--workers and --dask do not go together"),
    (["--dask", "nowhere"], "expected local, local:N (N >= 1) or a scheduler address"),
    (["--gpus-per-worker", "1"], "--gpus-per-worker needs --dask"),
    (["--max-in-flight", "3"], "--max-in-flight needs --workers or --dask"),
])
def test_cli_usage_errors(tiny_image_onnx, tmp_path, capsys, argv, message):
    try:
        code = main(["extract", "builtin:digits", "--model", str(tiny_image_onnx), "--cache", str(tmp_path / "c"),
                     *argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_train_on_dask_selects_the_same_head_as_the_local_run(client, tiny_image_onnx, tmp_path, capsys):
    cache = tmp_path / "cache"
    featx.extract(subset(open_dataset("builtin:digits"), 400, seed=0), tiny_image_onnx, cache, progress=False)
    address = client.scheduler.address
    for out, extra in ((tmp_path / "local", []), (tmp_path / "dask", ["--dask", address])):
        assert main(["train", str(cache), "--head", "logreg", "--cv", "3", "--out", str(out), "--json", *extra]) == 0
    local, dask = (featx.heads.persist.read_metadata(tmp_path / name / "logreg.skops") for name in ("local", "dask"))
    assert dask["best_params"] == local["best_params"]
    assert dask["cv_mean"] == pytest.approx(local["cv_mean"], abs=1e-12)
    assert dask["cv_std"] == pytest.approx(local["cv_std"], abs=1e-12)


def test_a_worker_that_cannot_read_an_item_path_is_a_clear_error(tmp_path, tiny_image_onnx, image_files):
    """A `dask worker` in its own mount namespace, where the items' folder is an empty directory: a node
    without the shared storage. The coordinator reads the files; the worker cannot."""
    if subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unprivileged mount namespaces (unshare -Urm) to give a worker another view of the files")
    import sys

    empty = tmp_path / "empty"
    empty.mkdir()
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as c:
        script = (f"mount --bind {empty} {image_files} && exec {sys.executable} -m distributed.cli.dask_worker "
                  f"{cluster.scheduler_address} --nthreads 1 --no-dashboard")
        worker = subprocess.Popen(["unshare", "-Urm", "sh", "-c", script], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            c.wait_for_workers(1, timeout=120)
            for on_error in ("raise", "skip"):
                with pytest.raises(featx.errors.WorkerError) as caught:
                    featx.extract(image_files, tiny_image_onnx, tmp_path / on_error, dask=c, on_error=on_error,
                                  progress=False)
                message = str(caught.value)
                assert message.startswith(f"worker {next(iter(c.scheduler_info(n_workers=-1)['workers']))} ")
                assert f"cannot read {image_files}" in message and "which the coordinator reads" in message
                assert "every worker must see the items at the same path (shared storage" in message
                assert not list((tmp_path / on_error).glob("models/*/shards/*.h5"))  # nothing recorded as failed
        finally:
            worker.kill()
            worker.wait()
