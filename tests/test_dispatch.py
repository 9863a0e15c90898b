"""featx.dispatch with real executors: the window bounds the shards in flight and the tasks pulled,
the first result of a shard wins, a failed shard stops the run after what is in flight is handed over."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from featx.extraction.dispatch import dispatch, window_for
from featx.errors import WorkerError
from featx.sources import Item
from featx.extraction.shard import ShardTask


def tasks(n: int, pulled: list | None = None):
    for k in range(n):
        if pulled is not None:
            pulled.append(k)
        yield ShardTask(f"k{k}", (Item(f"item{k}", None),))


def test_the_window_bounds_shards_in_flight_and_tasks_pulled():
    pulled, handled, in_flight, peak = [], [], [0], [0]
    lock = threading.Lock()

    def work(task):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        return task.key

    def handle(task, result):
        with lock:
            in_flight[0] -= 1
        assert len(pulled) - len(handled) <= 3 + 1  # the window, and one task looked ahead
        handled.append(result)

    with cf.ThreadPoolExecutor(4) as pool:
        stats = dispatch(lambda t: pool.submit(work, t), tasks(50, pulled), handle, workers=4, window=3)
    assert sorted(handled, key=lambda k: int(k[1:])) == [f"k{k}" for k in range(50)]
    assert peak[0] <= 3 and stats.submitted == 50 and stats.resubmitted == 0
    assert window_for(4) == 8 and window_for(4, 3) == 3


def test_the_first_result_of_a_shard_wins():
    handled = []
    twice = [*tasks(2), next(tasks(1))]  # k0, k1, then k0 again
    with cf.ThreadPoolExecutor(2) as pool:
        stats = dispatch(lambda t: pool.submit(lambda: t.key), twice, lambda t, r: handled.append(r), workers=2,
                         window=1)
    assert handled == ["k0", "k1"] and stats.duplicates == 1


def test_a_failed_shard_stops_the_run_after_what_is_in_flight_is_handed_over():
    k4_started, k3_failing = threading.Event(), threading.Event()
    handled = []

    def work(task):
        if task.key == "k3":
            assert k4_started.wait(60)
            k3_failing.set()
            raise OSError("the storage went away")
        if task.key == "k4":  # in flight when k3 fails: still handed over
            k4_started.set()
            assert k3_failing.wait(60)
        return task.key

    with cf.ThreadPoolExecutor(2) as pool, pytest.raises(WorkerError) as caught:
        dispatch(lambda t: pool.submit(work, t), tasks(20), lambda t, r: handled.append(r), workers=2, window=2)
    assert str(caught.value) == ("the shard of 1 items (item3) could not be computed: OSError: the storage went "
                                 "away. Everything that finished is committed: run the same command again to resume "
                                 "(these items are computed again).")
    assert {"k0", "k1", "k2", "k4"} <= set(handled) and "k3" not in handled
    assert "k19" not in handled  # nothing more was submitted


# ----------------------------------------------------------------- through featx.extract with a process pool
def test_a_pool_worker_with_another_model_file_is_refused_naming_it(tiny_image_onnx, nan_image_onnx, tmp_path):
    import shutil

    import featx
    from featx.extraction.dispatch import process_pool
    from featx.errors import CacheMismatchError

    model = tmp_path / "model" / tiny_image_onnx.name
    shutil.copytree(tiny_image_onnx.parent, model.parent)
    bb = featx.load_backbone(model)
    shutil.copyfile(nan_image_onnx, model)  # what the worker will find at the path
    with process_pool(1) as pool, pytest.raises(CacheMismatchError) as caught:
        featx.extract(featx.open_dataset("builtin:digits", limit=50), bb, tmp_path / "c", executor=pool,
                      progress=False)
    assert str(caught.value).startswith("worker ") and " pid " in str(caught.value)
    assert f"the coordinator's has {bb.fingerprint_id}" in str(caught.value)


def test_a_file_gone_for_everyone_is_an_ordinary_bad_item(tiny_image_onnx, image_files, tmp_path):
    """A worker reports the listed files it cannot open; when the coordinator cannot open them either (deleted
    since the listing), they are bad items as in-process, not a storage problem of the worker."""
    import featx
    from featx.extraction.dispatch import process_pool
    from featx.extraction.shard import ShardJob, ShardTask, compute_shard

    ds = featx.open_dataset(image_files)
    gone = next(i for i in ds.items if i.ref.endswith("circle.png"))
    (image_files / "shapes" / "circle.png").unlink()
    bb = featx.load_backbone(tiny_image_onnx)
    result = compute_shard(ShardJob.of(bb, on_error="skip"), ShardTask.of(bb.fingerprint_id, ds.items))
    assert result.unreadable == ((gone.id, gone.ref),) and result.data.failed_ids == [gone.id]
    with process_pool(1) as pool:
        report = featx.extract(ds, bb, tmp_path / "c", executor=pool, on_error="skip", progress=False)
    assert report.embedded == len(ds) - 1 and list(report.failed) == [gone.id]


def test_an_executor_that_refuses_work_stops_the_run_with_a_message():
    handled = []
    pool = cf.ThreadPoolExecutor(1)

    def submit(task):
        if task.key == "k2":
            pool.shutdown()  # as a process pool does once a worker died: submit raises
        return pool.submit(lambda: task.key)

    with pytest.raises(WorkerError, match=r"^the shard of 1 items \(item2\) could not be computed: RuntimeError: "
                                          r"cannot schedule new futures after shutdown\. Everything that finished"):
        dispatch(submit, tasks(5), lambda t, r: handled.append(r), workers=1, window=1)
    assert handled == ["k0", "k1"]
