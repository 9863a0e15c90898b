"""Where a session's batches wait for the device: reused host buffers and device buffers, no per-batch allocation.

On CUDA, a batch goes host -> device once per run. Allocating both sides per batch costs: a
(256, 3, 224, 224) float32 batch is 154 MB, which numpy maps fresh (and page-faults) every time,
and copying from pageable memory runs at a fraction of what page-locked memory allows. A
:class:`Staging` keeps, per input name, shape and dtype, a few :class:`Slot`: a host array (page-locked
on CUDA when the CUDA runtime lets featx register it, else ordinary memory) and an ``OrtValue``
of the same shape on the session's device. The flow of one batch::

    slot = staging.take(name, shape, dtype)    # a free slot, or a new one (never waits)
    host = staging.lend(slot)                  # its host array (made on first use)
    ... write the batch into host ...          # preprocessing normalises straight into it
    slot.upload()                              # host -> device, into the same device buffer
    ... bind slot.device, run ...
    staging.give(slot)                         # free for the next batch of that shape

An array made elsewhere (a caller's batch) goes ``slot.upload(array)``: straight from it into
the slot's device buffer, with no host copy.

A batch of a shape not seen before (the last, shorter batch; texts padded to their own length)
takes a new slot; at most :data:`SLOTS_PER_SHAPE` free slots per shape and :data:`SHAPES` shapes
are kept. On the CPU the same code runs with CPU ``OrtValue`` s (``io_binding=True`` sessions),
which is how the tests exercise it on machines without a GPU.

Examples
--------
>>> import numpy as np
>>> staging = Staging(("cpu", 0))
>>> slot = staging.take("x", (2, 3), np.float32)
>>> staging.lend(slot)[:] = 1.0
>>> slot.upload()
>>> slot.device.numpy().sum()
np.float32(6.0)
>>> staging.give(slot)
>>> staging.take("x", (2, 3), np.float32) is slot     # reused, not reallocated
True
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("featx")

#: Free slots kept per (input name, shape, dtype).
SLOTS_PER_SHAPE = 4
#: Shapes kept (least recently used ones are dropped first).
SHAPES = 16
#: ``cudaHostRegisterPortable``: the page-locked range is usable from every CUDA context.
_CUDA_HOST_REGISTER_PORTABLE = 1
#: Shared libraries of the CUDA runtime, newest first (ONNX Runtime's CUDA provider has loaded one).
CUDART_NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")


def _ort():
    import onnxruntime

    return onnxruntime


def cuda_runtime():
    """The CUDA runtime library (``ctypes.CDLL``) already usable in this process, or None."""
    for name in CUDART_NAMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def pin(array: np.ndarray, cudart=None) -> bool:
    """Page-lock ``array``'s memory for fast copies to a GPU (``cudaHostRegister``); True on success.

    The registration is undone when the array is garbage collected. Without a CUDA runtime
    (``cudart=None`` and none loadable), or when the call fails, nothing changes and the array
    works as ordinary memory.
    """
    cudart = cudart or cuda_runtime()
    if cudart is None or array.nbytes == 0:
        return False
    ptr = ctypes.c_void_p(array.ctypes.data)
    try:
        err = cudart.cudaHostRegister(ptr, ctypes.c_size_t(array.nbytes), ctypes.c_uint(_CUDA_HOST_REGISTER_PORTABLE))
    except AttributeError:  # not a CUDA runtime
        return False
    if err != 0:
        log.debug("cudaHostRegister failed with error %s: host buffers stay pageable", err)
        return False
    weakref.finalize(array, cudart.cudaHostUnregister, ptr)
    return True


@dataclass(eq=False)
class Slot:
    """A device ``OrtValue`` of one shape and, once lent, a host array of that shape: one batch's input, reused."""

    key: tuple
    device: object  # onnxruntime.OrtValue
    host: np.ndarray | None = None
    pinned: bool = False
    uploads: int = field(default=0, compare=False)

    def upload(self, array: np.ndarray | None = None) -> None:
        """Copy ``array`` (default :attr:`host`) into :attr:`device`: host -> device on a GPU, a memcpy on the CPU."""
        self.device.update_inplace(self.host if array is None else array)
        self.uploads += 1


class Staging:
    """Reused host/device buffers of one session (thread-safe: preparing threads take, the runner gives).

    Parameters
    ----------
    device : (str, int)
        ``("cuda", id)`` or ``("cpu", 0)``, as :attr:`featx.engine.runtime.Session.device` says.
    pinned : bool
        Try to page-lock host buffers (CUDA only; see :func:`pin`).
    """

    def __init__(self, device: tuple[str, int], pinned: bool = True):
        self.device = device
        self.pin = bool(pinned) and device[0] == "cuda"
        self.allocated = 0  # device buffers made (tests and benchmarks read it: constant once shapes repeat)
        self.hosts = 0  # host buffers made
        self.pinned = 0  # of which page-locked
        self._free: OrderedDict[tuple, list[Slot]] = OrderedDict()
        self._lent: dict[int, Slot] = {}  # id(host array) -> slot, while a batch is written into it
        self._lock = threading.Lock()
        self._cudart = None

    def take(self, name: str, shape, dtype) -> Slot:
        """A free slot for this input, shape and dtype, or a new one."""
        key = (name, tuple(int(d) for d in shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                self._free.move_to_end(key)
                return free.pop()
        kind, device_id = self.device
        device = _ort().OrtValue.ortvalue_from_shape_and_type(list(key[1]), np.dtype(dtype).type, kind, device_id)
        with self._lock:
            self.allocated += 1
        return Slot(key, device)

    def lend(self, slot: Slot) -> np.ndarray:
        """The slot's host array (made, and page-locked when asked, on first use), lent until :meth:`give`."""
        if slot.host is None:
            slot.host = np.empty(slot.key[1], np.dtype(slot.key[2]))
            if self.pin:
                if self._cudart is None:
                    self._cudart = cuda_runtime() or False
                slot.pinned = pin(slot.host, self._cudart or None)
            with self._lock:
                self.hosts += 1
                self.pinned += slot.pinned
        with self._lock:
            self._lent[id(slot.host)] = slot
        return slot.host

    def lent(self, array: np.ndarray) -> Slot | None:
        """The slot whose host array is ``array``, if it was lent and not given back."""
        with self._lock:
            slot = self._lent.get(id(array))
        return slot if slot is not None and slot.host is array else None

    def give(self, slot: Slot) -> None:
        """Return a slot after its batch ran; kept for reuse within the limits."""
        with self._lock:
            if slot.host is not None:
                self._lent.pop(id(slot.host), None)
            free = self._free.setdefault(slot.key, [])
            self._free.move_to_end(slot.key)
            if len(free) < SLOTS_PER_SHAPE:
                free.append(slot)
            while len(self._free) > SHAPES:
                self._free.popitem(last=False)
