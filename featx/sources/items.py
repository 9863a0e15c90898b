"""What every source produces: :class:`Item` (a stable id, a reference the decoder takes, an
optional label, a file stamp) and :class:`Dataset` (ordered items of one modality), and how ids
are made when a source has none.

Examples
--------
>>> ds = make_dataset("demo", "text", [Item("b", "hello", "greeting"), Item("a", "bye", None), Item("c", "hm", " ")])
>>> ds.ids(), ds.classes, ds.labels().tolist()
(['b', 'a', 'c'], ('greeting',), ['greeting', None, None])
>>> text_id("hello")
'aaf4c61ddcc5e8a2'
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import DataSourceError
from .targets import IllFormedLabel, list_cell


@dataclass(frozen=True)
class Item:
    """One item of a dataset.

    Attributes
    ----------
    id : str
        Stable and unique within the dataset.
    ref : object
        What the decoder takes: an absolute path (str) for image files, the text for texts
        (as found: may be None or a non-str for bad rows), or a uint8 array (H, W) / (H, W, 3)
        for in-memory built-in images.
    label : str or None
        Class name, always a str; None for an unlabelled item (a missing label is never a class:
        :func:`make_dataset` turns blank ones into None, see :func:`clean_label`).
    stamp : str or None
        ``"{size}:{mtime_ns}"`` of the file; None for in-memory items and missing files.
    """

    id: str
    ref: object
    label: str | None = None
    stamp: str | None = None


@dataclass(frozen=True)
class Dataset:
    """An ordered, labelled or unlabelled collection of items of one modality.

    Attributes
    ----------
    name : str
        Canonical description of the source: ``"folder:/abs/path"``, ``"csv:/abs/x.csv"``,
        ``"builtin:digits:train"``... A subset keeps the name of its dataset.
    modality : {"image", "text"}
    items : tuple of Item
        In a deterministic order.
    classes : tuple of str or None
        Sorted distinct labels; None when no item has a label.
    """

    name: str
    modality: str
    items: tuple[Item, ...]
    classes: tuple[str, ...] | None

    def __post_init__(self):
        """Refuse ids that would bind a row to the wrong item (duplicates) or cannot be stored (not UTF-8)."""
        ids = [item.id for item in self.items]
        if len(set(ids)) != len(ids):
            repeated = [i for i, count in Counter(ids).items() if count > 1]
            raise DataSourceError(
                f"dataset {self.name} has {len(repeated)} repeated id(s): "
                f"{', '.join(map(repr, repeated[:5]))}{', ...' if len(repeated) > 5 else ''}; each item needs an id "
                "of its own, or features would be stored under another item's id. Make them unique "
                "(featx.sources.unique_ids renames repeats as ~2, ~3, as the built-in sources do)")
        names = ids + [item.label for item in self.items if item.label is not None]
        try:  # one encode for the common case; the culprit is looked for only when it fails
            "".join(names).encode("utf-8")
        except (TypeError, UnicodeEncodeError):
            bad = next(value for value in names if not isinstance(value, str) or not is_utf8(value))
            raise DataSourceError(
                f"dataset {self.name}: the id or label {bad!r} is not a str of valid Unicode (a lone surrogate, "
                "or bytes of a file name that are not UTF-8); featx.sources.utf8_text escapes them") from None

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray | None:
        """Labels as an object array of str (None for unlabelled items), or None when no item has one."""
        if self.classes is None:
            return None
        return np.array([clean_label(item.label) for item in self.items], dtype=object)

    def ids(self) -> list[str]:
        """Item ids, in order."""
        return [item.id for item in self.items]


def make_dataset(name: str, modality: str, items: Sequence[Item]) -> Dataset:
    """A Dataset whose ``classes`` are the sorted distinct labels of ``items``; missing labels become None,
    ids and labels that are not valid Unicode are escaped (:func:`utf8_text`)."""
    items = [_clean(item) for item in items]
    classes = sorted({item.label for item in items if item.label is not None})
    return Dataset(name=name, modality=modality, items=tuple(items), classes=tuple(classes) or None)


def check_modality(dataset: Dataset, modality: str, taker: str) -> None:
    """:class:`~featx.errors.DataSourceError` when ``dataset`` does not hold what ``taker`` takes.

    Examples
    --------
    >>> check_modality(make_dataset("csv:notes.csv", "text", [Item("a", "hi")]), "image", "the head")
    Traceback (most recent call last):
    ...
    featx.errors.DataSourceError: csv:notes.csv holds texts but the head takes images: give a folder of images, ...
    """
    if dataset.modality != modality:
        hint = ("a folder of images, or a manifest with a path column (found by name, or named with --path-column "
                "/ path_column=)" if modality == "image" else
                "a .txt file, or a manifest with a text column (found by name, or named with --text-column / "
                "text_column=)")
        raise DataSourceError(f"{dataset.name} holds {dataset.modality}s but {taker} takes {modality}s: give {hint}")


def _clean(item: Item) -> Item:
    try:
        label = clean_label(item.label)
    except IllFormedLabel as e:
        raise DataSourceError(f"item {item.id!r}: its label is ill-formed: {e}; fix the label column (or member) "
                              "of that item") from None
    label = None if label is None else utf8_text(label)
    item_id = utf8_text(item.id) if isinstance(item.id, str) else item.id
    if (item.label is None or isinstance(item.label, str)) and label == item.label and item_id == item.id:
        return item
    return dataclasses.replace(item, id=item_id, label=label)


def is_utf8(text: str) -> bool:
    """Whether a str can be written as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_text(text: str) -> str:
    """``text`` as valid Unicode: the bytes of a file name that are not UTF-8 (Python's surrogate
    escapes) become ``\\xNN``, other lone surrogates ``\\uXXXX``.

    Examples
    --------
    >>> import os
    >>> utf8_text(os.fsdecode(b"caf\\xe9.png")), utf8_text("a\\ud800b"), utf8_text("café")
    ('caf\\\\xe9.png', 'a\\\\ud800b', 'café')
    """
    if is_utf8(text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def clean_label(value) -> str | None:
    """A label as featx keeps it: a str, or None when it is missing (None, NaN, ``pandas.NA``, an empty
    or blank string). Integral floats lose their ``.0`` (Parquet int columns with gaps). A list (or a
    str holding a JSON list) is a label set, kept as a canonical JSON list (:mod:`featx.sources.targets`).

    Examples
    --------
    >>> [clean_label(v) for v in ("cat", 3, 3.0, float("nan"), None, "", "  ", "None")]
    ['cat', '3', '3', None, None, None, None, 'None']
    >>> clean_label(["dog", "night"]), clean_label('["night","dog"]')
    ('["dog", "night"]', '["dog", "night"]')
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        return list_cell(value)
    if isinstance(value, str) and (kept := list_cell(value)) is not None:
        return kept
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def is_missing(value) -> bool:
    """None, NaN or ``pandas.NA`` (a value that refuses to be compared)."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, np.ndarray)):  # a label set (a Parquet list cell is an array)
        return False
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return True  # pandas.NA refuses to be compared


def labelled_mask(labels) -> np.ndarray:
    """bool ``(n,)``: which labels are present (see :func:`clean_label`).

    Examples
    --------
    >>> labelled_mask(np.array(["a", None, "b", ""], dtype=object)).tolist()
    [True, False, True, False]
    """
    return np.fromiter((clean_label(v) is not None for v in labels), bool, len(labels))


def file_stamp(path: str | os.PathLike) -> str | None:
    """Cheap change detector of a file: ``"{size}:{mtime_ns}"``, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def text_id(text) -> str:
    """First 16 hex digits of ``sha1(text)`` (``str(text)`` for a non-str, ``""`` for None)."""
    content = "" if text is None else text if isinstance(text, str) else str(text)
    return hashlib.sha1(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def unique_ids(ids: Sequence[str]) -> list[str]:
    """Make ids unique: each repeat gets ``~2``, ``~3``... in order of appearance.

    A suffix that would clash with another id is skipped (``["a", "a", "a~2"]`` ->
    ``["a", "a~3", "a~2"]``).

    Examples
    --------
    >>> unique_ids(["a", "b", "a", "a"])
    ['a', 'b', 'a~2', 'a~3']
    """
    taken = set(ids)
    if len(taken) == len(ids):
        return list(ids)
    seen: set[str] = set()
    repeats: Counter = Counter()
    result = []
    for raw in ids:
        if raw not in seen:
            seen.add(raw)
            result.append(raw)
            continue
        repeats[raw] += 1
        candidate = f"{raw}~{repeats[raw] + 1}"
        while candidate in taken:
            repeats[raw] += 1
            candidate = f"{raw}~{repeats[raw] + 1}"
        taken.add(candidate)
        result.append(candidate)
    return result
