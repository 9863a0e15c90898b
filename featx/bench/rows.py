"""A row of a result table is a type: one per kind of row, and their summary over seeds.

    Row              one strategy at one size and seed: scores, costs, hyper-parameters
    ├── BaselineRow  + the number of input features (raw pixels / TF-IDF + logreg)
    ├── SelectedRow  + the CV score's spread and folds ("frozen: best by CV")
    │   └── HeadRow  + the notes of its model selection (one frozen head)
    └── FinetuneRow  + total parameters, first and last loss, seconds per step
    Failure          a row that raised: where, which strategy, the error
    Summary          mean and std over seeds (a :class:`Stat` per metric and cost) per strategy and size

A new kind of row (another strategy with its own measurements) is a new subclass here;
:func:`row_from_dict` reads each back from its keys. Sizes are labels (``"5"``, ``"all"``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from ..heads.evaluate import evaluate_predictions
from .splits import size_key

FAMILIES = ("baseline", "frozen", "finetune")
MAJORITY = "majority class"
#: The simple baseline's logistic regression, by modality.
BASELINE_LOGREG = {"image": "raw pixels + logreg", "text": "TF-IDF + logreg"}
BEST_BY_CV = "frozen: best by CV"
#: The layer rows: this head on each intermediate layer ("frozen: logreg @ block4"), and the layer chosen by CV.
LAYER_HEAD = "logreg"
BEST_LAYER = "frozen: best layer by CV"
FT_MODE_LABELS = {"head": "fine-tune: head only", "partial": "fine-tune: partial", "full": "fine-tune: full",
                  "scratch": "from scratch", "lp-ft": "LP-FT", "setfit": "SetFit"}
#: Order of the strategies in tables and plots (others follow in natural order: block2 before block10).
STRATEGY_ORDER = (MAJORITY, *BASELINE_LOGREG.values(), "frozen: logreg", "frozen: svm", "frozen: knn", BEST_BY_CV,
                  BEST_LAYER, *FT_MODE_LABELS.values())
#: Fields of a record that are left out of its JSON when None.
OMIT_IF_NONE = {"omit_if_none": True}


def head_strategy(kind: str, layer: str = "final") -> str:
    """The strategy name of a frozen head: ``"logreg"`` -> ``"frozen: logreg"``; on an intermediate layer
    ``"frozen: logreg @ block4"``."""
    return f"frozen: {kind}" if layer == "final" else f"frozen: {kind} @ {layer}"


def to_record(obj) -> dict:
    """A record dataclass as a JSON-ready dict, in field order, without the :data:`OMIT_IF_NONE` fields left None."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if not (f.metadata.get("omit_if_none") and getattr(obj, f.name) is None)}


def from_record(cls, record: dict, **converted):
    """``cls`` from a JSON record; ``converted`` replaces fields that hold records themselves."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - names)
    if unknown:
        raise ParameterError(f"a benchmark {cls.__name__} record has unknown keys {unknown}; known: {sorted(names)}")
    return cls(**{**record, **converted})


def jsonable(obj):
    """``obj`` with numpy scalars as Python numbers (and anything else unknown to JSON as its repr)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else repr(o)))


@dataclass(frozen=True)
class Scores:
    """Test-set scores of one row; the confusion matrix's rows are true classes, columns predicted."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    confusion_matrix: list


def scores(y_true, y_pred, classes: Sequence[str]) -> Scores:
    """Accuracy, balanced accuracy, macro-F1 and the confusion matrix (in ``classes`` order), from
    :func:`featx.heads.evaluate.evaluate_predictions`."""
    y_true = np.asarray([str(v) for v in y_true], dtype=object)
    y_pred = np.asarray([str(v) for v in y_pred], dtype=object)
    report = evaluate_predictions(y_true, y_pred, labels=list(classes))
    return Scores(report["accuracy"], report["balanced_accuracy"], report["macro_f1"], report["confusion_matrix"])


@dataclass(kw_only=True)
class Row:
    """One strategy at one training size and seed (JSON: its fields, then ``total_s``)."""

    strategy: str
    family: str  # one of FAMILIES
    size: str
    seed: int
    n_train: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    extract_s: float = 0.0
    fit_s: float = 0.0
    finetune_s: float = 0.0
    peak_rss_mb: float | None = None
    trainable_params: int | None = None
    predict_ms_per_item: float | None = None
    params: dict = field(default_factory=dict)
    cv_score: float | None = None
    confusion_matrix: list = field(default_factory=list)

    @classmethod
    def scored(cls, subset, strategy: str, family: str, result: Scores, **measures) -> Row:
        """A row of ``subset`` (its size, seed and training items) with test-set ``result``."""
        return cls(strategy=strategy, family=family, size=subset.size, seed=subset.seed, n_train=subset.n_train,
                   accuracy=result.accuracy, balanced_accuracy=result.balanced_accuracy, macro_f1=result.macro_f1,
                   confusion_matrix=result.confusion_matrix, **measures)

    @property
    def scores(self) -> Scores:
        return Scores(self.accuracy, self.balanced_accuracy, self.macro_f1, self.confusion_matrix)

    @property
    def total_s(self) -> float:
        """Training cost: extraction + head selection/fit + fine-tuning."""
        return self.extract_s + self.fit_s + self.finetune_s

    def to_dict(self) -> dict:
        return {**to_record(self), "total_s": self.total_s}


@dataclass(kw_only=True)
class BaselineRow(Row):
    n_features: int


@dataclass(kw_only=True)
class SelectedRow(Row):
    cv_std: float | None = None
    cv_folds: int | None = None


@dataclass(kw_only=True)
class HeadRow(SelectedRow):
    notes: list = field(default_factory=list)


@dataclass(kw_only=True)
class FinetuneRow(Row):
    total_params: int
    loss_first: float
    loss_last: float
    seconds_per_step: float


#: Every kind of row, read back by its exact set of keys.
ROW_TYPES = (Row, BaselineRow, SelectedRow, HeadRow, FinetuneRow)


def row_from_dict(record: dict) -> Row:
    """The row a report recorded (its kind from its keys)."""
    keys = set(record) - {"total_s"}
    for cls in ROW_TYPES:
        if keys == {f.name for f in dataclasses.fields(cls)}:
            return cls(**{k: record[k] for k in keys})
    raise ParameterError(f"a benchmark row of strategy {record.get('strategy')!r} has keys {sorted(keys)}, which "
                         "match no kind of row in featx.bench.rows; the report was written by another featx version")


@dataclass(kw_only=True)
class Failure:
    """A row that raised instead of producing a result (``size`` is ``"-"`` outside a subset)."""

    size: str
    seed: int
    n_train: int | None = field(default=None, metadata=OMIT_IF_NONE)
    strategy: str
    error: str

    def to_dict(self) -> dict:
        return to_record(self)


@dataclass(frozen=True)
class Stat:
    """Mean and standard deviation (over seeds, ddof=0)."""

    mean: float
    std: float


#: The per-row values a summary aggregates, in report order.
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
COSTS = ("extract_s", "fit_s", "finetune_s", "total_s", "peak_rss_mb", "predict_ms_per_item")


@dataclass(kw_only=True)
class Summary:
    """One strategy at one size, over its seeds (JSON: ``<value>_mean`` and ``<value>_std`` keys)."""

    strategy: str
    family: str
    size: str
    n_seeds: int
    n_train: float  # mean over seeds
    accuracy: Stat | None = None
    balanced_accuracy: Stat | None = None
    macro_f1: Stat | None = None
    extract_s: Stat | None = None
    fit_s: Stat | None = None
    finetune_s: Stat | None = None
    total_s: Stat | None = None
    peak_rss_mb: Stat | None = None
    predict_ms_per_item: Stat | None = None
    trainable_params: int | None = None

    def mean(self, key: str) -> float | None:
        """The mean of a metric or cost, None when no seed measured it."""
        stat = getattr(self, key)
        return None if stat is None else stat.mean

    def std(self, key: str) -> float | None:
        stat = getattr(self, key)
        return None if stat is None else stat.std

    def to_dict(self) -> dict:
        out = {"strategy": self.strategy, "family": self.family, "size": self.size, "n_seeds": self.n_seeds,
               "n_train": self.n_train}
        for key in METRICS + COSTS:
            out[f"{key}_mean"], out[f"{key}_std"] = self.mean(key), self.std(key)
        out["trainable_params"] = self.trainable_params
        return out

    @classmethod
    def from_dict(cls, record: dict) -> Summary:
        stats = {key: None if record.get(f"{key}_mean") is None else
                 Stat(record[f"{key}_mean"], record[f"{key}_std"]) for key in METRICS + COSTS}
        return cls(strategy=record["strategy"], family=record["family"], size=record["size"],
                   n_seeds=record["n_seeds"], n_train=record["n_train"],
                   trainable_params=record.get("trainable_params"), **stats)


def summarize(rows: Sequence[Row]) -> list[Summary]:
    """Mean and std (over seeds, ddof=0) per strategy and size, sorted by size then strategy."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.strategy, r.size), []).append(r)
    out = []
    for (strategy, size), group in groups.items():
        stats = {}
        for key in METRICS + COSTS:
            values = [getattr(r, key) for r in group if getattr(r, key) is not None]
            stats[key] = Stat(float(np.mean(values)), float(np.std(values))) if values else None
        tp = [r.trainable_params for r in group if r.trainable_params is not None]
        out.append(Summary(strategy=strategy, family=group[0].family, size=size, n_seeds=len(group),
                           n_train=float(np.mean([r.n_train for r in group])),
                           trainable_params=int(np.mean(tp)) if tp else None, **stats))
    order = {name: i for i, name in enumerate(strategy_order(r.strategy for r in rows))}
    out.sort(key=lambda e: (size_key(e.size), order.get(e.strategy, 99)))
    return out


def strategy_order(strategies) -> list[str]:
    """The strategies present, in :data:`STRATEGY_ORDER`; the layer rows ("frozen: logreg @ block4") by depth
    before :data:`BEST_LAYER`; any others last, in natural order (digits as numbers).

    Examples
    --------
    >>> strategy_order(["frozen: logreg @ block10", "LP-FT", "frozen: logreg @ block2", "frozen: logreg"])
    ['frozen: logreg', 'frozen: logreg @ block2', 'frozen: logreg @ block10', 'LP-FT']
    """
    present = set(strategies)
    layers = sorted((s for s in present if " @ " in s), key=natural_key)
    order = []
    for name in STRATEGY_ORDER:
        if name == BEST_LAYER:
            order += layers
        if name in present:
            order.append(name)
    return order + sorted(present - set(order), key=natural_key)


def natural_key(text: str) -> list:
    """Sort key that orders the numbers inside names by value: ``block2`` before ``block10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
