"""Deterministic, label-stratified subsets of a dataset."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataSourceError
from .items import Dataset, make_dataset


def subset(dataset: Dataset, n: int | None = None, *, per_class: int | None = None, seed: int = 0) -> Dataset:
    """A deterministic subset, stratified by label; chosen items keep their original order.

    Parameters
    ----------
    dataset : Dataset
    n : int, optional
        Number of items to keep (all when ``n >= len(dataset)``). When labelled, each class
        gets its share of ``n`` in proportion to its size (largest remainders round up).
    per_class : int, optional
        At most this many items of each class (labelled datasets only); applied before ``n``.
    seed : int
        Same seed, same dataset -> same subset.

    Returns
    -------
    Dataset
        Same name and modality; ``classes`` recomputed from the chosen items.

    Raises
    ------
    DataSourceError
        ``n`` or ``per_class`` is not a positive int, or ``per_class`` on an unlabelled dataset.

    Examples
    --------
    >>> from featx.sources import open_dataset
    >>> ds = open_dataset("builtin:digits")
    >>> few = subset(ds, per_class=2, seed=1)
    >>> len(few), few.classes == ds.classes
    (20, True)
    """
    check_count("n", n)
    check_count("per_class", per_class)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataSourceError(f"The 'seed' parameter of subset must be an int. Got {seed!r} instead.")
    if per_class is not None and dataset.classes is None:
        raise DataSourceError(f"per_class={per_class} needs a labelled dataset; {dataset.name} has no labels")
    rng = np.random.default_rng(seed)
    groups = group_positions([item.label for item in dataset.items])
    if per_class is not None:
        groups = [choose(rng, positions, min(per_class, len(positions))) for positions in groups]
    if n is not None:
        quotas = proportional_quotas([len(positions) for positions in groups], n)
        groups = [choose(rng, positions, quota) for positions, quota in zip(groups, quotas)]
    chosen = sorted(int(p) for positions in groups for p in positions)
    if len(chosen) == len(dataset):
        return dataset
    return make_dataset(dataset.name, dataset.modality, [dataset.items[p] for p in chosen])


def check_count(parameter: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataSourceError(
            f"The {parameter!r} parameter of subset must be an int in [1, inf). Got {value!r} instead."
        )


def group_positions(labels: Sequence[str | None]) -> list[np.ndarray]:
    """Positions of each label, labels in sorted order (None last); one group when all are None."""
    by_label: dict[str | None, list[int]] = {}
    for position, label in enumerate(labels):
        by_label.setdefault(label, []).append(position)
    order = sorted(by_label, key=lambda label: (label is None, label or ""))
    return [np.array(by_label[label], dtype=np.int64) for label in order]


def proportional_quotas(sizes: Sequence[int], n: int) -> list[int]:
    """Split ``n`` (capped at ``sum(sizes)``) in proportion to ``sizes``, by largest remainder.

    Examples
    --------
    >>> proportional_quotas([50, 30, 20], 7)
    [4, 2, 1]
    """
    total = sum(sizes)
    n = min(n, total)
    quotas = [n * size // total for size in sizes]
    remainders = [n * size % total for size in sizes]
    by_remainder = sorted(range(len(sizes)), key=lambda k: (-remainders[k], k))
    for k in by_remainder[: n - sum(quotas)]:
        quotas[k] += 1
    return quotas


def choose(rng: np.random.Generator, positions: np.ndarray, count: int) -> np.ndarray:
    if count >= len(positions):
        return positions
    return np.sort(rng.choice(positions, size=count, replace=False))
