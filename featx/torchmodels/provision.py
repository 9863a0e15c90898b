"""Model files on demand: the fp32 export of a backbone and, when asked, its int8 or fp16 variant.

The one place that composes :mod:`featx.torchmodels.export` (torch -> ONNX) with :mod:`featx.torchmodels.quantize`
(variants): ``featx export NAME [--quantize int8 | --precision fp16]`` calls
:func:`export_backbone`, and :func:`featx.load_backbone` exports on first use through
:func:`resolve_onnx`. Where files live and how a name finds its file is :mod:`featx.specs.exported`'.

Examples
--------
>>> from featx.torchmodels.provision import export_backbone, resolve_onnx                   # doctest: +SKIP
>>> resolve_onnx("efficientnet-lite0").name          # exported on first use     # doctest: +SKIP
'efficientnet-lite0.onnx'
>>> export_backbone("efficientnet-lite0", quantize="int8").onnx_path.name       # doctest: +SKIP
'efficientnet-lite0-int8.onnx'
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError, ParameterError, SpecError
from .export import DEFAULT_OPSET, ExportResult, export
from ..specs.exported import ModelFile, exported_dir, find_onnx, locate_onnx
from ..specs.hfspec import local_folder, split_name
from ..specs.record import read_spec_file
from .quantize import DEFAULT_CALIBRATION_SIZE, QuantizeResult, quantize as make_variant
from ..validation import check_choice

log = logging.getLogger("featx")

#: What :func:`resolve_precision` (``load_backbone(precision=...)``) takes.
PRECISIONS = ("fp32", "fp16", "auto")
#: ``precision="auto"`` takes the fp16 variant on a GPU when its cosine similarity to fp32 is at
#: least this on every parity item (as recorded when the variant was made).
AUTO_FP16_MIN_COSINE = 0.999


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_backbone` made: the fp32 export and the variant, when there is one.

    ``onnx_path``, ``spec_path``, ``sha256`` and ``max_abs_diff`` are the variant's when one was
    asked for (its ``max_abs_diff`` is measured against the fp32 ONNX model), else the export's.
    """

    onnx_path: Path
    spec_path: Path
    sha256: str
    max_abs_diff: float | None
    export: ExportResult | None  # None when given an exported .onnx file
    variant: QuantizeResult | None = None

    @classmethod
    def of(cls, export: ExportResult | None, variant: QuantizeResult | None = None) -> "ExportedModel":
        made = variant if variant is not None else export
        return cls(made.onnx_path, made.spec_path, made.sha256, made.max_abs_diff, export, variant)


def export_backbone(name, out_dir=None, *, opset: int = DEFAULT_OPSET, force: bool = False,
                    quantize: str | None = None, precision: str = "fp32", calibration=None,
                    calibration_size: int | None = None, calibration_method: str = "minmax",
                    fuse: bool = True, layers=None) -> ExportedModel:
    """Export a backbone to ONNX (reusing an intact export), then make its int8 or fp16 variant if asked.

    Parameters
    ----------
    name : str, BackboneSpec or path
        A registered backbone, a ``timm:``/``hf:`` recipe, or an exported ``.onnx`` file (then only
        the variant is made).
    out_dir : path, optional
        Defaults to ``$FEATX_HOME/models``; the variant goes beside the fp32 model, or here when
        ``name`` is a file.
    opset, force, fuse, layers :
        See :func:`featx.torchmodels.export.export`.
    quantize : {None, "int8"}
        Also make an int8 variant (``NAME-int8.onnx``): static QDQ calibrated on ``calibration``
        for image backbones, dynamic for text (see :mod:`featx.torchmodels.quantize`).
    precision : {"fp32", "fp16"}
        ``"fp16"``: also make ``NAME-fp16.onnx`` (float32 inputs and outputs).
    calibration : str, path or Dataset, optional
        Data for int8 calibration and for the variant's parity check (a featx dataset source).
    calibration_size : int, optional
        Calibration items (default :data:`featx.torchmodels.quantize.DEFAULT_CALIBRATION_SIZE`).
    calibration_method : {"minmax", "percentile"}

    Returns
    -------
    ExportedModel

    Raises
    ------
    ParameterError
        An unknown ``quantize`` or ``precision``, or both, or a file without a variant to make.
    """
    if quantize not in (None, "int8"):
        raise ParameterError(f"The 'quantize' parameter of export must be None or 'int8'. Got {quantize!r} instead.")
    if precision not in ("fp32", "fp16"):
        raise ParameterError(f"The 'precision' parameter of export must be 'fp32' or 'fp16'. Got {precision!r} instead.")
    if quantize is not None and precision != "fp32":
        raise ParameterError("export takes quantize='int8' or precision='fp16', not both (int8 weights are not fp16)")
    mode = quantize or (precision if precision != "fp32" else None)
    is_file = isinstance(name, (str, Path)) and str(name).endswith(".onnx")
    if is_file and mode is None:
        raise ParameterError(f"{name} is already an ONNX file: give --quantize int8 or --precision fp16 "
                             "(quantize='int8' or precision='fp16') to make a variant of it, or a backbone name "
                             "to export")
    if is_file and layers:
        raise ParameterError(f"{name} is already an ONNX file: layers are added when exporting a backbone by name")
    base = None if is_file else export(name, out_dir, opset=opset, force=force, fuse=fuse, layers=layers)
    if mode is None:
        return ExportedModel.of(base)
    variant = make_variant(Path(name) if is_file else base.onnx_path, mode, calibration=calibration,
                           calibration_size=DEFAULT_CALIBRATION_SIZE if calibration_size is None else calibration_size,
                           calibration_method=calibration_method, out_dir=out_dir if is_file else None, force=force)
    return ExportedModel.of(base, variant)


def resolve_onnx(name_or_path, *, export_if_missing: bool = True) -> Path:
    """A backbone name, variant name or ``.onnx`` path -> the ONNX file, exporting on first use.

    Raises
    ------
    SpecError
        No file at a path, an unknown name, or (``export_if_missing=False``) a backbone not
        exported yet.
    """
    if not export_if_missing:
        return locate_onnx(name_or_path)
    found = find_onnx(name_or_path)
    if found is None:
        _say_why_a_folder_is_exported_again(str(name_or_path))
        found = export_backbone(str(name_or_path)).onnx_path
    return found


def _say_why_a_folder_is_exported_again(name: str) -> None:
    """A local ``hf:`` folder exported before under other content: say that it changed (it is exported again)."""
    folder = local_folder(name)
    if folder is None:
        return
    for record_path in sorted(exported_dir().glob("hf-*.json")):
        try:
            source = read_spec_file(record_path)["spec"].get("source", {})
        except SpecError:
            continue
        if source.get("model") == str(folder) and source.get("tower") == split_name(name)[1]:
            log.warning("%s: the folder %s changed since it was exported as %s (config, weights or tokenizer); "
                        "exporting it again", name, folder, record_path.with_suffix(".onnx").name)
            return


def resolve_precision(name_or_path, precision: str = "fp32", *, gpu: bool = False) -> Path:
    """The model file of a backbone at a precision: the fp32 export, or its fp16 variant (made on first use).

    Parameters
    ----------
    name_or_path : str or Path
        As :func:`resolve_onnx` takes it.
    precision : {"fp32", "fp16", "auto"}
        ``"fp16"``: the fp16 variant (``NAME-fp16``, parity-gated by :func:`featx.torchmodels.quantize.quantize`;
        for GPUs: on a CPU it is slower than fp32). ``"auto"``: fp16 when ``gpu`` and the variant's
        recorded parity reaches :data:`AUTO_FP16_MIN_COSINE` on every item, else fp32 (saying why).
        The variant is a model of its own: its features are cached apart from fp32's.
    gpu : bool
        Whether the model will run on a GPU.

    Raises
    ------
    ParameterError
        An unknown precision, or ``"fp16"`` for a file that is another variant.
    ExportError
        ``"fp16"``: the variant could not be made or is too far from fp32.
    """
    check_choice(precision, "precision", "load_backbone", PRECISIONS)
    base = resolve_onnx(name_or_path)
    if precision == "fp32" or (precision == "auto" and not gpu):
        return base
    made_as = (ModelFile.read(base).record.get("quantization") or {}).get("precision")
    if made_as == "fp16":
        return base
    if made_as is not None:
        if precision == "fp16":
            raise ParameterError(f"{base.name} is a {made_as} variant; precision='fp16' needs the fp32 export")
        return base
    try:
        variant = export_backbone(str(base), precision="fp16").variant
    except ExportError as e:
        if precision == "fp16":
            raise
        warnings.warn(f"precision='auto': keeping fp32 for {base.name}: {e}", RuntimeWarning, stacklevel=3)
        return base
    if precision == "auto" and not (variant.cosine_min is not None and variant.cosine_min >= AUTO_FP16_MIN_COSINE):
        warnings.warn(f"precision='auto': keeping fp32 for {base.name}: the fp16 variant's cosine to fp32 is "
                      f"{variant.cosine_min} on its parity items, under {AUTO_FP16_MIN_COSINE}", RuntimeWarning,
                      stacklevel=3)
        return base
    log.info("precision=%s: %s runs as %s", precision, base.name, variant.onnx_path.name)
    return variant.onnx_path
