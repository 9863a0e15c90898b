"""The pilot: the benchmark's own rows (:mod:`featx.bench`) on nested subsets of the user's data, size by
size, until the budget is spent.

Each size is one :func:`featx.bench.run_benchmark` call (``write=False``) on the same splits, seeds and
feature cache, so a second pilot reuses the cached features. Before a size starts, its cost is projected
from the last size's measured cost (scaled by the number of training items); a size whose projection would
end past the budget is not started.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import ParameterError
from ..heads.evaluate import choose_metric

#: Per-class sizes the pilot measures, in order (up to the data's size or the cap).
LADDER = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass
class Pilot:
    """What the pilot measured: every row (per strategy, size, seed), the data's facts and the time spent."""

    rows: list  # featx.bench.rows.Row
    sizes: list[str]
    skipped: list[str]  # sizes the budget left out
    class_counts: dict[str, int]
    n_full: int  # training items the advice is about (the whole training data, or the cap x classes)
    test_items: int
    budget_s: float
    seconds: float
    metric: str  # "accuracy" or "balanced_accuracy"
    metric_reason: str
    backbone: str = ""
    modality: str = ""
    notes: list[str] = field(default_factory=list)


def pilot_sizes(largest_class: int, cap: int | None = None) -> list:
    """The ladder of per-class sizes up to ``cap`` (or the largest class, then ``"all"``).

    Examples
    --------
    >>> pilot_sizes(1000, cap=20)
    [2, 5, 10, 20]
    >>> pilot_sizes(30)
    [2, 5, 10, 20, 'all']
    """
    top = min(cap, largest_class) if cap else largest_class
    sizes = [s for s in LADDER if s < top]
    return sizes + [top] if cap else sizes + ["all"]


def cost_exponent(costs: Sequence[tuple[float, int]]) -> float:
    """How a size's cost grows with its training items, ``seconds ~ n**p``, from the last two sizes measured
    (``p`` clipped to [0.5, 1]; 1, linear, until two sizes are measured). The first size also pays one-off
    costs (the test set's extraction, worker start-up), which the lower clip guards against.

    Examples
    --------
    >>> cost_exponent([(10.0, 20)])
    1.0
    >>> round(cost_exponent([(10.0, 20), (20.0, 80)]), 2)
    0.5
    """
    if len(costs) < 2:
        return 1.0
    (t1, n1), (t2, n2) = costs[-2], costs[-1]
    if n2 <= n1 or t1 <= 0 or t2 <= 0:
        return 1.0
    return float(np.clip(np.log(t2 / t1) / np.log(n2 / n1), 0.5, 1.0))


def run_pilot(data: str, *, model: str | None = None, budget_s: float = 600.0, test: str | None = None,
              per_class: int | None = None, seeds: int = 3, heads: Sequence[str] = ("logreg", "svm", "knn"),
              test_size: int | None = None, layers: Sequence[str] | None = None, cache: str | None = None,
              threads: int = 2, say: Callable[[str], None] | None = None) -> Pilot:
    """Measure frozen probes (every head, every exported layer) and the simple baselines on nested subsets.

    Parameters are those of :func:`featx.strategy.advise`.
    """
    from ..bench import load_splits, preset, run_benchmark
    from ..bench.splits import class_counts

    say = say or (lambda message: None)
    if budget_s <= 0:
        raise ParameterError(f"the budget must be positive; got {budget_s} s")
    t0 = time.perf_counter()
    config = preset(data, backbone=model, seeds=tuple(range(seeds)), heads=tuple(heads),
                    finetune_modes=(), test=test, cache=cache, threads=threads,
                    layers=None if layers is None else tuple(layers),
                    **({"test_size": test_size} if test_size else {}))
    splits = load_splits(config)
    counts = class_counts(splits.train)
    if len(counts) < 2:
        raise ParameterError(f"{data}: advice needs two classes or more; found {counts}")
    sizes = pilot_sizes(max(counts.values()), per_class)
    if per_class:
        train_counts = {k: min(v, per_class) for k, v in counts.items()}
    else:
        train_counts = counts
    n_full = sum(train_counts.values())
    test_counts = class_counts(splits.test)
    # the score must fit the data it is measured on: imbalanced training data or an imbalanced test set
    metric, reason = max((choose_metric(train_counts), choose_metric(test_counts)), key=lambda m: m[0] != "accuracy")
    if metric != "accuracy" and reason == choose_metric(test_counts)[1]:
        reason = f"the test set's {reason}"
    say(f"advise: {data}, {len(splits.train)} training items ({n_full} advised on), test {len(splits.test)} items; "
        f"sizes {sizes} x {seeds} seeds; budget {budget_s:.0f} s")
    rows, done, skipped, last, costs = [], [], [], None, []
    backbone = ""
    for size in sizes:
        elapsed = time.perf_counter() - t0
        n_size = n_full if size == "all" or size == sizes[-1] else sum(min(size, c) for c in train_counts.values())
        if last is not None:
            seconds, n_last = last
            # the rows' cost scales with the items; the extraction is paid once per new item (the test
            # set's, the largest one-off, was paid by the first size)
            projected = (max(seconds - extract_s, 0.0) * max(1.0, n_size / max(n_last, 1)) ** cost_exponent(costs)
                         + per_item_s * seeds * max(n_size - n_last, 0))
            if elapsed + projected > budget_s:
                skipped = [str(s) for s in sizes[sizes.index(size):]]
                say(f"advise: size {size} would take ~{projected:.0f} s, past the budget "
                    f"({elapsed:.0f} of {budget_s:.0f} s spent): stopping here")
                break
        t = time.perf_counter()
        result = run_benchmark(dataclasses.replace(config, sizes=(size,)), write=False, progress=say)
        rows.extend(result.rows)
        backbone = result.backbone
        done.append(str(size))
        last = (time.perf_counter() - t, n_size)
        extract_s = result.extraction.seconds if result.extraction else 0.0
        per_item_s = result.extraction.per_item_s if result.extraction else 0.0
        costs.append(last)
        say(f"advise: size {size} done in {last[0]:.1f} s")
    return Pilot(rows=rows, sizes=done, skipped=skipped, class_counts=train_counts, n_full=n_full,
                 test_items=len(splits.test), budget_s=float(budget_s), seconds=time.perf_counter() - t0,
                 metric=metric, metric_reason=reason, backbone=backbone, modality=splits.train.modality)
