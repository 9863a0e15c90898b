"""The benchmark: frozen-feature heads against fine-tuned baselines and simple baselines.

One table per dataset, every row on the same test set, the same training subsets and
the same seeds:

- simple baselines: the majority class; logistic regression on raw pixels (images) or
  TF-IDF word 1-2-grams (texts), C chosen by cross-validation on the training subset;
- frozen-feature heads (:mod:`featx.heads`: logistic regression, SVM, kNN, each with its
  model selection on the training subset only) on features from the featx cache
  (:func:`featx.extract`, :func:`featx.load_features`), and "frozen: best by CV", the
  head whose cross-validation score is highest (chosen without looking at the test set);
- fine-tuned baselines (:mod:`featx.finetune`): head-only, partial, full, and the same
  architecture from scratch, with the learning rate chosen on a validation split carved
  from a training subset (never the test set).

Training sets are nested per seed: for each seed, each class is shuffled once and a
subset of ``n`` per class takes the first ``n`` of each class, so larger subsets contain
smaller ones. The test set is one stratified subset of the test split, drawn with seed 0,
for the whole table.

Measured per row: accuracy, balanced accuracy, macro-F1, wall time split into
extraction / head selection+fit / fine-tuning, peak resident memory above the row's start
(sampled every 50 ms by a thread, with psutil), trainable parameters, and prediction
latency per item (raw item -> label, in batches).

:func:`run_benchmark` returns the result as a dict (also written as JSON) and writes a
Markdown report with plots; its conclusion is computed from the numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backbone import DEFAULT_BATCH_SIZE
from .errors import FeatxError, ParameterError
from .files import write_atomically, write_text_atomically

SCHEMA = "featx-bench/1"
FAMILIES = ("baseline", "frozen", "finetune")
HEADS = ("logreg", "svm", "knn")
#: C of the baselines' logistic regression: standardised pixels take the grid of featx's standardised logreg
#: head; TF-IDF rows have unit length and need larger C.
BASELINE_C_GRIDS = {"image": (0.001, 0.01, 0.1, 1.0), "text": (0.1, 1.0, 10.0, 100.0)}
DEFAULT_BACKBONES = {"image": "efficientnet-lite0", "text": "all-minilm-l6-v2"}
SHORT_NAMES = {"fashion-mnist": "builtin:fashion-mnist", "fine-foods": "builtin:fine-foods",
               "digits": "builtin:digits"}
DEFAULT_DATASETS = ("builtin:fashion-mnist", "builtin:fine-foods")
TEST_SEED = 0
RAW_MAX_PIXELS = 64 * 64
RAW_SIZE = 32
MEMORY_INTERVAL_S = 0.05
FT_MODE_LABELS = {"head": "fine-tune: head only", "partial": "fine-tune: partial", "full": "fine-tune: full",
                  "scratch": "from scratch"}


# =========================================================================== config
@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark table runs. :func:`preset` gives the stated defaults.

    Sizes are samples per class (``"all"``: the whole training split). ``finetune_sizes``
    and ``finetune_seeds`` restrict the (costly) fine-tuned rows; every other row runs at
    every size and seed.
    """

    dataset: str
    backbone: Any = None  # registered name, or a featx.finetune.TorchBackbone (generic path)
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
    finetune_modes: tuple[str, ...] = ("head", "partial", "full", "scratch")
    finetune_sizes: tuple | None = None  # None: every size
    finetune_seeds: tuple[int, ...] | None = None  # None: every seed
    lrs: dict = field(default_factory=dict)  # mode -> tuple of learning rates
    lr_select_per_class: int = 50
    val_fraction: float = 0.2
    epochs: float = 10.0
    min_steps: int = 20
    max_steps: int = 100
    batch_size: int | None = None  # default: 32 images, 16 texts
    frozen_blocks: int | None = None
    threads: int = 2
    extract_batch_size: int = DEFAULT_BATCH_SIZE
    cache: str | None = None
    quick: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self) if not _is_torch_backbone(self.backbone) else {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["backbone"] = backbone_label(self.backbone)
        d["lrs"] = {k: list(v) for k, v in self.lrs.items()}
        return json.loads(json.dumps(d, default=str))


def _is_torch_backbone(obj) -> bool:
    return type(obj).__name__ == "TorchBackbone"


def backbone_label(backbone) -> str | None:
    if _is_torch_backbone(backbone):
        return f"TorchBackbone({backbone.spec.name})"
    return None if backbone is None else str(backbone)


DEFAULT_LRS = {
    "head": (3e-2, 1e-2, 3e-3),
    "partial": (1e-3, 3e-4),
    "full": (1e-3, 3e-4),
    "scratch": (3e-3, 1e-3),
}

# Budgets (2 cores, measured; see benchmarks/README.md): a full run of both tables in about an hour,
# --quick in under 10 minutes. The costly parts are the fine-tuned rows and the SVM grid at large sizes.
_PRESETS = {
    # Lite0 at 112 px: ~0.6 s per full fine-tuning step of 32 images, ~0.33 s partial; 100 steps at most.
    ("image", False): dict(sizes=(1, 5, 10, 50, 100, 200), seeds=(0, 1, 2), test_size=1000, image_size=112,
                           finetune_sizes=(1, 10, 100), lr_select_per_class=50, epochs=10.0, min_steps=20,
                           max_steps=100),
    ("image", True): dict(sizes=(1, 10, 50), seeds=(0, 1), finetune_seeds=(0,), test_size=200, image_size=112,
                          finetune_sizes=(10,), lr_select_per_class=10, epochs=10.0, min_steps=10, max_steps=20,
                          cv=3),
    # MiniLM at 128 tokens: ~1.3 s per full fine-tuning step of 16 texts, ~20 ms per predicted text; 40 steps
    # at most, and a 500-review test subset (every fine-tuned model predicts it).
    ("text", False): dict(sizes=(1, 5, 10, 50, 100, 500, "all"), seeds=(0, 1, 2), test_size=500, max_length=128,
                          finetune_sizes=(1, 10, 100), lr_select_per_class=50, epochs=10.0, min_steps=20,
                          max_steps=40),
    ("text", True): dict(sizes=(1, 10, 50), seeds=(0, 1), finetune_seeds=(0,), test_size=300, max_length=128,
                         finetune_sizes=(10,), lr_select_per_class=10, epochs=10.0, min_steps=10, max_steps=15,
                         cv=3),
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
        from .sources import open_dataset

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
    """``"1,5,10,all"`` -> ``(1, 5, 10, "all")``."""
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
    from .finetune import MODES

    if not config.seeds:
        raise ParameterError("The 'seeds' parameter of the benchmark must list at least one seed.")
    unknown = [m for m in config.finetune_modes if m not in MODES]
    if unknown:
        raise ParameterError(f"unknown fine-tuning modes {unknown}; known: {list(MODES)}")
    unknown = [h for h in config.heads if h not in HEADS]
    if unknown:
        raise ParameterError(f"unknown heads {unknown}; known: {list(HEADS)}")
    for mode in config.finetune_modes:
        if not config.lrs.get(mode):
            raise ParameterError(f"no learning rates given for fine-tuning mode {mode!r}")
    if config.test_size is not None and config.test_size < 1:
        raise ParameterError(f"The 'test_size' parameter must be an int in [1, inf) or None. Got {config.test_size!r}.")
    if config.cv < 2:
        raise ParameterError(f"The 'cv' parameter must be an int in [2, inf). Got {config.cv!r} instead.")
    if config.finetune_modes and config.lr_select_per_class < 2:
        raise ParameterError("The 'lr_select_per_class' parameter must be an int in [2, inf) (a validation item "
                             f"per class and at least one to train on). Got {config.lr_select_per_class!r} instead.")


# =========================================================================== measuring
def _rss() -> int | None:
    """Resident memory of this process and its child processes (joblib workers), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total


def memory_method() -> str:
    if _rss() is not None:
        return (f"peak resident set size (RSS, this process + its child processes such as joblib workers) above "
                f"the row's starting RSS, sampled every {MEMORY_INTERVAL_S * 1000:.0f} ms by a background thread "
                "(psutil)")
    return ("rise of the process's peak RSS (resource.getrusage ru_maxrss) during the row: "
            "0 unless the row sets a new high-water mark (psutil not installed)")


class Meter:
    """Wall time and peak memory of a block of work (see :func:`memory_method`)."""

    def __init__(self, interval: float = MEMORY_INTERVAL_S):
        self.interval = interval
        self.seconds = 0.0
        self.peak_mb = 0.0

    def __enter__(self):
        self._start_rss = _rss()
        self._peak = self._start_rss or 0
        self._stop = threading.Event()
        if self._start_rss is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            import resource

            self._start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self._t0 = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            rss = _rss()
            if rss and rss > self._peak:
                self._peak = rss

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        if self._start_rss is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss() or 0)
            self.peak_mb = max(0.0, (self._peak - self._start_rss) / 2**20)
        else:
            import resource

            self.peak_mb = max(0.0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start_max) / 1024)
        return False


def machine_info() -> dict:
    """CPU model, cores, memory, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for dist in ("featx", "numpy", "scikit-learn", "onnxruntime", "onnxruntime-gpu", "onnx", "torch",
                 "transformers", "tokenizers", "efficientnet-lite-pytorch", "h5py", "psutil"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": mem_gib, "load_average": load,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions}


def machine_line(info: dict) -> str:
    v = info["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("featx", "torch", "onnxruntime", "onnxruntime-gpu", "scikit-learn",
                                             "numpy", "transformers") if k in v)
    return (f"{info['cpu']}, {info['usable_cores']} usable cores, {info['memory_gib']} GiB RAM; "
            f"Python {info['python']}; {libs}")


# =========================================================================== data
@dataclass
class Splits:
    train: Any  # Dataset: the whole training split
    test: Any  # Dataset: the fixed test subset
    test_note: str
    orders: dict  # seed -> list (per class) of positions in train, shuffled
    classes: tuple[str, ...]


def load_splits(config: BenchConfig) -> Splits:
    """The training split, the fixed test subset and each seed's per-class order."""
    from .sources import make_dataset, open_dataset, subset

    train = open_dataset(train_source(config.dataset))
    if train.classes is None:
        raise ParameterError(f"the benchmark needs a labelled dataset; {train.name} has no labels")
    if config.test:
        test = open_dataset(config.test)
        note = f"{test.name}"
    elif config.dataset.startswith("builtin:") and config.dataset.count(":") == 1:
        test = open_dataset(f"{config.dataset}:test")
        note = f"{test.name}"
    else:  # carve a stratified holdout
        n_test = max(len(train.classes), int(round(config.test_fraction * len(train))))
        test = subset(train, n_test, seed=TEST_SEED)
        held = set(test.ids())
        train = make_dataset(train.name, train.modality, [i for i in train.items if i.id not in held])
        note = f"a stratified {config.test_fraction:.0%} holdout of {train.name} (seed {TEST_SEED})"
    full_test = len(test)
    if config.test_size is not None and len(test) > config.test_size:
        test = subset(test, config.test_size, seed=TEST_SEED)
        note += f", stratified subset of {len(test)} of its {full_test} items (seed {TEST_SEED})"
    else:
        note += f", all {len(test)} items"
    unknown = sorted(set(test.classes or ()) - set(train.classes))
    if unknown:
        raise ParameterError(f"test classes {unknown[:5]} never occur in the training split {train.name}")
    labels = [item.label for item in train.items]
    by_class = {c: [] for c in train.classes}
    for pos, label in enumerate(labels):
        by_class[label].append(pos)
    orders = {}
    for seed in sorted(set(config.seeds) | set(config.finetune_seeds or ())):
        rng = np.random.default_rng(seed)
        orders[seed] = [list(np.asarray(by_class[c])[rng.permutation(len(by_class[c]))]) for c in train.classes]
    return Splits(train, test, note, orders, tuple(train.classes))


def train_positions(splits: Splits, seed: int, size) -> list[int]:
    """Positions (sorted) of the nested training subset: the first ``size`` of each class."""
    if size == "all":
        return list(range(len(splits.train)))
    return sorted(int(p) for order in splits.orders[seed] for p in order[:int(size)])


def resolve_sizes(splits: Splits, sizes: Sequence) -> list:
    """Sizes in increasing order, dropping any that gives the same subset as a smaller one
    (every class exhausted)."""
    kept, seen = [], set()
    order = splits.orders[min(splits.orders)]
    for size in sorted(set(sizes), key=_size_key):
        n = len(splits.train) if size == "all" else sum(min(int(size), len(o)) for o in order)
        if n not in seen:
            seen.add(n)
            kept.append(size)
    return kept


def size_label(size) -> str:
    return "all" if size == "all" else str(size)


# =========================================================================== backbones
@dataclass
class BenchBackbone:
    name: str  # name of the (possibly overridden) spec: the cache's model key
    onnx_path: Path
    spec: Any  # BackboneSpec used by every row (frozen and fine-tuned)
    torch_backbone: Any = None  # featx.finetune.TorchBackbone (loaded lazily)
    parity: dict = field(default_factory=dict)
    source: str = ""


def bench_models_dir() -> Path:
    from .registry import featx_home

    return featx_home() / "bench-models"


def prepare_backbone(config: BenchConfig, modality: str, models_dir=None, need_torch: bool = True) -> BenchBackbone:
    """The ONNX model for the frozen rows and the torch module for the fine-tuned rows, same preprocessing.

    A preprocessing override (``image_size``/``max_length``) copies the exported ONNX into
    ``$FEATX_HOME/bench-models`` with a spec whose preprocessing is the override
    (:func:`featx.export.write_spec`): a different spec name and fingerprint, so cached
    features of the two never mix. A ``TorchBackbone`` is exported there with
    :func:`featx.export.export_module` (parity-checked).
    """
    from .export import export_module, read_spec_file, spec_path_for, write_spec
    from .finetune import TorchBackbone, load_torch_backbone, override_preprocess

    models_dir = Path(models_dir) if models_dir else bench_models_dir()
    backbone = config.backbone or DEFAULT_BACKBONES[modality]
    if isinstance(backbone, TorchBackbone):
        spec = override_preprocess(backbone.spec, image_size=config.image_size, max_length=config.max_length)
        tb = dataclasses.replace(backbone, spec=spec)
        result = export_module(tb.module, spec, models_dir / "generic", tokenizer_json=tb.tokenizer_json)
        spec = spec.replace(dim=int(read_spec_file(result.spec_path)["spec"]["dim"]))
        tb.spec = spec
        return BenchBackbone(spec.name, result.onnx_path, spec, tb,
                             {"max_abs_diff": result.max_abs_diff, "inputs": "featx export parity inputs"},
                             "torch module exported by the benchmark")
    from .backbone import Backbone, resolve_onnx

    if need_torch and (str(backbone).endswith(".onnx") or Path(str(backbone)).is_file()):
        raise ParameterError(
            f"fine-tuned rows need the backbone in PyTorch, and {backbone} is an ONNX file: use a registered "
            "name (featx models), a featx.finetune.TorchBackbone from Python, or --modes none for frozen rows only")
    original = resolve_onnx(backbone)
    base = Backbone(original, threads=1)
    if base.modality != modality:
        raise ParameterError(f"backbone {base.name!r} is a {base.modality} model; the dataset holds {modality}s")
    spec = override_preprocess(base.spec, image_size=config.image_size, max_length=config.max_length)
    if spec == base.spec:
        onnx_path, source = original, f"{original}"
    else:
        tag = f"{spec.preprocess.size}px" if modality == "image" else f"len{spec.preprocess.max_length}"
        spec = spec.replace(name=f"{base.spec.name}-{tag}")
        models_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = models_dir / f"{spec.file_stem}.onnx"
        record = read_spec_file(spec_path_for(onnx_path)) if (
            onnx_path.is_file() and spec_path_for(onnx_path).is_file()) else None
        if not (record and record["onnx"]["sha256"] == base.sha256 and record["spec"] == spec.to_dict()):
            write_atomically(onnx_path, lambda tmp: shutil.copyfile(original, tmp))
            write_spec(onnx_path, spec, tokenizer_json=getattr(base, "tokenizer_path", None))
        source = f"{original}, preprocessing overridden to {spec.preprocess.to_dict()}"
    bb = BenchBackbone(spec.name, onnx_path, spec, None, {}, source)
    if need_torch:
        tb = load_torch_backbone(backbone)
        bb.torch_backbone = dataclasses.replace(tb, spec=spec)
    return bb


def check_parity(bb: BenchBackbone, items: Sequence, threads: int) -> dict:
    """ONNX Runtime (frozen rows) vs the torch module (fine-tuned rows) on a few real items."""
    from .backbone import Backbone
    from .finetune import _Inputs, _threads, require_torch

    torch = require_torch()
    onnx_features = Backbone(bb.onnx_path, threads=threads).embed(list(items))
    tb = bb.torch_backbone
    with _threads(threads):
        data = _Inputs(items, bb.spec, tb.tokenizer_json)
        tb.module.eval()
        with torch.no_grad():
            torch_features = tb.module(*data.batch(np.arange(len(items)))).numpy()
    diff = float(np.abs(onnx_features - torch_features).max())
    return {"max_abs_diff": diff, "items": len(items),
            "inputs": f"{len(items)} training items at the benchmark's preprocessing"}


# =========================================================================== metrics
def scores(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and the confusion matrix (rows: true, columns: predicted,
    in ``classes`` order), from :func:`featx.evaluate.evaluate_predictions`."""
    from .evaluate import evaluate_predictions

    y_true = np.asarray([str(v) for v in y_true], dtype=object)
    y_pred = np.asarray([str(v) for v in y_pred], dtype=object)
    report = evaluate_predictions(y_true, y_pred, labels=list(classes))
    return {k: report[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "confusion_matrix")}


def cv_folds(y, cv: int) -> int:
    """Folds for stratified CV: ``min(cv, smallest class count)``; below 2, no selection."""
    counts = np.unique(np.asarray(y, dtype=object), return_counts=True)[1]
    return int(min(cv, counts.min())) if len(counts) else 0


# =========================================================================== baselines
def raw_pixels(items: Sequence, ids: Sequence[str] | None = None) -> np.ndarray:
    """Raw pixels scaled to [0, 1]: native size when every image shares one of at most 64x64
    pixels, else resized (no crop) to 32x32; one channel when every image is grey."""
    from PIL import Image

    from .decode import decode_image

    decoded = [decode_image(item, item_id=None if ids is None else ids[i]) for i, item in enumerate(items)]
    shapes = {d.shape for d in decoded}
    if len(shapes) != 1 or decoded[0].shape[0] * decoded[0].shape[1] > RAW_MAX_PIXELS:
        decoded = [np.asarray(Image.fromarray(d).resize((RAW_SIZE, RAW_SIZE), Image.Resampling.BILINEAR))
                   for d in decoded]
    grey = all((d[..., 0] == d[..., 1]).all() and (d[..., 1] == d[..., 2]).all() for d in decoded)
    arr = np.stack([d[..., :1] if grey else d for d in decoded]) if decoded else np.empty((0, 1, 1, 1), np.uint8)
    return arr.reshape(len(decoded), -1).astype(np.float32) / 255.0


def baseline_pipeline(modality: str):
    """Logistic regression on standardised raw pixels, or on TF-IDF word 1-2-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(max_iter=2000)
    if modality == "text":
        return make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1), clf)
    return make_pipeline(StandardScaler(), clf)


def fit_selected(pipeline, grid: dict, X, y, cv: int, n_jobs: int | None = None):
    """GridSearchCV (stratified, seeded, accuracy) when every class has 2+ items, else a plain fit.

    BLAS runs one thread per fit (as in :func:`featx.heads.select_head`); ``n_jobs`` fits run in parallel.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from threadpoolctl import threadpool_limits

    k = cv_folds(y, cv)
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if k < 2:
            return pipeline.fit(X, y), {}, None
        search = GridSearchCV(pipeline, grid, cv=StratifiedKFold(k, shuffle=True, random_state=0),
                              scoring="accuracy", refit=True, error_score=np.nan, n_jobs=n_jobs)
        search.fit(X, y)
    return search.best_estimator_, dict(search.best_params_), float(search.best_score_)


# =========================================================================== the run
class Progress:
    def __init__(self, stream=None, quiet: bool = False):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {message}", file=self.stream, flush=True)


def run_benchmark(config: BenchConfig, out_dir="benchmarks/results", *, command: str | None = None,
                  progress: Callable[[str], None] | None = None, write: bool = True) -> dict:
    """Run one benchmark table and write ``<out>/<dataset>.json``, ``.md`` and plots.

    Parameters
    ----------
    config : BenchConfig
        See :func:`preset` for the stated defaults.
    out_dir : path
    command : str, optional
        The command line to record in the report.
    progress : callable, optional
        Called with one line per step (default: print to stderr).
    write : bool
        Write the files (else only return the result).

    Returns
    -------
    dict
        The JSON document (schema ``featx-bench/1``).
    """
    check_config(config)
    say = progress or Progress()
    t_start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    splits = load_splits(config)
    modality = splits.train.modality
    sizes = resolve_sizes(splits, config.sizes)
    ft_sizes = sizes if config.finetune_sizes is None else resolve_sizes(splits, config.finetune_sizes)
    ft_seeds = [s for s in (config.finetune_seeds if config.finetune_seeds is not None else config.seeds)]
    modes = list(config.finetune_modes) if ft_sizes and ft_seeds else []
    batch_size = config.batch_size or (32 if modality == "image" else 16)
    say(f"{config.dataset}: {len(splits.train)} training items, test = {splits.test_note}; sizes {sizes}, "
        f"seeds {list(config.seeds)}")

    machine = machine_info()
    busy = _busy_note(machine)
    if busy:
        say(f"WARNING: {busy}")
    bb = prepare_backbone(config, modality, need_torch=bool(modes))
    say(f"backbone {bb.name}: {bb.onnx_path}")
    doc: dict = {
        "schema": SCHEMA, "dataset": config.dataset, "slug": slug(config.dataset) + (".quick" if config.quick else ""),
        "modality": modality, "backbone": bb.name, "backbone_source": bb.source,
        "preprocess": bb.spec.preprocess.to_dict(), "command": command or "featx.bench.run_benchmark(...)",
        "config": config.to_dict(), "machine": machine, "started": started,
        "memory_method": memory_method(),
        "latency_method": ("wall time to predict the whole test set from raw items, divided by its size: "
                           "frozen rows = measured extraction time per item + head predict; fine-tuned rows "
                           "= decode, preprocess and forward in batches of 64; baselines = features + predict"),
        "splits": {"train_split": splits.train.name, "train_items": len(splits.train), "test": splits.test_note,
                   "test_items": len(splits.test), "classes": list(splits.classes),
                   "test_class_counts": _counts(splits.test), "sizes": [size_label(s) for s in sizes],
                   "seeds": list(config.seeds), "finetune_sizes": [size_label(s) for s in ft_sizes],
                   "finetune_seeds": ft_seeds if modes else [], "sampling": (
                       "per seed, each class shuffled once; a subset of n per class takes the first n of each "
                       "class (nested subsets); 'all' = the whole training split, the same for every seed, so "
                       "its baseline and frozen rows (deterministic given the subset) run for the first seed only")},
        "finetune": {"modes": modes, "batch_size": batch_size, "optimizer": "AdamW, weight decay 1e-4",
                     "schedule": "cosine decay to 0", "steps_rule": (
                         f"ceil({config.epochs:g} epochs x n / batch), clipped to [{config.min_steps}, "
                         f"{config.max_steps}]"), "augmentation": "none", "threads": config.threads},
        "rows": [], "errors": [],
    }
    y_test = splits.test.labels()
    test_items = [i.ref for i in splits.test.items]

    # ---- phase 1: simple baselines and frozen-feature heads, every size and seed
    # every training item any row of phase 1 uses, across seeds and sizes
    used = sorted({p for seed in config.seeds for s in sizes for p in train_positions(splits, seed, s)})
    features, extraction = {}, {}
    if config.heads:
        features, extraction = _extract_features(config, splits, used, bb, say)
        doc["extraction"] = extraction
        _warm_up_workers(config)
    raw = {}
    if config.baselines and modality == "image":
        with Meter() as m:
            raw_train = raw_pixels([splits.train.items[p].ref for p in used])
        raw = {"rows": dict(zip(used, range(len(used)))), "X": raw_train,
               "per_item_s": m.seconds / max(1, len(used))}
    for size in sizes:
        # 'all' is the same subset for every seed, and heads and baselines are deterministic given their
        # subset (seeded folds): one seed says it all.
        for seed in (config.seeds[:1] if size == "all" else config.seeds):
            base, items, y_train, positions = _subset(splits, seed, size)
            if config.baselines:
                _run_baselines(doc, base, modality, items, positions, y_train, splits, raw, config, say)
            if config.heads:
                _run_heads(doc, base, items, y_train, features, extraction, splits, config, say)

    # ---- phase 2: fine-tuning (same backbone, same preprocessing: checked), learning rates chosen first
    if modes:
        sample = [splits.train.items[p].ref for p in train_positions(splits, ft_seeds[0], 1)][:4]
        bb.parity = check_parity(bb, sample, config.threads)
        say(f"parity ONNX Runtime vs torch at the benchmark's preprocessing: max |diff| = "
            f"{bb.parity['max_abs_diff']:.2e}")
        if "partial" in modes:
            from .finetune import frozen_prefix

            _, k, n_blocks = frozen_prefix(bb.torch_backbone, config.frozen_blocks)
            doc["finetune"]["partial_frozen"] = f"stem + first {k} of {n_blocks} blocks"
        doc["lr_selection"], chosen_lr = _select_learning_rates(config, splits, bb, modes, batch_size, ft_seeds[0],
                                                                say)
        for mode, rec in doc["lr_selection"]["modes"].items():
            if rec.get("error"):
                doc["errors"].append({"size": "-", "seed": ft_seeds[0], "strategy": FT_MODE_LABELS[mode],
                                      "error": rec["error"]})
        for size in ft_sizes:
            for seed in ft_seeds:
                base, items, y_train, _ = _subset(splits, seed, size)
                for mode in modes:
                    if mode in chosen_lr:
                        _run_finetune(doc, base, mode, chosen_lr[mode], items, y_train, test_items, y_test,
                                      splits, bb, config, batch_size, say)
    doc["parity"] = bb.parity

    doc["summary"] = summarize(doc["rows"])
    doc["conclusion"], doc["headline"] = conclude(doc)
    doc["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        doc["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        pass
    doc["total_seconds"] = time.perf_counter() - t_start
    if write:
        write_outputs(doc, out_dir)
        say(f"wrote {Path(out_dir) / (doc['slug'] + '.json')} and {Path(out_dir) / (doc['slug'] + '.md')}")
    return doc


def _subset(splits, seed, size):
    positions = train_positions(splits, seed, size)
    items = [splits.train.items[p] for p in positions]
    y_train = np.array([i.label for i in items], dtype=object)
    base = {"size": size_label(size), "seed": int(seed), "n_train": len(items)}
    return base, items, y_train, positions


def _warm_up_workers(config) -> None:
    """Start joblib's worker processes before any timed row (their start-up is not a head's cost)."""
    import warnings

    from . import heads as heads_module

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    y = np.array(["a", "b"] * 10, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads_module.select_head("logreg", X, y, cv=2, n_jobs=config.threads)


def _counts(dataset) -> dict:
    labels, counts = np.unique(dataset.labels().astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(labels, counts)}


def _extract_features(config, splits, positions, bb, say):
    """Extract (or reuse) the features of the training items at ``positions`` and of the test set."""
    import featx
    from .backbone import Backbone
    from .registry import featx_home
    from .sources import make_dataset

    items = [splits.train.items[p] for p in positions] + list(splits.test.items)
    pool = make_dataset(f"featx-bench:{config.dataset}", splits.train.modality, items)
    cache = Path(config.cache) if config.cache else featx_home() / "bench-cache" / slug(config.dataset)
    say(f"extracting {len(pool)} items ({len(positions)} train + {len(splits.test)} test) with {bb.name} -> {cache}")
    report = featx.extract(pool, model=str(bb.onnx_path), cache=cache, batch_size=config.extract_batch_size,
                           threads=config.threads, progress=False)
    X, _, ids = featx.load_features(cache, model=bb.name, strict=True)
    lookup = {str(i): k for k, i in enumerate(ids)}
    missing = [i.id for i in items if i.id not in lookup]
    if missing:
        raise FeatxError(f"{len(missing)} benchmark item(s) have no features in {cache} (e.g. {missing[:3]})")
    if report.embedded >= 64:
        per_item = report.seconds / report.embedded
        how = f"featx.extract of {report.embedded} items (decode + preprocess + ONNX Runtime + cache commit)"
    else:  # everything was cached already: time the backbone on a sample
        sample = [i.ref for i in items[:64]]
        backbone = Backbone(bb.onnx_path, threads=config.threads)
        backbone.embed(sample[:8], batch_size=config.extract_batch_size)  # warm-up
        t = time.perf_counter()
        backbone.embed(sample, batch_size=config.extract_batch_size)
        per_item = (time.perf_counter() - t) / len(sample)
        how = f"the cache was warm; Backbone.embed timed on {len(sample)} items (decode + preprocess + ONNX Runtime)"
    say(f"extraction: {report.embedded} embedded, {report.cached} cached, {per_item * 1000:.2f} ms/item")
    extraction = {"cache": str(cache), "items": len(pool), "embedded": report.embedded, "cached": report.cached,
                  "seconds": report.seconds, "per_item_s": per_item, "per_item_method": how,
                  "batch_size": config.extract_batch_size, "threads": config.threads}
    return {"X": X, "lookup": lookup}, extraction


def _rows_of(features, items):
    return features["X"][[features["lookup"][i.id] for i in items]]


def _add_row(doc, base, strategy, family, metrics, **values):
    row = {"strategy": strategy, "family": family, **base, "accuracy": metrics["accuracy"],
           "balanced_accuracy": metrics["balanced_accuracy"], "macro_f1": metrics["macro_f1"],
           "extract_s": 0.0, "fit_s": 0.0, "finetune_s": 0.0, "peak_rss_mb": None, "trainable_params": None,
           "predict_ms_per_item": None, "params": {}, "cv_score": None,
           "confusion_matrix": metrics["confusion_matrix"]}
    row.update(values)
    row["total_s"] = row["extract_s"] + row["fit_s"] + row["finetune_s"]
    doc["rows"].append(row)
    return row


def _guard(doc, base, strategy, say, fn):
    try:
        return fn()
    except (FeatxError, ValueError, RuntimeError, ArithmeticError) as e:  # a failed row never ends the run
        doc["errors"].append({**base, "strategy": strategy, "error": f"{type(e).__name__}: {e}"})
        say(f"  FAILED {strategy} size={base['size']} seed={base['seed']}: {type(e).__name__}: {e}")
        return None


def _run_baselines(doc, base, modality, items, positions, y_train, splits, raw, config, say):
    from sklearn.dummy import DummyClassifier

    y_test = splits.test.labels()
    n_test = len(splits.test)

    def majority():
        with Meter() as m:
            clf = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train)
        t = time.perf_counter()
        pred = clf.predict(np.zeros((n_test, 1)))
        latency = (time.perf_counter() - t) / n_test
        return _add_row(doc, base, "majority class", "baseline", scores(y_test, pred, splits.classes),
                        fit_s=m.seconds, peak_rss_mb=m.peak_mb, trainable_params=0,
                        predict_ms_per_item=latency * 1000, params={"predicts": str(pred[0])})

    def logreg():
        if modality == "image":
            X = raw["X"][[raw["rows"][p] for p in positions]]
            strategy, extract_s = "raw pixels + logreg", raw["per_item_s"] * len(items)
        else:
            X = [i.ref for i in items]
            strategy, extract_s = "TF-IDF + logreg", 0.0
        grid = {"logisticregression__C": list(BASELINE_C_GRIDS[modality])}
        with Meter() as m:
            est, params, cv_score = fit_selected(baseline_pipeline(modality), grid, X, y_train, config.cv,
                                                 n_jobs=config.threads)
        t = time.perf_counter()
        X_test = raw_pixels([i.ref for i in splits.test.items]) if modality == "image" else \
            [i.ref for i in splits.test.items]
        pred = est.predict(X_test)
        latency = (time.perf_counter() - t) / n_test
        clf = est[-1]
        n_params = int(clf.coef_.size + clf.intercept_.size)
        return _add_row(doc, base, strategy, "baseline", scores(y_test, pred, splits.classes), extract_s=extract_s,
                        fit_s=m.seconds, peak_rss_mb=m.peak_mb, trainable_params=n_params,
                        predict_ms_per_item=latency * 1000, params=_jsonable(params), cv_score=cv_score,
                        n_features=int(clf.coef_.shape[1]))

    for strategy, fn in (("majority class", majority), ("baseline logreg", logreg)):
        row = _guard(doc, base, strategy, say, fn)
        if row:
            say(f"  size={base['size']:>4} seed={base['seed']} {row['strategy']:<24} acc {row['accuracy']:.3f} "
                f"fit {row['fit_s']:.1f}s")


def _run_heads(doc, base, items, y_train, features, extraction, splits, config, say):
    from . import heads as heads_module

    X = _rows_of(features, items)
    X_test = _rows_of(features, splits.test.items)
    y_test = splits.test.labels()
    per_item = extraction["per_item_s"]
    head_rows = []
    for kind in config.heads:
        def fit_one(kind=kind):
            import warnings

            with Meter() as m, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # fewer folds / no CV: recorded in notes
                sel = heads_module.select_head(kind, X, y_train, cv=config.cv, n_jobs=config.threads, seed=0)
            est = sel.best_estimator
            t = time.perf_counter()
            pred = est.predict(X_test)
            head_latency = (time.perf_counter() - t) / len(X_test)
            cv_score = None if not sel.n_splits or math.isnan(sel.cv_mean) else float(sel.cv_mean)
            return _add_row(doc, base, f"frozen: {kind}", "frozen", scores(y_test, pred, splits.classes),
                            extract_s=per_item * len(items), fit_s=m.seconds, peak_rss_mb=m.peak_mb,
                            trainable_params=_estimator_params(est),
                            predict_ms_per_item=(per_item + head_latency) * 1000,
                            params=_jsonable(sel.best_params), cv_score=cv_score,
                            cv_std=None if cv_score is None else float(sel.cv_std), cv_folds=sel.n_splits or None,
                            notes=list(sel.notes))

        row = _guard(doc, base, f"frozen: {kind}", say, fit_one)
        if row:
            head_rows.append(row)
            say(f"  size={base['size']:>4} seed={base['seed']} {row['strategy']:<24} acc {row['accuracy']:.3f} "
                f"cv {_fmt(row['cv_score'])} fit {row['fit_s']:.1f}s")
    if len(head_rows) > 1:
        # The head a user would pick without the test set: highest CV score (ties: order of config.heads).
        scored = [r for r in head_rows if r["cv_score"] is not None]
        best = max(scored, key=lambda r: r["cv_score"]) if scored else head_rows[0]
        metrics = {k: best[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "confusion_matrix")}
        _add_row(doc, base, "frozen: best by CV", "frozen", metrics, extract_s=best["extract_s"],
                 fit_s=sum(r["fit_s"] for r in head_rows),
                 peak_rss_mb=max((r["peak_rss_mb"] or 0) for r in head_rows),
                 trainable_params=best["trainable_params"], predict_ms_per_item=best["predict_ms_per_item"],
                 cv_score=best["cv_score"], cv_std=best.get("cv_std"), cv_folds=best.get("cv_folds"),
                 params={"head": best["strategy"].split(": ", 1)[1],
                         "chosen_by": "highest CV score" if scored else "no CV possible: the first head",
                         **best["params"]})


def _estimator_params(est) -> int | None:
    """Fitted values of a head: coefficients (linear); support vectors, dual coefficients and the
    sigmoid calibration (SVM); stored training vectors (kNN)."""
    clf = est[-1] if hasattr(est, "steps") else est
    extra = 0
    if hasattr(clf, "calibrated_classifiers_"):
        calibrated = clf.calibrated_classifiers_[0]
        extra = 2 * len(calibrated.calibrators)
        clf = calibrated.estimator
    if hasattr(clf, "support_vectors_"):
        return int(np.size(clf.support_vectors_) + np.size(clf.dual_coef_) + np.size(clf.intercept_)) + extra
    if hasattr(clf, "coef_"):
        return int(np.size(clf.coef_) + np.size(getattr(clf, "intercept_", 0))) + extra
    if hasattr(clf, "_fit_X"):
        return int(np.size(clf._fit_X)) + extra
    return None


def _select_learning_rates(config, splits, bb, modes, batch_size, seed, say):
    """Per mode: train on 80% of a seed's subset of ``lr_select_per_class``, score the other 20%."""
    from .finetune import finetune, steps_for

    per_class = [order[:config.lr_select_per_class] for order in splits.orders[seed]]
    if min(len(o) for o in per_class) < 2:
        raise ParameterError(
            f"learning-rate selection needs 2+ items per class in its subset of {config.lr_select_per_class} "
            "per class; raise --lr-select-per-class")
    val_pos, train_pos = [], []
    for order in per_class:
        n_val = min(len(order) - 1, max(1, int(round(config.val_fraction * len(order)))))
        val_pos += order[:n_val]
        train_pos += order[n_val:]
    tr = [splits.train.items[p] for p in sorted(train_pos)]
    va = [splits.train.items[p] for p in sorted(val_pos)]
    X_tr, y_tr = [i.ref for i in tr], [i.label for i in tr]
    X_va, y_va = [i.ref for i in va], [i.label for i in va]
    steps = steps_for(len(tr), batch_size, config.epochs, config.min_steps, config.max_steps)
    record, chosen = {}, {}
    for mode in modes:
        grid = list(config.lrs[mode])
        results = {}
        t0 = time.perf_counter()
        for lr in grid:
            try:
                r = finetune(bb.torch_backbone, X_tr, y_tr, mode=mode, lr=lr, steps=steps, batch_size=batch_size,
                             seed=seed, val=(X_va, y_va), frozen_blocks=config.frozen_blocks,
                             classes=splits.classes, threads=config.threads, log_every=max(1, steps // 10))
                results[lr] = r.val_accuracy
            except FeatxError as e:  # diverged: never chosen
                results[lr] = None
                say(f"  lr {lr:g} for {mode}: {e}")
            say(f"  lr selection {mode:<8} lr={lr:g}: val accuracy {_fmt(results[lr])}")
        usable = [lr for lr in grid if results[lr] is not None]
        record[mode] = {"grid": grid, "val_accuracy": {f"{lr:g}": results[lr] for lr in grid}, "chosen": None,
                        "seconds": time.perf_counter() - t0}
        if not usable:
            record[mode]["error"] = f"every learning rate in {grid} diverged; mode {mode!r} left out"
            continue
        best = max(usable, key=lambda lr: results[lr])  # ties: the first in the stated grid
        chosen[mode] = record[mode]["chosen"] = best
    meta = {"seed": seed, "per_class": config.lr_select_per_class, "train_items": len(tr), "val_items": len(va),
            "steps": steps, "rule": ("per mode, the learning rate with the highest validation accuracy (ties: the "
                                     "first listed), trained on the other items of the same subset; then used for "
                                     "every size and seed"), "modes": record}
    return meta, chosen


def _run_finetune(doc, base, mode, lr, items, y_train, test_items, y_test, splits, bb, config, batch_size, say):
    from .finetune import finetune, predict, steps_for

    def run():
        steps = steps_for(len(items), batch_size, config.epochs, config.min_steps, config.max_steps)
        with Meter() as m:
            result = finetune(bb.torch_backbone, [i.ref for i in items], y_train, mode=mode, lr=lr, steps=steps,
                              batch_size=batch_size, seed=base["seed"], frozen_blocks=config.frozen_blocks,
                              classes=splits.classes, ids=[i.id for i in items], threads=config.threads,
                              log_every=max(1, steps // 10))
        t = time.perf_counter()
        pred = predict(result, test_items, threads=config.threads)
        latency = (time.perf_counter() - t) / len(test_items)
        losses = [h["loss"] for h in result.history]
        return _add_row(doc, base, FT_MODE_LABELS[mode], "finetune", scores(y_test, pred, splits.classes),
                        finetune_s=result.seconds, peak_rss_mb=m.peak_mb, trainable_params=result.trainable_params,
                        total_params=result.total_params, predict_ms_per_item=latency * 1000,
                        params={"mode": mode, "lr": lr, "steps": result.steps, "batch_size": result.batch_size,
                                "epochs": round(result.steps * result.batch_size / len(items), 2)},
                        loss_first=losses[0], loss_last=losses[-1], seconds_per_step=result.seconds / result.steps)

    row = _guard(doc, base, FT_MODE_LABELS[mode], say, run)
    if row:
        say(f"  size={base['size']:>4} seed={base['seed']} {row['strategy']:<24} acc {row['accuracy']:.3f} "
            f"{row['params']['steps']} steps in {row['finetune_s']:.1f}s (lr {lr:g})")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else repr(o)))


def _fmt(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# =========================================================================== summary and conclusion
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
COSTS = ("extract_s", "fit_s", "finetune_s", "total_s", "peak_rss_mb", "predict_ms_per_item")


def _size_key(size) -> float:
    return math.inf if size == "all" else float(size)


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean and std (over seeds, ddof=0) per strategy and size."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["size"]), []).append(r)
    out = []
    for (strategy, size), group in groups.items():
        entry = {"strategy": strategy, "family": group[0]["family"], "size": size, "n_seeds": len(group),
                 "n_train": float(np.mean([r["n_train"] for r in group]))}
        for key in METRICS + COSTS:
            values = [r[key] for r in group if r.get(key) is not None]
            entry[f"{key}_mean"] = float(np.mean(values)) if values else None
            entry[f"{key}_std"] = float(np.std(values)) if values else None
        tp = [r["trainable_params"] for r in group if r.get("trainable_params") is not None]
        entry["trainable_params"] = int(np.mean(tp)) if tp else None
        out.append(entry)
    order = {name: i for i, name in enumerate(_strategy_order(rows))}
    out.sort(key=lambda e: (_size_key(e["size"]), order.get(e["strategy"], 99)))
    return out


def _strategy_order(rows) -> list[str]:
    fixed = ["majority class", "raw pixels + logreg", "TF-IDF + logreg", "frozen: logreg", "frozen: svm",
             "frozen: knn", "frozen: best by CV", *FT_MODE_LABELS.values()]
    seen = [s for s in fixed if any(r["strategy"] == s for r in rows)]
    return seen + sorted({r["strategy"] for r in rows} - set(seen))


def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def conclude(doc: dict) -> tuple[list[str], str | None]:
    """Sentences computed from the summary: winners per size, regimes, probe vs fine-tuning."""
    summary = doc.get("summary") or summarize(doc["rows"])
    by_size: dict = {}
    for e in summary:
        if e["accuracy_mean"] is not None:
            by_size.setdefault(e["size"], []).append(e)
    lines: list[str] = []
    headline = None
    if not by_size:
        return ["No row produced a result."], None
    sizes = sorted(by_size, key=_size_key)
    winners = {}
    names = {"frozen": "frozen-feature heads", "finetune": "fine-tuning", "baseline": "the simple baselines"}
    for size in sizes:
        ranked = sorted(by_size[size], key=lambda e: -e["accuracy_mean"])
        best = ranked[0]
        winners[size] = best
        # the runner-up from another family: "frozen: best by CV" duplicates a frozen head
        second = next((e for e in ranked if e["family"] != best["family"]), None)
        sentence = f"At {size} samples/class the best is {best['strategy']} ({_pm(best)})"
        if second is not None:
            gap = best["accuracy_mean"] - second["accuracy_mean"]
            noise = max(best["accuracy_std"] or 0.0, second["accuracy_std"] or 0.0)
            within = (" (within one std over seeds: a tie)" if min(best["n_seeds"], second["n_seeds"]) > 1
                      and gap <= noise else "")
            sentence += (f", {100 * gap:.1f} points ahead of the best of {names[second['family']]}, "
                         f"{second['strategy']} ({_pm(second)}){within}")
        lines.append(sentence + ".")
    # Regimes: consecutive sizes won by the same family.
    runs = []
    for size in sizes:
        fam = winners[size]["family"]
        if runs and runs[-1][0] == fam:
            runs[-1][1].append(size)
        else:
            runs.append((fam, [size]))
    if len(runs) == 1:
        lines.append(f"{names[runs[0][0]].capitalize()} win at every size tested "
                     f"({', '.join(map(str, runs[0][1]))} samples/class).")
    else:
        parts = [f"{names[f]} at {_span(s)}" for f, s in runs]
        lines.append("Regimes: " + "; ".join(parts) + " samples/class.")
    # Probe vs full fine-tuning, where both ran.
    probe_name = "frozen: best by CV" if any(e["strategy"] == "frozen: best by CV" for e in summary) else None
    if probe_name is None:
        frozen = [e for e in summary if e["family"] == "frozen"]
        probe_name = frozen[0]["strategy"] if frozen else None
    ft_name = next((FT_MODE_LABELS[m] for m in ("full", "partial", "head")
                    if any(e["strategy"] == FT_MODE_LABELS[m] for e in summary)), None)
    pairs = []
    for size in sizes:
        p = next((e for e in by_size[size] if e["strategy"] == probe_name), None)
        f = next((e for e in by_size[size] if e["strategy"] == ft_name), None)
        if p and f and f["accuracy_mean"] and p["total_s_mean"] is not None:
            pairs.append((size, p, f))
    for size, p, f in pairs:
        ratio_acc = p["accuracy_mean"] / f["accuracy_mean"]
        cost_ratio = (f["total_s_mean"] or 0) / max(p["total_s_mean"], 1e-9)
        cost_text = (f"at 1/{cost_ratio:.0f} of its training cost" if cost_ratio >= 1.5 else
                     f"at {1 / cost_ratio:.1f}x its training cost" if cost_ratio < 1 / 1.5 else
                     "at about the same training cost")
        sentence = (f"At {size} samples/class the probe ({probe_name}) reaches {100 * ratio_acc:.0f}% of "
                    f"{ft_name} accuracy ({_pct(p['accuracy_mean'])} vs {_pct(f['accuracy_mean'])}) {cost_text} "
                    f"({p['total_s_mean']:.1f} s extraction + head vs {f['total_s_mean']:.1f} s fine-tuning on "
                    f"{doc['machine']['usable_cores']} cores).")
        lines.append(sentence)
        if size == pairs[-1][0]:
            headline = sentence
    if pairs:
        size, p, f = pairs[-1]
        if p.get("predict_ms_per_item_mean") and f.get("predict_ms_per_item_mean"):
            lines.append(f"Prediction: {p['predict_ms_per_item_mean']:.2f} ms/item for the probe (extraction + head) "
                         f"vs {f['predict_ms_per_item_mean']:.2f} ms/item for the fine-tuned model.")
    # Scratch and simple baselines against the probe.
    for other in ("from scratch", "raw pixels + logreg", "TF-IDF + logreg"):
        beats = [s for s in sizes
                 if (o := next((e for e in by_size[s] if e["strategy"] == other), None))
                 and (p := next((e for e in by_size[s] if e["strategy"] == probe_name), None))
                 and o["accuracy_mean"] > p["accuracy_mean"]]
        present = [s for s in sizes if any(e["strategy"] == other for e in by_size[s])]
        if present and probe_name:
            if beats:
                lines.append(f"{other} beats the probe at {_span(beats)} samples/class (of {_span(present)} tested).")
            else:
                lines.append(f"{other} never beats the probe (sizes {_span(present)}).")
    if doc.get("errors"):
        lines.append(f"{len(doc['errors'])} row(s) failed and are missing from the table (see 'Failures').")
    return lines, headline


def _pm(entry) -> str:
    """``85.0% ± 1.2%`` (mean ± std over seeds), or ``85.0%`` for one seed."""
    if entry["n_seeds"] > 1 and entry["accuracy_std"] is not None:
        return f"{_pct(entry['accuracy_mean'])} ± {_pct(entry['accuracy_std'])}"
    return _pct(entry["accuracy_mean"])


def _span(sizes) -> str:
    return ", ".join(str(s) for s in sizes)


# =========================================================================== outputs
def write_outputs(doc: dict, out_dir) -> dict:
    """Write ``<slug>.json``, the plots and ``<slug>.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = doc["slug"]
    doc["plots"] = make_plots(doc, out, stem)
    write_text_atomically(out / f"{stem}.json", json.dumps(doc, indent=1, default=str))
    write_text_atomically(out / f"{stem}.md", render_markdown(doc))
    return doc["plots"]


def make_plots(doc: dict, out: Path, stem: str) -> dict:
    """Learning curves, accuracy vs training cost, and the best probe's confusion matrix (PNGs)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    n_classes = len(doc["splits"]["classes"])
    strategies = _strategy_order(doc["rows"])
    styles = _styles(strategies)
    plots = {}

    def xpos(e):
        return e["n_train"] / n_classes if e["size"] == "all" else float(e["size"])

    # 1. learning curves
    fig, ax = plt.subplots(figsize=(10, 5))
    for s in strategies:
        pts = sorted((e for e in summary if e["strategy"] == s and e["accuracy_mean"] is not None), key=xpos)
        if not pts:
            continue
        ax.errorbar([xpos(e) for e in pts], [e["accuracy_mean"] for e in pts],
                    yerr=[e["accuracy_std"] or 0 for e in pts], label=s, capsize=3, **styles[s])
    ax.set_xscale("log")
    ticks = {xpos(e): str(e["size"]) for e in summary}
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("training samples per class (log scale; 'all' at its mean per class)")
    ax.set_ylabel(f"test accuracy (n = {doc['splits']['test_items']})")
    ax.set_title(f"{doc['dataset']}: learning curves (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    plots["learning_curves"] = _save(fig, out / f"{stem}-learning-curves.png")

    # 2. accuracy vs training cost
    fig, ax = plt.subplots(figsize=(10, 5))
    for s in strategies:
        pts = [e for e in summary if e["strategy"] == s and s != "majority class"
               and e["accuracy_mean"] is not None and e["total_s_mean"] is not None]
        if not pts:
            continue
        ax.scatter([max(e["total_s_mean"], 1e-3) for e in pts], [e["accuracy_mean"] for e in pts], label=s,
                   marker=styles[s]["marker"], color=styles[s]["color"])
        for e in pts:
            ax.annotate(str(e["size"]), (max(e["total_s_mean"], 1e-3), e["accuracy_mean"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    majority = [e["accuracy_mean"] for e in summary if e["strategy"] == "majority class"]
    if majority:
        ax.axhline(float(np.mean(majority)), color="#7f7f7f", linestyle="--", linewidth=1, label="majority class")
    ax.set_xscale("log")
    ax.set_xlabel("training cost, s (extraction + head selection/fit + fine-tuning); labels: samples/class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{doc['dataset']}: accuracy vs cost")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    plots["accuracy_vs_cost"] = _save(fig, out / f"{stem}-accuracy-vs-cost.png")

    # 3. confusion matrix of the best probe
    best = best_probe(doc)
    if best is not None:
        cm = np.asarray(best["confusion_matrix"])
        classes = doc["splits"]["classes"]
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
        ax.set_title(f"{best['strategy']} ({best['params'].get('head', '')}), {best['size']}/class, "
                     f"seed {best['seed']}: acc {best['accuracy']:.3f}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
        plots["confusion_matrix"] = _save(fig, out / f"{stem}-confusion.png")
        doc["best_probe"] = {k: best[k] for k in ("strategy", "size", "seed", "accuracy", "params",
                                                  "confusion_matrix")}
    plt.close("all")
    return plots


def best_probe(doc: dict) -> dict | None:
    """The probe row (CV-selected frozen head, else any frozen head) at the largest size, first seed."""
    rows = [r for r in doc["rows"] if r["strategy"] == "frozen: best by CV"] or \
        [r for r in doc["rows"] if r["family"] == "frozen"]
    if not rows:
        return None
    largest = max((r["size"] for r in rows), key=_size_key)
    rows = [r for r in rows if r["size"] == largest]
    return min(rows, key=lambda r: r["seed"])


def _styles(strategies) -> dict:
    palette = {"baseline": ["#7f7f7f", "#bcbd22"], "frozen": ["#1f77b4", "#17becf", "#2ca02c", "#08306b"],
               "finetune": ["#ff7f0e", "#d62728", "#9467bd", "#8c564b"]}
    markers = {"baseline": "s", "frozen": "o", "finetune": "^"}
    used = {k: 0 for k in palette}
    out = {}
    for s in strategies:
        fam = "baseline" if s in ("majority class", "raw pixels + logreg", "TF-IDF + logreg") else \
            "frozen" if s.startswith("frozen") else "finetune"
        color = palette[fam][used[fam] % len(palette[fam])]
        used[fam] += 1
        out[s] = {"color": color, "marker": markers[fam],
                  "linestyle": "--" if fam == "baseline" else ":" if s == "from scratch" else "-",
                  "linewidth": 2.5 if s == "frozen: best by CV" else 1.5}
    return out


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path.name


def render_markdown(doc: dict) -> str:
    """The report: setup, computed conclusion, the table, plots, learning-rate choice, failures."""
    cfg = doc["config"]
    sp = doc["splits"]
    ft = doc["finetune"]
    lines = [f"# Frozen features vs fine-tuning: {doc['dataset']}", ""]
    lines += [f"Command: `{doc['command']}`  ", f"Machine: {machine_line(doc['machine'])}  ",
              f"Run: {doc['started']} → {doc['finished']} ({doc['total_seconds'] / 60:.1f} min)"
              + (" — **quick mode**: few sizes and seeds, tiny step budgets; not the reference numbers"
                 if cfg.get("quick") else ""), ""]
    busy = _busy_note(doc["machine"])
    if busy:
        lines += [f"> **Warning:** {busy}", ""]
    lines += ["## Conclusion (computed from the numbers below)", ""]
    lines += [f"- {c}" for c in doc["conclusion"]]
    lines += ["", "## Setup", ""]
    lines += [
        f"- Training split: {sp['train_split']} ({sp['train_items']} items); sizes per class: "
        f"{', '.join(sp['sizes'])}; seeds {sp['seeds']}. {sp['sampling'].capitalize()}.",
        f"- Test set (the same for every row): {sp['test']}; classes {_class_counts(sp['test_class_counts'])}.",
        f"- Backbone: {doc['backbone']} ({doc['backbone_source']}); preprocessing for every frozen and fine-tuned "
        f"row: `{json.dumps(doc['preprocess'])}`.",
    ]
    if doc.get("extraction"):
        ex = doc["extraction"]
        lines.append(f"- Extraction: {ex['per_item_s'] * 1000:.2f} ms/item ({ex['per_item_method']}); this run "
                     f"embedded {ex['embedded']} and reused {ex['cached']} cached of {ex['items']} items "
                     f"in {ex['seconds']:.1f} s. A frozen row's extraction time = that rate × its training items.")
    if doc.get("parity"):
        lines.append(f"- Same backbone check: ONNX Runtime vs the torch module used for fine-tuning differ by at most "
                     f"{doc['parity']['max_abs_diff']:.1e} on {doc['parity'].get('inputs', '')}.")
    if cfg["heads"]:
        lines.append(f"- Heads: {', '.join(cfg['heads'])} with featx.heads model selection ({cfg['cv']}-fold "
                     "stratified CV on the training subset, fewer folds when a class has fewer items; no selection "
                     "with 1 item per class). 'frozen: best by CV' is the head with the best CV score (its fit time "
                     "counts all heads).")
    lines.append(f"- Baselines: majority class; logistic regression (C in {list(BASELINE_C_GRIDS[doc['modality']])} "
                 "by CV, the heads' folds) on "
                 + ("standardised raw pixels." if doc["modality"] == "image" else "TF-IDF word 1-2-grams."))
    if ft["modes"]:
        lines.append(f"- Fine-tuning ({', '.join(ft['modes'])}) at sizes {', '.join(sp['finetune_sizes'])}, seeds "
                     f"{sp['finetune_seeds']}: {ft['optimizer']}, {ft['schedule']}, batch {ft['batch_size']}, "
                     f"steps = {ft['steps_rule']}, augmentation: {ft['augmentation']}, torch threads: "
                     f"{ft['threads']}" + (f"; partial = {ft['partial_frozen']} frozen" if ft.get("partial_frozen") else "")
                     + ". Fine-tuning time includes decoding/preprocessing the training items; loading the "
                       "pretrained weights (once per run) is not counted.")
    lines.append(f"- Memory: {doc['memory_method']}. Latency: {doc['latency_method']}.")
    lines.append("- Trained params: fine-tuned rows count the parameters that receive gradients in that mode; "
                 "heads count their fitted values (logistic-regression coefficients; SVM support vectors, dual "
                 "coefficients and calibration; kNN's stored training vectors).")
    if doc.get("lr_selection"):
        sel = doc["lr_selection"]
        lines += ["", "### Learning-rate choice (validation split, never the test set)", "",
                  f"Seed {sel['seed']}, {sel['per_class']} per class: {sel['train_items']} train / {sel['val_items']} "
                  f"validation items, {sel['steps']} steps. Rule: {sel['rule']}.", "",
                  "| mode | validation accuracy per lr | chosen | seconds |", "|---|---|---|---:|"]
        for mode, rec in sel["modes"].items():
            accs = ", ".join(f"{lr}: {_fmt(a)}" for lr, a in rec["val_accuracy"].items())
            chosen = "none (all diverged)" if rec["chosen"] is None else f"{rec['chosen']:g}"
            lines.append(f"| {mode} | {accs} | {chosen} | {rec['seconds']:.1f} |")
        lines.append("")
        lines.append("The selection time is not included in the rows' fine-tuning time (which favours fine-tuning "
                     "in the cost comparisons).")
    lines += ["", "## Results (mean ± std over seeds)", "",
              "| samples/class | strategy | n train | seeds | accuracy | balanced acc. | macro-F1 | extraction s "
              "| head/fit s | fine-tune s | total s | peak RSS MB | trained params | predict ms/item |",
              "|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in doc["summary"]:
        lines.append(
            f"| {e['size']} | {e['strategy']} | {e['n_train']:.0f} | {e['n_seeds']} | {_ms(e, 'accuracy')} | "
            f"{_ms(e, 'balanced_accuracy')} | {_ms(e, 'macro_f1')} | {_fmt(e['extract_s_mean'], 1)} | "
            f"{_fmt(e['fit_s_mean'], 1)} | {_fmt(e['finetune_s_mean'], 1)} | {_fmt(e['total_s_mean'], 1)} | "
            f"{_fmt(e['peak_rss_mb_mean'], 0)} | {_int(e['trainable_params'])} | "
            f"{_fmt(e['predict_ms_per_item_mean'])} |")
    plots = doc.get("plots", {})
    lines += ["", "## Plots", ""]
    for key, title in (("learning_curves", "Learning curves"), ("accuracy_vs_cost", "Accuracy vs training cost"),
                       ("confusion_matrix", "Confusion matrix of the best probe")):
        if key in plots:
            lines += [f"### {title}", "", f"![{title}]({plots[key]})", ""]
    if doc.get("best_probe"):
        bp = doc["best_probe"]
        params = {k: v for k, v in bp["params"].items() if k not in ("head", "chosen_by")}
        lines.append(f"Best probe: {bp['strategy']} → {bp['params'].get('head')} at {bp['size']} samples/class, "
                     f"seed {bp['seed']}, params `{json.dumps(params)}`.")
        lines.append("")
    if doc.get("errors"):
        lines += ["## Failures", "", "| samples/class | seed | strategy | error |", "|---|---|---|---|"]
        for err in doc["errors"]:
            lines.append(f"| {err['size']} | {err['seed']} | {err['strategy']} | {err['error'][:300]} |")
        lines.append("")
    lines.append(f"Raw numbers, per row and seed: `{doc['slug']}.json` (schema `{doc['schema']}`).")
    return "\n".join(lines) + "\n"


def _busy_note(machine: dict) -> str | None:
    """A warning when other work shared the cores (timings are then inflated)."""
    loads = [machine.get("load_average"), machine.get("load_average_end")]
    worst = max((v[0] for v in loads if v), default=None)
    cores = machine.get("usable_cores") or 1
    if worst is not None and worst > 1.5 * cores:
        return (f"the 1-minute load average reached {worst:.1f} on {cores} usable cores during this run: other "
                "work shared the CPU, so times are inflated (torch with several threads suffers most).")
    return None


def _class_counts(counts: dict) -> str:
    if len(counts) > 12:
        return f"{len(counts)} classes"
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _ms(e, key) -> str:
    m, s = e[f"{key}_mean"], e[f"{key}_std"]
    if m is None:
        return "-"
    return f"{m:.3f}" if e["n_seeds"] < 2 else f"{m:.3f} ± {s:.3f}"


def _int(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e4 else str(v)
