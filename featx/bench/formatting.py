"""How reports and progress lines write numbers: one formatter per kind of value.

Examples
--------
>>> format_number(0.81234), format_number(None), percent(0.8123)
('0.812', '-', '81.2%')
>>> format_count(12345), format_count(2_500_000), format_count(None)
('12.3k', '2.50M', '-')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..files import featx_home


def format_number(value, digits: int = 3) -> str:
    """``0.8123`` -> ``"0.812"``; None -> ``"-"``."""
    return "-" if value is None else f"{value:.{digits}f}"


def percent(fraction) -> str:
    """``0.8123`` -> ``"81.2%"``."""
    return f"{100 * fraction:.1f}%"


def format_count(value) -> str:
    """A parameter count: exact below 10k, then ``k`` and ``M``."""
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e4 else str(value)


def mean_std(mean, std, n_seeds: int, digits: int = 3) -> str:
    """``0.812 ± 0.010`` over several seeds, ``0.812`` for one, ``-`` without a value."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if n_seeds < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def percent_mean_std(mean, std, n_seeds: int) -> str:
    """``85.0% ± 1.2%`` (mean ± std over seeds), or ``85.0%`` for one seed."""
    if n_seeds > 1 and std is not None:
        return f"{percent(mean)} ± {percent(std)}"
    return percent(mean)


def span(sizes: Sequence) -> str:
    """``["1", "5"]`` -> ``"1, 5"``."""
    return ", ".join(str(s) for s in sizes)


def display_path(path) -> str:
    """How a report names a file: under ``$FEATX_HOME`` as ``$FEATX_HOME/...``, under the working folder (the
    repository) relative to it, else by its name alone: never an absolute path of the machine it ran on."""
    path = Path(os.path.abspath(path))
    for root, label in ((featx_home(), "$FEATX_HOME/"), (Path.cwd(), "")):
        try:
            return label + path.relative_to(Path(os.path.abspath(root))).as_posix()
        except ValueError:
            continue
    return path.name
