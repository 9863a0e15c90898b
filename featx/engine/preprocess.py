"""Pure preprocessing: decoded items -> model-ready batches.

Images: resize the shorter side, centre-crop, scale and normalise -> NCHW float32.
Texts: the ``tokenizers`` library with explicit truncation, padded per batch to its
longest sequence (dynamic padding), truncations counted.

Examples
--------
>>> import numpy as np
>>> from featx.specs.spec import ImagePreprocess
>>> from featx.engine.preprocess import normalize_batch, resize_and_crop
>>> cfg = ImagePreprocess(size=32, resize=36, mean=(0.5,) * 3, std=(0.5,) * 3)
>>> normalize_batch([resize_and_crop(np.zeros((40, 50, 3), np.uint8), cfg)], cfg).shape
(1, 3, 32, 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..specs.spec import ImagePreprocess

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


#: ``resize_mode="full"`` resizes the whole image only up to this many pixels; an image whose
#: aspect ratio would make it larger (over 256:1 at ``resize=256``) has only its crop window
#: resampled, within one grey level of the full resize, instead of a multi-GB intermediate.
FULL_RESIZE_MAX_PIXELS = 1 << 24


def resized_size(w: int, h: int, cfg: ImagePreprocess) -> tuple[int, int]:
    """The (width, height) the shorter-side resize gives an image of ``w`` x ``h`` (see ``resize_mode``)."""
    if cfg.resize_mode == "full":  # torchvision / transformers: shorter side exact, longer side truncated
        long = int(cfg.resize * max(w, h) / min(w, h))
        return (cfg.resize, long) if w <= h else (long, cfg.resize)
    scale = cfg.resize / min(w, h)
    return max(cfg.size, round(w * scale)), max(cfg.size, round(h * scale))


def resize_and_crop(rgb, cfg: ImagePreprocess) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> RGB uint8 (size, size, 3): shorter side to ``resize``, centre crop.

    ``rgb`` may also be a ``PIL.Image.Image`` of mode RGB (what :func:`featx.engine.decode.decode_image`
    hands its ``reduce``): the same pixels out, without an array of the full-size image.
    """
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb, "RGB")
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.resize is None:
        return np.asarray(img.resize((cfg.size, cfg.size), resample))
    w, h = img.size
    new_w, new_h = resized_size(w, h, cfg)
    left, top = (new_w - cfg.size) // 2, (new_h - cfg.size) // 2
    window = (left, top, left + cfg.size, top + cfg.size)
    if (new_w, new_h) == (w, h):
        return np.asarray(img.crop(window))
    if cfg.resize_mode == "full" and new_w * new_h <= FULL_RESIZE_MAX_PIXELS:
        return np.asarray(img.resize((new_w, new_h), resample).crop(window))
    # Resample only the crop window: Pillow maps each output pixel's centre through ``box``, so
    # this equals resizing the whole image and cropping (identical when upsampling, within one
    # grey level when downsampling), 25% faster, and a 1x5000 strip never becomes a 256 x
    # 1,280,000 image.
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + cfg.size) * sx, (top + cfg.size) * sy)
    return np.asarray(img.resize((cfg.size, cfg.size), resample, box=box))


def normalize_into(out: np.ndarray, rgb: np.ndarray, cfg: ImagePreprocess) -> np.ndarray:
    """Write ``(rgb / 255 - mean) / std`` of an (S, S, 3) uint8 image into ``out`` (3, S, S) float32."""
    scale = (1.0 / (255.0 * np.asarray(cfg.std, np.float32)))[:, None, None]
    offset = (np.asarray(cfg.mean, np.float32) / np.asarray(cfg.std, np.float32))[:, None, None]
    np.multiply(rgb.transpose(2, 0, 1), scale, out=out, casting="unsafe")
    out -= offset
    return out


def normalize_batch(crops: Sequence[np.ndarray], cfg: ImagePreprocess, out: np.ndarray | None = None) -> np.ndarray:
    """Cropped RGB uint8 images (:func:`resize_and_crop`) -> one (n, 3, size, size) float32 batch.

    ``out``: the float32 (n, 3, size, size) array to write into (e.g. a reused, page-locked buffer).
    """
    shape = (len(crops), 3, cfg.size, cfg.size)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    for i, crop in enumerate(crops):
        normalize_into(out[i], crop, cfg)
    return out


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of texts, padded to the longest one.

    ``n_truncated`` counts the texts cut at ``max_length`` tokens.
    """

    input_ids: np.ndarray  # (n, L) int64
    attention_mask: np.ndarray  # (n, L) int64
    token_type_ids: np.ndarray  # (n, L) int64
    n_truncated: int

    def feeds(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The arrays the model asks for, by input name."""
        return {name: getattr(self, name) for name in names}


#: Characters tokenized in one call at most. The tokenizer holds about 150 bytes per character of a
#: call's texts (a long text's overflowing pieces included, although truncation keeps
#: ``max_length`` tokens), so a batch of long texts is tokenized in groups of at most this many
#: characters (~150 MB); a longer text is tokenized alone. The tokens are the same either way.
TOKENIZE_CHARS = 1_000_000
#: :meth:`TextTokenizer.count_tokens` reads at most this many characters per token of ``max_length``.
COUNT_CHARS_PER_TOKEN = 8


def char_groups(texts: Sequence[str], budget: int = TOKENIZE_CHARS) -> list[slice]:
    """Consecutive slices of ``texts`` of at most ``budget`` characters each (a longer text alone).

    Examples
    --------
    >>> char_groups(["ab", "cd", "efgh", "i"], budget=4)
    [slice(0, 2, None), slice(2, 3, None), slice(3, 4, None)]
    """
    groups, start, size = [], 0, 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > budget:
            groups.append(slice(start, i))
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        groups.append(slice(start, len(texts)))
    return groups


class TextTokenizer:
    """A ``tokenizers`` tokenizer with truncation at ``max_length`` and per-batch padding.

    Parameters
    ----------
    path : str or Path
        A ``tokenizer.json`` file (Hugging Face ``tokenizers`` format).
    max_length : int
        Longest sequence in tokens, special tokens included.
    padding : {"longest", "max_length"}
        Pad each batch to its longest text, or every text to ``max_length``.

    The padding token is the one the file's padding section names, else ``[PAD]``, else id 0.
    """

    def __init__(self, path, max_length: int, padding: str = "longest"):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.max_length = int(max_length)
        self.padding = padding
        self._tok = Tokenizer.from_file(str(self.path))
        configured = self._tok.padding
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)
        pad = configured["pad_id"] if configured else self._tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def __getstate__(self):
        return {"path": self.path, "max_length": self.max_length, "padding": self.padding}

    def __setstate__(self, state):
        self.__init__(state["path"], state["max_length"], state.get("padding", "longest"))

    def _encode(self, texts: Sequence[str]):
        """Encodings of ``texts``, tokenized :data:`TOKENIZE_CHARS` characters at a time."""
        texts = list(texts)
        for group in char_groups(texts):
            yield from self._tok.encode_batch(texts[group])

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts after truncation, for ordering texts by length.

        Each text is counted on its first ``max_length * COUNT_CHARS_PER_TOKEN`` characters, so
        a huge text costs no more than that (a count that would reach ``max_length`` on the
        whole text reaches it on that prefix unless the text averages over 8 characters a token).
        """
        clip = self.max_length * COUNT_CHARS_PER_TOKEN
        return np.array([len(e.ids) for e in self._encode([t[:clip] for t in texts])], dtype=np.int64)

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        rows = [(e.ids, e.type_ids, bool(e.overflowing)) for e in self._encode(texts)]  # encodings freed per group
        n = len(rows)
        length = max((len(ids) for ids, _, _ in rows), default=1)
        if self.padding == "max_length":
            length = self.max_length
        ids = np.full((n, length), self.pad_id, np.int64)
        mask = np.zeros((n, length), np.int64)
        types = np.zeros((n, length), np.int64)
        truncated = 0
        for i, (row_ids, row_types, overflowed) in enumerate(rows):
            k = len(row_ids)
            ids[i, :k] = row_ids
            mask[i, :k] = 1
            types[i, :k] = row_types
            truncated += overflowed
        return TokenBatch(ids, mask, types, truncated)
