"""The factory: a backbone's name, ``hf:`` id, spec file or ``.onnx`` path -> a ready :class:`~featx.Backbone`.

featx's ``create_model``, and the one place where the two sides meet::

    load_backbone("efficientnet-lite0" | "hf:ID" | "hf:./folder" | "timm:NAME" | "model.onnx", precision=...)
      name -> model file       featx.torchmodels.provision: the export (made on first use, torch)
                               or its fp16 variant; an .onnx path is used as it is
      model file -> Backbone   featx.engine.backbone: record, input chain, ONNX Runtime session (no torch)

Every caller that starts from a name comes here: ``featx.extract``, the estimators, pipelines,
``featx predict``, ``featx deploy`` and the benchmarks. The engine below never imports the torch
side; the torch side is imported here only when a name must be resolved.

Examples
--------
>>> import featx
>>> bb = featx.load_backbone(tiny_onnx, providers="cpu")    # an exported file: no torch needed
>>> bb.name, bb.dim, bb.defaults.batch_size
('tiny-cnn', 8, 16)
"""

from __future__ import annotations

from pathlib import Path

from .engine.backbone import Backbone
from .engine.runtime import requests_gpu
from .specs.exported import find_onnx


def load_backbone(name_or_path, *, providers=None, threads: int | None = None, jpeg_draft: bool = False,
                  precision: str = "fp32") -> Backbone:
    """Load a backbone by registry name (exported on first use) or by ``.onnx`` path.

    Parameters
    ----------
    name_or_path : str or Path
        ``"efficientnet-lite0"``, ``"all-minilm-l6-v2"``, a name from a spec file in ``$FEATX_MODELS``,
        ``"timm:resnet50"``, ``"hf:ID"`` / ``"hf:/path/to/model"`` (``#image`` / ``#text`` for a tower of
        a CLIP or SigLIP model), or a path to an exported ``.onnx`` file (with its ``.json`` spec beside it).
    providers : str or list, optional
        ONNX Runtime providers; default picks CUDA when usable, else CPU.
    threads : int, optional
        Intra-op threads.
    jpeg_draft : bool
        Images: decode JPEGs at a reduced scale, 2-3x faster decoding of photos; features
        change slightly and are cached apart (see :class:`featx.specs.spec.ImagePreprocess`).
    precision : {"fp32", "fp16", "auto"}
        ``"fp16"``: the backbone's fp16 variant, made on first use; ``"auto"``: fp16 on a GPU
        where its measured parity allows, else fp32 (see :func:`featx.torchmodels.provision.resolve_precision`).
        A variant is a model of its own name, cached apart.
    """
    return Backbone(resolve_model_file(name_or_path, precision=precision, providers=providers),
                    providers=providers, threads=threads, jpeg_draft=jpeg_draft)


def resolve_model_file(name_or_path, *, precision: str = "fp32", providers=None) -> Path:
    """The exported ``.onnx`` file a name stands for at ``precision``, exported on first use.

    A backbone exported before is found without the torch side (:func:`featx.specs.exported.find_onnx`);
    only a missing export or a variant imports it.
    """
    if precision == "fp32":
        found = find_onnx(name_or_path)
        if found is not None:
            return found
    from .torchmodels.provision import resolve_onnx, resolve_precision

    if precision == "fp32":
        return resolve_onnx(name_or_path)
    return resolve_precision(name_or_path, precision, gpu=requests_gpu(providers))
