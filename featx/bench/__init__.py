"""The benchmark: frozen-feature heads against fine-tuned baselines and simple baselines.

One table per dataset, every row on the same test set, the same training subsets and
the same seeds:

- simple baselines: the majority class; logistic regression on raw pixels (images) or
  TF-IDF word 1-2-grams (texts), C chosen by cross-validation on the training subset;
- frozen-feature heads (:mod:`featx.heads`: logistic regression, SVM, kNN, each with its
  model selection on the training subset only; with one item per class, the few-shot default)
  on features from the featx cache (:func:`featx.extraction.extract`, :func:`featx.load_features`), and
  "frozen: best by CV", the head whose cross-validation score is highest (chosen without
  looking at the test set);
- the layer rows: the logistic regression on each intermediate layer the export carries
  (:mod:`featx.specs.layers`), and "frozen: best layer by CV";
- fine-tuned baselines (:mod:`featx.torchmodels.finetune`): head-only, partial, full, LP-FT, and the same
  architecture from scratch, with the learning rate and the epochs chosen on a validation split
  carved from a training subset (never the test set); for texts SetFit, its default recipe.

Training sets are nested per seed: for each seed, each class is shuffled once and a
subset of ``n`` per class takes the first ``n`` of each class, so larger subsets contain
smaller ones. The test set is one stratified subset of the test split, drawn with seed 0,
for the whole table.

Measured per row: accuracy, balanced accuracy, macro-F1, wall time split into
extraction / head selection+fit / fine-tuning, peak resident memory above the row's start
(sampled every 50 ms by a thread, with psutil), trainable parameters, and prediction
latency per item (raw item -> label, in batches).

The package, one module per concern, along the data flow::

    config.py      BenchConfig, the stated presets, dataset names, sizes
      -> splits.py     training split, fixed test set, nested Subset per size and seed
      -> models.py     the ONNX model (frozen rows) and its torch module (fine-tuned rows), parity
      -> table.py      Context (what runners read), Table (rows and failures they write)
         runners, one per family, each adding typed rows to the table:
           baselines.py   majority class; raw pixels / TF-IDF + logreg
           frozen.py      features via the featx cache (every layer); heads; "frozen: best by CV"; layer rows
           finetuned.py   learning rate and epochs chosen; head only, partial, full, from scratch, LP-FT
           peers.py       SetFit (texts): its default recipe on the same encoder
         meter.py        wall time and peak memory of each row
      -> rows.py       Row types, Failure, Summary over seeds (summarize)
      -> conclusion.py sentences computed from the summary
      -> result.py     BenchResult: the whole table; its JSON document, read back by read_result
      -> plots.py, report.py   PNGs and the Markdown report (formatting.py: how numbers are written)
    run.py         run_benchmark: the phases above, in order
    progress.py    Progress: the one channel of progress lines, and a bar over the rows
    featx/machine.py   machine facts (CPU, cores, memory, load, versions), shared with doctor

:func:`run_benchmark` returns a :class:`BenchResult` (also written as JSON) and writes a
Markdown report with plots; its conclusion is computed from the numbers.

A new strategy takes: a runner (``<name>_row(ctx, subset, ...) -> Row`` and
``run_<name>(ctx, subset, table, ...)``, in its family's module or a module of its own), called
from :func:`run_benchmark`'s phase; a :class:`Row` subclass in ``rows.py`` when it measures
something new (it reads back by its keys); its name in ``rows.STRATEGY_ORDER``; a plot of its own
is one more function in ``plots.py``.
"""

from .conclusion import conclude
from .config import (
    BASELINE_C_GRIDS,
    DEFAULT_BACKBONES,
    DEFAULT_DATASETS,
    DEFAULT_LRS,
    HEADS,
    BenchConfig,
    backbone_label,
    check_config,
    normalize_dataset_name,
    parse_sizes,
    preset,
    slug,
    train_source,
)
from .meter import Meter, memory_method
from .models import BenchBackbone, check_parity, prepare_backbone
from .plots import best_probe
from .report import render_markdown, write_outputs
from .result import SCHEMA, BenchResult, read_result
from .rows import FAMILIES, FT_MODE_LABELS, Failure, Row, Summary, scores, summarize
from .progress import Progress
from .run import run_benchmark
from .splits import Splits, Subset, load_splits, resolve_sizes, size_label, train_positions, training_subset

__all__ = [
    "BASELINE_C_GRIDS", "DEFAULT_BACKBONES", "DEFAULT_DATASETS", "DEFAULT_LRS", "FAMILIES", "FT_MODE_LABELS", "HEADS",
    "SCHEMA", "BenchBackbone", "BenchConfig", "BenchResult", "Failure", "Meter", "Progress", "Row", "Splits",
    "Subset", "Summary", "backbone_label", "best_probe", "check_config", "check_parity", "conclude", "load_splits",
    "memory_method", "normalize_dataset_name", "parse_sizes", "prepare_backbone", "preset", "read_result",
    "render_markdown", "resolve_sizes", "run_benchmark", "scores", "size_label", "slug", "summarize",
    "train_positions", "train_source", "training_subset", "write_outputs",
]
