"""Ctrl-C that is never lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives. When that is
inside a weakref callback or a ``__del__`` (h5py, thread pools and ONNX Runtime's bindings run
some while objects are freed), the exception is printed as "Exception ignored in ..." and the work
goes on: a ``featx extract`` interrupted at such an instant used to finish its run and exit 0.

::

    with recorded():      the CLI's commands run inside it: every SIGINT is also recorded, and the
                          "Exception ignored" report of a swallowed one is not printed
        ...
        check()           long loops call it at safe points (between batches, shards, heads):
                          KeyboardInterrupt if a SIGINT was recorded, even one that was swallowed
    received()            after the command: was there a SIGINT?

Outside :func:`recorded` (the library used from Python) nothing is installed, and :func:`check`
never raises.

Examples
--------
>>> with recorded():
...     check()          # no SIGINT: nothing happens
>>> received()
False
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

__all__ = ["recorded", "check", "received"]

_RECEIVED = threading.Event()


def _on_sigint(signum, frame):
    _RECEIVED.set()
    raise KeyboardInterrupt


@contextmanager
def recorded():
    """Record every SIGINT while the block runs (and raise ``KeyboardInterrupt`` at once, as Python does).

    A no-op outside the main thread, or when SIGINT is not Python's default handler (ignored by a
    shell's background job, or handled by the caller).
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _RECEIVED.clear()
    previous, report = signal.signal(signal.SIGINT, _on_sigint), sys.unraisablehook

    def unraisable(info):
        if not isinstance(info.exc_value, KeyboardInterrupt):  # a swallowed Ctrl-C is recorded: check() raises it
            report(info)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = report
        _RECEIVED.clear()


def received() -> bool:
    """Whether a SIGINT arrived in the :func:`recorded` block running now."""
    return _RECEIVED.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a SIGINT was recorded (a safe point of a long loop)."""
    if _RECEIVED.is_set():
        raise KeyboardInterrupt
