"""The result of one benchmark table, and its JSON document (schema :data:`SCHEMA`).

    BenchResult
      config: BenchConfig      machine: MachineFacts     splits: SplitRecord
      finetune: FinetuneSetup  extraction: Extraction    lr_selection: LrSelection (LrChoice per mode)
      parity: Parity           rows: [Row]  errors: [Failure]  summary: [Summary]
      conclusion, headline     best_probe: BestProbe     plots: {kind: file name}

:meth:`BenchResult.to_dict` writes the document with the keys and order of every
``featx-bench/1`` report; :meth:`BenchResult.from_dict` (:func:`read_result`) reads one back,
so committed reports render again (``tests/test_bench.py`` checks both on the committed files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..machine import MachineFacts
from .config import BenchConfig
from .rows import OMIT_IF_NONE, Failure, Row, Summary, from_record, row_from_dict, to_record

SCHEMA = "featx-bench/1"


@dataclass(kw_only=True)
class SplitRecord:
    """The training split, the test set and the subsets a table used."""

    train_split: str
    train_items: int
    test: str  # how the test set was drawn, in words
    test_items: int
    classes: list[str]
    test_class_counts: dict[str, int]
    sizes: list[str]
    seeds: list[int]
    finetune_sizes: list[str]
    finetune_seeds: list[int]
    sampling: str


@dataclass(kw_only=True)
class FinetuneSetup:
    """How every fine-tuned row of a table trains."""

    modes: list[str]
    batch_size: int
    optimizer: str
    schedule: str
    steps_rule: str
    augmentation: str
    threads: int
    partial_frozen: str | None = field(default=None, metadata=OMIT_IF_NONE)


@dataclass(kw_only=True)
class Extraction:
    """The feature extraction of the frozen rows, and the per-item rate their extraction cost uses."""

    cache: str
    items: int
    embedded: int
    cached: int
    seconds: float
    per_item_s: float
    per_item_method: str
    batch_size: int
    threads: int


@dataclass(kw_only=True)
class Parity:
    """Largest difference between ONNX Runtime and the torch module on the same inputs."""

    max_abs_diff: float
    items: int | None = field(default=None, metadata=OMIT_IF_NONE)
    inputs: str


@dataclass(kw_only=True)
class LrChoice:
    """The learning rates tried for one fine-tuning mode, their validation accuracy and the one chosen,
    with the epochs (early stopping on the validation accuracy measured after each epoch)."""

    grid: list[float]
    val_accuracy: dict[str, float | None]  # "%g" of the rate -> (best) accuracy, None when it diverged
    chosen: float | None
    seconds: float
    error: str | None = field(default=None, metadata=OMIT_IF_NONE)
    curves: dict[str, list | None] | None = field(default=None, metadata=OMIT_IF_NONE)  # accuracy after each epoch
    epochs: dict[str, int | None] | None = field(default=None, metadata=OMIT_IF_NONE)  # best epoch per rate
    chosen_epochs: int | None = field(default=None, metadata=OMIT_IF_NONE)


@dataclass(kw_only=True)
class LrSelection:
    """The learning-rate choice on a validation split (never the test set), per mode."""

    seed: int
    per_class: int
    train_items: int
    val_items: int
    steps: int
    rule: str
    modes: dict[str, LrChoice]
    max_epochs: int | None = field(default=None, metadata=OMIT_IF_NONE)
    steps_per_epoch: int | None = field(default=None, metadata=OMIT_IF_NONE)

    def to_dict(self) -> dict:
        return {**to_record(self), "modes": {m: to_record(c) for m, c in self.modes.items()}}

    @classmethod
    def from_dict(cls, record: dict) -> LrSelection:
        return from_record(cls, record, modes={m: from_record(LrChoice, c) for m, c in record["modes"].items()})


@dataclass(kw_only=True)
class BestProbe:
    """The probe row whose confusion matrix a report plots (:func:`featx.bench.plots.best_probe`)."""

    strategy: str
    size: str
    seed: int
    accuracy: float
    params: dict
    confusion_matrix: list

    @classmethod
    def of(cls, row: Row) -> BestProbe:
        return cls(strategy=row.strategy, size=row.size, seed=row.seed, accuracy=row.accuracy, params=row.params,
                   confusion_matrix=row.confusion_matrix)


@dataclass(kw_only=True)
class BenchResult:
    """Everything one table measured; :meth:`to_dict` is its JSON document."""

    schema: str = SCHEMA
    dataset: str
    slug: str  # file stem of the report
    modality: str
    backbone: str  # spec name (the cache's model key)
    backbone_source: str
    preprocess: dict
    command: str
    config: BenchConfig
    machine: MachineFacts
    started: str
    memory_method: str
    latency_method: str
    splits: SplitRecord
    finetune: FinetuneSetup
    rows: list[Row] = field(default_factory=list)
    errors: list[Failure] = field(default_factory=list)
    extraction: Extraction | None = None
    lr_selection: LrSelection | None = None
    parity: Parity | None = None
    summary: list[Summary] = field(default_factory=list)
    conclusion: list[str] = field(default_factory=list)
    headline: str | None = None
    finished: str | None = None
    total_seconds: float | None = None
    best_probe: BestProbe | None = None
    plots: dict[str, str] | None = None  # set when the report is written
    load_average_end: list[float] | None = None  # recorded inside "machine"
    layers: dict[str, int] | None = None  # intermediate layers of the frozen rows, {name: dim}, in depth order
    few_shot: dict | None = None  # what the heads are fitted with when no CV is possible (FEW_SHOT_PARAMS)

    def to_dict(self) -> dict:
        machine = self.machine.to_dict()
        if self.load_average_end is not None:
            machine["load_average_end"] = self.load_average_end
        doc = {"schema": self.schema, "dataset": self.dataset, "slug": self.slug, "modality": self.modality,
               "backbone": self.backbone, "backbone_source": self.backbone_source, "preprocess": self.preprocess,
               "command": self.command, "config": self.config.to_dict(), "machine": machine,
               "started": self.started, "memory_method": self.memory_method, "latency_method": self.latency_method,
               "splits": to_record(self.splits), "finetune": to_record(self.finetune),
               "rows": [r.to_dict() for r in self.rows], "errors": [e.to_dict() for e in self.errors]}
        if self.extraction is not None:
            doc["extraction"] = to_record(self.extraction)
        if self.lr_selection is not None:
            doc["lr_selection"] = self.lr_selection.to_dict()
        doc.update({"parity": {} if self.parity is None else to_record(self.parity),
                    "summary": [e.to_dict() for e in self.summary], "conclusion": list(self.conclusion),
                    "headline": self.headline, "finished": self.finished, "total_seconds": self.total_seconds})
        if self.best_probe is not None:
            doc["best_probe"] = to_record(self.best_probe)
        if self.plots is not None:
            doc["plots"] = dict(self.plots)
        if self.layers:
            doc["layers"] = dict(self.layers)
        if self.few_shot:
            doc["few_shot"] = dict(self.few_shot)
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_dict(cls, doc: dict) -> BenchResult:
        """A result from its JSON document (as :meth:`to_dict` writes it)."""
        machine = dict(doc["machine"])
        load_end = machine.pop("load_average_end", None)
        return from_record(
            cls, doc, config=BenchConfig.from_dict(doc["config"]), machine=MachineFacts.from_dict(machine),
            load_average_end=load_end, splits=from_record(SplitRecord, doc["splits"]),
            finetune=from_record(FinetuneSetup, doc["finetune"]), rows=[row_from_dict(r) for r in doc["rows"]],
            errors=[from_record(Failure, e) for e in doc["errors"]],
            extraction=from_record(Extraction, doc["extraction"]) if doc.get("extraction") else None,
            lr_selection=LrSelection.from_dict(doc["lr_selection"]) if doc.get("lr_selection") else None,
            parity=from_record(Parity, doc["parity"]) if doc.get("parity") else None,
            summary=[Summary.from_dict(e) for e in doc["summary"]],
            best_probe=from_record(BestProbe, doc["best_probe"]) if doc.get("best_probe") else None)


def read_result(path) -> BenchResult:
    """The result recorded in a report's JSON file (``benchmarks/results/<dataset>.json``)."""
    return BenchResult.from_dict(json.loads(Path(path).read_text()))
