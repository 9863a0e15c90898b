"""The ONNX Runtime session: providers, threads, input validation, ``run(feeds) -> (n, d)``.

One session per process, created lazily on first use and dropped when pickled
(sessions cannot be pickled), so a :class:`Session` travels to worker processes.

Provider choice: ``providers=None`` (or ``"auto"``) asks for CUDA only when the
CUDA provider is built in *and* an NVIDIA driver really loads, so a CPU-only
machine never prints ORT's wall of CUDA errors; after creation the providers
are verified and a silent fallback to CPU is reported loudly.

On CUDA (or TensorRT) a session runs through ONNX Runtime's IO binding: each input is
copied to the device once as an ``OrtValue`` and bound, the output is bound to host memory,
so no tensor goes through ORT's per-call host staging. :meth:`Session.to_device` makes such a
device-side batch ahead of time (e.g. in a prefetch thread, so the host-to-device copy of the
next batch overlaps the current one); :meth:`Session.run` takes it like a dict of arrays.
With ``reuse=True`` the batch goes through the session's :class:`~featx.engine.staging.Staging`: host
buffers (page-locked on CUDA; :meth:`Session.host_buffer` lends one to preprocessing to write
into) and device buffers reused from batch to batch, given back when the batch has run.
``io_binding=True`` forces the bound path on the CPU too (same results as a plain run).

One session per device: ``providers="cuda:1"`` (``featx extract --device cuda:1``) runs on the
second GPU; several GPUs take one session (one process or one worker) each.

Examples
--------
>>> from featx.engine.runtime import resolve_providers
>>> resolve_providers("cpu")
['CPUExecutionProvider']
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..errors import ModelInputError, SpecError
from .staging import Staging
from ..validation import check_int

log = logging.getLogger("featx")

_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
#: Providers whose inputs live in CUDA device memory.
_DEVICE_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def _ort():
    import onnxruntime

    return onnxruntime


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """Whether CUDA can really be used: ``(usable, reason)``."""
    ort = _ort()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no NVIDIA driver (libcuda.so.1 does not load)"
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when installed that way
        except Exception as e:  # pragma: no cover - GPU machines only
            log.debug("onnxruntime.preload_dlls failed: %s", e)
    return True, "NVIDIA driver found and the CUDA provider is built in"


def _split_device(provider) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``; any other name -> ``(name, None)``."""
    text = str(provider).strip()
    base, sep, index = text.rpartition(":")
    if sep and index.isdigit() and _ALIASES.get(base.lower(), base) in _DEVICE_PROVIDERS:
        return base, int(index)
    return text, None


def resolve_providers(providers=None) -> list[str]:
    """Normalise a provider request to ORT provider names.

    ``None`` or ``"auto"`` picks CUDA (then CPU) when :func:`cuda_status` says it is usable,
    else CPU. Accepts short names (``cpu``, ``cuda``, ``cuda:1``, ``tensorrt``) or full names,
    as a list or a comma-separated string; a device index (``cuda:1``) is :func:`device_index`'s.
    """
    if providers is None or providers == "auto" or providers == ["auto"]:
        usable, _ = cuda_status()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if usable else ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    available = _ort().get_available_providers()
    names = []
    for p in providers:
        base, _ = _split_device(p)
        name = _ALIASES.get(base.lower(), base)
        if name not in available:
            raise SpecError(
                f"provider {p!r} is not available in this onnxruntime; available: {', '.join(available)}"
            )
        names.append(name)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


def requests_gpu(providers=None) -> bool:
    """Whether a provider request runs a model on a GPU first (``None``: when CUDA is usable).

    Examples
    --------
    >>> requests_gpu("cpu")
    False
    """
    return resolve_providers(providers)[0] in _DEVICE_PROVIDERS


def device_index(providers=None) -> int:
    """The GPU a provider request names (``"cuda:1"`` -> 1); 0 when it names none.

    Examples
    --------
    >>> device_index("cuda:1"), device_index("cpu"), device_index(None)
    (1, 0, 0)
    """
    if isinstance(providers, str):
        providers = providers.split(",")
    for p in providers or ():
        _, index = _split_device(p)
        if index is not None:
            return index
    return 0


def default_threads() -> int:
    """Intra-op threads: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)




@dataclass(frozen=True)
class DeviceBatch:
    """A batch already placed where a session runs: ``OrtValue`` inputs by name.

    Made by :meth:`Session.to_device` (validated there); :meth:`Session.run` accepts it in
    place of a dict of arrays. ``device`` is ``"cuda:0"``, ``"cpu:0"``...
    """

    values: Mapping[str, object]
    n: int
    device: str
    slots: list = field(default_factory=list)  # reuse=True: the staging slots, given back after the run
    reused: bool = False

    def __len__(self) -> int:
        return self.n


def _env_flag(name: str) -> bool:
    """An on/off environment setting, on unless set to 0, false, no or off."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def default_spinning() -> bool:
    """Spin-wait in ORT's intra-op threads unless ``FEATX_SPINNING=0`` (see :class:`Session`)."""
    return _env_flag("FEATX_SPINNING")


class Session:
    """A lazily created ONNX Runtime session over one model file.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file.
    providers : str or list of str, optional
        ``None``/``"auto"`` (CUDA when usable, else CPU), or names such as ``"cpu"``.
    threads : int, optional
        Intra-op threads; defaults to the cores available to this process.
    io_binding : bool, optional
        Run through IO binding (inputs as ``OrtValue`` on the session's device, output bound
        to host memory). Default (None): when CUDA or TensorRT runs the model.
    pinned : bool
        Page-lock the reused host buffers of bound runs on CUDA (see :mod:`featx.engine.staging`).
        Default True; ``FEATX_PINNED=0`` in the environment turns it off.
    allow_spinning : bool, optional
        Whether idle intra-op threads spin-wait for work. Default: ORT's own default, on,
        unless the environment sets ``FEATX_SPINNING=0``. Measured on 2 idle cores: spinning
        makes the bare Lite0 session 15% faster (108 -> 125 img/s) and MiniLM 10% (50 -> 55
        texts/s), and leaves extraction with decoding threads unchanged; on cores shared with
        other jobs it is slower (Lite0 extraction of PNGs ~33 -> ~27 items/s): set
        ``FEATX_SPINNING=0`` there.
    """

    def __init__(self, path, providers=None, threads: int | None = None, *, io_binding: bool | None = None,
                 allow_spinning: bool | None = None, pinned: bool | None = None):
        self.path = str(path)
        self.providers = providers
        self.threads = check_int(threads, "threads", "Session", low=1, optional=True)
        self.io_binding = io_binding
        self.allow_spinning = default_spinning() if allow_spinning is None else bool(allow_spinning)
        self.pinned = _env_flag("FEATX_PINNED") if pinned is None else bool(pinned)
        self._session = None
        self._device = None  # (kind, id), known once the session exists
        self._staging = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        state["_device"] = None
        state["_staging"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def session(self):
        if self._session is None:
            with self._lock:  # prefetch threads may ask at the same time as the main thread
                if self._session is None:
                    self._session = self._create()
        return self._session

    def _create(self):
        ort = _ort()
        requested = resolve_providers(self.providers)
        index = device_index(self.providers)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self.threads or default_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # these graphs are chains: no inter-op gain
        opts.enable_cpu_mem_arena = True  # reuse activation buffers across batches
        opts.enable_mem_pattern = True  # plan them once per input shape
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        opts.log_severity_level = 3  # errors only; featx reports fallbacks itself
        try:
            session = ort.InferenceSession(
                self.path, sess_options=opts,
                providers=[(p, {"device_id": str(index)}) if p in _DEVICE_PROVIDERS else p for p in requested])
        except Exception as e:
            raise SpecError(f"onnxruntime cannot load {self.path}: {e}") from None
        got = session.get_providers()
        missing = [p for p in requested if p not in got]
        if missing:
            msg = (
                f"onnxruntime fell back from {', '.join(missing)} to {', '.join(got)} for {self.path}; "
                "extraction will run on the CPU. Run `featx doctor` to see why."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=3)  # once: not logged as well
        return session

    @property
    def active_providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def inputs(self):
        return self.session.get_inputs()

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def device(self) -> tuple[str, int]:
        """Where this session's inputs live: ``("cuda", device_id)`` on CUDA/TensorRT, else ``("cpu", 0)``."""
        if self._device is None:
            providers = self.active_providers
            if providers and providers[0] in _DEVICE_PROVIDERS:
                options = self.session.get_provider_options().get(providers[0], {})
                self._device = ("cuda", int(options.get("device_id", 0) or 0))
            else:
                self._device = ("cpu", 0)
        return self._device

    @property
    def requested_device(self) -> str:
        """``"cuda"`` when the session is asked to run on a GPU, else ``"cpu"``, without creating it.

        What per-device defaults (batch size, decoding threads) go by; :attr:`device` is where
        the created session really runs.
        """
        if self._device is not None:
            return self._device[0]
        return "cuda" if requests_gpu(self.providers) else "cpu"

    @property
    def uses_io_binding(self) -> bool:
        """Whether :meth:`run` goes through IO binding (see ``io_binding``)."""
        if self.io_binding is None:
            return self.device[0] == "cuda"
        return bool(self.io_binding)

    @property
    def staging(self) -> Staging:
        """The reused host/device buffers of bound runs (:mod:`featx.engine.staging`)."""
        if self._staging is None:
            device = self.device  # creates the session, under the lock: not while holding it
            with self._lock:
                if self._staging is None:
                    self._staging = Staging(device, pinned=self.pinned)
        return self._staging

    def host_buffer(self, name: str, shape, dtype=np.float32) -> np.ndarray:
        """A reused host array for input ``name`` to write a batch into, then :meth:`to_device` with ``reuse=True``.

        Page-locked on CUDA (see :mod:`featx.engine.staging`). Without IO binding there is no staging:
        a new array.
        """
        if not self.uses_io_binding:
            return np.empty(shape, dtype)
        staging = self.staging
        return staging.lend(staging.take(name, shape, dtype))

    def to_device(self, feeds: Mapping[str, np.ndarray], validate: bool = True, reuse: bool = False) -> DeviceBatch:
        """Validate a batch and copy it to the session's device once, as ``OrtValue`` inputs.

        ``reuse=False``: new ``OrtValue`` s (on the CPU they wrap the arrays without copying).
        ``reuse=True``: each array is copied into a reused device buffer of its shape, from the
        :meth:`host_buffer` it was written into or straight from the array; the buffers go back to the session's staging when :meth:`run` has run the batch, so such
        a batch runs once. Thread-safe: call it from a prefetch thread while the session runs
        the previous batch.
        """
        if validate:
            self.validate(feeds)
        kind, device_id = self.device
        n = int(next(iter(feeds.values())).shape[0]) if feeds else 0
        if not reuse:
            ort = _ort()
            values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), kind, device_id)
                      for name, arr in feeds.items()}
            return DeviceBatch(values, n, f"{kind}:{device_id}")
        staging = self.staging
        values, slots = {}, []
        for name, arr in feeds.items():
            slot = staging.lent(arr)
            if slot is not None:
                slot.upload()
            else:
                slot = staging.take(name, arr.shape, arr.dtype)
                slot.upload(np.ascontiguousarray(arr))
            values[name] = slot.device
            slots.append(slot)
        return DeviceBatch(values, n, f"{kind}:{device_id}", slots, reused=True)

    def _run_bound(self, batch: DeviceBatch, n_outputs: int = 1) -> list[np.ndarray]:
        if batch.reused and not batch.slots:
            raise ModelInputError("this device batch was made with reuse=True and has run already: its buffers "
                                  "hold other batches now; make it again with to_device()")
        session = self.session
        binding = session.io_binding()  # one per call: concurrent runs never share a binding
        for name, value in batch.values.items():
            binding.bind_ortvalue_input(name, value)
        for out in session.get_outputs()[:n_outputs]:
            binding.bind_output(out.name, "cpu")
        try:
            session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()
        finally:
            for slot in batch.slots:
                self.staging.give(slot)
            batch.slots.clear()

    def validate(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Check names, dtype, rank and static dimensions against the model; say expected vs got."""
        expected = {i.name: i for i in self.inputs}
        if set(feeds) != set(expected):
            missing, extra = sorted(set(expected) - set(feeds)), sorted(set(feeds) - set(expected))
            raise ModelInputError(
                f"model {os.path.basename(self.path)} expects inputs {sorted(expected)}, got {sorted(feeds)}"
                + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
            )
        for name, arg in expected.items():
            arr = feeds[name]
            if not isinstance(arr, np.ndarray):
                raise ModelInputError(f"input {name!r} must be a numpy array, got {type(arr).__name__}")
            want = _ORT_DTYPES.get(arg.type)
            if want is not None and arr.dtype != want:
                raise ModelInputError(
                    f"input {name!r}: expected dtype {np.dtype(want).name}, got {arr.dtype.name}"
                    + (" (convert with .astype(np.float32))" if want is np.float32 else "")
                )
            shape = list(arg.shape)
            if arr.ndim != len(shape):
                raise ModelInputError(
                    f"input {name!r}: expected rank {len(shape)} {_shape_str(shape)}, got shape {arr.shape}"
                )
            for axis, (dim, got) in enumerate(zip(shape, arr.shape)):
                if isinstance(dim, int) and dim != got:
                    hint = ""
                    if axis == 0 and dim == 1:
                        hint = "; the model was exported with a static batch of 1: re-export it with a dynamic batch axis, or use batch_size=1"
                    elif len(shape) == 4 and axis == 1 and arr.shape[-1] == dim:
                        hint = "; this looks like NHWC: transpose to NCHW with x.transpose(0, 3, 1, 2)"
                    raise ModelInputError(
                        f"input {name!r}: expected shape {_shape_str(shape)}, got {arr.shape} (axis {axis}){hint}"
                    )

    def run(self, feeds: Mapping[str, np.ndarray] | DeviceBatch, validate: bool = True) -> np.ndarray:
        """Run one batch (arrays by input name, or a :class:`DeviceBatch`); returns the first output as float32 (n, d)."""
        return self._outputs(feeds, validate, 1)[0]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run_all(self, feeds: Mapping[str, np.ndarray] | DeviceBatch, validate: bool = True) -> dict[str, np.ndarray]:
        """Run one batch; every output by name (a model exported with intermediate layers has several),
        each float32 (n, d)."""
        return dict(zip(self.output_names, self._outputs(feeds, validate, None)))

    def _outputs(self, feeds, validate: bool, n_outputs: int | None) -> list[np.ndarray]:
        n = len(self.session.get_outputs()) if n_outputs is None else n_outputs
        if isinstance(feeds, DeviceBatch):
            outs = self._run_bound(feeds, n)
        elif self.uses_io_binding:  # through the reused device buffers: no device allocation per call
            outs = self._run_bound(self.to_device(feeds, validate=validate, reuse=True), n)
        else:
            if validate:
                self.validate(feeds)
            outs = self.session.run(self.output_names[:n], dict(feeds))
        for out in outs:
            if out.ndim != 2:
                raise ModelInputError(
                    f"model {os.path.basename(self.path)} returned shape {out.shape}; featx needs pooled (n, d) "
                    "features: export the backbone cut at its pooled bottleneck"
                )
        return [out.astype(np.float32, copy=False) for out in outs]


def _shape_str(shape: Sequence) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"
