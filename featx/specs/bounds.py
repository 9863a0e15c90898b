"""Bounds and cross-checks for the files featx reads but did not write (issue #24).

A model's own description — a processor config, a spec TOML, the metadata inside a deployed
``.onnx``, a tokenizer, the headers of its weights — comes from a hub, a colleague or an attacker.
Every size it names is checked here **before** anything is allocated from it, every path it names is
confined to its folder, and what it says is cross-checked against what the model is (position
embeddings, vocabulary, output width). A failed check is a :class:`~featx.errors.SpecError` that
names the file, the key and what to do.

The bounds (overridable where a real model needs more):

=========================  =======  ==========================================================
environment variable       default  what it bounds
=========================  =======  ==========================================================
``FEATX_MAX_IMAGE_SIDE``   2048     an image model's input side (``size``, ``resize``, crop):
                                    one 2048x2048 float32 input is 48 MiB
``FEATX_MAX_TEXT_TOKENS``  16384    a text model's ``max_length`` (tokens per text)
=========================  =======  ==========================================================

Examples
--------
>>> check_image_side(224, "preprocess.size", "spec.toml")
224
>>> check_image_side(40000, "preprocess.size", "spec.toml")
Traceback (most recent call last):
...
featx.errors.SpecError: spec.toml: preprocess.size=40000 is above featx's bound of 2048 pixels per side (an input of that size takes 18311 MiB per image); if the model really needs it, set FEATX_MAX_IMAGE_SIDE=40000
>>> confined("/models/bert", "tokenizer.json", "featx.tokenizer", "m.onnx").name
'tokenizer.json'
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from ..errors import SpecError

MAX_IMAGE_SIDE_ENV, MAX_TEXT_TOKENS_ENV = "FEATX_MAX_IMAGE_SIDE", "FEATX_MAX_TEXT_TOKENS"
DEFAULT_MAX_IMAGE_SIDE, DEFAULT_MAX_TEXT_TOKENS = 2048, 16384
#: safetensors' own limit on a header (its Rust reader refuses larger ones).
MAX_SAFETENSORS_HEADER = 100_000_000
#: Files a text model folder tokenises with (one of them must be there).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def _bound(env: str, default: int) -> int:
    raw = os.environ.get(env, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{env}={raw!r} is not an integer; unset it or give a positive number") from None
    if value < 1:
        raise SpecError(f"{env}={raw!r} must be a positive integer")
    return value


def max_image_side() -> int:
    """The largest input side an image model may ask for (``FEATX_MAX_IMAGE_SIDE``, default 2048)."""
    return _bound(MAX_IMAGE_SIDE_ENV, DEFAULT_MAX_IMAGE_SIDE)


def max_text_tokens() -> int:
    """The largest ``max_length`` a text model may ask for (``FEATX_MAX_TEXT_TOKENS``, default 16384)."""
    return _bound(MAX_TEXT_TOKENS_ENV, DEFAULT_MAX_TEXT_TOKENS)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_image_side(value, key: str, where: str) -> int:
    """``value`` as a positive int within :func:`max_image_side`, else a SpecError naming ``where`` and ``key``."""
    if not _is_int(value) or value < 1:
        raise SpecError(f"{where}: {key}={value!r} must be a positive integer (pixels)")
    bound = max_image_side()
    if value > bound:
        mib = value * value * 3 * 4 / 2**20
        raise SpecError(f"{where}: {key}={value} is above featx's bound of {bound} pixels per side (an input of "
                        f"that size takes {mib:.0f} MiB per image); if the model really needs it, set "
                        f"{MAX_IMAGE_SIDE_ENV}={value}")
    return value


def check_max_length(value, where: str, key: str = "preprocess.max_length") -> int:
    """``value`` as an int >= 2 within :func:`max_text_tokens`."""
    if not _is_int(value) or value < 2:
        raise SpecError(f"{where}: {key}={value!r} must be an int >= 2 (tokens)")
    bound = max_text_tokens()
    if value > bound:
        raise SpecError(f"{where}: {key}={value} is above featx's bound of {bound} tokens per text; if the model "
                        f"really reads that many, set {MAX_TEXT_TOKENS_ENV}={value}")
    return value


def check_positions(max_length: int, max_positions, model_type: str, where: str) -> None:
    """Refuse a ``max_length`` the model's position embeddings cannot index (RoBERTa-style models keep 2).

    >>> check_positions(512, 514, "roberta", "hf:x")
    >>> check_positions(1024, 512, "bert", "hf:x")
    Traceback (most recent call last):
    ...
    featx.errors.SpecError: hf:x: max_length 1024 is more than the model's 512 position embeddings (config.json max_position_embeddings): every longer text would fail in the exported graph; set [preprocess] max_length to 512 or less
    """
    if not _is_int(max_positions) or max_positions < 1:
        return
    usable = max_positions - (2 if model_type in ("roberta", "xlm-roberta", "camembert") else 0)
    if max_length > usable:
        raise SpecError(f"{where}: max_length {max_length} is more than the model's {usable} position embeddings "
                        "(config.json max_position_embeddings): every longer text would fail in the exported "
                        f"graph; set [preprocess] max_length to {usable} or less")


def numbers(value, n: int, key: str, where: str, *, positive: bool = False) -> list[float]:
    """``n`` finite numbers (one given is repeated), else a SpecError (e.g. a non-numeric ``image_std``).

    >>> numbers(0.5, 3, "image_std", "p.json")
    [0.5, 0.5, 0.5]
    """
    items = value if isinstance(value, (list, tuple)) else [value] * n
    ok = len(items) == n and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in items)
    if not ok or (positive and any(v <= 0 for v in items)):
        need = "positive " if positive else ""
        raise SpecError(f"{where}: {key}={value!r} must be {n} finite {need}numbers (one per channel)")
    return [float(v) for v in items]


def confined(folder, name, key: str, where: str) -> Path:
    """``folder/name`` resolved, refusing a name that is absolute or leaves ``folder`` (``..``, a symlink)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise SpecError(f"{where}: {key}={name!r} must be a file name inside {folder}")
    base = Path(folder).resolve()
    path = (base / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(base):
        raise SpecError(f"{where}: {key}={name!r} leaves its folder {base}; featx opens only files beside the model")
    return path


def check_text_folder(folder: Path, where: str) -> None:
    """A local text model folder must carry its tokenizer (else transformers falls back to a tiny vocabulary)."""
    if not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
        raise SpecError(f"{where}: the folder has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
                        "without them every word would become [UNK]. Save the tokenizer beside the model "
                        "(tokenizer.save_pretrained(folder))")


def check_weights_folder(folder: Path, where: str) -> None:
    """A local folder's weights: safetensors with a sane header; pickle-only weights are refused (they run code)."""
    folder = Path(folder)
    tensors = sorted(folder.glob("*.safetensors"))
    if not tensors:
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".h5")]
        if pickles:
            raise SpecError(f"{where}: weights only in {', '.join(sorted(pickles))} (pickle files, which can run "
                            "code when loaded); featx loads safetensors only: convert them with "
                            "model.save_pretrained(folder, safe_serialization=True) in a trusted session")
        raise SpecError(f"{where}: no weights (*.safetensors) in the folder; save the model with save_pretrained")
    for path in tensors:
        safetensors_header(path)


def safetensors_header(path: Path) -> dict:
    """The JSON header of a ``.safetensors`` file, bounded and checked before the tensors are read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than its 8-byte header length")
            n = struct.unpack("<Q", head)[0]
            size = path.stat().st_size
            if n > MAX_SAFETENSORS_HEADER or n + 8 > size:
                raise ValueError(f"its header claims {n} bytes, the file has {size}")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        end = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            offsets = info.get("data_offsets") if isinstance(info, dict) else None
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(v) for v in offsets)
                    and 0 <= offsets[0] <= offsets[1]):
                raise ValueError(f"tensor {name!r} has no valid data_offsets")
            end = max(end, offsets[1])
        if end + 8 + n > size:
            raise ValueError(f"its tensors need {end + 8 + n} bytes, the file has {size} (truncated)")
        return header
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as e:
        raise SpecError(f"{path}: not a valid safetensors file ({e}); download or save the weights again") from None


def check_vocabulary(tokenizer_size: int, embeddings: int, where: str) -> None:
    """Every token id the tokenizer can give must index the model's input embeddings."""
    if tokenizer_size > embeddings:
        raise SpecError(f"{where}: the tokenizer has {tokenizer_size} tokens but the model only {embeddings} input "
                        "embeddings: the tokenizer is not this model's; save the model's own tokenizer beside it")
