"""The training split, the fixed test set, and the nested training subsets of each seed.

For each seed each class is shuffled once; the subset of ``n`` per class takes the first
``n`` of each class, so larger subsets contain smaller ones (with ``proportional``, the largest class
takes ``n`` and each other class its share: :func:`class_take`). The test set is one stratified
subset of the test split (seed :data:`TEST_SEED`) for the whole table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ParameterError
from ..sources import make_dataset, open_dataset, subset
from .config import TEST_SEED, BenchConfig, train_source


@dataclass
class Splits:
    train: Any  # Dataset: the whole training split
    test: Any  # Dataset: the fixed test subset
    test_note: str
    orders: dict  # seed -> list (per class) of positions in train, shuffled
    classes: tuple[str, ...]
    shares: dict | None = None  # proportional subsets: class -> its size over the largest class's


@dataclass
class Subset:
    """One training subset of a table: ``size`` per class (its label: ``"5"``, ``"all"``), one seed."""

    size: str
    seed: int
    positions: list[int]  # sorted positions in the training split
    items: list  # the training split's items at those positions
    labels: np.ndarray  # their labels (object array)

    @property
    def n_train(self) -> int:
        return len(self.items)

    @property
    def refs(self) -> list:
        """What to decode: the items' paths, arrays or texts."""
        return [item.ref for item in self.items]


def load_splits(config: BenchConfig) -> Splits:
    """The training split, the fixed test subset and each seed's per-class order."""
    train = open_dataset(train_source(config.dataset))
    if train.classes is None:
        raise ParameterError(f"the benchmark needs a labelled dataset; {train.name} has no labels")
    check_single_label(train, "featx bench")
    if config.test:
        test = open_dataset(config.test)
        note = f"{test.name}"
    elif config.dataset.startswith("builtin:") and config.dataset.count(":") == 1:
        test = open_dataset(f"{config.dataset}:test")
        note = f"{test.name}"
    else:  # carve a stratified holdout
        n_test = max(len(train.classes), int(round(config.test_fraction * len(train))))
        test = subset(train, n_test, seed=TEST_SEED)
        held = set(test.ids())
        train = make_dataset(train.name, train.modality, [i for i in train.items if i.id not in held])
        note = f"a stratified {config.test_fraction:.0%} holdout of {train.name} (seed {TEST_SEED})"
    full_test = len(test)
    if config.test_size is not None and len(test) > config.test_size:
        test = subset(test, config.test_size, seed=TEST_SEED)
        note += f", stratified subset of {len(test)} of its {full_test} items (seed {TEST_SEED})"
    else:
        note += f", all {len(test)} items"
    unknown = sorted(set(test.classes or ()) - set(train.classes))
    if unknown:
        raise ParameterError(f"test classes {unknown[:5]} never occur in the training split {train.name}")
    labels = [item.label for item in train.items]
    by_class = {c: [] for c in train.classes}
    for pos, label in enumerate(labels):
        by_class[label].append(pos)
    orders = {}
    for seed in sorted(set(config.seeds) | set(config.finetune_seeds or ())):
        rng = np.random.default_rng(seed)
        orders[seed] = [list(np.asarray(by_class[c])[rng.permutation(len(by_class[c]))]) for c in train.classes]
    shares = class_shares({c: len(by_class[c]) for c in train.classes}) if config.proportional else None
    return Splits(train, test, note, orders, tuple(train.classes), shares)


def class_shares(counts: dict) -> dict:
    """Each class's size over the largest class's: what a proportional subset takes of it.

    Examples
    --------
    >>> class_shares({"great": 600, "other": 300})
    {'great': 1.0, 'other': 0.5}
    """
    largest = max(counts.values())
    return {c: n / largest for c, n in counts.items()}


def subset_size(counts: dict, size, shares: dict | None = None) -> int:
    """Items in the subset of ``size`` of classes of ``counts`` items (per class, or with ``shares``).

    Examples
    --------
    >>> subset_size({"great": 600, "other": 300}, 10), subset_size({"great": 600, "other": 300}, 10, {"other": 0.5})
    (20, 15)
    """
    shares = shares or {}
    return sum(class_take(size, n, shares.get(c)) for c, n in counts.items())


def class_take(size, available: int, share: float | None = None) -> int:
    """How many items a class gives a subset of ``size``: ``size`` (per class), or with a ``share`` (its
    size over the largest class's) ``ceil(size * share)``, at least 1; never more than it has.

    Examples
    --------
    >>> class_take(10, 4), class_take(10, 600, share=0.5), class_take(2, 600, share=0.1)
    (4, 5, 1)
    """
    if size == "all":
        return available
    want = int(size) if share is None else max(1, math.ceil(int(size) * share))
    return min(want, available)


def train_positions(splits: Splits, seed: int, size) -> list[int]:
    """Positions (sorted) of the nested training subset: the first ``size`` of each class (proportional:
    the first :func:`class_take` of each)."""
    if size == "all":
        return list(range(len(splits.train)))
    shares = splits.shares or {}
    return sorted(int(p) for c, order in zip(splits.classes, splits.orders[seed])
                  for p in order[:class_take(size, len(order), shares.get(c))])


def training_subset(splits: Splits, seed: int, size) -> Subset:
    """The nested training subset of ``size`` per class for ``seed``."""
    positions = train_positions(splits, seed, size)
    items = [splits.train.items[p] for p in positions]
    labels = np.array([i.label for i in items], dtype=object)
    return Subset(size_label(size), int(seed), positions, items, labels)


def size_key(size) -> float:
    """Sort key of a size: numbers in order, ``"all"`` last."""
    return math.inf if size == "all" else float(size)


def resolve_sizes(splits: Splits, sizes: Sequence) -> list:
    """Sizes in increasing order, dropping any that gives the same subset as a smaller one
    (every class exhausted)."""
    kept, seen = [], set()
    order = splits.orders[min(splits.orders)]
    for size in sorted(set(sizes), key=size_key):
        n = len(splits.train) if size == "all" else subset_size(
            {c: len(o) for c, o in zip(splits.classes, order)}, size, splits.shares)
        if n not in seen:
            seen.add(n)
            kept.append(size)
    return kept


def size_label(size) -> str:
    """How a report names a size: ``5`` -> ``"5"``, ``"all"`` -> ``"all"``.

    Examples
    --------
    >>> size_label(5), size_label("all")
    ('5', 'all')
    """
    return "all" if size == "all" else str(size)


def check_single_label(dataset, taker: str) -> None:
    """A :class:`~featx.errors.ParameterError` when ``dataset``'s labels are label sets or numbers:
    the benchmark's protocol (k items per class, accuracy) is defined for one label per item only.

    Examples
    --------
    >>> from featx.sources import Item, make_dataset
    >>> check_single_label(make_dataset("csv:t.csv", "text", [Item("a", "x", ["p", "q"])]), "featx bench")
    Traceback (most recent call last):
    ...
    featx.errors.ParameterError: featx bench takes single-label data only (k items per class, accuracy); csv:t.csv holds multi-label targets: train and evaluate its heads with `featx train` / `featx evaluate`, which select multi-label and numeric heads by CV
    """
    from ..sources.targets import target_kind

    kind = target_kind(dataset.classes or ())
    if kind != "single":
        raise ParameterError(f"{taker} takes single-label data only (k items per class, accuracy); {dataset.name} "
                             f"holds {'multi-label' if kind == 'multi' else 'numeric'} targets: train and evaluate "
                             "its heads with `featx train` / `featx evaluate`, which select multi-label and numeric "
                             "heads by CV")


def class_counts(dataset) -> dict[str, int]:
    """``{class: number of items}`` of a labelled dataset, classes sorted."""
    labels, counts = np.unique(dataset.labels().astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(labels, counts)}
