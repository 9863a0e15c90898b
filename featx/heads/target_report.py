"""Metrics of the heads beyond one label (:mod:`featx.heads.targets`): micro/macro F1, mAP and
per-label AUC for label sets; MAE, RMSE, R² and a predicted-vs-true plot for numbers; written as
JSON, Markdown and PNG like :func:`featx.heads.evaluate.save_report`.

Examples
--------
>>> import numpy as np
>>> r = multilabel_metrics(np.array([[1, 0], [0, 1], [1, 1]]), np.array([[.9, .2], [.4, .7], [.8, .3]]),
...                        [0.5, 0.5], ["a", "b"])
>>> r["micro_f1"], r["per_label"]["b"]["auc"]
(0.8571428571428571, 1.0)
>>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.0]))["mae"]
0.16666666666666666
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import MissingDependencyError
from ..extras import require
from ..files import json_default, write_atomically, write_text_atomically
from ..sources.targets import binarize, label_sets, numeric_targets
from .targets import multilabel_predict


def multilabel_metrics(Y, scores, threshold, labels) -> dict:
    """Micro/macro F1 at the head's threshold, mAP (the mean of each label's average precision over
    the labels present) and per-label precision/recall/F1/AP/AUC (None where a label is all one value)."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support, roc_auc_score

    Y, scores = np.asarray(Y), np.asarray(scores, dtype=np.float64)
    pred = scores >= np.asarray(threshold)
    p, r, f, s = precision_recall_fscore_support(Y, pred, average=None, zero_division=0)
    per = {}
    for j, label in enumerate(labels):
        varied = 0 < Y[:, j].sum() < len(Y)
        per[str(label)] = {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j]),
                           "ap": float(average_precision_score(Y[:, j], scores[:, j])) if Y[:, j].any() else None,
                           "auc": float(roc_auc_score(Y[:, j], scores[:, j])) if varied else None}
    aps = [v["ap"] for v in per.values() if v["ap"] is not None]
    return {"target": "multi", "n": int(len(Y)), "labels": [str(x) for x in labels],
            "micro_f1": float(f1_score(Y, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0)),
            "subset_accuracy": float(np.mean(np.all(pred == Y.astype(bool), axis=1))),
            "map": float(np.mean(aps)) if aps else None, "per_label": per}


def regression_metrics(y, pred) -> dict:
    """MAE, RMSE and R² of predicted numbers."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return {"target": "numeric", "n": int(len(y)), "mae": float(mean_absolute_error(y, pred)),
            "rmse": float(np.sqrt(mean_squared_error(y, pred))),
            "r2": float(r2_score(y, pred)) if len(y) > 1 else None,
            "true": y.tolist(), "predicted": pred.tolist()}


def evaluate_target(estimator, meta: Mapping[str, Any], X, labels) -> dict:
    """The metrics of a saved multi-label or regression head (``meta``: its metadata) on labelled rows;
    unlabelled rows are left out and counted."""
    labels = np.asarray(labels, dtype=object)
    keep = np.array([v is not None for v in labels], bool)
    X, labels = np.asarray(X)[keep], labels[keep]
    if meta["target"] == "numeric":
        report = regression_metrics(numeric_targets(labels), estimator.predict(X))
    else:
        names = meta["labels"]
        sets = label_sets(labels, meta.get("delimiter"))
        known = set(names)
        unseen = sorted({x for s in sets for x in s} - known)
        Y, _ = binarize([tuple(x for x in s if x in known) for s in sets], names)
        scores, _ = multilabel_predict(estimator, X, names, meta["threshold"])
        report = multilabel_metrics(Y, scores, meta["threshold"], names)
        report["unseen_labels"] = unseen  # in the test set only: no head can predict them
    return {**report, "unlabelled": int((~keep).sum())}


def summary_line(report: Mapping[str, Any]) -> str:
    """One line of the headline metrics."""
    if report["target"] == "numeric":
        r2 = "n/a" if report["r2"] is None else f"{report['r2']:.4f}"
        return f"MAE {report['mae']:.4f}, RMSE {report['rmse']:.4f}, R² {r2} on {report['n']} items"
    m = "n/a" if report["map"] is None else f"{report['map']:.4f}"
    return (f"micro-F1 {report['micro_f1']:.4f}, macro-F1 {report['macro_f1']:.4f}, mAP {m} "
            f"on {report['n']} items")


def to_markdown(report: Mapping[str, Any], title: str | None = None) -> str:
    """Markdown: the headline metrics, then the per-label table (multi-label)."""
    lines = [f"# {title}", ""] if title else []
    lines += [f"- **{k}**: {v}" for k, v in report.items()
              if not isinstance(v, (dict, list)) and v is not None]
    if report["target"] == "multi":
        lines += ["", "| label | precision | recall | F1 | AP | AUC | support |", "|---|---:|---:|---:|---:|---:|---:|"]
        for label, s in report["per_label"].items():
            cells = [f"{s[k]:.4f}" if s[k] is not None else "n/a" for k in ("precision", "recall", "f1", "ap", "auc")]
            lines.append(f"| {label.replace('|', '/')} | " + " | ".join(cells) + f" | {s['support']} |")
    return "\n".join(lines) + "\n"


def plot_predicted(report: Mapping[str, Any], path, title: str | None = None) -> Path:
    """Predicted against true values (regression) as a PNG."""
    matplotlib = require("matplotlib", "plots", "the predicted-vs-true PNG")
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    y, pred = np.asarray(report["true"]), np.asarray(report["predicted"])
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(y, pred, s=8, alpha=0.6)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title or summary_line(report))
    fig.tight_layout()
    path = Path(path)
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def save_target_report(report: Mapping[str, Any], out_dir, name: str = "report", title: str | None = None) -> dict:
    """Write ``NAME.json``, ``NAME.md`` and (regression, with matplotlib) ``NAME-predicted.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "png": None}
    write_text_atomically(paths["json"], json.dumps(report, indent=2, default=json_default) + "\n")
    write_text_atomically(paths["markdown"], to_markdown(report, title=title))
    if report["target"] == "numeric" and report["n"]:
        try:
            paths["png"] = plot_predicted(report, out / f"{name}-predicted.png", title=title)
        except MissingDependencyError:
            paths["png"] = None
    return paths
