"""Raw items -> clean model inputs: RGB uint8 images and checked texts.

The bad-input policy lives here. Every failure is an :class:`~featx.errors.InputError`
that names the item and says what to do; nothing is replaced by a neighbour, and no
process-wide Pillow setting (``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``) is changed.

Memory: an image's size is read from its header and checked against ``max_pixels`` before any
pixel is decoded (Pillow's own limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``, does not apply: a
larger ``max_pixels`` really admits larger images). Threads decoding at once can share a
:class:`PixelBudget`: an image waits until its pixels fit in it, so decoded pixels in flight stay
bounded however many threads decode; ``reduce=`` turns the decoded image into what is kept (a
resized crop) before its pixels are released, so no full-size array outlives the call.

Examples
--------
>>> import numpy as np
>>> from featx.engine.decode import decode_image, check_text
>>> decode_image(np.zeros((8, 8), np.uint8)).shape
(8, 8, 3)
>>> check_text("  hello ")
'  hello '
"""

from __future__ import annotations

import ctypes
import functools
import io
import math
import struct
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError, UnreadableItemError
from ..sources.refs import is_reference, read_bytes

#: Images with more pixels than this are refused before decoding (decompression bombs).
#: 16384 x 16384; raise it per call with ``max_pixels=`` for genuinely huge photos.
MAX_PIXELS = 16384 * 16384
#: Pixels that threads sharing one :class:`PixelBudget` decode at once, by default: one image at
#: :data:`MAX_PIXELS` (about 1 GiB as Pillow holds RGB, 4 bytes a pixel), or many smaller ones
#: (sixteen 16 MP photos fit).
MAX_PIXELS_IN_FLIGHT = MAX_PIXELS
#: After decoding an image of at least this many pixels under a budget, freed memory is handed
#: back to the system (glibc ``malloc_trim``): each decoding thread has its own malloc arena,
#: which would otherwise keep its largest image's memory, so six threads that decoded six
#: 3000 x 3000 PNGs one at a time still held six images' worth (348 MB against 70 MB).
TRIM_PIXELS = 8_000_000
#: Texts longer than this many characters are refused (the tokenizer truncates far earlier).
MAX_TEXT_CHARS = 1_000_000
#: Background for transparent pixels.
BACKGROUND = (255, 255, 255)


def describe(item, item_id=None) -> str:
    """A short name for an item, for error messages."""
    if item_id is not None:
        return repr(str(item_id))
    if isinstance(item, (str, Path)) or is_reference(item):
        return repr(str(item))
    if isinstance(item, np.ndarray):
        return f"<array {item.dtype} {item.shape}>"
    return f"<{type(item).__name__}>"


class PixelBudget:
    """Decoded pixels allowed at once across threads: :meth:`hold` waits until an image fits.

    Waiters are served in arrival order. An image larger than the whole budget waits until
    nothing else is held, then decodes alone.

    Parameters
    ----------
    pixels : int
        The budget, in pixels (:data:`MAX_PIXELS_IN_FLIGHT` by default).

    Examples
    --------
    >>> budget = PixelBudget(1000)
    >>> with budget.hold(800):
    ...     budget.held
    800
    >>> budget.held
    0
    """

    def __init__(self, pixels: int = MAX_PIXELS_IN_FLIGHT):
        self.pixels = int(pixels)
        self.held = 0
        self.peak = 0  # the most pixels held at once (for tests and benchmarks)
        self.waiting = 0  # threads waiting for their turn or for room
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextmanager
    def hold(self, pixels: int):
        """Hold ``pixels`` (at most the whole budget) for the duration of the ``with`` block."""
        n = max(0, min(int(pixels), self.pixels))
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self.waiting += 1
            self._cond.wait_for(lambda: ticket == self._serving and self.held + n <= self.pixels)
            self.waiting -= 1
            self._serving += 1
            self.held += n
            self.peak = max(self.peak, self.held)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self.held -= n
                self._cond.notify_all()


@contextmanager
def _held(budget: PixelBudget | None, pixels: int):
    if budget is None:
        yield
        return
    with budget.hold(pixels):
        yield
        if pixels >= TRIM_PIXELS:  # the body freed its pixels: return them before the next image starts
            _trim()


def _trim() -> None:
    """Give freed heap memory of every malloc arena back to the system (glibc; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def decode_image(item, *, item_id=None, max_pixels: int = MAX_PIXELS, jpeg_min_side: int | None = None,
                 budget: PixelBudget | None = None, reduce: Callable | None = None):
    """Decode one image to an RGB ``uint8`` array of shape (H, W, 3).

    Parameters
    ----------
    item : str, Path, bytes, PIL.Image.Image, numpy.ndarray or a reference
        A file path, encoded bytes, a Pillow image, a decoded image array:
        (H, W) or (H, W, 1|3|4), ``uint8``, ``uint16`` (scaled to 8 bits) or float in [0, 1],
        or a reference to encoded bytes inside a tar shard or a table
        (:mod:`featx.sources.refs`), read here.
    item_id : str, optional
        How the item is named in errors (defaults to the path).
    max_pixels : int
        Refuse images with more pixels, checked from the header before decoding.
    jpeg_min_side : int, optional
        Let JPEG files decode at a reduced scale (Pillow's ``draft``: 1/2, 1/4 or 1/8, inside
        libjpeg) whose shorter side stays at least this long. Faster, slightly different pixels.
    budget : PixelBudget, optional
        Shared with other threads: decoding waits until the image's pixels (from its header)
        fit, and holds them until this call returns.
    reduce : callable, optional
        Applied to the decoded RGB image -- a ``PIL.Image.Image`` of mode RGB, or a uint8
        (H, W, 3) array -- while its pixels are held; its result is returned instead of the
        array (e.g. :func:`featx.engine.preprocess.resize_and_crop`: then no full-size array is made).

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3); or what ``reduce`` returns.

    Raises
    ------
    UnreadableItemError
        Missing file, permission denied, an I/O error (an :class:`~featx.errors.InputError` that a
        later extraction retries: the bytes may be fine).
    InputError
        Not an image, truncated data, too many pixels, bad array.
    """
    name = describe(item, item_id)
    if is_reference(item):
        try:
            item = read_bytes(item)
        except OSError as e:
            raise UnreadableItemError(f"image {name} cannot be read: {e}") from None
    if item is None:
        raise InputError(f"image {name} is missing (an empty cell, or a sample without an image); "
                         "give it an image or remove it")
    finish = _as_array if reduce is None else reduce
    if isinstance(item, np.ndarray):
        with _held(budget, item.shape[0] * item.shape[1] if item.ndim >= 2 else 0):
            return finish(_array_to_rgb(item, name))
    if isinstance(item, Image.Image):
        with _held(budget, item.size[0] * item.size[1]):
            return finish(_pil_to_rgb(item, name))
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise InputError(f"image {name} is empty (0 bytes)")
        return _open_and_decode(io.BytesIO(item), name, max_pixels, jpeg_min_side, budget, finish)
    if isinstance(item, (str, Path)):
        path = Path(item)
        if str(item) == "":
            raise InputError("image path is an empty string; pass a file path, bytes, a PIL image or an array")
        if not path.exists():
            raise UnreadableItemError(f"image {name}: no such file ({path})")
        if path.is_dir():
            raise InputError(f"image {name} is a directory, not an image file ({path})")
        if path.stat().st_size == 0:
            raise InputError(f"image {name} is an empty file (0 bytes): {path}")
        try:
            with open(path, "rb") as f:
                return _open_and_decode(f, name, max_pixels, jpeg_min_side, budget, finish)
        except PermissionError:
            raise UnreadableItemError(f"image {name} cannot be read (permission denied): {path}") from None
    raise InputError(
        f"image {name}: unsupported input type {type(item).__name__}; "
        "pass a file path, bytes, a PIL image or a uint8 array"
    )


def _open_and_decode(fp, name: str, max_pixels: int, jpeg_min_side: int | None, budget: PixelBudget | None,
                     finish: Callable):
    with warnings.catch_warnings():
        # Pillow warns (and above 2x its global limit raises) on huge images; we check ourselves.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            try:
                img = Image.open(fp)
            except Image.DecompressionBombError:  # Pillow's limit, not ours: read the header without it
                img = _open_past_pillow_limit(fp)
        except Image.DecompressionBombError:
            raise InputError(
                f"image {name} declares too many pixels (decompression bomb?); refused before decoding"
            ) from None
        except UnidentifiedImageError:
            raise InputError(f"image {name} is not a readable image (unknown or corrupt format)") from None
        except OSError as e:  # an I/O error reading the file, not its content
            raise UnreadableItemError(f"image {name} cannot be opened: {e}") from None
        with img:
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(
                    f"image {name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                    "(decompression bomb guard); refused before decoding. Pass max_pixels= to allow it."
                )
            if w == 0 or h == 0:
                raise InputError(f"image {name} has an empty size {w}x{h}")
            if jpeg_min_side and img.format == "JPEG" and min(w, h) >= 2 * jpeg_min_side:
                scale = jpeg_min_side / min(w, h)
                img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))
            with _held(budget, img.size[0] * img.size[1]):  # after draft: the pixels really decoded
                try:
                    img.seek(0)  # first frame of animations
                    img.load()
                except (OSError, SyntaxError, ValueError, EOFError) as e:
                    raise InputError(f"image {name} is damaged or truncated ({e}); re-encode or remove it") from None
                result = finish(_pil_to_rgb(img, name))
                img.close()  # frees the decoded pixels now, while they are still counted in the budget
                return result


def _open_past_pillow_limit(fp) -> Image.Image:
    """``Image.open`` without Pillow's pixel limit (a process-wide setting featx leaves alone).

    The same plugin loop as ``Image.open``; the caller checks the size against its own limit
    before anything is decoded. A plugin that checks the limit itself (GIF frames) still raises.
    """
    Image.init()
    fp.seek(0)
    prefix = fp.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        accepted = not accept or accept(prefix)
        if not accepted or isinstance(accepted, str):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError("cannot identify image file")


def _as_array(rgb) -> np.ndarray:
    """A decoded RGB image (PIL or array) -> uint8 (H, W, 3) array."""
    return rgb if isinstance(rgb, np.ndarray) else np.asarray(rgb, dtype=np.uint8)


def _pil_to_rgb(img: Image.Image, name: str):
    """A Pillow image -> RGB: a ``PIL.Image.Image`` of mode RGB, or a uint8 array (16-bit and float modes)."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not lose the image
        pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.dtype != np.uint16 and mode != "I":
            arr = arr.astype(np.uint16)
        hi = 65535.0 if (mode != "I" or arr.max(initial=0) > 255) else 255.0
        return _grey_to_rgb(np.clip(np.round(arr.astype(np.float64) * (255.0 / hi)), 0, 255).astype(np.uint8))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"image {name} (mode F) contains NaN or infinite pixels")
        hi = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
        return _grey_to_rgb(np.clip(np.round(arr * (255.0 / hi)), 0, 255).astype(np.uint8))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "P":
        img = img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, BACKGROUND + (255,))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV
    return img


def _grey_to_rgb(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
        raise InputError(
            f"image {name}: expected an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got {arr.shape}. Channels-first arrays must be transposed to channels-last."
        )
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = np.round(arr.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(f"image {name} contains NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise InputError(
                f"image {name}: float images must hold values in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]; "
                "pass uint8 instead"
            )
        out = np.round(arr * 255.0).astype(np.uint8)
    else:
        raise InputError(f"image {name}: unsupported dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    if out.ndim == 2:
        return _grey_to_rgb(out)
    if out.shape[2] == 4:
        return _as_array(_pil_to_rgb(Image.fromarray(np.ascontiguousarray(out), "RGBA"), name))
    return np.ascontiguousarray(out)


def check_text(item, *, item_id=None, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Check one text: a non-empty ``str``. NUL characters become spaces.

    Raises
    ------
    InputError
        ``None``, a non-string, an empty or blank string, an absurdly long text, or a text holding
        a lone surrogate (``"\\ud800"``: not Unicode, no tokenizer takes it).
    """
    name = describe(item, item_id) if item_id is not None else "text"
    if item is None or (isinstance(item, float) and np.isnan(item)):
        raise InputError(f"{name} is missing (None/NaN); give it a text or remove the row")
    if not isinstance(item, str):
        raise InputError(f"{name} must be a str, got {type(item).__name__} {item!r:.50}")
    if len(item) > max_chars:
        raise InputError(f"{name} has {len(item):,} characters, over the limit of {max_chars:,}")
    surrogate = lone_surrogate(item)
    if surrogate is not None:
        raise InputError(f"{name} is not valid Unicode: character {surrogate} is a lone surrogate "
                         f"(U+{ord(item[surrogate]):04X}, half of a UTF-16 pair); fix the text's encoding or remove it")
    text = item.replace("\x00", " ") if "\x00" in item else item
    if not text.strip():  # NUL-only counts as blank too
        raise InputError(f"{name} is empty or blank ({item!r:.20}); give it a text or remove the row")
    return text


def lone_surrogate(text: str) -> int | None:
    """Position of the first lone surrogate in ``text`` (not valid Unicode), or None.

    Examples
    --------
    >>> lone_surrogate("ok"), lone_surrogate("ab\\ud800")
    (None, 2)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None
