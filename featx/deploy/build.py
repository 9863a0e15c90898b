"""``deploy_head``: a saved head and the exact backbone it was trained on -> one gated ONNX file."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..engine.backbone import Backbone

from ..factory import load_backbone

from ..errors import DeployError, ParameterError, SpecError
from ..files import sha256_file
from ..specs.layers import FINAL, check_layer, output_name
from ..heads.persist import load_head, read_metadata
from ..validation import check_choice, check_float, check_int
from ..version import __version__
from .compose import default_opset, fuse_graphs, set_metadata
from .head import LABEL, PROBABILITIES, head_steps, head_to_onnx
from .targets import MultiLabelAsClassifier, multilabel_to_onnx, target_head
from .model import FORMAT, DeployedModel
from .parity import (DEFAULT_PARITY_ITEMS, PARITY_TOLERANCE, ParityReport, gate_items, measure_parity,
                     memorises_training_items)

__all__ = ["deploy_head", "DeployResult", "PRECISIONS"]

#: Backbone variants a deployed file can hold (``featx export --quantize int8`` / ``--precision fp16``).
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class DeployResult:
    """What ``deploy_head`` wrote and how closely it follows the two-stage path."""

    path: Path
    tokenizer_path: Path | None
    parity: ParityReport
    backbone: str
    precision: str
    metadata: dict


def variant_precision(backbone: Backbone) -> str:
    """``"fp32"``, or ``"int8"`` / ``"fp16"`` for a variant made by ``featx export``."""
    return (backbone.record.get("quantization") or {}).get("precision", "fp32")


def trained_backbone(meta: dict, model=None) -> Backbone:
    """The backbone a head was trained on, checked by fingerprint (CPU session).

    Parameters
    ----------
    meta : dict
        The head's metadata (``model`` or ``backbone``, and ``fingerprint_id``).
    model : str or path, optional
        Where to load the backbone from instead of the recorded place.

    Raises
    ------
    DeployError
        No backbone or fingerprint recorded, or the file found has another fingerprint.
    """
    source = model or meta.get("model") or meta.get("backbone")
    expected = meta.get("fingerprint_id")
    if not source or not expected:
        raise DeployError("the head's metadata does not record its backbone and fingerprint (heads saved by "
                          "`featx train` do); save it with save_head(..., metadata={'backbone': NAME, 'model': "
                          "NAME_OR_PATH, 'fingerprint_id': backbone.fingerprint_id})")
    try:
        backbone = load_backbone(source, providers="cpu")
    except SpecError as e:
        raise DeployError(f"cannot load the head's backbone {source!r} ({e}); pass its exported .onnx file "
                          "with --model") from None
    if backbone.fingerprint_id != expected and backbone.modality == "image":
        drafted = load_backbone(source, providers="cpu", jpeg_draft=True)  # features extracted with --jpeg-draft
        if drafted.fingerprint_id == expected:
            return drafted
    if backbone.fingerprint_id != expected:
        raise DeployError(
            f"the head was trained on features of {meta.get('backbone')!r} with fingerprint {expected}, but "
            f"{backbone.onnx_path} has fingerprint {backbone.fingerprint_id} (another model file, variant or "
            "preprocessing); a deployed file holds the exact backbone its head was trained on: pass that "
            "backbone with --model, or retrain the head on features of this one"
        )
    return backbone


def _check_precision(precision, backbone: Backbone, meta: dict) -> str:
    variant = variant_precision(backbone)
    if precision is None or precision == variant:
        return variant
    base = ((backbone.record.get("quantization") or {}).get("base") or {}).get("name", backbone.name)
    make = {"int8": "--quantize int8", "fp16": "--precision fp16", "fp32": ""}[precision]
    name = base if precision == "fp32" else f"{base}-{precision}"
    raise DeployError(
        f"the head was trained on {variant} features ({meta.get('backbone')}), and a deployed file holds the exact "
        f"backbone its head was trained on, so it cannot be {precision}. For a {precision} file, train a head on "
        f"{name} features: featx export {base} {make}".rstrip() + f"; featx extract DATA --model {name} --cache "
        f"CACHE; featx train CACHE; featx deploy HEAD"
    )


def _facts(meta: dict, head_path: Path, estimator, backbone: Backbone, precision: str) -> dict:
    """The ``metadata_props`` of a deployed file (see :mod:`featx.deploy`)."""
    record = backbone.record
    steps = head_steps(estimator)
    facts = {
        "format": FORMAT,
        "version": __version__,
        "modality": backbone.modality,
        "preprocess": backbone.spec.preprocess.to_dict(),
        "inputs": [{"name": i.name, "type": i.type, "shape": [d if isinstance(d, int) else str(d) for d in i.shape]}
                   for i in backbone.session.inputs],
        "outputs": [LABEL, PROBABILITIES] if hasattr(estimator, "predict_proba") else [LABEL],
        "classes": [str(c) for c in estimator.classes_],
        "backbone": {"name": backbone.name, "fingerprint_id": backbone.fingerprint_id,
                     "fingerprint": backbone.fingerprint, "precision": precision,
                     "export_parity": record.get("parity"),
                     "quantization": (record.get("quantization") or {}).get("method")},
        "head": {"file": head_path.name, "sha256": meta.get("sha256"), "kind": meta.get("kind"),
                 "params": meta.get("best_params"), "cv_mean": meta.get("cv_mean"), "train": meta.get("train"),
                 "steps": [type(s).__name__ for _, s in steps.steps] if hasattr(steps, "steps")
                 else [type(steps).__name__]},
    }
    if backbone.modality == "text":
        facts["tokenizer"] = {"file": None, "sha256": sha256_file(backbone.tokenizer_path),
                              "max_length": backbone.spec.preprocess.max_length}
    return facts


def deploy_head(head, out=None, *, precision: str | None = None, model=None, parity_data=None,
                parity_items: int = DEFAULT_PARITY_ITEMS, batch_size: int | None = None,
                tolerance: float = PARITY_TOLERANCE) -> DeployResult:
    """Fuse a saved head with its backbone into one ONNX file, gated on parity with ``featx predict``.

    Parameters
    ----------
    head : path
        A head saved by ``featx train`` (``NAME.skops`` with ``NAME.json`` beside it).
    out : path, optional
        The ``.onnx`` file to write (default: ``NAME.onnx`` beside the head). A text model's
        tokenizer is written beside it as ``STEM.tokenizer.json``.
    precision : {"fp32", "fp16", "int8"}, optional
        Checks that the head was trained on that variant of its backbone (default: whichever it was).
    model : str or path, optional
        Load the backbone from here instead of the place recorded with the head (its
        fingerprint must still match).
    parity_data : str, path or Dataset, optional
        Items for the gate (default: see :func:`featx.deploy.parity.gate_items`).
    parity_items : int
        How many items the gate runs.
    batch_size : int, optional
        Items per ONNX Runtime call in the gate (default: the device's, :mod:`featx.engine.defaults`).
    tolerance : float
        Largest probability difference accepted.

    Returns
    -------
    DeployResult

    Raises
    ------
    DeployError
        The fingerprints or precision do not match, a step cannot be converted, or the gate failed
        (nothing is written then).
    HeadError, UntrustedTypeError
        The head cannot be loaded.
    """
    import onnx

    check_choice(precision, "precision", "deploy_head", PRECISIONS, optional=True)
    check_int(parity_items, "parity_items", "deploy_head", low=1)
    check_int(batch_size, "batch_size", "deploy_head", low=1, optional=True)
    check_float(tolerance, "tolerance", "deploy_head", low=0.0)
    meta = read_metadata(head)
    estimator = target_head(load_head(head), meta)  # a multi-label head: its classifier view (deploy.targets)
    head_path = Path(head)
    backbone = trained_backbone(meta, model)
    precision = _check_precision(precision, backbone, meta)
    layer = check_layer(meta.get("layer"), backbone.layers, f"the head's backbone {backbone.name!r}")
    made = backbone.dim if layer == FINAL else backbone.layers[layer]
    dim = getattr(estimator, "n_features_in_", made)
    if dim != made:
        raise DeployError(f"{head_path} expects {dim} features per row, but {backbone.name} makes {made}"
                          + ("" if layer == FINAL else f" at layer {layer}"))
    out = Path(out) if out is not None else head_path.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ParameterError(f"The 'out' parameter must name an .onnx file. Got {str(out)!r} instead.")
    if out.resolve() == backbone.onnx_path.resolve():
        raise ParameterError(f"--out {out} is the backbone's own file; choose another name")
    base = onnx.load(str(backbone.onnx_path))
    features = base.graph.output[0].name if layer == FINAL else output_name(layer)  # the final features come first
    to_onnx = multilabel_to_onnx if isinstance(estimator, MultiLabelAsClassifier) else head_to_onnx
    fused = fuse_graphs(base, to_onnx(estimator, made, opset=default_opset(base)), features=features)
    facts = _facts(meta, head_path, estimator, backbone, precision)
    if isinstance(estimator, MultiLabelAsClassifier):  # predict applies these to the probabilities
        facts["target"] = {"kind": "multi", "threshold": meta["threshold"]}
    facts["backbone"]["layer"] = layer
    tokenizer_out = out.with_name(f"{out.stem}.tokenizer.json") if backbone.modality == "text" else None
    if tokenizer_out is not None:
        facts["tokenizer"]["file"] = tokenizer_out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}-") as tmp:
        staged = Path(tmp) / out.name
        set_metadata(fused, facts)
        _save(fused, staged)
        if tokenizer_out is not None:
            (Path(tmp) / tokenizer_out.name).write_bytes(backbone.tokenizer_path.read_bytes())
        items, description = gate_items(meta, backbone.modality, data=parity_data, n=parity_items,
                                          held_out=memorises_training_items(estimator))
        report = measure_parity(DeployedModel(staged, providers="cpu"), backbone, estimator, items,
                                description=description, batch_size=batch_size or backbone.default_batch_size, tolerance=tolerance, layer=layer)
        if not report.passed:
            worst = f"; worst items: {', '.join(report.differing)}" if report.differing else ""
            raise DeployError(f"the fused model does not predict what `featx predict` does with the head: "
                              f"{report.summary()}{worst}. Nothing was written to {out}.")
        facts["parity"] = report.to_dict()
        set_metadata(fused, facts)
        _save(fused, staged)
        if tokenizer_out is not None:  # the tokenizer first: a model beside the wrong tokenizer is never seen
            os.replace(Path(tmp) / tokenizer_out.name, tokenizer_out)
        os.replace(staged, out)
    return DeployResult(out, tokenizer_out, report, backbone.name, precision, facts)


def _save(model, path: Path) -> None:
    import onnx

    try:
        onnx.save(model, str(path))
    except ValueError as e:  # protobuf's 2 GB limit
        raise DeployError(f"cannot write the fused model ({e}); a head this large (kNN on a big training set) "
                          "does not fit one ONNX file") from None
