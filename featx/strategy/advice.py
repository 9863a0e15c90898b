"""The advice, computed from the pilot's numbers and nothing else.

Per strategy (every frozen head and layer, the simple baselines; the majority class is left out): the
learning curve of its score (:mod:`featx.strategy.curves`) over training items, its prediction and interval
at the full size and at 2x and 5x as many labels, and its measured costs at the largest size measured.
The recommendation is the highest predicted score at the full size; it is called *undecided* when the
runner-up's interval reaches the recommendation's prediction (the pilot cannot separate them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FeatxError
from .curves import MIN_SIZES, fit_curve
from .pilot import Pilot

#: The rows the advice leaves out: the majority class (a floor, not a strategy) and the bench's "best by CV"
#: summaries (the individual heads and layers they choose from are there).
LEFT_OUT = ("majority class", "frozen: best by CV", "frozen: best layer by CV")
MULTIPLIERS = (1, 2, 5)


@dataclass
class Forecast:
    """One strategy: measured points, the fitted curve, predictions with intervals, costs."""

    strategy: str
    family: str
    measured: dict  # size label -> {"n_train", "mean", "std"}
    curve: dict | None  # a, b, c, ...
    predicted: dict  # "1x"/"2x"/"5x" -> {"n_train", "score", "low", "high"}
    fit_s: float  # training cost at the largest measured size (mean over seeds)
    predict_ms_per_item: float
    error: str | None = None

    def at(self, key: str = "1x") -> float:
        return self.predicted[key]["score"] if key in self.predicted else -np.inf


@dataclass
class Advice:
    """The answer: recommendation, its expected score and interval, alternatives, signals, caveats."""

    data: str
    backbone: str
    metric: str
    metric_reason: str
    n_full: int
    recommended: str
    expected: float
    interval: tuple
    decided: bool
    forecasts: list[Forecast]
    sentences: list[str]
    pilot: dict = field(default_factory=dict)

    def forecast(self, strategy: str) -> Forecast:
        return next(f for f in self.forecasts if f.strategy == strategy)


def forecasts(pilot: Pilot, *, n_boot: int = 200) -> list[Forecast]:
    """One :class:`Forecast` per strategy the pilot measured."""
    by_strategy: dict = {}
    for row in pilot.rows:
        if row.strategy not in LEFT_OUT:
            by_strategy.setdefault(row.strategy, []).append(row)
    out = []
    for strategy, rows in by_strategy.items():
        n = np.array([r.n_train for r in rows], dtype=float)
        y = np.array([getattr(r, pilot.metric) for r in rows], dtype=float)
        measured = {}
        for size in dict.fromkeys(r.size for r in rows):
            group = [r for r in rows if r.size == size]
            values = [getattr(r, pilot.metric) for r in group]
            measured[size] = {"n_train": float(np.mean([r.n_train for r in group])), "mean": float(np.mean(values)),
                              "std": float(np.std(values)), "seeds": len(group)}
        top = max(rows, key=lambda r: r.n_train).size
        last = [r for r in rows if r.size == top]
        fc = Forecast(strategy, rows[0].family, measured, None, {},
                      fit_s=float(np.mean([r.extract_s + r.fit_s + r.finetune_s for r in last])),
                      predict_ms_per_item=float(np.mean([r.predict_ms_per_item or 0.0 for r in last])))
        if len(np.unique(n)) < MIN_SIZES:
            fc.error = f"measured at {len(np.unique(n))} size(s) only: no curve"
        else:
            try:
                curve = fit_curve(n, y, n_boot=n_boot)
            except (FeatxError, RuntimeError, ValueError) as e:
                fc.error = f"no curve: {e}"
            else:
                fc.curve = curve.to_dict()
                for m in MULTIPLIERS:
                    target = pilot.n_full * m
                    low, high = curve.interval(target)
                    fc.predicted[f"{m}x"] = {"n_train": target, "score": curve.predict(target), "low": low,
                                             "high": high}
        out.append(fc)
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def decide(pilot: Pilot, data: str, *, n_boot: int = 200) -> Advice:
    """The advice from the pilot's rows (see the module docstring for the rules)."""
    fcs = forecasts(pilot, n_boot=n_boot)
    fitted = sorted((f for f in fcs if f.predicted), key=lambda f: -f.at())
    metric_name = pilot.metric.replace("_", " ")
    if not fitted:
        raise FeatxError(f"{data}: no strategy was measured at {MIN_SIZES} sizes within the budget "
                         f"({pilot.budget_s:.0f} s; sizes done {pilot.sizes}): give a larger --budget")
    best = fitted[0]
    p = best.predicted["1x"]
    s = [f"Scored by {metric_name}: {pilot.metric_reason}."]
    s.append(f"Recommended: {best.strategy}, expected {metric_name} {_pct(p['score'])} "
             f"(90% interval {_pct(p['low'])}-{_pct(p['high'])}) with all {pilot.n_full} labelled items; "
             f"training {best.fit_s:.1f} s, prediction {best.predict_ms_per_item:.2f} ms/item on the pilot's "
             f"largest size.")
    decided = True
    if len(fitted) > 1:
        second = fitted[1]
        q = second.predicted["1x"]
        if q["high"] >= p["score"]:
            decided = False
            s.append(f"Too close to call: {second.strategy} ({_pct(q['score'])}, interval "
                     f"{_pct(q['low'])}-{_pct(q['high'])}) reaches the recommendation's prediction. What would settle "
                     f"it: more seeds or a larger test set (now {pilot.test_items} items), or both measured at "
                     f"a larger size.")
    for alt in fitted[1:4]:
        a = alt.predicted["1x"]
        s.append(f"Alternative {alt.strategy}: {_pct(a['score'])} ({(a['score'] - p['score']) * 100:+.1f} points), "
                 f"training {alt.fit_s:.1f} s, prediction {alt.predict_ms_per_item:.2f} ms/item.")
    for m in MULTIPLIERS[1:]:
        q = best.predicted[f"{m}x"]
        s.append(f"With {m}x the labels ({q['n_train']} items) {best.strategy} is predicted at {_pct(q['score'])} "
                 f"({(q['score'] - p['score']) * 100:+.1f} points, interval {_pct(q['low'])}-{_pct(q['high'])}).")
    s.extend(signals(fitted, pilot))
    if pilot.skipped:
        s.append(f"The budget ({pilot.budget_s:.0f} s) left out sizes {pilot.skipped} per class; the curves "
                 f"extrapolate from sizes {pilot.sizes}.")
    return Advice(data=data, backbone=pilot.backbone, metric=pilot.metric, metric_reason=pilot.metric_reason,
                  n_full=pilot.n_full, recommended=best.strategy, expected=p["score"],
                  interval=(p["low"], p["high"]), decided=decided, forecasts=fcs, sentences=s,
                  pilot={"sizes": pilot.sizes, "skipped": pilot.skipped, "class_counts": pilot.class_counts,
                         "test_items": pilot.test_items, "budget_s": pilot.budget_s, "seconds": pilot.seconds,
                         "rows": len(pilot.rows)})


def signals(fitted: list[Forecast], pilot: Pilot) -> list[str]:
    """Measured signals of how close the data is to the backbone's pretraining: an intermediate layer
    beating the last, and the gap between the best frozen probe and the simple baseline."""
    out = []
    by = {f.strategy: f for f in fitted}
    final = by.get("frozen: logreg")
    layers = [f for f in fitted if f.strategy.startswith("frozen: logreg @ ")]
    if final and layers:
        top = max(layers, key=lambda f: f.at())
        diff = (top.at() - final.at()) * 100
        if diff > 0:
            out.append(f"Signal: an intermediate layer beats the last ({top.strategy} {diff:+.1f} points over the "
                       f"final layer's logreg, predicted at full size): the last layer's features are "
                       f"specialised away from this data.")
        else:
            out.append(f"Signal: the final layer is the best layer ({-diff:.1f} points over the best "
                       f"intermediate one, {top.strategy}).")
    frozen = [f for f in fitted if f.family == "frozen"]
    base = [f for f in fitted if f.family == "baseline"]
    if frozen and base:
        fb, bb = max(frozen, key=lambda f: f.at()), max(base, key=lambda f: f.at())
        gap = (fb.at() - bb.at()) * 100
        out.append(f"Signal: the best frozen probe is {gap:+.1f} points over {bb.strategy} at full size "
                   f"({'pretrained features help' if gap > 0 else 'pretrained features do not help here'}).")
    return out
