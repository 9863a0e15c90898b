"""Shards to workers, results back: a bounded window in flight, the first result wins.

:func:`dispatch` drives any ``submit(task) -> concurrent.futures.Future`` (a process pool, a
Dask cluster through :mod:`featx.extraction.cluster`):

- at most ``window`` shards are in flight: memory and lost work stay bounded on any dataset;
- results are handed over (to :func:`featx.extraction.extract`'s committer) as they arrive;
- at the tail, when workers fall idle, a shard running much longer than the median
  (:data:`STRAGGLER_FACTOR`) is submitted once more; the first result wins, the other copy is
  cancelled or dropped;
- when a shard cannot be done (its worker died, Dask's ``KilledWorker``) or a result is refused,
  nothing more is submitted, the shards in flight are still awaited and handed over (everything
  that finished is committed), then a featx error names the shard and says how to resume.

:func:`process_pool` makes the pool of ``featx extract --workers N``: its processes exit as
soon as the coordinator dies, even by ``kill -9`` (they would otherwise wait for work forever,
holding a backbone's memory each).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_any
from typing import Callable, Iterable

from ..errors import WorkerError
from ..validation import check_int
from .shard import ShardTask

__all__ = ["HEARTBEAT_S", "STRAGGLER_FACTOR", "DispatchStats", "dispatch", "exit_with_parent", "process_pool",
           "window_for"]

#: At the tail, a shard in flight this many times longer than the median shard is submitted once more.
STRAGGLER_FACTOR = 2.0
#: Seconds between two calls of ``alive`` while waiting for results.
HEARTBEAT_S = 5.0
#: Shards in flight per worker, by default: one computing, one waiting, so no worker idles between shards.
IN_FLIGHT_PER_WORKER = 2


def window_for(workers: int, max_in_flight: int | None = None) -> int:
    """Shards in flight: ``max_in_flight``, or :data:`IN_FLIGHT_PER_WORKER` per worker."""
    return max_in_flight or max(1, IN_FLIGHT_PER_WORKER * workers)


@dataclass
class DispatchStats:
    """What :func:`dispatch` did besides handing results over."""

    submitted: int = 0
    resubmitted: int = 0  # straggler copies
    duplicates: int = 0  # results dropped: their shard's first result was handed over already


@dataclass
class _Flight:
    task: ShardTask
    started: float
    copy: bool = False


@dataclass
class _State:
    flights: dict = field(default_factory=dict)  # future -> _Flight
    finished: set = field(default_factory=set)  # keys handed over
    copied: set = field(default_factory=set)  # keys submitted twice
    durations: list = field(default_factory=list)
    error: BaseException | None = None


def dispatch(submit: Callable[[ShardTask], cf.Future], tasks: Iterable[ShardTask],
             handle: Callable[[ShardTask, object], None], *, workers: int, window: int | None = None,
             alive: Callable[[], None] | None = None) -> DispatchStats:
    """Run ``tasks`` through ``submit`` with at most ``window`` in flight, handing each result to ``handle``.

    Parameters
    ----------
    submit : callable
        ``submit(task) -> concurrent.futures.Future`` of the task's result.
    tasks : iterable of ShardTask
        Consumed lazily, as the window frees.
    handle : callable
        ``handle(task, result)``, called once per task in this thread; an exception it raises
        stops the run like a failed shard (after the shards in flight are handed over).
    workers : int
        How many shards run at once (stragglers are resubmitted only while some worker idles).
    window : int, optional
        Shards in flight (default :func:`window_for`).
    alive : callable, optional
        Called every :data:`HEARTBEAT_S` seconds while waiting: it raises when the workers are
        gone for good (a Dask client that lost its scheduler), and the run stops at once,
        without waiting for the shards in flight.

    Returns
    -------
    DispatchStats

    Raises
    ------
    WorkerError
        A shard could not be computed (named, with how to resume).
    Exception
        What ``handle`` raised first.

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from featx.sources import Item
    >>> tasks = [ShardTask(str(k), (Item(str(k), None),)) for k in range(10)]
    >>> seen = []
    >>> with ThreadPoolExecutor(2) as pool:
    ...     stats = dispatch(lambda t: pool.submit(len, t.items), tasks, lambda t, r: seen.append(t.key), workers=2)
    >>> sorted(seen, key=int) == [str(k) for k in range(10)], stats.submitted
    (True, 10)
    """
    check_int(workers, "workers", "dispatch", low=1)
    window = window_for(workers, window)
    state, stats = _State(), DispatchStats()
    pending = iter(tasks)
    upcoming = next(pending, None)  # one ahead: the tail (no task left to submit) is known at once

    def launch(task: ShardTask, copy: bool = False) -> None:
        try:
            fut = submit(task)
        except Exception as e:  # noqa: BLE001 - e.g. a pool broken by a dead worker refuses new work
            if state.error is None:
                state.error = shard_error(task, e)
            return
        state.flights[fut] = _Flight(task, time.monotonic(), copy)
        if copy:
            state.copied.add(task.key)
            stats.resubmitted += 1
        else:
            stats.submitted += 1

    try:
        while True:
            while upcoming is not None and state.error is None and _keys_in_flight(state) < window:
                launch(upcoming)
                upcoming = next(pending, None)
            if not state.flights:
                break
            timeout = None
            if upcoming is None and state.error is None:
                for task in _stragglers(state, workers):
                    launch(task, copy=True)
                timeout = _next_straggler_check(state, workers)
            if alive is not None:
                timeout = HEARTBEAT_S if timeout is None else min(timeout, HEARTBEAT_S)
            done, _ = cf.wait(state.flights, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            if alive is not None:  # before landing: futures of a lost cluster end cancelled
                alive()
            for fut in done:
                _land(fut, state, stats, handle)
    finally:
        for fut in state.flights:
            fut.cancel()
    if state.error is not None:
        raise state.error
    return stats


def _keys_in_flight(state: _State) -> int:
    return len({f.task.key for f in state.flights.values()})


def _land(fut: cf.Future, state: _State, stats: DispatchStats, handle) -> None:
    """One finished future: hand its result over (the first of its shard), or record why the run must stop."""
    flight = state.flights.pop(fut, None)
    if flight is None:  # a copy cancelled when its shard finished
        return
    key = flight.task.key
    if key in state.finished:
        stats.duplicates += 1
        return
    others = [f for f, fl in state.flights.items() if fl.task.key == key]
    if fut.cancelled() or fut.exception() is not None:
        if others:  # the other copy may still succeed
            return
        if state.error is None:
            state.error = shard_error(flight.task, None if fut.cancelled() else fut.exception())
        return
    state.finished.add(key)
    state.durations.append(time.monotonic() - flight.started)
    for other in others:  # the first result wins
        other.cancel()
        del state.flights[other]
    try:
        handle(flight.task, fut.result())
    except Exception as e:  # noqa: BLE001 - the run stops with it once the shards in flight are in
        if state.error is None:
            state.error = e


def _stragglers(state: _State, workers: int) -> list[ShardTask]:
    """Shards to submit once more: idle workers exist, and the shard runs > STRAGGLER_FACTOR x the median."""
    idle = workers - len(state.flights)
    if idle <= 0 or not state.durations:
        return []
    limit = STRAGGLER_FACTOR * statistics.median(state.durations)
    now = time.monotonic()
    slow = sorted((fl for fl in state.flights.values() if fl.task.key not in state.copied
                   and now - fl.started >= limit), key=lambda fl: fl.started)
    return [fl.task for fl in slow[:idle]]


def _next_straggler_check(state: _State, workers: int) -> float | None:
    """Seconds until a shard in flight would become a straggler (None: nothing to watch)."""
    if workers - len(state.flights) <= 0 or not state.durations:
        return None
    limit = STRAGGLER_FACTOR * statistics.median(state.durations)
    now = time.monotonic()
    due = [fl.started + limit - now for fl in state.flights.values() if fl.task.key not in state.copied]
    return max(0.01, min(due)) if due else None


def shard_error(task: ShardTask, error: BaseException | None) -> WorkerError:
    """The error of a shard that could not be computed: what happened, which items, how to resume."""
    resume = ("Everything that finished is committed: run the same command again to resume (these items are "
              "computed again)")
    if isinstance(error, cf.BrokenExecutor):  # a pool process was killed (OOM killer, kill -9) or could not start
        return WorkerError(f"a worker process died while computing shards ({error}); the shard of "
                           f"{task.describe()} was lost. {resume}, with fewer workers or a smaller batch size if a "
                           "worker ran out of memory.")
    if error is None:
        what = "was cancelled by the cluster (the connection to the scheduler was lost?)"
    elif type(error).__name__ == "KilledWorker":  # Dask: the workers running it died, again and again
        what = (f"could not be computed: every worker that ran it died ({error}); a worker ran out of memory, or "
                "these items crash the decoder")
    else:
        what = f"could not be computed: {type(error).__name__}: {error}"
    return WorkerError(f"the shard of {task.describe()} {what}. {resume}.")


# ------------------------------------------------------------------- the process pool
def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` fresh (spawned) processes that exit when this process dies.

    Examples
    --------
    >>> with process_pool(1) as pool:
    ...     pool.submit(sum, [1, 2, 3]).result()
    6
    """
    check_int(workers, "workers", "process_pool", low=1)
    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent)


def exit_with_parent() -> None:
    """In a child process: exit at once when the parent dies (a watcher thread on the parent's sentinel).

    The sentinel is the read end of a pipe whose write end only the parent holds: it becomes
    readable when the parent is gone, however it died (``kill -9`` included). Nothing is polled.
    """
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing
        return

    def watch():
        wait_for_any([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="featx-exit-with-parent", daemon=True).start()
