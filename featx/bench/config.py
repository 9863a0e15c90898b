"""What one benchmark table runs: :class:`BenchConfig`, the stated presets, dataset names and sizes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.defaults import CPU_BATCH_SIZE
from ..errors import ParameterError
from ..torchmodels.finetune import MODES
from ..sources import open_dataset

HEADS = ("logreg", "svm", "knn")
#: C of the baselines' logistic regression: standardised pixels take the grid of featx's standardised logreg
#: head; TF-IDF rows have unit length and need larger C.
BASELINE_C_GRIDS = {"image": (0.001, 0.01, 0.1, 1.0), "text": (0.1, 1.0, 10.0, 100.0)}
DEFAULT_BACKBONES = {"image": "efficientnet-lite0", "text": "all-minilm-l6-v2"}
SHORT_NAMES = {"fashion-mnist": "builtin:fashion-mnist", "fine-foods": "builtin:fine-foods",
               "digits": "builtin:digits"}
DEFAULT_DATASETS = ("builtin:fashion-mnist", "builtin:fine-foods")
#: Seed of the fixed test subset (and of a holdout carved from the training split).
TEST_SEED = 0
DEFAULT_LRS = {
    "head": (3e-2, 1e-2, 3e-3),
    "partial": (1e-3, 3e-4),
    "full": (1e-3, 3e-4),
    "scratch": (3e-3, 1e-3),
    "lp-ft": (3e-4, 1e-4),  # the fine-tuning phase of LP-FT: smaller steps from a fitted probe (Kumar et al. 2022)
}
#: Strategies of the fine-tuned rows: featx.finetune's modes, LP-FT (head only, then full from that head)
#: and SetFit (texts: contrastive fine-tuning of the same encoder + logistic regression, its default recipe).
LP_FT, SETFIT = "lp-ft", "setfit"
BENCH_MODES = (*MODES, LP_FT, SETFIT)
#: Intermediate layers of the frozen rows (``featx export --layers``), by default backbone: stage ends of
#: EfficientNet-Lite0 (24, 40, 80, 112, 192 channels; the final features are its 1280-d head) and every
#: transformer layer of MiniLM but the last (whose pooled output is the final features).
DEFAULT_LAYERS = {"efficientnet-lite0": ("block2", "block4", "block7", "block10", "block14"),
                  "all-minilm-l6-v2": ("layer1", "layer2", "layer3", "layer4", "layer5")}


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark table runs. :func:`preset` gives the stated defaults.

    Sizes are samples per class (``"all"``: the whole training split); with ``proportional`` a size is the
    largest class's items and every other class takes its share (see :func:`featx.bench.splits.class_take`),
    so each subset keeps the training split's class proportions. ``finetune_sizes``
    and ``finetune_seeds`` restrict the (costly) fine-tuned rows; every other row runs at
    every size and seed.
    """

    dataset: str
    backbone: Any = None  # registered name, or a featx.torchmodels.finetune.TorchBackbone (generic path)
    sizes: tuple = (1, 5, 10, 50, 100)
    seeds: tuple[int, ...] = (0, 1, 2)
    test_size: int | None = 1000
    test: str | None = None  # a separate test dataset; default: the builtin's :test split, else a holdout
    test_fraction: float = 0.25
    image_size: int | None = None
    max_length: int | None = None
    heads: tuple[str, ...] = HEADS
    cv: int = 5
    baselines: bool = True
    finetune_modes: tuple[str, ...] = ("head", "partial", "full", "scratch", LP_FT)
    finetune_sizes: tuple | None = None  # None: every size
    finetune_seeds: tuple[int, ...] | None = None  # None: every seed
    lrs: dict = field(default_factory=dict)  # mode -> tuple of learning rates
    lr_select_per_class: int = 50
    val_fraction: float = 0.2
    epochs: float = 10.0  # most epochs of a fine-tuned row: the validation split chooses how many (early stopping)
    min_steps: int = 20
    max_steps: int = 100  # the cost cap of one fine-tuned row; a row that needs more is cut and says so
    batch_size: int | None = None  # default: 32 images, 16 texts
    frozen_blocks: int | None = None
    threads: int = 2
    extract_batch_size: int = CPU_BATCH_SIZE
    cache: str | None = None
    quick: bool = False
    layers: tuple[str, ...] | None = None  # intermediate layers of the frozen rows; None: DEFAULT_LAYERS, () none
    setfit_model: str | None = None  # a sentence-transformers folder; default: the backbone's package folder
    setfit_max_steps: int | None = None  # the cap of SetFit's contrastive steps (its recipe: one epoch of pairs)
    proportional: bool = False  # subsets keep the classes' proportions: size n = the largest class's n items

    def to_dict(self) -> dict:
        """The configuration as recorded in a report (the backbone by its label)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["backbone"] = backbone_label(self.backbone)
        d["lrs"] = {k: list(v) for k, v in self.lrs.items()}
        if not self.proportional:  # the default, left out: reports written before the field read back unchanged
            del d["proportional"]
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_dict(cls, record: dict) -> BenchConfig:
        """The configuration a report recorded (the backbone as its label); lists become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise ParameterError(f"a benchmark config has unknown keys {unknown}; known: {sorted(names)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        values["lrs"] = {k: tuple(v) for k, v in (record.get("lrs") or {}).items()}
        return cls(**values)

    @property
    def run_finetune_seeds(self) -> tuple[int, ...]:
        """The seeds of the fine-tuned rows (``finetune_seeds``, else every seed)."""
        return tuple(self.seeds if self.finetune_seeds is None else self.finetune_seeds)


def _is_torch_backbone(obj) -> bool:
    return type(obj).__name__ == "TorchBackbone"


def backbone_label(backbone) -> str | None:
    """How a report names the backbone: its registered name or path, or ``TorchBackbone(<spec name>)``."""
    if _is_torch_backbone(backbone):
        return f"TorchBackbone({backbone.spec.name})"
    return None if backbone is None else str(backbone)


# Budgets (2 cores, measured; see benchmarks/README.md): a full run of both tables in under 3 hours,
# --quick in under 15 minutes. The costly parts are the fine-tuned rows (their epochs are chosen on the
# validation split, up to `epochs`, and capped at `max_steps` per row), SetFit, and the SVM grid at large sizes.
_PRESETS = {
    # Lite0 at 112 px: ~0.6 s per full fine-tuning step of 32 images, ~0.33 s partial; 150 steps at most
    # (~4.8 epochs of 1000 images).
    ("image", False): dict(sizes=(1, 5, 10, 50, 100, 200), seeds=(0, 1, 2), test_size=1000, image_size=112,
                           finetune_sizes=(1, 10, 100), lr_select_per_class=50, epochs=10.0, min_steps=20,
                           max_steps=150),
    ("image", True): dict(sizes=(1, 10, 50), seeds=(0, 1), finetune_seeds=(0,), test_size=200, image_size=112,
                          finetune_sizes=(10,), lr_select_per_class=10, epochs=4.0, min_steps=10, max_steps=20,
                          cv=3),
    # MiniLM at 128 tokens: ~1.3 s per full fine-tuning step of 16 texts, ~20 ms per predicted text; 60 steps
    # at most (~4.8 epochs of 200 reviews), SetFit 60 steps of 16 pairs, and a 500-review test subset
    # (every fine-tuned model predicts it).
    ("text", False): dict(sizes=(1, 5, 10, 50, 100, 500, "all"), seeds=(0, 1, 2), test_size=500, max_length=128,
                          finetune_sizes=(1, 10, 100), lr_select_per_class=50, epochs=10.0, min_steps=20,
                          max_steps=60, finetune_modes=("head", "partial", "full", "scratch", LP_FT, SETFIT),
                          setfit_max_steps=60),
    ("text", True): dict(sizes=(1, 10, 50), seeds=(0, 1), finetune_seeds=(0,), test_size=300, max_length=128,
                         finetune_sizes=(10,), lr_select_per_class=10, epochs=4.0, min_steps=10, max_steps=15,
                         cv=3, finetune_modes=("head", "partial", "full", "scratch", LP_FT, SETFIT),
                         setfit_max_steps=10),
}


def preset(dataset: str, *, quick: bool = False, modality: str | None = None, **overrides) -> BenchConfig:
    """The stated defaults for a dataset (by modality), with ``overrides`` applied.

    Examples
    --------
    >>> cfg = preset("builtin:fashion-mnist", modality="image")
    >>> cfg.image_size, cfg.sizes[-1], cfg.test_size
    (112, 200, 1000)
    """
    dataset = normalize_dataset_name(dataset)
    if modality is None:
        modality = open_dataset(train_source(dataset)).modality
    values = dict(_PRESETS[(modality, bool(quick))])
    values["lrs"] = dict(DEFAULT_LRS)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "lrs" in overrides and overrides["lrs"]:
        values["lrs"] = {**DEFAULT_LRS, **overrides["lrs"]}
    return BenchConfig(dataset=dataset, quick=bool(quick), **values)


def normalize_dataset_name(name: str) -> str:
    """``fashion-mnist`` -> ``builtin:fashion-mnist``; other names unchanged."""
    return SHORT_NAMES.get(str(name), str(name))


def train_source(dataset: str) -> str:
    """The training split of a builtin without an explicit split; other sources as given."""
    if dataset.startswith("builtin:") and dataset.count(":") == 1:
        return f"{dataset}:train"
    return dataset


def slug(dataset: str) -> str:
    """A file name for a dataset: ``builtin:fashion-mnist`` -> ``fashion-mnist``."""
    text = dataset.split("builtin:", 1)[-1] if dataset.startswith("builtin:") else Path(dataset).stem or dataset
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.replace(":", "-")).strip("-") or "dataset"


def parse_sizes(text: str) -> tuple:
    """``"1,5,10,all"`` -> ``(1, 5, 10, "all")``.

    Examples
    --------
    >>> parse_sizes("1, 5,10,all")
    (1, 5, 10, 'all')
    """
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            out.append("all")
            continue
        try:
            value = int(part)
        except ValueError:
            raise ParameterError(f"sizes must be positive ints or 'all', comma-separated. Got {text!r}.") from None
        if value < 1:
            raise ParameterError(f"sizes must be positive ints or 'all', comma-separated. Got {text!r}.")
        out.append(value)
    if not out:
        raise ParameterError(f"sizes must list at least one size. Got {text!r}.")
    return tuple(out)


def check_config(config: BenchConfig) -> None:
    """Refuse a configuration that cannot run, naming the parameter."""
    if not config.seeds:
        raise ParameterError("The 'seeds' parameter of the benchmark must list at least one seed.")
    unknown = [m for m in config.finetune_modes if m not in BENCH_MODES]
    if unknown:
        raise ParameterError(f"unknown fine-tuning modes {unknown}; known: {list(BENCH_MODES)}")
    unknown = [h for h in config.heads if h not in HEADS]
    if unknown:
        raise ParameterError(f"unknown heads {unknown}; known: {list(HEADS)}")
    for mode in config.finetune_modes:
        if mode != SETFIT and not config.lrs.get(mode):  # SetFit runs its own default recipe
            raise ParameterError(f"no learning rates given for fine-tuning mode {mode!r}")
    if config.test_size is not None and config.test_size < 1:
        raise ParameterError(f"The 'test_size' parameter must be an int in [1, inf) or None. Got {config.test_size!r}.")
    if config.cv < 2:
        raise ParameterError(f"The 'cv' parameter must be an int in [2, inf). Got {config.cv!r} instead.")
    if config.finetune_modes and config.lr_select_per_class < 2:
        raise ParameterError("The 'lr_select_per_class' parameter must be an int in [2, inf) (a validation item "
                             f"per class and at least one to train on). Got {config.lr_select_per_class!r} instead.")
