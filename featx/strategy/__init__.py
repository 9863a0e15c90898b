"""``featx advise``: which transfer strategy for *your* data, measured on it within a budget.

    pilot.py    the benchmark's rows (featx.bench: frozen heads on every exported layer, simple baselines)
                on nested subsets of the data, size by size, then fine-tuning pilots (head only, partial,
                full, LP-FT; SetFit for texts) at the largest size, until the budget is spent; the metric
                chosen (balanced accuracy when the classes are imbalanced)
    curves.py   a saturating power law per strategy, score(n) = a - b n^-c, with bootstrap intervals
    advice.py   the recommendation and the sentences, from those numbers only (a fine-tuning pilot: the
                best frozen probe's curve plus the gap measured at its size)
    report.py   terminal summary, JSON, Markdown, one plot

The features go through the featx cache (:func:`featx.extract`), so a second run reuses them.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .advice import Advice, Forecast, decide
from .curves import Curve, fit_curve
from ..heads.evaluate import choose_metric
from .pilot import FINETUNE_STEPS, Pilot, run_pilot


def advise(data: str, *, model=None, budget_s: float = 600.0, test: str | None = None,
           per_class: int | None = None, seeds: int = 3, heads: Sequence[str] = ("logreg", "svm", "knn"),
           finetune="auto", finetune_steps: int = FINETUNE_STEPS, test_size: int | None = None,
           layers: Sequence[str] | None = None, cache: str | None = None,
           threads: int = 2, n_boot: int = 200, progress: Callable[[str], None] | None = None) -> Advice:
    """Measure a pilot on ``data`` within ``budget_s`` seconds and advise a transfer strategy.

    Parameters
    ----------
    data : str
        A labelled featx dataset (folder of class folders, CSV/manifest, ``builtin:NAME``).
    model : str or TorchBackbone, optional
        The backbone (registered name, exported ONNX, or a :class:`featx.torchmodels.finetune.TorchBackbone`);
        default efficientnet-lite0 / all-minilm-l6-v2.
    budget_s : float
        Seconds the advice may take: the pilot measures for 95 % of it (the rest is for the curves' fits
        and the reports); a size or fine-tuning pilot whose projected cost would pass it is not started.
    test : str, optional
        A labelled test dataset; default the builtin's test split, else a stratified 25 % holdout.
    per_class : int, optional
        Advise on at most this many items per class (the first of each class's shuffled order).
    seeds : int
        Nested subsets per size (seeds ``0..seeds-1``).
    finetune : "auto", sequence of str or None
        The fine-tuning pilots: ``"auto"`` runs head only, partial, full and LP-FT (and SetFit for texts)
        when torch is installed; a list names them (``("head", "lp-ft")``); ``None`` runs none. They get
        the budget the frozen probes leave (at least half of it).
    finetune_steps : int
        The cap of training steps per fine-tuning pilot.
    heads, layers, test_size, cache, threads
        As in :func:`featx.bench.preset`.
    n_boot : int
        Bootstrap refits per learning curve.
    progress : callable, optional
        Gets one line per step.

    Returns
    -------
    Advice
        ``recommended``, ``expected`` and ``interval`` (the metric at the full size), ``forecasts`` per
        strategy, ``sentences``.
    """
    pilot = run_pilot(data, model=model, budget_s=budget_s, test=test, per_class=per_class, seeds=seeds,
                      heads=heads, finetune=finetune, finetune_steps=finetune_steps, test_size=test_size,
                      layers=layers, cache=cache, threads=threads, say=progress)
    return decide(pilot, data, n_boot=n_boot)


__all__ = ["Advice", "Curve", "Forecast", "Pilot", "advise", "choose_metric", "decide", "fit_curve", "run_pilot"]
