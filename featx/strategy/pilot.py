"""The pilot: the benchmark's own rows (:mod:`featx.bench`) on nested subsets of the user's data, size by
size, until the budget is spent.

Phase 1, the frozen probes and the simple baselines: each size is one :func:`featx.bench.run_benchmark`
call (``write=False``) on the same splits, seeds and feature cache, so a second pilot reuses the cached
features. Before a size starts, its cost is projected from the last size's measured cost (scaled by the
number of training items); a size whose projection would end past the phase's share of the budget
(:data:`FROZEN_SHARE` when fine-tuning pilots follow, else all of it; :data:`RESERVE` of the budget is kept
for the curve fits and the reports) is not started. When all of imbalanced training data is advised on,
the subsets keep its class proportions (``BenchConfig.proportional``: a size is the largest class's items),
so the curves measure the training data the user has, not a balanced one.

Phase 2, the fine-tuning pilots (:data:`FINETUNE_MODES`; SetFit for texts): one mode at a time, at the
largest size phase 1 measured, first seed 0 for every mode, then further seeds while the budget lasts. Each
is the bench's protocol (:mod:`featx.bench.finetuned`): the epochs chosen on a validation split carved from
the training subset (at most :data:`FINETUNE_EPOCHS`, one learning rate per mode, :data:`FINETUNE_LRS`),
the steps cut at a stated cap. A mode whose projected cost (its own last measured cost, or the last mode's
scaled by :data:`RELATIVE_COST`) would end past the budget is not started.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ParameterError
from ..heads.evaluate import choose_metric

#: Per-class sizes the pilot measures, in order (up to the data's size or the cap).
LADDER = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: The share of the budget kept for what follows the measurements (the curves' bootstrap fits, the reports).
RESERVE = 0.05
#: The share of the measuring time the frozen ladder may spend when fine-tuning pilots follow it.
FROZEN_SHARE = 0.5
#: The fine-tuning pilots, in the order they run (cheapest first); texts add SetFit.
FINETUNE_MODES = ("head", "partial", "full", "lp-ft")
#: One learning rate per mode (the pilot chooses the epochs on its validation split, not the rate): the
#: rates the committed benchmarks chose most often (results/fashion-mnist.md, fine-foods.md).
FINETUNE_LRS = {"head": (1e-2,), "partial": (3e-4,), "full": (3e-4,), "lp-ft": (1e-4,)}
#: Most epochs of a fine-tuning pilot (the validation split chooses how many), its items per class for that
#: choice, and the default cap of steps per row.
FINETUNE_EPOCHS, FINETUNE_SELECT_PER_CLASS, FINETUNE_STEPS = 5.0, 20, 40
#: A mode's cost relative to full fine-tuning at the same size and steps (committed benchmarks, 100/class):
#: how the pilot projects a mode it has not run from one it has.
RELATIVE_COST = {"head": 0.1, "partial": 0.7, "full": 1.0, "lp-ft": 1.2, "setfit": 4.0}


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
    finetune: dict = field(default_factory=dict)  # size, modes run / skipped, seeds, steps cap, rates


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


def finetune_modes(finetune, modality: str, model=None) -> tuple[str, ...]:
    """The fine-tuning pilots to run: ``"auto"`` is :data:`FINETUNE_MODES` (and SetFit for texts) when torch is
    installed and the model is not an ONNX file (nothing to fine-tune), else none; ``None`` or ``()`` none;
    a list is checked against the bench's modes.

    Examples
    --------
    >>> finetune_modes(None, "image"), finetune_modes(["full", "head"], "image")
    ((), ('head', 'full'))
    >>> finetune_modes("auto", "image", "my-model.onnx")
    ()
    """
    from ..bench.config import BENCH_MODES

    if finetune is None:
        return ()
    if isinstance(finetune, str) and finetune == "auto":
        if isinstance(model, (str, Path)) and (str(model).endswith(".onnx") or Path(model).is_file()):
            return ()
        if importlib.util.find_spec("torch") is None:
            return ()
        return FINETUNE_MODES + (("setfit",) if modality == "text" else ())
    modes = (finetune,) if isinstance(finetune, str) else tuple(finetune)
    unknown = [m for m in modes if m not in BENCH_MODES or m == "scratch"]
    if unknown:
        raise ParameterError(f"unknown fine-tuning pilots {unknown}; known: {[*FINETUNE_MODES, 'setfit']} "
                             "(or 'auto', or none)")
    return tuple(m for m in (*FINETUNE_MODES, "setfit") if m in modes)


def run_pilot(data: str, *, model=None, budget_s: float = 600.0, test: str | None = None,
              per_class: int | None = None, seeds: int = 3, heads: Sequence[str] = ("logreg", "svm", "knn"),
              finetune="auto", finetune_steps: int = FINETUNE_STEPS,
              test_size: int | None = None, layers: Sequence[str] | None = None, cache: str | None = None,
              threads: int = 2, say: Callable[[str], None] | None = None) -> Pilot:
    """Measure frozen probes (every head, every exported layer) and the simple baselines on nested subsets,
    then the fine-tuning pilots at the largest size measured, within ``budget_s``.

    Parameters are those of :func:`featx.strategy.advise`.
    """
    from ..bench import load_splits, preset, run_benchmark
    from ..bench.splits import class_counts, class_shares, subset_size

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
    modes = finetune_modes(finetune, splits.train.modality, model)
    measuring = budget_s * (1 - RESERVE)  # the rest: the curves' bootstrap fits and the reports
    frozen_budget = measuring * (FROZEN_SHARE if modes else 1.0)
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
    # imbalanced training data, all of it advised on: every subset keeps its class proportions, so the curves
    # measure the data the user will train on (balanced subsets would predict a balanced training set)
    shares = None  # per class
    if not per_class and choose_metric(counts)[0] != "accuracy":
        config = dataclasses.replace(config, proportional=True)
        shares = class_shares(counts)
    say(f"advise: {data}, {len(splits.train)} training items ({n_full} advised on), test {len(splits.test)} items; "
        f"sizes {sizes} x {seeds} seeds; budget {budget_s:.0f} s")
    rows, done, skipped, last, costs = [], [], [], None, []
    extract_s = per_item_s = 0.0  # the last size's extraction: its seconds, and per item
    backbone = ""
    for size in sizes:
        elapsed = time.perf_counter() - t0
        n_size = n_full if size == "all" or size == sizes[-1] else subset_size(train_counts, size, shares)
        if last is not None:
            seconds, n_last = last
            # the rows' cost scales with the items; the extraction is paid once per new item (the test
            # set's, the largest one-off, was paid by the first size)
            projected = (max(seconds - extract_s, 0.0) * max(1.0, n_size / max(n_last, 1)) ** cost_exponent(costs)
                         + per_item_s * seeds * max(n_size - n_last, 0))
            if elapsed + projected > frozen_budget:
                skipped = [str(s) for s in sizes[sizes.index(size):]]
                say(f"advise: size {size} would take ~{projected:.0f} s, past the frozen probes' "
                    f"{frozen_budget:.0f} s of the budget ({elapsed:.0f} s spent): stopping here")
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
    finetuned = {}
    if modes and done:
        size = sizes[len(done) - 1]
        ft_rows, finetuned = run_finetune_pilots(config, size, modes, seeds, finetune_steps,
                                                 deadline=t0 + measuring, say=say)
        rows.extend(ft_rows)
    return Pilot(rows=rows, sizes=done, skipped=skipped, class_counts=train_counts, n_full=n_full,
                 test_items=len(splits.test), budget_s=float(budget_s), seconds=time.perf_counter() - t0,
                 metric=metric, metric_reason=reason, backbone=backbone, modality=splits.train.modality,
                 finetune=finetuned)


def run_finetune_pilots(config, size, modes: Sequence[str], seeds: int, steps: int, *, deadline: float,
                        say: Callable[[str], None]) -> tuple[list, dict]:
    """Phase 2: each mode at ``size``, seed 0 first for every mode, then seeds 1, 2, ... while the budget
    lasts; returns the rows and what ran (for the report)."""
    from ..bench import run_benchmark

    per_class = size if size != "all" else FINETUNE_SELECT_PER_CLASS
    base = dataclasses.replace(
        config, sizes=(size,), heads=(), baselines=False, finetune_sizes=None, epochs=FINETUNE_EPOCHS,
        lrs=dict(FINETUNE_LRS), min_steps=min(config.min_steps, steps),
        max_steps=steps, lr_select_per_class=max(2, min(per_class, FINETUNE_SELECT_PER_CLASS)),
        setfit_max_steps=steps)
    # a mode measured once is projected from its own cost; one not yet run from `unit`, the seconds full
    # fine-tuning would take by the last mode measured (head-only rows are mostly the backbone's set-up, so
    # they do not set it)
    rows, ran, skipped, unit, own = [], {}, [], None, {}
    for seed in range(seeds):
        for mode in modes:
            if mode in skipped:
                continue
            left = deadline - time.perf_counter()
            projected = own.get(mode, None if unit is None else unit * RELATIVE_COST[mode])
            if left <= 0 or (projected is not None and projected > left):
                skipped.append(mode)
                say(f"advise: fine-tuning pilot {mode} (seed {seed}) would take ~{projected or 0:.0f} s, "
                    f"{max(left, 0):.0f} s of the budget left: not started")
                continue
            t = time.perf_counter()
            result = run_benchmark(dataclasses.replace(base, seeds=(seed,), finetune_modes=(mode,)), write=False,
                                   progress=say)
            seconds = time.perf_counter() - t
            own[mode] = seconds
            if mode != "head":
                unit = seconds / RELATIVE_COST[mode]
            new = [r for r in result.rows if r.family == "finetune"]
            rows.extend(new)
            for failure in result.errors:
                say(f"advise: fine-tuning pilot {mode} failed: {failure.error}")
            if new:
                ran.setdefault(mode, []).append(seed)
            say(f"advise: fine-tuning pilot {mode} at {size}/class, seed {seed}: {seconds:.1f} s")
        if len(skipped) == len(modes):
            break
    return rows, {"size": str(size), "modes": ran, "skipped": [m for m in modes if m not in ran],
                  "steps_cap": steps, "max_epochs": FINETUNE_EPOCHS, "lrs": {m: FINETUNE_LRS.get(m) for m in ran},
                  "select_per_class": base.lr_select_per_class}
