"""The plots of a report (PNG): learning curves, accuracy vs training cost, the best probe's confusion matrix.

Each plot is one function of a :class:`~featx.bench.result.BenchResult` returning a figure;
:func:`make_plots` writes them beside the report and returns ``{kind: file name}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..extras import require
from ..files import write_atomically
from .result import BenchResult, BestProbe
from .rows import BEST_BY_CV, BEST_LAYER, LAYER_HEAD, MAJORITY, Row, Summary, head_strategy, strategy_order
from .splits import size_key

PALETTE = {"baseline": ["#7f7f7f", "#bcbd22"],
           "frozen": ["#1f77b4", "#17becf", "#2ca02c", "#08306b", "#6baed6", "#9ecae1", "#4292c6", "#2171b5",
                      "#084594", "#c6dbef", "#74c476"],
           "finetune": ["#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#000000"]}
MARKERS = {"baseline": "s", "frozen": "o", "finetune": "^"}


def best_probe(rows: Sequence[Row]) -> BestProbe | None:
    """The probe row (CV-selected frozen head, else any frozen head) at the largest size, first seed."""
    candidates = [r for r in rows if r.strategy == BEST_BY_CV] or [r for r in rows if r.family == "frozen"]
    if not candidates:
        return None
    largest = max((r.size for r in candidates), key=size_key)
    return BestProbe.of(min((r for r in candidates if r.size == largest), key=lambda r: r.seed))


def make_plots(result: BenchResult, out: Path, stem: str) -> dict[str, str]:
    """Write the plots as ``<stem>-<kind>.png`` into ``out``; returns ``{kind: file name}``."""
    matplotlib = require("matplotlib", "plots", "the benchmark plots")
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    families = {e.strategy: e.family for e in result.summary}
    styles = _styles(strategy_order(r.strategy for r in result.rows), families)
    plots = {"learning_curves": _save(learning_curves(result, styles), out / f"{stem}-learning-curves.png"),
             "accuracy_vs_cost": _save(accuracy_vs_cost(result, styles), out / f"{stem}-accuracy-vs-cost.png")}
    if result.layers:
        plots["accuracy_vs_depth"] = _save(accuracy_vs_depth(result), out / f"{stem}-accuracy-vs-depth.png")
    if result.best_probe is not None:
        plots["confusion_matrix"] = _save(confusion_matrix(result, result.best_probe), out / f"{stem}-confusion.png")
    plt.close("all")
    return plots


def learning_curves(result: BenchResult, styles: dict):
    """Test accuracy against training samples per class (log scale), mean ± std over seeds."""
    import matplotlib.pyplot as plt

    n_classes = len(result.splits.classes)

    def xpos(e: Summary) -> float:
        return e.n_train / n_classes if e.size == "all" else float(e.size)

    fig, ax = plt.subplots(figsize=(10, 5))
    for s in _not_layers(styles):
        pts = sorted((e for e in result.summary if e.strategy == s and e.accuracy is not None), key=xpos)
        if not pts:
            continue
        ax.errorbar([xpos(e) for e in pts], [e.accuracy.mean for e in pts],
                    yerr=[e.accuracy.std or 0 for e in pts], label=s, capsize=3, **styles[s])
    ax.set_xscale("log")
    ticks = {xpos(e): str(e.size) for e in result.summary}
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("training samples per class (log scale; 'all' at its mean per class)")
    ax.set_ylabel(f"test accuracy (n = {result.splits.test_items})")
    ax.set_title(f"{result.dataset}: learning curves (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def accuracy_vs_cost(result: BenchResult, styles: dict):
    """Test accuracy against training cost (log scale); the majority class as a line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for s in _not_layers(styles):
        pts = [e for e in result.summary if e.strategy == s and s != MAJORITY
               and e.accuracy is not None and e.total_s is not None]
        if not pts:
            continue
        ax.scatter([max(e.total_s.mean, 1e-3) for e in pts], [e.accuracy.mean for e in pts], label=s,
                   marker=styles[s]["marker"], color=styles[s]["color"])
        for e in pts:
            ax.annotate(str(e.size), (max(e.total_s.mean, 1e-3), e.accuracy.mean), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    majority = [e.accuracy.mean for e in result.summary if e.strategy == MAJORITY]
    if majority:
        ax.axhline(float(np.mean(majority)), color="#7f7f7f", linestyle="--", linewidth=1, label=MAJORITY)
    ax.set_xscale("log")
    ax.set_xlabel("training cost, s (extraction + head selection/fit + fine-tuning); labels: samples/class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result.dataset}: accuracy vs cost")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def accuracy_vs_depth(result: BenchResult):
    """Test accuracy of a logistic regression on each layer's pooled features, in depth order (the final layer
    last), one line per training size, mean ± std over seeds."""
    import matplotlib.pyplot as plt

    names = list(result.layers)
    by = {(e.strategy, e.size): e for e in result.summary}
    fig, ax = plt.subplots(figsize=(9, 5))
    sizes = list(dict.fromkeys(e.size for e in result.summary))
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(1, len(sizes))))
    for color, size in zip(colors, sizes):
        pts = [(k, e) for k, n in enumerate(names) if (e := by.get((head_strategy(LAYER_HEAD, n), size)))]
        if len(pts) < 2:
            continue
        ax.errorbar([k for k, _ in pts], [e.accuracy.mean for _, e in pts], yerr=[e.accuracy.std or 0 for _, e in pts],
                    label=f"{size}/class", color=color, marker="o", capsize=3)
    ax.set_xticks(range(len(names)), [f"{n}\n{result.layers[n]}-d" for n in names], fontsize=8)
    ax.set_xlabel("layer (depth order; 'final' = the backbone's own pooled output)")
    ax.set_ylabel(f"test accuracy (n = {result.splits.test_items})")
    ax.set_title(f"{result.dataset}: accuracy vs depth (logreg per layer, mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="training size", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def confusion_matrix(result: BenchResult, best: BestProbe):
    """The confusion matrix of the best probe (rows: true classes, columns: predicted)."""
    import matplotlib.pyplot as plt

    cm = np.asarray(best.confusion_matrix)
    classes = result.splits.classes
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(classes), 0.8 + 0.5 * len(classes)))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{best.strategy} ({best.params.get('head', '')}), {best.size}/class, "
                 f"seed {best.seed}: acc {best.accuracy:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def _not_layers(styles: dict) -> list[str]:
    """The strategies but the per-layer rows (those have the accuracy-vs-depth plot)."""
    return [s for s in styles if " @ " not in s]


def _styles(strategies: Sequence[str], families: dict[str, str]) -> dict:
    """Colour, marker and line per strategy: one palette per family, in strategy order."""
    used = {k: 0 for k in PALETTE}
    out = {}
    for s in strategies:
        fam = families.get(s, "finetune")
        color = PALETTE[fam][used[fam] % len(PALETTE[fam])]
        used[fam] += 1
        out[s] = {"color": color, "marker": MARKERS[fam],
                  "linestyle": "--" if fam == "baseline" else ":" if s == "from scratch" else "-",
                  "linewidth": 2.5 if s in (BEST_BY_CV, BEST_LAYER) else 1.0 if " @ " in s else 1.5}
    return out


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path.name
