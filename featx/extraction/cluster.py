"""featx on a Dask cluster: extraction shards on its workers, head selection through joblib.

::

    featx extract DATA --model M --cache C --dask local:2           # 2 worker processes on this machine
    featx extract DATA --model M --cache C --dask tcp://HOST:8786   # a scheduler, workers from `dask worker`
    featx train C --dask tcp://HOST:8786                            # the CV fits on the workers

    coordinator: plan, window, commits ──ShardTask──> Dask scheduler ──> workers: BackbonePlugin loaded the
       (holds the cache lock)        <─ShardResult──                     backbone once, checked its fingerprint

The coordinator (the process running ``featx extract``) holds the cache lock and is the only
writer; it never creates an ONNX session. :class:`DaskShards` registers a worker plugin
(:class:`BackbonePlugin`) that loads the backbone once per worker and checks its fingerprint
before the first shard (a worker with another model file is refused, named), then submits
shards with Dask's retries (a transient error is retried, a dead worker's shard is recomputed
elsewhere) and, with ``gpus_per_worker``, the Dask resource ``GPU``. Items travel as paths
(every worker must see them at the same path: shared storage) or as texts.

``distributed`` is imported only when a cluster is used (``pip install 'featx[dask]'``); what runs
on the workers is in :mod:`featx.extraction.daskworker`.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from ..errors import ClusterError
from ..extras import require
from ..engine.runtime import default_threads
from ..validation import check_int, invalid
from .shard import ShardJob, ShardTask

__all__ = ["DaskShards", "check_cluster", "connect", "joblib_on", "quiet_logs", "local_gpus", "local_workers"]

log = logging.getLogger("featx")

#: Dask retries of a shard that raised (a transient error: storage, memory); bad items never raise.
RETRIES = 2
#: Seconds to reach a scheduler, and to wait for its first worker.
CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 120
_LOCAL = re.compile(r"local(?::(\d+))?")
_NVIDIA_GPUS = "/proc/driver/nvidia/gpus"  # one entry per GPU the driver sees


def check_cluster(cluster, name: str = "dask", owner: str = "extract"):
    """``"local"``, ``"local:N"``, a scheduler address (``"tcp://HOST:8786"``, ``"HOST:8786"``) or a
    ``distributed.Client``; returns it.

    Examples
    --------
    >>> check_cluster("local:2"), check_cluster("tcp://10.0.0.5:8786")
    ('local:2', 'tcp://10.0.0.5:8786')
    >>> check_cluster("local:0")
    Traceback (most recent call last):
    ...
    featx.errors.ParameterError: The 'dask' parameter of extract must be 'local', 'local:N' ... Got 'local:0' instead.
    """
    if isinstance(cluster, str):
        match = _LOCAL.fullmatch(cluster.strip())
        if (match and (match.group(1) is None or int(match.group(1)) >= 1)) or (
                not match and re.fullmatch(r"([a-z]+://)?[^\s:/]+:\d+", cluster.strip())):
            return cluster.strip()
    elif type(cluster).__name__ == "Client" and hasattr(cluster, "scheduler"):
        return cluster
    raise invalid(name, owner, "'local', 'local:N' (N >= 1), a scheduler address (tcp://HOST:PORT) or a "
                               "distributed.Client", cluster)


def local_workers(cluster) -> int | None:
    """Worker processes of a ``"local[:N]"`` cluster (N, or this machine's cores); None for any other.

    Examples
    --------
    >>> local_workers("local:3"), local_workers("tcp://10.0.0.5:8786")
    (3, None)
    """
    match = _LOCAL.fullmatch(cluster.strip()) if isinstance(cluster, str) else None
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else default_threads()


@contextmanager
def connect(cluster, *, gpus_per_worker: int = 0) -> Iterator:
    """A ``distributed.Client`` on ``cluster`` (see :func:`check_cluster`), closed on exit.

    ``"local[:N]"`` starts N worker processes of one thread each on this machine (with
    ``gpus_per_worker``, each offers the resource ``GPU`` and gets a device of its own), stopped
    on exit. A client given is used as is and left open.
    """
    distributed = require("distributed", "dask", "running on a Dask cluster")
    cluster = check_cluster(cluster)
    if not isinstance(cluster, str):
        yield cluster
        return
    n = local_workers(cluster)
    if n is not None:
        if gpus_per_worker and n > local_gpus():
            raise ClusterError(f"{cluster} with {gpus_per_worker} GPU per worker needs {n} GPUs; this machine has "
                               f"{local_gpus()}: use local:{local_gpus()} or fewer" if local_gpus() else
                               f"{cluster} with GPUs per worker: this machine has no NVIDIA GPU")
        resources = {"GPU": gpus_per_worker} if gpus_per_worker else None
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR, resources=resources) as local, \
                distributed.Client(local) as client:
            yield client
        return
    try:
        client = distributed.Client(cluster, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach a Dask scheduler at {cluster} ({e}); start one with `dask scheduler` and "
                           "workers with `dask worker ADDRESS`, then pass the scheduler's address") from None
    with client:
        yield client


def local_gpus() -> int:
    try:
        return len(os.listdir(_NVIDIA_GPUS))
    except OSError:
        return 0


class DaskShards:
    """The shards of one extraction on a Dask cluster (a context manager).

    On entry: waits for a worker, checks that GPU workers exist when asked, registers the
    :class:`BackbonePlugin` (every worker loads and checks the backbone now; a refusal raises here,
    naming the worker). :meth:`submit` sends one shard with Dask's retries and resources. On exit
    the plugin is removed, and with it the workers' backbones.
    """

    def __init__(self, client, job: ShardJob, *, gpus_per_worker: int = 0, local_gpus: int = 0):
        check_int(gpus_per_worker, "gpus_per_worker", "extract", low=0, high=1)
        self.client, self.job = client, job
        self.resources = {"GPU": gpus_per_worker} if gpus_per_worker else None
        self.local_gpus = local_gpus
        self.run = uuid.uuid4().hex[:12]
        self.plugin_name = f"featx-backbone-{job.fingerprint_id}-{self.run}"
        self._seq = itertools.count()
        self.workers = 0
        self.executor = None

    def __enter__(self) -> "DaskShards":
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(f"the Dask scheduler at {self.client.scheduler.address} has no worker after "
                               f"{WORKERS_TIMEOUT_S} s; start some with `dask worker {self.client.scheduler.address}`"
                               ) from None
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        if self.resources:
            gpu_workers = [a for a, w in info.items() if w.get("resources", {}).get("GPU", 0) >= self.resources["GPU"]]
            if not gpu_workers:
                raise ClusterError(f"no worker of the Dask scheduler at {self.client.scheduler.address} offers a GPU; "
                                   "start GPU workers with `dask worker ADDRESS --nthreads 1 --resources GPU=1` "
                                   "(one per device, each with its CUDA_VISIBLE_DEVICES)")
            self.workers = len(gpu_workers)
        else:
            self.workers = sum(w["nthreads"] for w in info.values())
        threads_on_host = Counter()
        for w in info.values():
            threads_on_host[w["host"]] += w["nthreads"]
        from .daskworker import BackbonePlugin  # subclasses distributed's WorkerPlugin

        try:  # every worker loads the backbone now; one that is refused raises here, named
            self.client.register_plugin(BackbonePlugin(self.job, threads_on_host, self.local_gpus),
                                        name=self.plugin_name)
        except BaseException:
            self.__exit__()  # the workers that accepted it drop it, and a worker joining later never sees it
            raise
        self.executor = self.client.get_executor(retries=RETRIES, resources=self.resources)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.client.unregister_worker_plugin(self.plugin_name)
        except Exception as e:  # noqa: BLE001 - the cluster may be gone; never mask the run's outcome
            log.debug("could not remove the worker plugin %s: %s", self.plugin_name, e)

    def alive(self) -> None:
        """Raise :class:`~featx.errors.ClusterError` once the client has lost its scheduler.

        A client that loses the connection cancels every future at once (even if it reconnects), so
        the shards in flight are lost: the run stops.
        """
        if self.client.status != "running":
            raise ClusterError(f"lost the Dask scheduler at {self.client.scheduler.address} (the client is "
                               f"{self.client.status}). Committed work is kept: restart the scheduler and its workers "
                               "if they died, then run the same command again to resume.")

    def submit(self, task: ShardTask):
        """One shard -> a ``concurrent.futures.Future`` of its :class:`~featx.extraction.shard.ShardResult`."""
        from .daskworker import run_shard

        return self.executor.submit(run_shard, self.job, task, key=f"featx-shard-{self.run}-{next(self._seq)}")


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence ``distributed``'s and tornado's own log while featx reports cluster problems itself."""
    require("distributed", "dask", "running on a Dask cluster")  # its import sets its loggers' levels
    names = [name for name in list(logging.root.manager.loggerDict)  # Dask sets levels on some children
             if name.split(".")[0] in ("distributed", "tornado")]
    loggers = [logging.getLogger(name) for name in {"distributed", "tornado", *names}]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextmanager
def joblib_on(cluster) -> Iterator:
    """joblib's Dask backend on ``cluster``: scikit-learn's ``n_jobs`` fits run on its workers.

    ``n_jobs=-1`` then means every thread of the cluster. Yields the client.
    """
    import joblib

    with connect(cluster) as client, joblib.parallel_config(backend="dask", client=client):
        yield client
