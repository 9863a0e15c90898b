"""The backbone of a table: one ONNX model for the frozen rows, its torch module for the fine-tuned rows.

Both use the same preprocessing (an ``image_size``/``max_length`` override included), and
:func:`check_parity` measures how far ONNX Runtime and torch are apart on real items.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..engine.backbone import Backbone
from ..errors import ParameterError
from ..torchmodels.export import export, export_module
from ..files import write_atomically
from ..torchmodels.finetune import (TorchBackbone, load_torch_backbone, override_preprocess, require_torch, torch_batch,
                        torch_threads, training_inputs)
from ..torchmodels.layer_outputs import layered_module
from ..specs.exported import read_spec_file, spec_path_for, write_spec
from ..torchmodels.provision import resolve_onnx
from ..specs.spec import BackboneSpec
from ..files import featx_home
from .config import DEFAULT_BACKBONES, DEFAULT_LAYERS, BenchConfig
from .formatting import display_path
from .result import Parity


@dataclass
class BenchBackbone:
    name: str  # name of the (possibly overridden) spec: the cache's model key
    onnx_path: Path
    spec: Any  # BackboneSpec used by every row (frozen and fine-tuned)
    torch_backbone: Any = None  # featx.torchmodels.finetune.TorchBackbone (loaded lazily)
    parity: Parity | None = None
    source: str = ""

    @property
    def layers(self) -> dict[str, int]:
        """The intermediate layers the ONNX model carries for the frozen rows, ``{name: dim}`` in depth order."""
        return dict(self.spec.layers)


def frozen_layers(config: BenchConfig, backbone) -> tuple[str, ...]:
    """The intermediate layers of the frozen rows: ``config.layers``, else the default backbone's."""
    if config.layers is not None:
        return tuple(config.layers)
    return DEFAULT_LAYERS.get(backbone, ()) if isinstance(backbone, str) else ()


def bench_models_dir() -> Path:
    return featx_home() / "bench-models"


def prepare_backbone(config: BenchConfig, modality: str, models_dir=None, need_torch: bool = True) -> BenchBackbone:
    """The ONNX model for the frozen rows and the torch module for the fine-tuned rows, same preprocessing.

    A preprocessing override (``image_size``/``max_length``) copies the exported ONNX into
    ``$FEATX_HOME/bench-models`` with a spec whose preprocessing is the override
    (:func:`featx.specs.exported.write_spec`): a different spec name and fingerprint, so cached
    features of the two never mix. A ``TorchBackbone`` is exported there with
    :func:`featx.torchmodels.export.export_module` (parity-checked).
    """
    models_dir = Path(models_dir) if models_dir else bench_models_dir()
    backbone = config.backbone or DEFAULT_BACKBONES[modality]
    layers = frozen_layers(config, backbone)
    if isinstance(backbone, TorchBackbone):
        spec = override_preprocess(backbone.spec, image_size=config.image_size, max_length=config.max_length)
        tb = dataclasses.replace(backbone, spec=spec)
        module = layered_module(tb.module, spec.modality, layers, normalize=spec.normalize,
                                blocks=tb.blocks) if layers else tb.module
        result = export_module(module, spec, models_dir / "generic", tokenizer_json=tb.tokenizer_json)
        exported = read_spec_file(result.spec_path)["spec"]
        tb.spec = spec.replace(dim=int(exported["dim"]))
        spec = tb.spec.replace(layers=exported.get("layers", {}))
        return BenchBackbone(spec.name, result.onnx_path, spec, tb,
                             Parity(max_abs_diff=result.max_abs_diff, inputs="featx export parity inputs"),
                             "torch module exported by the benchmark")
    if need_torch and (str(backbone).endswith(".onnx") or Path(str(backbone)).is_file()):
        raise ParameterError(
            f"fine-tuned rows need the backbone in PyTorch, and {backbone} is an ONNX file: use a registered "
            "name (featx models), a featx.torchmodels.finetune.TorchBackbone from Python, or --modes none for frozen rows only")
    original = resolve_onnx(backbone)
    base = Backbone(original, threads=1)
    if base.modality != modality:
        raise ParameterError(f"backbone {base.name!r} is a {base.modality} model; the dataset holds {modality}s")
    spec = override_preprocess(base.spec, image_size=config.image_size, max_length=config.max_length)
    if layers and not base.spec.layers:  # the frozen rows' own export: the same weights, with its layers' outputs
        tag = "" if spec == base.spec else (
            f"-{spec.preprocess.size}px" if modality == "image" else f"-len{spec.preprocess.max_length}")
        spec = spec.replace(name=f"{base.spec.name}{tag}-layers")
        onnx_path = export(spec, models_dir, layers=layers).onnx_path
        spec = read_spec(onnx_path)
        source = f"{display_path(original)} exported again with the pooled outputs of {', '.join(layers)}" + (
            f", preprocessing overridden to {spec.preprocess.to_dict()}" if tag else "")
    elif spec == base.spec:
        onnx_path, source = original, display_path(original)
    else:
        tag = f"{spec.preprocess.size}px" if modality == "image" else f"len{spec.preprocess.max_length}"
        spec = spec.replace(name=f"{base.spec.name}-{tag}")
        models_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = models_dir / f"{spec.file_stem}.onnx"
        record = read_spec_file(spec_path_for(onnx_path)) if (
            onnx_path.is_file() and spec_path_for(onnx_path).is_file()) else None
        if not (record and record["onnx"]["sha256"] == base.sha256 and record["spec"] == spec.to_dict()):
            write_atomically(onnx_path, lambda tmp: shutil.copyfile(original, tmp))
            write_spec(onnx_path, spec, tokenizer_json=getattr(base, "tokenizer_path", None))
        source = f"{display_path(original)}, preprocessing overridden to {spec.preprocess.to_dict()}"
    bb = BenchBackbone(spec.name, onnx_path, spec, None, None, source)
    if need_torch:  # the fine-tuned rows: the same module and preprocessing, its final output only
        tb = load_torch_backbone(backbone)
        bb.torch_backbone = dataclasses.replace(tb, spec=spec.replace(layers={}))
    return bb


def read_spec(onnx_path):
    """The spec recorded beside an exported model."""
    return BackboneSpec.from_dict(read_spec_file(spec_path_for(onnx_path))["spec"])


def check_parity(bb: BenchBackbone, items: Sequence, threads: int) -> Parity:
    """ONNX Runtime (frozen rows) vs the torch module (fine-tuned rows) on a few real items."""
    torch = require_torch()
    onnx_features = Backbone(bb.onnx_path, threads=threads).embed(list(items))
    tb = bb.torch_backbone
    with torch_threads(threads):
        data = training_inputs(items, bb.spec, tb.tokenizer_json)
        tb.module.eval()
        with torch.no_grad():
            torch_features = tb.module(*torch_batch(data, np.arange(len(items)))).numpy()
    diff = float(np.abs(onnx_features - torch_features).max())
    return Parity(max_abs_diff=diff, items=len(items),
                  inputs=f"{len(items)} training items at the benchmark's preprocessing")
