"""A Ctrl-C that lands inside a destructor or a weakref callback (where Python can only print it) is
not lost: it is recorded, and the next safe point raises it. A real signal, delivered to this process."""

from __future__ import annotations

import os
import signal
import weakref

import pytest

from featx import interrupts


@pytest.fixture(autouse=True)
def python_sigint():
    """Python's own SIGINT handler, as in a foreground process: a shell's background job (a CI run
    started with ``&``) starts with SIGINT ignored, and these tests are about the handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _Resource:
    pass


def _interrupt_now():
    os.kill(os.getpid(), signal.SIGINT)
    total = 0
    for i in range(10_000):  # the handler runs at one of these bytecodes
        total += i


def _free_while_interrupted():
    """Free an object whose weakref callback receives a real SIGINT, as h5py's and the pools' callbacks may."""
    def callback(_):
        os.kill(os.getpid(), signal.SIGINT)
        total = 0
        for i in range(10_000):  # the handler runs at one of these bytecodes, inside the callback
            total += i

    obj = _Resource()
    ref = weakref.ref(obj, callback)
    del obj
    return ref


def test_a_ctrl_c_swallowed_by_a_callback_is_raised_at_the_next_safe_point(capsys):
    with interrupts.recorded():
        _free_while_interrupted()  # Python swallows the KeyboardInterrupt here
        assert interrupts.received()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert "Exception ignored" not in capsys.readouterr().err  # recorded, not printed as a traceback
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_outside_recorded_nothing_is_installed():
    with pytest.raises(KeyboardInterrupt):  # Python's own behaviour
        _interrupt_now()
    interrupts.check()  # never raises: nothing was recorded
    assert not interrupts.received()


def test_an_ignored_sigint_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: recorded() must not turn Ctrl-C back on
    with interrupts.recorded():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        _interrupt_now()  # ignored
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
