"""Smaller, faster variants of an exported backbone: int8 (quantized) and fp16.

``quantize("efficientnet-lite0", "int8")`` writes ``efficientnet-lite0-int8.onnx`` and its spec
``efficientnet-lite0-int8.json`` beside the fp32 export (exported already:
:func:`featx.torchmodels.provision.export_backbone` does both steps). Calibration and parity inputs go
through the model's own :class:`~featx.engine.inputs.InputChain`, as extraction's do. The variant is a separate model: its
own name and file, a different sha256 and so a different fingerprint, so an embedding cache
never mixes fp32 and int8 features.

- **int8, image backbones (CNNs)**: static quantization in the QDQ format with ONNX Runtime's
  ``quantize_static``, weights per channel, activation ranges calibrated (MinMax by default)
  on a sample of real images: the user's data (``calibration=``, any featx dataset source), or
  by default :data:`DEFAULT_CALIBRATION` (see :func:`default_calibration_images`). The model is
  first prepared with ``quant_pre_process`` (ONNX shape inference + ORT graph optimisation).
- **int8, text backbones (transformers)**: dynamic quantization (``quantize_dynamic``, weights
  int8 per channel, activations quantized at run time): no calibration data needed.
- **fp16**: ``onnxruntime.transformers.float16.convert_float_to_float16`` with fp32 inputs and
  outputs kept (``keep_io_types``), for GPUs; featx feeds and reads float32 either way.

Every variant's parity with the fp32 model is measured on real inputs held out from
calibration (cosine similarity per item and max abs difference) and recorded in the spec's
``quantization`` section with the method and the calibration source and size; an export whose
mean cosine falls under the method's floor (:data:`MIN_COSINE`) is refused, not saved.

int8 on x86 CPUs without VNNI (AVX-512 VNNI or AVX-VNNI): ONNX Runtime's u8 x s8 kernels
can saturate intermediate sums there, which costs accuracy; ``reduce_range=True`` (the
default for static int8, 7-bit weights) avoids it at little cost on VNNI CPUs, so one file
works everywhere. Measured on Lite0 on a Zen 3 CPU (no VNNI), cosine vs fp32 on Fashion-MNIST
test images: 0.84 with 8-bit weights, 0.94 with ``reduce_range``. Without VNNI, int8 is still
faster than fp32 (Lite0 ~1.7x on 2 Zen 3 cores, AVX2 kernels) but gains less than with it;
:func:`featx.machine.has_vnni` says whether this CPU has it. fp16 is for GPUs: on a CPU it is
slower than fp32.

Examples
--------
>>> from featx.torchmodels.quantize import quantize                                        # doctest: +SKIP
>>> r = quantize("efficientnet-lite0", "int8", calibration="photos/")          # doctest: +SKIP
>>> r.onnx_path.name, round(r.cosine_mean, 3)                                  # doctest: +SKIP
('efficientnet-lite0-int8.onnx', 0.987)
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..machine import has_vnni
from ..errors import ExportError, InputError, ParameterError, SpecError
from ..files import sha256_file
from ..engine.inputs import InputChain
from ..specs.exported import (
    ModelFile,
    copy_tokenizer,
    model_record,
    publish,
    read_spec_file,
    locate_onnx,
    spec_path_for,
    staging_dir,
    tool_versions,
    variant_stem,
)
from ..engine.runtime import Session
from ..specs.samples import PARITY_SENTENCES, held_out_photos, sample_photos
from ..sources import Dataset, make_dataset, open_dataset, subset

log = logging.getLogger("featx")

MODES = ("int8", "fp16")
CALIBRATION_METHODS = ("minmax", "percentile")
#: Calibration sample size (items) when none is given.
DEFAULT_CALIBRATION_SIZE = 256
#: The calibration set used when the caller gives none (image backbones).
DEFAULT_CALIBRATION = "default"
#: Items held out of the calibration source for the parity measurement.
PARITY_ITEMS = 48
#: A variant whose mean cosine similarity to fp32 on the parity inputs falls under this is refused.
MIN_COSINE = {"int8": 0.90, "fp16": 0.999}
#: Images per calibration batch. MinMax calibration keeps only per-batch minima and maxima
#: (ORT adds ReduceMin/ReduceMax outputs), so memory does not grow with the calibration size.
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class QuantizeResult:
    """Where a variant went, how it was made, and how close it is to fp32.

    ``max_abs_diff`` is measured against the fp32 ONNX model (not PyTorch), so that
    :class:`featx.torchmodels.export.ExportResult`'s fields keep their meaning of "distance to the reference".
    """

    onnx_path: Path
    spec_path: Path
    sha256: str
    method: str
    base_path: Path
    max_abs_diff: float | None
    cosine_mean: float | None
    cosine_min: float | None
    record: dict


# ---------------------------------------------------------------- calibration and parity data
def default_calibration_images(n: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The built-in calibration set: ``(id, RGB uint8)`` pairs, deterministic for a seed.

    Half are random crops of scikit-learn's two sample photos (scale 20-100 % of the photo,
    random flip, brightness and contrast jitter): natural colour photographs, the domain
    ImageNet backbones were trained on. The other half are ``builtin:digits:train`` images
    (real scans, grey, little texture). Both ship inside scikit-learn, so this works offline
    on every install. Why a mix: measured on Lite0 (MinMax, per channel, reduce_range),
    calibrating on photo crops, on digits, on Fashion-MNIST or on this mix gives the same
    parity within 0.005 cosine on held-out photos, digits and Fashion-MNIST; the mix covers
    both colour photos and grey, flat images without favouring either. Calibrating on a
    sample of your own data (``calibration=``) remains the recommended way.
    """
    rng = np.random.default_rng(seed)
    n_digits = n // 2
    photos = sample_photos()
    out = []
    for i in range(n - n_digits):
        photo = photos[i % len(photos)]
        h, w, _ = photo.shape
        scale = rng.uniform(0.2, 1.0)
        ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[y:y + ch, x:x + cw].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = crop * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
        out.append((f"photo-crop-{i}", np.ascontiguousarray(np.clip(crop, 0, 255).astype(np.uint8))))
    if n_digits:
        digits = subset(open_dataset("builtin:digits:train"), n_digits, seed=seed)
        out += [(item.id, item.ref) for item in digits.items]
    return out


def _open_source(source, modality: str):
    dataset = open_dataset(source)
    if dataset.modality != modality:
        article = "an" if modality == "image" else "a"
        raise SpecError(
            f"calibration data {dataset.name} holds {dataset.modality}s but the model is {article} {modality} "
            f"backbone; give {article} {modality} dataset with --calibration"
        )
    return dataset


def _split_source(dataset, size: int, seed: int):
    """(calibration items, held-out parity items) of a dataset: disjoint when it is big enough."""
    calib = subset(dataset, size, seed=seed)
    chosen = {item.id for item in calib.items}
    rest = [item for item in dataset.items if item.id not in chosen]
    if not rest:
        return list(calib.items), list(calib.items)[:PARITY_ITEMS], True
    held = subset(make_dataset(dataset.name, dataset.modality, rest), min(PARITY_ITEMS, len(rest)), seed=seed + 1)
    return list(calib.items), list(held.items), False


def feed_batches(chain: InputChain, pairs: Sequence, input_names: Sequence[str], batch_size: int, stats: dict):
    """Model feeds of ``(id, raw item)`` pairs through the backbone's own chain, one batch at a time
    (memory stays flat).

    Items that do not decode are left out and listed in ``stats["bad"]``, never replaced;
    ``stats["ok"]`` counts the others.
    """
    stats.setdefault("ok", 0)
    stats.setdefault("bad", [])
    for start in range(0, len(pairs), batch_size):
        decoded = []
        for item_id, ref in pairs[start:start + batch_size]:
            try:
                decoded.append(chain.decode(ref, item_id))
            except InputError as e:
                stats["bad"].append(f"{item_id}: {e}")
        if decoded:
            stats["ok"] += len(decoded)
            yield chain.prepare(decoded, input_names)


class CalibrationReader:
    """What ONNX Runtime's ``quantize_static`` reads (a ``CalibrationDataReader``): the model's feeds
    of ``(id, raw item)`` pairs, decoded and preprocessed by the model's own :class:`InputChain`
    (its spec's ``jpeg_draft`` included), :data:`CALIBRATION_BATCH` items at a time.

    ``stats`` counts the items used (``"ok"``) and lists those that did not decode (``"bad"``).
    """

    def __init__(self, model: ModelFile, pairs: Sequence, batch_size: int = CALIBRATION_BATCH):
        self.stats: dict = {}
        chain = InputChain(model.spec, model.tokenizer_path)
        names = Session(model.onnx_path, providers="cpu").input_names
        self._batches = feed_batches(chain, pairs, names, batch_size, self.stats)

    def get_next(self):
        return next(self._batches, None)


def _warn_bad(stats: dict, what: str) -> None:
    if stats.get("bad"):
        warnings.warn(f"{len(stats['bad'])} {what} image(s) could not be decoded and were left out, "
                      f"e.g. {stats['bad'][0]}", RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------- the variants
def _check_params(mode, calibration_size, calibration_method, min_cosine):
    if mode not in MODES:
        raise ParameterError(f"The 'mode' parameter of quantize must be one of {MODES}. Got {mode!r} instead.")
    if isinstance(calibration_size, bool) or not isinstance(calibration_size, (int, np.integer)) or calibration_size < 1:
        raise ParameterError(
            f"The 'calibration_size' parameter of quantize must be an int in [1, inf). Got {calibration_size!r} instead."
        )
    if calibration_method not in CALIBRATION_METHODS:
        raise ParameterError(
            f"The 'calibration_method' parameter of quantize must be one of {CALIBRATION_METHODS}. "
            f"Got {calibration_method!r} instead."
        )
    if min_cosine is not None and not (isinstance(min_cosine, (int, float)) and -1.0 <= min_cosine <= 1.0):
        raise ParameterError(
            f"The 'min_cosine' parameter of quantize must be None or a float in [-1, 1]. Got {min_cosine!r} instead."
        )


def quantize(model, mode: str = "int8", *, calibration=None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
             calibration_method: str = "minmax", out_dir=None, force: bool = False, seed: int = 0,
             reduce_range: bool | None = None, min_cosine: float | None = None) -> QuantizeResult:
    """Make an int8 or fp16 variant of an exported backbone, with its spec and measured parity.

    Parameters
    ----------
    model : str or path
        An exported ``.onnx`` file with its record beside it, or the name of an exported
        backbone (:func:`featx.specs.exported.locate_onnx`). To export and make a variant in one
        go: :func:`featx.torchmodels.provision.export_backbone` (``featx export NAME --quantize int8``).
    mode : {"int8", "fp16"}
        ``"int8"``: static QDQ for image backbones, dynamic for text backbones. ``"fp16"``:
        float16 weights and compute, float32 inputs and outputs.
    calibration : str, path or Dataset, optional
        Any featx dataset source (``builtin:fashion-mnist``, a folder, a manifest...) of the
        model's modality. Static int8: a stratified sample of ``calibration_size`` items sets
        the activation ranges, and up to :data:`PARITY_ITEMS` other items measure parity.
        Dynamic int8 and fp16 use it for parity only. Default: :data:`DEFAULT_CALIBRATION`
        (:func:`default_calibration_images`) for images, real sentences (plus fine-food reviews
        when fetched) for texts.
    calibration_size : int
        Items used for calibration.
    calibration_method : {"minmax", "percentile"}
        How activation ranges are chosen (static int8). ``"percentile"`` (99.999 %) clips outliers:
        slightly better parity, but it keeps every calibration activation in memory.
    out_dir : path, optional
        Default: the fp32 model's folder.
    force : bool
        Rebuild even when a matching variant exists.
    seed : int
        Seed of the calibration sample.
    reduce_range : bool, optional
        7-bit weights (static int8). Default True: accurate on CPUs without VNNI too.
    min_cosine : float, optional
        Refuse the variant when its mean cosine to fp32 is lower (default :data:`MIN_COSINE`).

    Returns
    -------
    QuantizeResult

    Raises
    ------
    ExportError
        Quantization failed, or the variant is too far from fp32 (the file is not saved).
    SpecError
        The calibration data are of the other modality, the model has no record, or it is
        not exported yet.
    ParameterError
        An invalid parameter value.
    """
    _check_params(mode, calibration_size, calibration_method, min_cosine)
    base = ModelFile.read(locate_onnx(model))
    base_path, spec = base.onnx_path, base.spec
    if "quantization" in base.record:
        raise SpecError(f"{base_path.name} is already a {base.record['quantization']['method']} variant; "
                        "quantize the fp32 export instead")
    out_dir = Path(out_dir) if out_dir else base_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = variant_stem(base_path.stem, mode)
    onnx_path = out_dir / f"{stem}.onnx"
    method = _method_name(mode, spec.modality)
    if reduce_range is None:
        reduce_range = method == "static-qdq-int8"
    source_name = _source_name(calibration)
    wanted = {"method": method, "base_sha256": sha256_file(base_path), "source": source_name,
              "size": int(calibration_size), "seed": int(seed), "calibration_method": calibration_method,
              "reduce_range": bool(reduce_range)}
    if not force:
        existing = _existing(onnx_path, wanted, base_path)
        if existing is not None:
            return existing

    calib_info: dict = {"source": source_name}
    calib_pairs, parity_feeds, parity_desc = _prepare_data(base, calibration, calibration_size, seed, method,
                                                           calib_info)
    with staging_dir(out_dir, stem) as tmp:
        tmp = Path(tmp)
        tmp_onnx = tmp / f"{stem}.onnx"
        details = _build(method, base, tmp_onnx, tmp, calib_pairs, calib_info, calibration_method, reduce_range)
        parity = _parity(base_path, tmp_onnx, parity_feeds)
        parity["inputs"] = parity_desc
        floor = MIN_COSINE[mode] if min_cosine is None else float(min_cosine)
        parity["min_cosine"] = floor
        if parity["cosine_mean"] is not None and not parity["cosine_mean"] >= floor:
            raise ExportError(
                f"{spec.name} {mode}: mean cosine similarity to fp32 is {parity['cosine_mean']:.4f} on "
                f"{parity_desc}, under the floor {floor:g}; the variant was not saved. "
                + ("Calibrate on a sample of your own data (--calibration DATA), try "
                   "--calibration-method percentile, or keep fp32." if method == "static-qdq-int8" else "Keep fp32.")
            )
        variant_spec = spec.replace(
            name=f"{spec.name}-{mode}",
            description=(spec.description + f" [{mode} variant: {method}]").strip(),
        )
        calibration_record = None
        if method == "static-qdq-int8":
            calibration_record = {**calib_info, "method": calibration_method, "seed": int(seed),
                                  "requested_size": int(calibration_size)}
        record = model_record(
            variant_spec, tmp_onnx, session=Session(tmp_onnx, providers="cpu"),
            opset=base.record.get("onnx", {}).get("opset"),
            tokenizer=None if base.tokenizer_path is None else copy_tokenizer(base.tokenizer_path, tmp, stem),
            exporter=tool_versions(details["tool"], "onnxruntime"),
            parity={**parity, "reference": f"fp32 ONNX model {base_path.name}", "provider": "CPUExecutionProvider"},
            quantization={
                "method": method,
                "precision": mode,
                "base": {"name": spec.name, "file": base_path.name, "sha256": wanted["base_sha256"]},
                "calibration": calibration_record,
                **details["settings"],
                "reduce_range": bool(reduce_range) if mode == "int8" else None,
                "exporting_cpu_vnni": has_vnni(),
                "parity": {k: parity[k] for k in ("cosine_mean", "cosine_min", "max_abs_diff", "n")},
            },
        )
        publish(tmp_onnx, record, out_dir)
    return _result(onnx_path, record, base_path)


def _method_name(mode: str, modality: str) -> str:
    if mode == "fp16":
        return "fp16"
    return "static-qdq-int8" if modality == "image" else "dynamic-int8"


def _source_name(calibration) -> str:
    if calibration is None:
        return DEFAULT_CALIBRATION
    if isinstance(calibration, Dataset):
        return calibration.name
    text = str(calibration)
    return text if text.startswith("builtin:") else str(Path(text).resolve())


def _existing(onnx_path: Path, wanted: dict, base_path: Path) -> QuantizeResult | None:
    """A complete, intact variant made the same way from the same fp32 file, else None."""
    spec_path = spec_path_for(onnx_path)
    if not (onnx_path.is_file() and spec_path.is_file()):
        return None
    try:
        record = read_spec_file(spec_path)
    except SpecError:
        return None
    q = record.get("quantization") or {}
    calib = q.get("calibration") or {}
    same = (q.get("method") == wanted["method"] and (q.get("base") or {}).get("sha256") == wanted["base_sha256"]
            and record.get("onnx", {}).get("sha256") == sha256_file(onnx_path))
    if same and wanted["method"] == "static-qdq-int8":
        same = (calib.get("source") == wanted["source"] and calib.get("requested_size") == wanted["size"]
                and calib.get("seed") == wanted["seed"] and calib.get("method") == wanted["calibration_method"]
                and q.get("reduce_range") == wanted["reduce_range"])
    return _result(onnx_path, record, base_path) if same else None


def _result(onnx_path: Path, record: dict, base_path: Path) -> QuantizeResult:
    p = record["parity"]
    return QuantizeResult(onnx_path, spec_path_for(onnx_path), record["onnx"]["sha256"],
                          record["quantization"]["method"], Path(base_path), p.get("max_abs_diff"),
                          p.get("cosine_mean"), p.get("cosine_min"), record)


def _prepare_data(base: ModelFile, calibration, size, seed, method, info):
    """(calibration pairs or None, parity feeds, parity description); fills ``info``."""
    chain = InputChain(base.spec, base.tokenizer_path)
    names = Session(base.onnx_path, providers="cpu").input_names
    if base.spec.modality == "image":
        if calibration is None:
            calib_pairs = default_calibration_images(size, seed)
            digits_test = subset(open_dataset("builtin:digits:test"), 24, seed=seed)
            held_pairs = [(item.id, item.ref) for item in digits_test.items]
            held_desc = "24 builtin:digits:test images + "
            info["description"] = (f"{size - size // 2} random crops of sklearn's sample photos + "
                                   f"{size // 2} builtin:digits:train images")
        else:
            dataset = _open_source(calibration, "image")
            calib_items, held_items, overlap = _split_source(dataset, size, seed)
            calib_pairs = [(item.id, item.ref) for item in calib_items]
            held_pairs = [(item.id, item.ref) for item in held_items]
            held_desc = (f"{len(held_pairs)} {'calibration' if overlap else 'held-out'} items of {dataset.name} + ")
            info["dataset_items"] = len(dataset)
        photos = held_out_photos()
        stats: dict = {}
        parity = list(feed_batches(chain, held_pairs + photos, names, 16, stats))
        _warn_bad(stats, "parity")
        parity_desc = held_desc + f"{len(photos)} real photos ({', '.join(i for i, _ in photos)})"
        return (calib_pairs if method == "static-qdq-int8" else None), parity, parity_desc
    # text: dynamic int8 and fp16 need no calibration; parity on real sentences
    texts = list(PARITY_SENTENCES)
    desc = f"{len(PARITY_SENTENCES)} real sentences"
    extra_source = calibration
    if extra_source is None:
        try:
            open_dataset("builtin:fine-foods:test", limit=1)
            extra_source = "builtin:fine-foods:test"
        except Exception as e:  # not fetched: the fixed sentences only
            log.debug("fine-foods not available for parity: %s", e)
    if extra_source is not None:
        dataset = _open_source(extra_source, "text")
        picked = subset(dataset, min(PARITY_ITEMS, len(dataset)), seed=seed)
        good = []
        for item in picked.items:
            try:
                good.append(chain.decode(item.ref, item.id))
            except InputError:
                pass
        texts += good
        desc += f" + {len(good)} items of {dataset.name}"
    parity = [chain.prepare(texts[i:i + 16], names) for i in range(0, len(texts), 16)]
    return None, parity, desc


def _preprocessed(base_path: Path, tmp: Path) -> Path:
    """``quant_pre_process``: ONNX shape inference + ORT graph optimisation, into ``tmp``.

    Symbolic shape inference is skipped: it is needed only for models with ops ONNX shape
    inference cannot type (it leaves the result unchanged on CNNs, measured on Lite0) and, when
    it fails, it writes temporary files into the current directory.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "preprocessed.onnx"
    try:
        quant_pre_process(str(base_path), str(out), skip_symbolic_shape=True)
    except Exception as e:
        raise ExportError(f"onnxruntime quant_pre_process failed on {base_path.name}: {e}") from e
    return out


def _build(method, base: ModelFile, out_path, tmp, pairs, info, calibration_method, reduce_range) -> dict:
    """Write the variant to ``out_path``; return what was done (tool, settings). Fills ``info`` (static int8)."""
    import onnx  # deferred: onnxruntime.quantization loads much of onnx's tooling; only a variant needs it
    import onnxruntime.quantization as q

    base_path = base.onnx_path
    try:
        if method == "static-qdq-int8":
            pre = _preprocessed(base_path, tmp)
            calibrate = q.CalibrationMethod.MinMax if calibration_method == "minmax" else q.CalibrationMethod.Percentile
            reader = CalibrationReader(base, pairs)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    q.quantize_static(
                        str(pre), str(out_path), reader, quant_format=q.QuantFormat.QDQ,
                        per_channel=True, reduce_range=bool(reduce_range), activation_type=q.QuantType.QUInt8,
                        weight_type=q.QuantType.QInt8, calibrate_method=calibrate,
                    )
            except Exception as e:
                if not reader.stats.get("ok"):
                    bad = reader.stats.get("bad") or ["(no items)"]
                    raise ExportError(f"none of the {len(pairs)} calibration images could be decoded, "
                                      f"e.g. {bad[0]}") from e
                raise
            finally:
                info["size"] = reader.stats.get("ok", 0)
                info["skipped"] = len(reader.stats.get("bad", []))
            _warn_bad(reader.stats, "calibration")
            return {"tool": "onnxruntime.quantization.quantize_static (QDQ) after quant_pre_process",
                    "settings": {"format": "QDQ", "per_channel": True, "activation_type": "uint8",
                                 "weight_type": "int8", "preprocessing": "quant_pre_process (skip_symbolic_shape)"}}
        if method == "dynamic-int8":
            pre = _preprocessed(base_path, tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Fused ONNX Runtime ops (featx.torchmodels.fuse) are untyped for ONNX shape inference: their
                # outputs are float32, which the quantizer must be told.
                q.quantize_dynamic(str(pre), str(out_path), per_channel=True, reduce_range=bool(reduce_range),
                                   weight_type=q.QuantType.QInt8,
                                   extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            return {"tool": "onnxruntime.quantization.quantize_dynamic after quant_pre_process",
                    "settings": {"format": "QOperator (dynamic)", "per_channel": True, "activation_type": "uint8 (dynamic)",
                                 "weight_type": "int8", "preprocessing": "quant_pre_process (skip_symbolic_shape)"}}
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(base_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
        return {"tool": "onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types=True)",
                "settings": {"format": "float16 weights and compute, float32 inputs and outputs"}}
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{method} of {base_path.name} failed: {type(e).__name__}: {e}") from e


def _parity(base_path: Path, variant_path: Path, batches: list[dict]) -> dict:
    """Cosine similarity and max abs difference of the variant vs fp32 on the same feeds."""
    ref_session = Session(base_path, providers="cpu")
    try:
        var_session = Session(variant_path, providers="cpu")
        ref = np.concatenate([ref_session.run(b) for b in batches])
        got = np.concatenate([var_session.run(b) for b in batches])
    except SpecError as e:  # e.g. an op without a CPU kernel in this precision
        warnings.warn(f"parity of {variant_path.name} not measured on the CPU: {e}", RuntimeWarning, stacklevel=3)
        return {"cosine_mean": None, "cosine_min": None, "max_abs_diff": None, "n": 0,
                "not_measured": str(e)[:300]}
    cos = cosine_rows(ref, got)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff": float(np.abs(ref - got).max()),
            "rel_max_abs_diff": float(np.abs(ref - got).max() / max(float(np.abs(ref).max()), 1e-12)),
            "n": int(len(ref))}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (1.0 for two zero rows)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    return np.where(both_zero, 1.0, np.nan_to_num(cos, nan=0.0))

