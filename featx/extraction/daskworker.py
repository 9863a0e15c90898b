"""What featx runs inside Dask workers: the backbone plugin and the shard task.

The one featx module that subclasses a ``distributed`` class, and so the only one importing
``distributed`` when imported (:mod:`featx.extraction.cluster` imports it once a cluster is used).
"""

from __future__ import annotations

import os
import socket

from ..engine.runtime import default_threads
from .shard import ShardJob, ShardResult, ShardTask, compute_shard

try:  # featx[dask]; featx.extraction.cluster.connect says how to install it before this module is needed
    from distributed import WorkerPlugin, get_worker
except ImportError:  # pragma: no cover - imported only once a cluster is connected
    WorkerPlugin = object

__all__ = ["BackbonePlugin", "run_shard", "worker_label"]


class BackbonePlugin(WorkerPlugin):
    """Loads a job's backbone once per worker and checks its fingerprint, as the worker joins.

    A worker whose model file differs from the coordinator's raises here: at registration
    the coordinator gets the error, naming the worker; a worker that joins later logs it, and
    its first shard comes back refused (:attr:`featx.extraction.shard.ShardResult.error`).

    ``threads_on_host`` maps a host to the Dask threads its workers run in all: with
    ``job.threads=None`` each worker gives ONNX Runtime its share of the host's cores.
    With ``local_gpus``, a worker of a local cluster (named 0, 1, ...) sees one device of its
    own (``CUDA_VISIBLE_DEVICES``) unless its environment chose already.
    """

    def __init__(self, job: ShardJob, threads_on_host: dict[str, int] | None = None, local_gpus: int = 0):
        self.job = job
        self.threads_on_host = dict(threads_on_host or {})
        self.local_gpus = local_gpus

    def setup(self, worker):
        if self.local_gpus and isinstance(worker.name, int) and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(worker.name % self.local_gpus)
        threads = self.job.threads
        if threads is None:
            share = self.threads_on_host.get(_host(worker.address), worker.state.nthreads)
            threads = max(1, default_threads() // max(1, share))
        self.job.backbone(worker_label(worker), threads=threads)

    def teardown(self, worker):
        self.job.forget()


def worker_label(worker) -> str:
    """``"tcp://10.0.0.5:40123 (node-3)"``: how errors name a Dask worker."""
    return f"{worker.address} ({socket.gethostname()})"


def _host(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


def run_shard(job: ShardJob, task: ShardTask) -> ShardResult:
    """The Dask task of one shard: :func:`featx.extraction.shard.compute_shard`, naming the worker."""
    return compute_shard(job, task, worker=worker_label(get_worker()))
