"""Parameter checks, with one wording per kind of check (scikit-learn's).

Every check returns the value (normalised: numpy ints become ``int``...) or raises
:class:`~featx.errors.ParameterError` (a ``ValueError``) that names the parameter, its owner,
what was expected and what was given::

    The 'batch_size' parameter of extract must be an int in [1, inf). Got 0 instead.

The kinds and their wordings:

==================  ==========================================================
:func:`check_int`     ``an int in [1, inf)``, ``an int in [0, 10]``, ``an int``
:func:`check_float`   ``a float in (0, inf)``, ``a float in [-1, 1]``
:func:`check_fraction` ``a float in (0, 1)``
:func:`check_choice`  ``one of ('raise', 'skip')``
:func:`check_bool`    ``a bool``
:func:`check_str`     ``a non-empty str``
:func:`check_path`    ``a path (str or os.PathLike)``
==================  ==========================================================

``optional=True`` accepts None and words the expectation ``None or ...``. ``bool`` is never
an int here (``batch_size=True`` is refused). Anything else is worded by :func:`invalid`.

Examples
--------
>>> from featx.validation import check_choice, check_int
>>> check_int(16, "batch_size", "extract", low=1)
16
>>> check_int(True, "batch_size", "extract", low=1)
Traceback (most recent call last):
...
featx.errors.ParameterError: The 'batch_size' parameter of extract must be an int in [1, inf). Got True instead.
>>> check_choice("skip", "on_error", "extract", ("raise", "skip"))
'skip'
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Callable

import numpy as np

from .errors import ParameterError

__all__ = ["check_bool", "check_choice", "check_float", "check_fraction", "check_int", "check_path", "check_str",
           "invalid"]


def invalid(name: str, owner: str, expected: str, value) -> ParameterError:
    """The error for a bad parameter: ``The 'NAME' parameter of OWNER must be EXPECTED. Got VALUE instead.``

    Examples
    --------
    >>> print(invalid("cache", "EmbeddingTransformer", "None or a directory path", 7))
    The 'cache' parameter of EmbeddingTransformer must be None or a directory path. Got 7 instead.
    """
    return ParameterError(f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead.")


def _check(value, name: str, owner: str, expected: str, optional: bool, ok: Callable[[object], bool]):
    """``value`` when ``ok(value)``, or None when it is None and optional; else the error."""
    if value is None and optional:
        return None
    if not ok(value):
        raise invalid(name, owner, f"None or {expected}" if optional else expected, value)
    return value


def _bound(value) -> str:
    return "inf" if value == math.inf else "-inf" if value == -math.inf else f"{value:g}"


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    lo = -math.inf if low is None else low
    hi = math.inf if high is None else high
    left = "(" if low_open or lo == -math.inf else "["
    right = ")" if high_open or hi == math.inf else "]"
    return f"{left}{_bound(lo)}, {_bound(hi)}{right}"


def check_int(value, name: str, owner: str, *, low: int | None = None, high: int | None = None,
              optional: bool = False) -> int | None:
    """An int (numpy ints too, never a bool) in ``[low, high]``.

    Examples
    --------
    >>> check_int(np.int64(3), "cv", "train_heads", low=2)
    3
    >>> check_int(None, "threads", "Session", low=1, optional=True) is None
    True
    """
    def ok(v) -> bool:
        is_int = isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))
        return is_int and (low is None or v >= low) and (high is None or v <= high)

    text = "an int" if low is None and high is None else f"an int in {_interval(low, high, False, False)}"
    value = _check(value, name, owner, text, optional, ok)
    return None if value is None else int(value)


def check_float(value, name: str, owner: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, optional: bool = False) -> float | None:
    """A finite real number (ints accepted, never a bool) in the interval given.

    Examples
    --------
    >>> check_float(1e-3, "lr", "finetune", low=0, low_open=True)
    0.001
    >>> check_float(0, "lr", "finetune", low=0, low_open=True)
    Traceback (most recent call last):
    ...
    featx.errors.ParameterError: The 'lr' parameter of finetune must be a float in (0, inf). Got 0 instead.
    """
    def ok(v) -> bool:
        if not isinstance(v, (numbers.Real, np.floating, np.integer)) or isinstance(v, (bool, np.bool_)):
            return False
        x = float(v)
        return math.isfinite(x) and (low is None or x > low or (x == low and not low_open)) \
            and (high is None or x < high or (x == high and not high_open))

    text = "a float" if low is None and high is None else f"a float in {_interval(low, high, low_open, high_open)}"
    value = _check(value, name, owner, text, optional, ok)
    return None if value is None else float(value)


def check_fraction(value, name: str, owner: str, *, optional: bool = False) -> float | None:
    """A float strictly between 0 and 1 (a share of a dataset, a test size...).

    Examples
    --------
    >>> check_fraction(0.25, "test_size", "pipeline p.toml")
    0.25
    """
    return check_float(value, name, owner, low=0, high=1, low_open=True, high_open=True, optional=optional)


def check_choice(value, name: str, owner: str, choices, *, optional: bool = False):
    """One of ``choices`` (compared with ``==``; a bool matches only a bool, so ``1`` is not ``True``).

    Examples
    --------
    >>> check_choice("nan", "on_error", "EmbeddingTransformer", ("raise", "nan"))
    'nan'
    """
    choices = tuple(choices)
    return _check(value, name, owner, f"one of {choices!r}", optional, lambda v: any(_same(v, c) for c in choices))


def _same(value, choice) -> bool:
    if isinstance(value, (bool, np.bool_)) != isinstance(choice, bool):
        return False
    try:
        return bool(value == choice)
    except (TypeError, ValueError):  # e.g. an array compared to a str
        return False


def check_bool(value, name: str, owner: str, *, optional: bool = False) -> bool | None:
    """``True`` or ``False`` (numpy bools too; not ``1``, not ``"yes"``).

    Examples
    --------
    >>> check_bool(np.bool_(True), "jpeg_draft", "extract")
    True
    """
    value = _check(value, name, owner, "a bool", optional, lambda v: isinstance(v, (bool, np.bool_)))
    return None if value is None else bool(value)


def check_str(value, name: str, owner: str, *, optional: bool = False) -> str | None:
    """A str that is not empty or blank.

    Examples
    --------
    >>> check_str("efficientnet-lite0", "model", "load_features")
    'efficientnet-lite0'
    """
    return _check(value, name, owner, "a non-empty str", optional, _nonblank)


def check_path(value, name: str, owner: str, *, optional: bool = False):
    """A filesystem path: a non-empty str or an ``os.PathLike`` (returned as given).

    Examples
    --------
    >>> check_path("features/", "cache", "load_features")
    'features/'
    """
    return _check(value, name, owner, "a path (str or os.PathLike)", optional,
                  lambda v: isinstance(v, os.PathLike) or _nonblank(v))


def _nonblank(value) -> bool:
    return isinstance(value, str) and bool(value.strip())
