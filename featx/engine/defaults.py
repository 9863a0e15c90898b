"""One table of defaults per device: batch size, decoding threads, precision, and the error vocabulary.

Every path that embeds (``featx.extract``, :meth:`featx.Backbone.embed`, the estimators,
pipelines, ``featx predict``, deployed files, Dask workers) asks :func:`device_defaults` for
what it was not given, so the same session gets the same batch on every path::

    device   batch_size           decode_workers                                  precision
    cpu      16 (CPU_BATCH_SIZE)  the cores ONNX Runtime leaves free (at least 1)  fp32
    cuda     128 (GPU_BATCH_SIZE) every core                                       fp32 (ask "auto" for fp16)

On 2 CPU cores batches of 8-16 are fastest (Lite0 at 224 px: 114 img/s at 8, 112 at 16, 105 at
32; fused MiniLM on fine-food reviews: 53, 53, 49 texts/s). The GPU batch is not measured yet:
``benchmarks/gpu.py`` measures 64 and 256 (see benchmarks/README.md).

``on_error``, the one vocabulary: ``"raise"`` stops at the first bad item and names it;
``"skip"`` records it and gives it no row (extraction commits failures by id; pipelines leave the
item out); ``"nan"`` gives it a row of NaN, only where rows must stay aligned with the input (the
sklearn transformer, whose output has one row per input).

Examples
--------
>>> import featx
>>> defaults = device_defaults(featx.load_backbone(tiny_onnx, providers="cpu", threads=1).session)
>>> defaults.batch_size, defaults.decode_workers >= 1, defaults.precision
(16, True, 'fp32')
"""

from __future__ import annotations

from dataclasses import dataclass

from .runtime import default_threads

#: Items per ONNX Runtime call on the CPU.
CPU_BATCH_SIZE = 16
#: Items per call on a GPU (CUDA, TensorRT), where larger batches keep the device busy.
GPU_BATCH_SIZE = 128
#: ``on_error`` values: every path takes "raise" and "skip"; "nan" where rows stay aligned to the input.
ON_ERROR = ("raise", "skip")
ON_ERROR_ALIGNED = ("raise", "nan")


@dataclass(frozen=True)
class DeviceDefaults:
    """What a path uses when the caller did not say: see the module docstring."""

    batch_size: int
    decode_workers: int
    precision: str = "fp32"


def device_defaults(session) -> DeviceDefaults:
    """The defaults for a :class:`~featx.engine.runtime.Session` (its requested device and threads)."""
    cores = default_threads()
    if session.requested_device == "cuda":
        return DeviceDefaults(GPU_BATCH_SIZE, cores)
    # ONNX Runtime on its default takes every core: a quarter of them (at least 1) decode beside
    # it, the share decoding takes of the work on photos (a 1.7 MP JPEG decodes and crops in ~6 ms
    # on one core; EfficientNet-Lite0 takes ~16 core-ms an image). On 2 cores that is 1 either way.
    workers = max(1, cores // 4) if session.threads is None else max(1, cores - session.threads)
    return DeviceDefaults(CPU_BATCH_SIZE, workers)
