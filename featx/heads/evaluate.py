"""Metrics and reports of a fitted head on labelled features.

:func:`evaluate` and :func:`to_markdown` are pure; :func:`save_report` writes the report as
JSON, Markdown and a confusion-matrix PNG (matplotlib, Agg backend: the ``plots`` extra).

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from featx.heads import head_pipeline
>>> X, y = load_digits(return_X_y=True)
>>> head = head_pipeline("logreg").fit(X[:1000], y[:1000])
>>> report = evaluate(head, X[1000:], y[1000:])
>>> sorted(k for k in report if not k.startswith("per_") and k != "confusion_matrix")
['accuracy', 'balanced_accuracy', 'classes', 'macro_f1', 'n', 'unlabelled']
>>> report["accuracy"] > 0.85
True
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError, MissingDependencyError
from ..extras import require
from ..files import json_default, write_atomically, write_text_atomically
from ..sources import labelled_mask

__all__ = ["evaluate", "evaluate_predictions", "to_markdown", "save_report"]


#: Class imbalance rule: the largest class over the smallest above this ratio -> read balanced accuracy.
IMBALANCE_RATIO = 1.5


def choose_metric(counts: Mapping[str, int]) -> tuple[str, str]:
    """The score to read for classes of these sizes: ``("balanced_accuracy", why)`` when they are imbalanced
    (largest / smallest class > :data:`IMBALANCE_RATIO`), else ``("accuracy", why)``.

    Examples
    --------
    >>> choose_metric({"a": 60, "b": 40})[0]
    'accuracy'
    >>> choose_metric({"great": 658, "other": 342})[0]
    'balanced_accuracy'
    """
    big, small = max(counts.values()), min(counts.values())
    ratio = big / max(small, 1)
    if ratio > IMBALANCE_RATIO:
        return "balanced_accuracy", (f"classes are imbalanced (largest/smallest = {big}/{small} = {ratio:.2f} > "
                                     f"{IMBALANCE_RATIO}): scored by balanced accuracy (mean per-class recall)")
    return "accuracy", f"classes are balanced (largest/smallest = {ratio:.2f} <= {IMBALANCE_RATIO}): scored by accuracy"


def evaluate_predictions(y_true, y_pred, labels: Sequence | None = None) -> dict:
    """Metrics of predictions against true labels.

    Parameters
    ----------
    y_true, y_pred : array of shape (n,)
    labels : sequence, optional
        Classes in the order of the confusion matrix; default: the sorted union of both.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``classes`` (list of str),
        ``per_class`` (``{class: {precision, recall, f1, support}}``), ``confusion_matrix``
        (list of lists; rows = true class, columns = predicted class, in ``classes`` order).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise InputError(f"y_true and y_pred must be 1-D of the same length; got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise InputError("nothing to evaluate: no labelled rows")
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()), key=str)
    labels = list(labels)
    present = [lab for lab in labels if np.any(y_true == lab)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    # balanced accuracy = mean recall over the classes present in y_true
    recalls = [r for lab, r in zip(labels, recall) if lab in present]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "classes": [str(lab) for lab in labels],
        "per_class": {str(lab): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for lab, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion_matrix": cm.astype(int).tolist(),
    }


def evaluate(estimator, X, y) -> dict:
    """Predict ``X`` with a fitted classifier and score it against ``y``.

    Parameters
    ----------
    estimator : fitted classifier
        Anything with ``predict`` (a head from :mod:`featx.heads`, a loaded head...).
    X : array of shape (n, d)
    y : array of shape (n,)

    Returns
    -------
    dict
        See :func:`evaluate_predictions`; classes follow ``estimator.classes_`` (then any label
        of ``y`` the estimator never saw). ``unlabelled``: rows left out because their label is
        missing (None, NaN, blank: never a class).

    Raises
    ------
    InputError
        No labels, no labelled row, or X and y of different lengths.
    """
    if y is None:
        raise InputError("cannot evaluate without labels: the features have no y")
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise InputError(f"X has {len(X)} rows but y has {len(y)} labels")
    keep = labelled_mask(y) if y.dtype.kind in "OUSf" else np.ones(len(y), bool)
    if not keep.any():
        raise InputError(f"nothing to evaluate: none of the {len(y)} rows has a label")
    X, y = X[keep], y[keep]
    pred = np.asarray(estimator.predict(X))
    known = list(getattr(estimator, "classes_", []))
    if known and pred.dtype.kind in "OUS" and y.dtype.kind not in "OUS":
        y = y.astype(str)
    labels = known + sorted({v for v in y.tolist() if v not in set(known)}, key=str)
    return {**evaluate_predictions(y, pred, labels=labels or None), "unlabelled": int((~keep).sum())}


def to_markdown(report: Mapping[str, Any], title: str | None = None) -> str:
    """A Markdown rendering: summary, per-class table, confusion matrix.

    Keys other than the metrics (``head``, ``backbone``, ``cache``...) are listed first.
    """
    lines = [f"# {title}", ""] if title else []
    skip = {"n", "accuracy", "balanced_accuracy", "macro_f1", "classes", "per_class", "confusion_matrix", "unlabelled"}
    for key, value in report.items():
        if key not in skip and not isinstance(value, (dict, list)):
            lines.append(f"- **{key}**: {value}")
    if report.get("unlabelled"):
        lines.append(f"- **unlabelled items left out**: {report['unlabelled']}")
    support = {c: report["per_class"][c]["support"] for c in report["classes"] if report["per_class"][c]["support"]}
    if support:
        lines.append(f"- **score to read**: {choose_metric(support)[1]}")
    lines += [
        f"- **items**: {report['n']}",
        f"- **accuracy**: {report['accuracy']:.4f}",
        f"- **balanced accuracy**: {report['balanced_accuracy']:.4f}",
        f"- **macro F1**: {report['macro_f1']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for cls in report["classes"]:
        s = report["per_class"][cls]
        lines.append(f"| {_md_cell(cls)} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class)", ""]
    classes = [_md_cell(c) for c in report["classes"]]
    lines.append("| true \\ predicted | " + " | ".join(classes) + " |")
    lines.append("|---|" + "---:|" * len(classes))
    for cls, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def plot_confusion(report: Mapping[str, Any], path, title: str | None = None) -> Path:
    """Write the confusion matrix as a PNG with scikit-learn's ``ConfusionMatrixDisplay``.

    Colours are row-normalised (the fraction of each true class), the cells show counts
    (up to 30 classes; zero cells stay blank).

    Raises
    ------
    MissingDependencyError
        matplotlib is not installed (``pip install 'featx[plots]'``).
    """
    matplotlib = require("matplotlib", "plots", "the confusion-matrix PNG")
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(report["confusion_matrix"], dtype=float)
    classes = [str(c)[:20] for c in report["classes"]]
    k = len(classes)
    size = min(2.0 + 0.6 * k, 24.0)
    fig = Figure(figsize=(size, size * 0.9), dpi=100)
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    display = ConfusionMatrixDisplay(norm, display_labels=classes)
    display.plot(ax=ax, cmap="Blues", include_values=k <= 30, colorbar=False,
                 im_kw={"vmin": 0.0, "vmax": 1.0}, text_kw={"fontsize": 8})
    if display.text_ is not None:
        for (i, j), text in np.ndenumerate(display.text_):
            text.set_text(str(int(cm[i, j])) if cm[i, j] else "")
    fig.colorbar(display.im_, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    for label in ax.get_xticklabels():
        label.set(rotation=45, ha="right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}")
    fig.tight_layout()
    path = Path(path)
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def save_report(report: Mapping[str, Any], out_dir, name: str = "report", title: str | None = None) -> dict:
    """Write ``NAME.json``, ``NAME.md`` and ``NAME-confusion.png`` into ``out_dir`` (created).

    Each file is written to a temporary name and renamed into place. Without matplotlib
    (the ``plots`` extra) the PNG is left out with a warning saying how to get it.

    Returns
    -------
    dict
        ``{"json": Path, "markdown": Path, "png": Path or None}``
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "png": out / f"{name}-confusion.png"}
    text = json.dumps(report, indent=2, default=json_default)
    write_text_atomically(paths["json"], text + "\n")
    write_text_atomically(paths["markdown"], to_markdown(report, title=title))
    try:
        plot_confusion(report, paths["png"], title=title)
    except MissingDependencyError as e:  # the numbers are written; the picture is optional
        warnings.warn(f"{e}; wrote {paths['json'].name} and {paths['markdown'].name} without it", UserWarning,
                      stacklevel=2)
        paths["png"] = None
    return paths


