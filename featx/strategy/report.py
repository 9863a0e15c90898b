"""The advice as a terminal summary, a JSON document, a Markdown report and one plot (learning curves
with their extrapolation bands and the recommended point)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..extras import require
from ..files import write_atomically
from .advice import Advice, Forecast
from .curves import curve_value

SCHEMA = "featx-advise/1"


def to_dict(advice: Advice) -> dict:
    """The JSON document (schema ``featx-advise/1``)."""
    doc = {"schema": SCHEMA, **dataclasses.asdict(advice)}
    doc["interval"] = list(advice.interval)
    return json.loads(json.dumps(doc, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def from_dict(doc: dict) -> Advice:
    """The :class:`Advice` a JSON document (:func:`to_dict`) holds, to render it again."""
    if doc.get("schema") != SCHEMA:
        raise ParameterError(f"not a featx advice document (schema {doc.get('schema')!r}, expected {SCHEMA!r})")
    values = {f.name: doc[f.name] for f in dataclasses.fields(Advice) if f.name in doc}
    values["forecasts"] = [Forecast(**f) for f in doc["forecasts"]]
    values["interval"] = tuple(doc["interval"])
    return Advice(**values)


def summary_text(advice: Advice) -> str:
    """The terminal summary: the sentences, then one line per strategy."""
    m = advice.metric.replace("_", " ")
    lines = [f"featx advise: {advice.data} with {advice.backbone} ({advice.n_full} labelled items, {m})", ""]
    lines += [f"- {s}" for s in advice.sentences]
    lines += ["", f"{'strategy':<28} {'measured (largest)':>18} {'predicted 1x':>22} {'2x':>7} {'5x':>7} "
                  f"{'train s':>8} {'ms/item':>8}"]
    for f in sorted(advice.forecasts, key=lambda f: -f.at()):
        last = list(f.measured.values())[-1]
        meas = f"{100 * last['mean']:.1f} ± {100 * last['std']:.1f}"
        if f.predicted:
            p = f.predicted["1x"]
            pred = f"{100 * p['score']:.1f} [{100 * p['low']:.1f}-{100 * p['high']:.1f}]"
            more = f"{100 * f.predicted['2x']['score']:>7.1f} {100 * f.predicted['5x']['score']:>7.1f}"
        else:
            pred, more = (f.error or "-")[:22], f"{'-':>7} {'-':>7}"
        lines.append(f"{f.strategy:<28} {meas:>18} {pred:>22} {more} {f.fit_s:>8.1f} {f.predict_ms_per_item:>8.2f}")
    return "\n".join(lines)


def markdown(advice: Advice, plot: str | None = None) -> str:
    """The Markdown report."""
    m = advice.metric.replace("_", " ")
    out = [f"# featx advise: {advice.data}", "", f"Backbone {advice.backbone}; {advice.n_full} labelled items; "
           f"score: {m}. Pilot: sizes {advice.pilot.get('sizes')} per class, {advice.pilot.get('rows')} rows, "
           f"{advice.pilot.get('seconds', 0):.0f} s of a {advice.pilot.get('budget_s', 0):.0f} s budget.", ""]
    out += [f"- {s}" for s in advice.sentences] + [""]
    if plot:
        out += [f"![learning curves]({plot})", ""]
    out += [f"| strategy | measured at the largest size | predicted ({advice.n_full}) [90%] | 2x | 5x | "
            "training s | predict ms/item |", "|---|---|---|---|---|---|---|"]
    for f in sorted(advice.forecasts, key=lambda f: -f.at()):
        last = list(f.measured.values())[-1]
        if f.predicted:
            p = f.predicted["1x"]
            pred = f"{100 * p['score']:.1f} [{100 * p['low']:.1f}–{100 * p['high']:.1f}]"
            more = f"{100 * f.predicted['2x']['score']:.1f} | {100 * f.predicted['5x']['score']:.1f}"
        else:
            pred, more = f.error or "-", "- | -"
        out.append(f"| {f.strategy} | {100 * last['mean']:.1f} ± {100 * last['std']:.1f} | {pred} | {more} | "
                   f"{f.fit_s:.1f} | {f.predict_ms_per_item:.2f} |")
    return "\n".join(out) + "\n"


def plot(advice: Advice, path, top: int = 6) -> Path:
    """Learning curves of the ``top`` strategies (by predicted score): measured means ± std, the fitted
    curve, its bootstrap band up to 5x the labels, and the recommended point at the full size."""
    matplotlib = require("matplotlib", "plots", "the advice plot")
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    shown = sorted((f for f in advice.forecasts if f.predicted), key=lambda f: -f.at())[:top]
    for k, f in enumerate(shown):
        color = plt.cm.tab10(k % 10)
        xs = [v["n_train"] for v in f.measured.values()]
        ax.errorbar(xs, [100 * v["mean"] for v in f.measured.values()], [100 * v["std"] for v in f.measured.values()],
                    fmt="o", color=color, label=f.strategy, capsize=3)
        grid = np.geomspace(min(xs), f.predicted["5x"]["n_train"], 60)
        ax.plot(grid, 100 * curve_value(f.curve, grid), color=color, lw=1, ls="--" if "offset" in f.curve else "-")
        keys = ("1x", "2x", "5x")
        ax.fill_between([f.predicted[k]["n_train"] for k in keys], [100 * f.predicted[k]["low"] for k in keys],
                        [100 * f.predicted[k]["high"] for k in keys], color=color, alpha=0.15)
    best = advice.forecast(advice.recommended)
    ax.plot([advice.n_full], [100 * advice.expected], "*", ms=16, color="black", label=f"recommended: {best.strategy}")
    ax.axvline(advice.n_full, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training items")
    ax.set_ylabel(advice.metric.replace("_", " ") + " (%)")
    ax.set_title(f"{advice.data}: measured (points) and extrapolated (lines, 90% bands)")
    ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def write_reports(advice: Advice, out_dir, stem: str) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(advice, out / f"{stem}.png")
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    write_atomically(js, lambda tmp: Path(tmp).write_text(json.dumps(to_dict(advice), indent=1)))
    write_atomically(md, lambda tmp: Path(tmp).write_text(markdown(advice, png.name)))
    return {"json": js, "markdown": md, "plot": png}
