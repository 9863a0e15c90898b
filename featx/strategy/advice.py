"""The advice, computed from the pilot's numbers and nothing else.

Per strategy (every frozen head and layer, the simple baselines; the majority class is left out): the
learning curve of its score (:mod:`featx.strategy.curves`, fitted on the upper part of the measured sizes)
over training items, its prediction and interval
at the full size and at 2x and 5x as many labels, and its measured costs at the largest size measured.

A fine-tuning pilot, measured at one size only, has no curve of its own: its prediction is the *reference*
curve (the frozen probe measured best at that size) plus the gap measured there, an assumption the advice
states (the gap is held constant as labels grow). Its interval is the reference's, widened by the larger of
the two standard deviations over seeds at that size.

The recommendation is the highest predicted score at the full size among the strategies measured on two
seeds or more where it matters (a fine-tuning pilot run once is *unconfirmed*: fine-tuning varies from seed
to seed, and the advice names it with what would settle it); it is called *undecided* when the runner-up's
interval reaches the recommendation's prediction (the pilot cannot separate them). A prediction
more than :data:`FAR` times beyond the largest size measured is said to be a far extrapolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FeatxError
from .curves import MIN_SIZES, Curve, fit_curve, upper_range
from .pilot import Pilot

#: The rows the advice leaves out: the majority class (a floor, not a strategy) and the bench's "best by CV"
#: summaries (the individual heads and layers they choose from are there).
LEFT_OUT = ("majority class", "frozen: best by CV", "frozen: best layer by CV")
MULTIPLIERS = (1, 2, 5)
#: A prediction this many times beyond the largest size measured is called a far extrapolation.
FAR = 5.0


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
    extrapolation: float = 1.0  # the full size over the largest size measured
    steps_wanted: int | None = None  # a fine-tuning pilot cut at its step cap: the most steps a seed wanted

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
    out, curves, single = [], {}, []
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
                      predict_ms_per_item=float(np.mean([r.predict_ms_per_item or 0.0 for r in last])),
                      extrapolation=pilot.n_full / max(n.max(), 1.0))
        capped = [r.params.get("steps_wanted", 0) for r in last if r.params.get("hit_cap")]
        fc.steps_wanted = max(capped) if capped else None
        out.append(fc)
        if len(np.unique(n)) < MIN_SIZES:
            fc.error = f"measured at {len(np.unique(n))} size(s) only: no curve"
            single.append(fc)
            continue
        upper = upper_range(n)
        try:
            curve = fit_curve(n[upper], y[upper], n_boot=n_boot)
        except (FeatxError, RuntimeError, ValueError) as e:
            fc.error = f"no curve: {e}"
            continue
        curves[strategy] = curve
        fc.curve = {**curve.to_dict(), "fitted_from_n": float(n[upper].min())}
        fc.predicted = {key: _point(curve, target) for key, target in _targets(pilot)}
    for fc in single:
        if fc.family == "finetune":
            _gap_forecast(fc, [f for f in out if f.strategy in curves and f.family == "frozen"], curves, pilot)
    return out


def _targets(pilot: Pilot):
    return [(f"{m}x", pilot.n_full * m) for m in MULTIPLIERS]


def _point(curve: Curve, target: float, offset: float = 0.0, spread: float = 0.0) -> dict:
    low, high = curve.interval(target)
    score = curve.predict(target)
    low, high = min(low, score), max(high, score)  # the fit's own prediction lies inside its interval
    clip = lambda v: float(np.clip(v, 0.0, 1.0))  # noqa: E731
    return {"n_train": target, "score": clip(score + offset), "low": clip(low + offset - spread),
            "high": clip(high + offset + spread)}


def _gap_forecast(fc: Forecast, frozen: list[Forecast], curves: dict, pilot: Pilot) -> None:
    """A fine-tuning pilot measured at one size: the best frozen probe's curve there, plus the measured gap."""
    size, point = next(iter(fc.measured.items()))
    refs = [f for f in frozen if size in f.measured]
    if len(fc.measured) != 1 or not refs:
        return
    ref = max(refs, key=lambda f: f.measured[size]["mean"])
    gap = point["mean"] - ref.measured[size]["mean"]
    spread = max(point["std"], ref.measured[size]["std"])
    curve = curves[ref.strategy]
    fc.curve = {**ref.curve, "offset": gap, "reference": ref.strategy, "at_size": size}
    fc.predicted = {key: _point(curve, target, gap, spread) for key, target in _targets(pilot)}
    fc.error = None


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
    confirmed = [f for f in fitted if not unconfirmed(f)] or fitted
    best = confirmed[0]
    p = best.predicted["1x"]
    reason = pilot.metric_reason
    s = [reason[0].upper() + reason[1:] + "."]
    s.append(f"Recommended: {best.strategy}, expected {metric_name} {_pct(p['score'])} "
             f"(90% interval {_pct(p['low'])}-{_pct(p['high'])}) with all {pilot.n_full} labelled items; "
             f"training {best.fit_s:.1f} s, prediction {best.predict_ms_per_item:.2f} ms/item on the pilot's "
             f"largest size.")
    for f in fitted[:fitted.index(best)]:  # predicted higher, measured on one seed
        a = f.predicted["1x"]
        gain = (a["score"] - p["score"]) * 100
        s.append(f"Unconfirmed: {f.strategy} is predicted at {_pct(a['score'])} ({gain:+.1f} points) from one "
                 f"fine-tuning run; fine-tuning varies from seed to seed, so one run does not "
                 f"carry a recommendation. What would settle it: a second seed (about {f.fit_s:.0f} s more "
                 f"budget).")
    decided = True
    if len(confirmed) > 1:
        second = confirmed[1]
        q = second.predicted["1x"]
        if q["high"] >= p["score"]:
            decided = False
            s.append(f"Too close to call: {second.strategy} ({_pct(q['score'])}, interval "
                     f"{_pct(q['low'])}-{_pct(q['high'])}) reaches the recommendation's prediction. What would settle "
                     f"it: more seeds or a larger test set (now {pilot.test_items} items), or both measured at "
                     f"a larger size.")
    for alt in [f for f in fitted if f is not best][:3]:
        a = alt.predicted["1x"]
        s.append(f"Alternative {alt.strategy}: {_pct(a['score'])} ({(a['score'] - p['score']) * 100:+.1f} points), "
                 f"training {alt.fit_s:.1f} s, prediction {alt.predict_ms_per_item:.2f} ms/item.")
    for m in MULTIPLIERS[1:]:
        q = best.predicted[f"{m}x"]
        s.append(f"With {m}x the labels ({q['n_train']} items) {best.strategy} is predicted at {_pct(q['score'])} "
                 f"({(q['score'] - p['score']) * 100:+.1f} points, interval {_pct(q['low'])}-{_pct(q['high'])}).")
    if best.extrapolation > FAR:
        s.append(f"Far extrapolation: the full size is {best.extrapolation:.0f}x the largest size {best.strategy} "
                 f"was measured at; read its prediction as a trend, not a measurement (a larger --budget measures "
                 f"closer to it).")
    s.extend(finetune_sentences(fitted, pilot))
    s.extend(signals(fitted, pilot))
    if pilot.skipped:
        s.append(f"The budget ({pilot.budget_s:.0f} s) left out sizes {pilot.skipped} per class; the curves "
                 f"extrapolate from sizes {pilot.sizes}.")
    return Advice(data=data, backbone=pilot.backbone, metric=pilot.metric, metric_reason=pilot.metric_reason,
                  n_full=pilot.n_full, recommended=best.strategy, expected=p["score"],
                  interval=(p["low"], p["high"]), decided=decided, forecasts=fcs, sentences=s,
                  pilot={"sizes": pilot.sizes, "skipped": pilot.skipped, "class_counts": pilot.class_counts,
                         "test_items": pilot.test_items, "budget_s": pilot.budget_s, "seconds": pilot.seconds,
                         "rows": len(pilot.rows), "finetune": pilot.finetune})


def unconfirmed(forecast: Forecast) -> bool:
    """A fine-tuning pilot measured on one seed at its size: no recommendation rests on one training run
    (frozen probes and baselines are deterministic given their subset; their seeds vary the subset)."""
    return forecast.family == "finetune" and max(v["seeds"] for v in forecast.measured.values()) < 2


def finetune_sentences(fitted: list[Forecast], pilot: Pilot) -> list[str]:
    """What the fine-tuning pilots measured, the assumption behind their predictions, and whether more labels
    would pay more than fine-tuning."""
    tuned = [f for f in fitted if f.family == "finetune" and f.curve and "offset" in f.curve]
    frozen = [f for f in fitted if f.family == "frozen"]
    ft = pilot.finetune or {}
    out = []
    if ft.get("skipped"):
        out.append(f"Fine-tuning pilots the budget left out: {', '.join(ft['skipped'])}.")
    if not tuned or not frozen:
        return out
    top = max(tuned, key=lambda f: f.at())
    size = top.curve["at_size"]
    out.append(f"Fine-tuning pilots at {size}/class (at most {ft.get('steps_cap')} steps, epochs chosen on a "
               f"validation split): " + "; ".join(
                   f"{f.strategy} {f.curve['offset'] * 100:+.1f} points over {f.curve['reference']}" for f in
                   sorted(tuned, key=lambda f: -f.curve["offset"])) +
               ". Their predictions assume that gap holds at the full size.")
    capped = [f for f in tuned if f.steps_wanted]
    if capped:
        wanted = ", ".join(f"{f.strategy} wanted {f.steps_wanted}" for f in capped)
        out.append(f"Cut at the pilot's step cap ({wanted}" +
                   f" steps, the cap is {ft.get('steps_cap')}): their scores are lower bounds; a larger "
                   "--finetune-steps (and budget) trains them as their validation split asked.")
    probe = max(frozen, key=lambda f: f.at())
    more = (probe.at("2x") - probe.at()) * 100
    tune = (top.at() - probe.at()) * 100
    verdict = "more labels pay more" if more > tune else "fine-tuning pays more"
    out.append(f"Labels or fine-tuning: 2x the labels gives {probe.strategy} {more:+.1f} points; {top.strategy} "
               f"gives {tune:+.1f} points over it with today's labels ({top.fit_s:.0f} s of training against "
               f"{probe.fit_s:.1f} s): {verdict}.")
    return out


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
