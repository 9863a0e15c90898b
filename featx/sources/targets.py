"""Targets beyond one label per item: label sets (multi-label) and numbers (regression), the same
rules for every source.

A label cell is read once, by :func:`~featx.sources.items.clean_label`, into the str featx keeps:

- a list (a Parquet/Arrow list column, a JSON list in a JSONL row or a WebDataset ``.json``
  member, a Hugging Face ``Sequence(ClassLabel)`` mapped to its names) becomes the *label set*
  written as a canonical JSON list: the distinct labels as str, sorted (``'["dog", "night"]'``); an
  empty list is an item with no label of the set (still labelled: it says "none of them");
- a str cell holding a JSON list (``'["a","b"]'``, as a CSV holds one) is read the same way; a
  cell that starts with ``[`` but is not a flat JSON list of labels is an
  error naming the item and the column (never a class named ``"[a, b"``);
- anything else is one label, as before.

Since the kind is written in the labels themselves, it is under the listing's checksum and old
listings read unchanged. :func:`target_kind` tells the kind of a dataset's labels: ``"multi"``
when every label is a set, ``"numeric"`` when asked for (or when every label is a number and one
is not integral), else ``"single"``. A delimiter-separated cell (``"dog|night"``) becomes a set
when a delimiter is given (:func:`label_sets`).

Examples
--------
>>> canonical_set(["night", "dog", "dog", 3])
'["3", "dog", "night"]'
>>> list_cell('["b", "a"]'), list_cell("cat"), list_cell("[]")
('["a", "b"]', None, '[]')
>>> target_kind(['["a"]', '["a", "b"]', None]), target_kind(["1.5", "2"]), target_kind(["1", "2"])
('multi', 'numeric', 'single')
>>> label_sets(["a|b", "b", None], delimiter="|")
[('a', 'b'), ('b',), None]
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from ..errors import DataSourceError

TARGET_KINDS = ("auto", "single", "multi", "numeric")


class IllFormedLabel(ValueError):
    """A label cell that looks like a list and is not a flat list of labels."""


def canonical_set(values) -> str:
    """A label set as featx keeps it: the distinct labels as str, sorted, as a JSON list.

    Raises :class:`IllFormedLabel` when an element is itself a list, a mapping or missing.
    """
    labels = set()
    for value in values:
        if value is None or isinstance(value, (list, tuple, dict, set)) or (
                isinstance(value, float) and math.isnan(value)):
            raise IllFormedLabel(f"a label set holds {value!r}, not a label")
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        text = str(value).strip()
        if not text:
            raise IllFormedLabel("a label set holds an empty label")
        labels.add(text)
    return json.dumps(sorted(labels), ensure_ascii=False)


def list_cell(value) -> str | None:
    """The canonical label set a cell holds (a list, or a str holding a JSON list); None when it
    holds one label. Raises :class:`IllFormedLabel` for a cell that looks like a list and is not one."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return canonical_set(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError as e:
                raise IllFormedLabel(f"{value!r} starts with '[' but is not a JSON list ({e}); write labels as "
                                     '["a", "b"]') from None
            if not isinstance(parsed, list):
                raise IllFormedLabel(f"{value!r} is not a JSON list")
            return canonical_set(parsed)
    return None


def is_set(label) -> bool:
    """Whether a kept label is a label set (a canonical JSON list)."""
    return isinstance(label, str) and label.startswith("[")


def read_set(label: str) -> tuple[str, ...]:
    """The labels of a kept label set."""
    return tuple(json.loads(label))


def _number(label) -> float | None:
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def target_kind(labels, target: str = "auto") -> str:
    """``"single"``, ``"multi"`` or ``"numeric"``: what the labels (None: unlabelled) are.

    ``target`` forces a kind; a forced kind the labels cannot be is a :class:`~featx.errors.DataSourceError`.
    """
    if target not in TARGET_KINDS:
        raise DataSourceError(f"target={target!r}: expected one of {', '.join(TARGET_KINDS)}")
    present = [v for v in labels if v is not None]
    sets = [is_set(v) for v in present]
    if target == "numeric" or (target == "auto" and present and not any(sets)):
        numbers = [_number(v) for v in present]
        bad = next((v for v, n in zip(present, numbers) if n is None), None)
        if target == "numeric" and bad is not None:
            raise DataSourceError(f"target=numeric but the label {bad!r} is not a finite number")
        if target == "numeric" or (bad is None and any(not n.is_integer() for n in numbers)):
            return "numeric"
    if any(sets) and (target in ("auto", "multi")):
        if not all(sets):
            single = next(v for v, s in zip(present, sets) if not s)
            raise DataSourceError(f"the labels mix label sets and single labels (e.g. {single!r}); write every "
                                  'label as a list (["a"]), or give a delimiter for delimiter-separated labels')
        return "multi"
    return "multi" if target == "multi" else "single"


def label_sets(labels, delimiter: str | None = None) -> list[tuple[str, ...] | None]:
    """Each label as a tuple of labels (None: unlabelled): a set as it is, a single label as a
    one-label set, or split at ``delimiter``."""
    out = []
    for v in labels:
        if v is None:
            out.append(None)
        elif is_set(v):
            out.append(read_set(v))
        elif delimiter:
            out.append(read_set(canonical_set(p for p in str(v).split(delimiter) if p.strip())))
        else:
            out.append((str(v),))
    return out


def binarize(sets: Sequence[tuple[str, ...]], classes: Sequence[str] | None = None):
    """``(Y, classes)``: the label indicator matrix (n, n_labels) of uint8 and the sorted labels.

    Examples
    --------
    >>> Y, classes = binarize([("a", "b"), ("b",), ()])
    >>> Y.tolist(), classes
    ([[1, 1], [0, 1], [0, 0]], ('a', 'b'))
    """
    from sklearn.preprocessing import MultiLabelBinarizer

    mlb = MultiLabelBinarizer(classes=None if classes is None else list(classes))
    Y = mlb.fit_transform(list(sets)).astype(np.uint8)
    return Y, tuple(str(c) for c in mlb.classes_)


def numeric_targets(labels) -> np.ndarray:
    """float64 targets of present labels; a label that is not a finite number is an error naming it."""
    values = []
    for row, v in enumerate(labels):
        n = _number(v)
        if n is None:
            raise DataSourceError(f"row {row}: the label {v!r} is not a finite number; numeric targets need one "
                                  "number per item")
        values.append(n)
    return np.asarray(values, dtype=np.float64)


def describe_target(labels, target: str = "auto") -> str:
    """One line for ``featx info``: the kind and its size.

    Examples
    --------
    >>> describe_target(['["a", "b"]', '["b"]', None])
    'multi-label, 2 labels'
    >>> describe_target(["1.5", "3"])
    'numeric, 1.5..3'
    """
    present = [v for v in labels if v is not None]
    kind = target_kind(present, target)
    if kind == "multi":
        return f"multi-label, {len({x for s in label_sets(present) for x in s})} labels"
    if kind == "numeric":
        values = numeric_targets(present)
        return f"numeric, {values.min():g}..{values.max():g}"
    return f"single-label, {len(set(present))} classes"
