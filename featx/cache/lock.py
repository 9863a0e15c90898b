"""One writer at a time: an ``flock`` on ``CACHE/LOCK``.

The kernel drops the lock when its process dies, even on ``kill -9``, so a lock is
never stale on a local disk. (``flock`` is not reliable on NFS: keep caches on local disks.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import CacheLockedError
from .layout import LOCK
from .store import cache_access


class WriterLock:
    """Context manager holding the cache's writer lock.

    Raises
    ------
    CacheLockedError
        Another process holds it; the message names its pid and host.
    """

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK
        self._fd = None

    def __enter__(self):
        with cache_access(self.path.parent, "write to"):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise CacheLockedError(
                f"cache {self.path.parent} is locked by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} (since {holder.get('since', '?')}): another featx extract is "
                "writing to it. Wait for it to finish, or use another --cache."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    for _ in range(20):  # the holder writes its pid just after locking
        try:
            data = os.pread(fd, 4096, 0)
            if data:
                return json.loads(data)
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return {}
