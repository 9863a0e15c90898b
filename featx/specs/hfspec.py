"""Hugging Face models -> featx spec dicts: preprocessing from the processor, pooling per family.

``hf:MODEL`` names a transformers model by hub id or local folder (``save_pretrained`` output,
an offline hub snapshot); ``hf:MODEL#image`` / ``hf:MODEL#text`` name a tower of a CLIP-style
dual encoder. :func:`hf_spec_dict` reads the model's configuration files (never its weights) and
returns the spec in the format of the bundled TOML files::

    config.json                model_type -> family: image encoder, text encoder, dual encoder
    preprocessor_config.json   the image processor -> [preprocess] (size, resize, interpolation,
                               mean, std, resize_mode = "full": transformers' exact resize rule)
    tokenizer files            max_length (sentence-transformers' max_seq_length, else the
                               tokenizer's model_max_length, capped by the position embeddings)
    modules.json, 1_Pooling/   sentence-transformers' pooling (mean / cls) and Normalize

The rules, per family (:data:`IMAGE_POOLING`, :data:`DUAL_ENCODERS`): ViT, DeiT and DINOv2 give
their CLS token (after the final layer norm); ConvNeXt, ResNet, RegNet, BiT, Swin and
EfficientNet their pooled output; text encoders mean pooling + L2 unless sentence-transformers'
files say otherwise; CLIP and SigLIP towers their projected features (``get_image_features`` /
``get_text_features``), L2-normalised as the model does before its logits. A spec file can
override any of it (:func:`merge_spec`). transformers is imported only when a function here
runs (``featx[export]``); a hub id needs the internet once, then the Hugging Face cache.

Examples
--------
>>> split_name("hf:openai/clip-vit-base-patch32#image")
('openai/clip-vit-base-patch32', 'image')
>>> preprocess_from_processor({"image_processor_type": "CLIPImageProcessor", "do_resize": True,
...     "size": {"shortest_edge": 224}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
...     "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
...     "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})["resize"]
224
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from ..errors import SpecError
from . import bounds
from ..extras import require

#: Image encoders: ``config.model_type`` -> pooling (``cls``: the first token of the last hidden
#: state, after the final layer norm; ``pooler``: the model's pooled output, flattened).
IMAGE_POOLING = {
    "vit": "cls", "deit": "cls", "dinov2": "cls", "dinov2_with_registers": "cls",
    "convnext": "pooler", "convnextv2": "pooler", "resnet": "pooler", "regnet": "pooler", "bit": "pooler",
    "swin": "pooler", "swinv2": "pooler", "efficientnet": "pooler",
}
#: Dual encoders: ``model_type`` -> how their logits become probabilities (and SigLIP's text tower
#: pools the last position, so its texts are padded to ``max_length`` as it was trained).
DUAL_ENCODERS = {"clip": "softmax", "siglip": "sigmoid"}
POOLINGS = {"image": ("cls", "pooler", "mean"), "text": ("mean", "cls", "pooler"), "dual": ("projection",)}
#: The image processors whose preprocessing featx reproduces exactly (their PIL backends: a
#: generic resize, ConvNeXt's ``crop_pct`` rule, centre crop, rescale, normalise).
PROCESSORS = ("ViTImageProcessor", "BitImageProcessor", "CLIPImageProcessor", "SiglipImageProcessor",
              "ConvNextImageProcessor")
#: PIL's resampling codes, as processor configs store them.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
#: Source kinds built from transformers: text encoder, image encoder, a tower of a dual encoder.
HF_KINDS = ("hf", "hf-image", "hf-clip")
TOWERS = ("image", "text")
_NO_LIMIT = 100_000  # tokenizers without a limit report int(1e30)


def local_folder(name: str) -> Path | None:
    """The resolved folder an ``hf:`` name reads from, or None for a hub id (or a name that is not ``hf:``)."""
    if not isinstance(name, str) or not name.startswith("hf:"):
        return None
    model, _ = split_name(name)
    return Path(model).resolve() if Path(model).is_dir() else None


def folder_digest(folder) -> str:
    """sha256 of what a model folder is: its resolved path and every file's name and bytes.

    Hidden files and folders (``.git``, ``.cache``) are left out. Computed once per process for
    a folder whose files keep their sizes and modification times.
    """
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    signature = tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(str(folder), signature)


@lru_cache(maxsize=64)
def _digest(folder: str, signature: tuple) -> str:
    h = hashlib.sha256(folder.encode())
    for relative, _, _ in signature:
        h.update(b"\0" + relative.encode() + b"\0")
        with open(Path(folder) / relative, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def local_stem(name: str) -> str | None:
    """The file stem of an ``hf:`` name that reads a local folder (:func:`featx.specs.spec.folder_stem`), else None."""
    folder = local_folder(name)
    if folder is None:
        return None
    from .spec import folder_stem

    return folder_stem(str(folder), split_name(name)[1], folder_digest(folder))


def split_name(name: str) -> tuple[str, str | None]:
    """``hf:MODEL[#TOWER]`` -> ``(MODEL, TOWER or None)``."""
    body = name[3:] if name.startswith("hf:") else name
    model, _, tower = body.partition("#")
    if not model.strip():
        raise SpecError(f"{name!r} names no model: use hf:HUB_ID or hf:/path/to/folder")
    if tower and tower not in TOWERS:
        raise SpecError(f"{name!r}: the part after '#' must be one of {TOWERS}, got {tower!r}")
    return model, tower or None


# --------------------------------------------------------------------------- pure rules
def _square(value, key: str, processor: str) -> int:
    if isinstance(value, int):
        return value
    d = dict(value or {})
    if "height" in d and "width" in d and d["height"] == d["width"] and len(d) == 2:
        return int(d["height"])
    raise SpecError(f"{processor}: {key}={value!r} is not a square; featx's preprocessing makes square inputs")


def preprocess_from_processor(d: dict) -> dict:
    """An image processor's resolved settings (its ``to_dict()``) -> featx's ``[preprocess]`` dict.

    Raises
    ------
    SpecError
        A processor or a setting featx cannot reproduce exactly (named), or one of the wrong type or
        out of bounds (:mod:`featx.specs.bounds`).
    """
    if not isinstance(d, dict):
        raise SpecError(f"image processor config is a {type(d).__name__}, not a JSON object")
    try:
        out = _preprocess_from_processor(d)
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as e:
        raise SpecError(f"image processor config (preprocessor_config.json): a setting has the wrong type or "
                        f"is missing ({type(e).__name__}: {str(e)[:120]}); fix the file or write a spec file "
                        "with an explicit [preprocess] section") from None
    where = "image processor config (preprocessor_config.json)"
    bounds.check_image_side(out["size"], "size/crop_size", where)
    if out["resize"] is not None:
        bounds.check_image_side(out["resize"], "size (the resize)", where)
    return out


def _preprocess_from_processor(d: dict) -> dict:
    kind = str(d.get("image_processor_type") or d.get("feature_extractor_type") or "")
    kind = kind.removesuffix("Pil").removesuffix("Fast").replace("FeatureExtractor", "ImageProcessor")
    if kind not in PROCESSORS:
        raise SpecError(f"image processor {kind or '(unnamed)'!r}: featx reproduces {', '.join(PROCESSORS)}; "
                        "write a spec file with an explicit [preprocess] section for this model")
    if not d.get("do_resize", True):
        raise SpecError(f"{kind}: do_resize=false keeps every image's own size; featx needs a fixed input size")
    if d.get("do_rescale", True) and abs(float(d.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
        raise SpecError(f"{kind}: rescale_factor={d['rescale_factor']!r}; featx scales pixels by 1/255")
    if not d.get("do_rescale", True):
        raise SpecError(f"{kind}: do_rescale=false feeds 0..255 pixel values; featx scales pixels by 1/255")
    resample = d.get("resample", 3)
    if resample not in PIL_FILTERS:
        raise SpecError(f"{kind}: resample={resample!r} is not one of PIL's filters {sorted(PIL_FILTERS)}")
    size = dict(d["size"]) if isinstance(d.get("size"), dict) else {"shortest_edge": d.get("size")}
    crop = d.get("crop_size") if d.get("do_center_crop") else None
    if kind == "ConvNextImageProcessor":  # shorter side to int(s / crop_pct), crop s; warp from 384 up
        if crop is not None:
            raise SpecError(f"{kind}: do_center_crop=true on top of crop_pct is not reproduced by featx")
        s = int(size["shortest_edge"])
        resize = None if s >= 384 else int(s / float(d.get("crop_pct", 224 / 256)))
        out_size = s
    elif "shortest_edge" in size and len(size) == 1 and size["shortest_edge"] is not None:
        if crop is None:
            raise SpecError(f"{kind}: a shorter-side resize without do_center_crop gives inputs of every shape; "
                            "featx needs a square crop (set do_center_crop and crop_size)")
        resize, out_size = int(size["shortest_edge"]), _square(crop, "crop_size", kind)
        if out_size > resize:
            raise SpecError(f"{kind}: crop_size {out_size} is larger than the resized shorter side {resize}")
    else:
        side = _square(size, "size", kind)
        if crop is not None and _square(crop, "crop_size", kind) != side:
            raise SpecError(f"{kind}: a resize to {side}x{side} followed by a centre crop is not reproduced by featx")
        resize, out_size = None, side

    def triple(v, default, key):
        return bounds.numbers(default if v is None else v, 3, key, f"image processor {kind}", positive=key == "image_std")

    normalize = d.get("do_normalize", True)
    return {
        "size": out_size, "resize": resize, "interpolation": PIL_FILTERS[resample], "resize_mode": "full",
        "mean": triple(d.get("image_mean"), 0.0, "image_mean") if normalize else [0.0] * 3,
        "std": triple(d.get("image_std"), 1.0, "image_std") if normalize else [1.0] * 3,
    }


def text_max_length(model_max_length, max_positions, model_type: str, st_max_seq_length=None) -> int:
    """Tokens a text encoder reads: sentence-transformers' ``max_seq_length``, else the tokenizer's
    ``model_max_length``, capped by the position embeddings (RoBERTa-style models keep 2 of them).

    Examples
    --------
    >>> text_max_length(512, 512, "bert", 256), text_max_length(int(1e30), 514, "roberta")
    (256, 512)
    """
    limit = None
    if max_positions:
        limit = int(max_positions) - (2 if model_type in ("roberta", "xlm-roberta", "camembert") else 0)
    for value in (st_max_seq_length, model_max_length):
        if value and int(value) < _NO_LIMIT:
            return min(int(value), limit) if limit else int(value)
    if limit is None:
        raise SpecError(f"model type {model_type!r}: neither the tokenizer nor the config gives a maximum length; "
                        "set [preprocess] max_length in a spec file")
    return limit


def st_pooling(modules: list | None, pooling_config: dict | None) -> tuple[str, bool] | None:
    """sentence-transformers' ``modules.json`` and pooling config -> ``(pooling, normalize)``, or None."""
    if not modules:
        return None
    types = [str(m.get("type", "")) for m in modules]
    normalize = any(t.endswith(".Normalize") for t in types)
    cfg = pooling_config or {}
    if cfg.get("pooling_mode_cls_token"):
        return "cls", normalize
    if cfg.get("pooling_mode_mean_tokens") or not cfg:
        return "mean", normalize
    modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
    raise SpecError(f"sentence-transformers pooling {modes} is not one featx exports (mean, cls); "
                    "write a spec file with pooling = 'mean' or 'cls'")


def check_pooling(family: str, pooling: str, where: str) -> str:
    """The pooling of a transformers spec must be one of :data:`POOLINGS` for its family."""
    if pooling not in POOLINGS[family]:
        raise SpecError(f"{where}: pooling must be one of {POOLINGS[family]} for a {family} model, got {pooling!r}")
    return pooling


def merge_spec(derived: dict, written: dict) -> dict:
    """A spec file over the spec derived from its model: the file's keys win, section by section."""
    out = dict(derived) | {k: v for k, v in written.items() if k not in ("source", "preprocess")}
    out["source"] = dict(derived.get("source", {})) | dict(written.get("source", {}))
    out["preprocess"] = dict(derived.get("preprocess", {})) | dict(written.get("preprocess", {}))
    length = dict(written.get("preprocess", {})).get("max_length")
    source = out["source"]
    if isinstance(length, int) and source.get("kind") in ("hf", "hf-clip") and isinstance(source.get("model"), str):
        config = _config(source["model"])  # a written max_length must fit the model's position embeddings
        text = getattr(config, "text_config", config)
        bounds.check_positions(length, getattr(text, "max_position_embeddings", None),
                               str(getattr(config, "model_type", "")), f"spec of hf:{source['model']}")
    return out


# --------------------------------------------------------------------------- reading a model's files
def _transformers():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return require("transformers", "export", "a Hugging Face backbone (hf:...)")


def _read_json(model: str, filename: str) -> dict | list | None:
    """A JSON file of the model folder or hub repo, or None when it has none."""
    if Path(model).is_dir():
        path = Path(model) / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from transformers.utils import cached_file  # deferred with transformers (featx[export])

    path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    return json.loads(Path(path).read_text()) if path else None


#: Where a hub id is fetched from, probed once before transformers' retries (seconds, not ~30).
HUB_HOST, HUB_PROBE_SECONDS = "huggingface.co", 3.0


def hub_reachable(host: str = HUB_HOST, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` (HF_ENDPOINT's host when set)."""
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT")
    host = urlparse(endpoint).hostname or host if endpoint else host
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _config(model: str):
    transformers = _transformers()
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not Path(model).is_dir() and not offline:
        try:  # a hub id already in the local cache needs no network
            return transformers.AutoConfig.from_pretrained(model, local_files_only=True)
        except (OSError, ValueError):
            pass
        if not hub_reachable():  # fail fast instead of waiting through the hub client's retries
            raise SpecError(f"hf:{model}: not a folder, not in the Hugging Face cache, and the hub "
                            f"({os.environ.get('HF_ENDPOINT') or HUB_HOST}) cannot be reached: connect to the "
                            "internet once to download it, or give a local folder (hf:/path/to/folder)")
    try:
        return transformers.AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        where = ("not a folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set: unset it to download "
                 "once, which needs the internet)") if offline else "not a folder, and not loadable from the hub"
        if Path(model).is_dir():
            where = "a folder without a usable config.json (featx needs save_pretrained output or a hub snapshot)"
        raise SpecError(f"hf:{model}: {where}: {str(e).splitlines()[0][:200]}") from None


def _image_preprocess(model: str) -> dict:
    if Path(model).is_dir():  # checked as JSON before transformers builds anything from it
        raw = _read_json_checked(model, "preprocessor_config.json")
        if raw is not None:
            preprocess_from_processor(raw)
    try:
        processor = _transformers().AutoImageProcessor.from_pretrained(model)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise SpecError(f"hf:{model}: its image processor cannot be loaded ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); fix preprocessor_config.json") from None
    return preprocess_from_processor(processor.to_dict())


def _read_json_checked(model: str, filename: str):
    try:
        return _read_json(model, filename)
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"hf:{model}: {filename} is not valid JSON ({str(e)[:120]}); download or save it again") \
            from None


def _tokenizer(model: str):
    if Path(model).is_dir():
        bounds.check_text_folder(Path(model), f"hf:{model}")
    return load_tokenizer(model)


def load_tokenizer(model: str):
    """transformers' ``AutoTokenizer`` for ``model``; a garbage tokenizer file is a SpecError, not a traceback."""
    try:
        return _transformers().AutoTokenizer.from_pretrained(model)
    except Exception as e:  # the tokenizers library raises its own (Rust) exception types
        if isinstance(e, (KeyboardInterrupt, MemoryError)):
            raise
        raise SpecError(f"hf:{model}: its tokenizer cannot be loaded ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); save the model's tokenizer again "
                        "(tokenizer.save_pretrained(folder))") from None


def hf_spec_dict(name: str) -> dict:
    """The spec of ``hf:MODEL[#TOWER]``, derived from the model's configuration files.

    Returns a dict in the bundled TOML format (``featx.specs.spec.BackboneSpec.from_dict`` reads it).

    Raises
    ------
    SpecError
        No such folder or cached model, a family without a rule, or a processor featx cannot
        reproduce; each message says what to do (often: write a spec file).
    MissingDependencyError
        transformers is not installed (``pip install 'featx[export]'``).
    """
    model, tower = split_name(name)
    digest = None
    if Path(model).is_dir():  # the record names the folder wherever the export runs from, and what it held
        model = str(Path(model).resolve())
        bounds.check_weights_folder(Path(model), f"hf:{model}")  # weights checked before anything reads them
        digest = folder_digest(model)
    config = _config(model)
    model_type = str(getattr(config, "model_type", ""))
    base = {"name": name, "license": "see the Hugging Face model card", "dim": None}
    where = f"hf:{model}"
    if model_type in DUAL_ENCODERS:
        if tower is None:
            raise SpecError(f"{where} is a {model_type.upper()} dual encoder: name one tower, hf:{model}#image or "
                            f"hf:{model}#text (or classify zero-shot with featx.ZeroShotClassifier(model='hf:{model}'))")
        source = {"kind": "hf-clip", "model": model, "tower": tower, "family": model_type,
                  "probabilities": DUAL_ENCODERS[model_type], "packages": ["transformers"]} | _digest_of(digest)
        description = f"{model_type.upper()} {tower} tower of {model!r}: projected features, L2-normalised"
        common = base | {"modality": tower, "pooling": "projection", "normalize": True, "source": source,
                         "description": description}
        if tower == "image":
            return common | {"preprocess": _image_preprocess(model)}
        text_config = getattr(config, "text_config", config)
        tok = _tokenizer(model)
        length = text_max_length(tok.model_max_length, getattr(text_config, "max_position_embeddings", None),
                                 model_type)
        padding = "max_length" if model_type == "siglip" else "longest"
        return common | {"preprocess": {"max_length": length, "padding": padding}}
    if tower is not None:
        raise SpecError(f"{name!r}: '#{tower}' names a tower of a dual encoder (CLIP, SigLIP); "
                        f"{where} is a {model_type!r} model: use hf:{model}")
    if model_type in IMAGE_POOLING:
        pooling = IMAGE_POOLING[model_type]
        return base | {"modality": "image", "pooling": pooling, "normalize": False,
                       "source": {"kind": "hf-image", "model": model, "packages": ["transformers"]} | _digest_of(digest),
                       "preprocess": _image_preprocess(model),
                       "description": f"{model_type} image encoder {model!r}: {pooling} pooling"}
    if _read_json(model, "preprocessor_config.json") is not None:
        raise SpecError(f"{where}: no pooling rule for the image model type {model_type!r} (featx knows "
                        f"{', '.join(sorted(IMAGE_POOLING))}); write a spec file with pooling = 'cls', 'pooler' "
                        "or 'mean' and a [preprocess] section")
    tok = _tokenizer(model)
    st_config = _read_json(model, "sentence_bert_config.json") or {}
    modules = _read_json(model, "modules.json")
    pool_path = next((m.get("path") for m in modules or [] if str(m.get("type", "")).endswith(".Pooling")), None)
    pooling, normalize = st_pooling(modules, _read_json(model, f"{pool_path}/config.json") if pool_path else None) \
        or ("mean", True)
    length = text_max_length(tok.model_max_length, getattr(config, "max_position_embeddings", None), model_type,
                             st_config.get("max_seq_length"))
    return base | {"modality": "text", "pooling": pooling, "normalize": normalize,
                   "source": {"kind": "hf", "model": model, "packages": ["transformers"]} | _digest_of(digest),
                   "preprocess": {"max_length": length},
                   "description": f"{model_type} text encoder {model!r}: {pooling} pooling"
                                  + (" + L2 normalisation" if normalize else "")}


def _digest_of(digest: str | None) -> dict:
    """The ``digest`` key of a source read from a local folder (its file stem depends on it)."""
    return {"digest": digest} if digest else {}


def source_name(source: dict) -> str:
    """The ``hf:`` name a spec file's transformers source derives from (``hf:MODEL[#TOWER]``)."""
    model = source.get("model") or source.get("hub_id")
    if not isinstance(model, str) or not model:
        raise SpecError("source.model must name a hub id or a local folder")
    return f"hf:{model}" + (f"#{source['tower']}" if source.get("tower") else "")
