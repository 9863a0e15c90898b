"""Declarative runs: dataset -> backbone -> cached features -> heads -> evaluation -> report.

A pipeline is a TOML file (see ``pipelines/``)::

    name = "digits"

    [dataset]
    train = "builtin:digits:train"   # any featx source: folder, manifest, .txt, builtin:NAME[:SPLIT]
    test = "builtin:digits:test"     # or test_size = 0.25: a stratified split of the (limited) train source
    limit = 2000                     # optional: a stratified subset of the train source (seeded)
    per_class = 100                  # optional: at most this many train-source items per class
    test_limit = 1000                # optional: a stratified subset of test
    seed = 0

    [backbone]
    model = "efficientnet-lite0"     # name, timm:/hf: recipe, or .onnx path
    batch_size = 16
    on_error = "raise"               # or "skip": bad items are recorded and left out
    # providers = "cpu"; threads = 2
    # jpeg_draft = true              # images: decode JPEGs at reduced scale (faster on photos)
    # decode_workers = 4             # threads decoding items (default: per device, see featx.extract)

    [heads]
    kinds = ["logreg", "svm", "knn"] # or "all"
    cv = 5
    n_jobs = -1
    # [heads.grids.logreg]           # optional: replace a head's grid
    # C = [0.1, 1.0]

    [output]
    dir = "runs/digits"              # default runs/<name>; relative to the current directory
    cache = "runs/digits/cache"      # default <dir>/cache; false: embed in memory, no cache

:func:`run_pipeline` exports the backbone when needed, extracts train and test features into
``<cache>/train`` and ``<cache>/test`` (resuming whatever is cached), selects each head by
cross-validation, evaluates it on the test set and writes ``<dir>/heads/<kind>.skops`` (+ JSON),
``<dir>/reports/<kind>/report.{json,md}`` + confusion PNG, and ``<dir>/summary.{json,md}``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .factory import load_backbone

from .cache import load_features
from .engine.defaults import ON_ERROR
from .engine.embedding import embed
from .errors import DataSourceError, ParameterError
from .heads.evaluate import evaluate, save_report
from .extraction.extract import extract
from .files import write_atomically
from .heads import check_grid, check_n_jobs, resolve_heads, train_heads
from .heads.persist import save_head
from .progress import progress_bar
from .sources import check_modality, labelled_mask, make_dataset, open_dataset, subset
from .validation import check_bool, check_choice, check_fraction, check_int, check_path, invalid

__all__ = ["PipelineConfig", "PipelineResult", "load_pipeline", "run_pipeline", "format_table", "embed_dataset"]

_SECTIONS = {
    "dataset": {"train", "test", "test_size", "limit", "per_class", "test_limit", "seed"},
    "backbone": {"model", "batch_size", "on_error", "providers", "threads", "jpeg_draft", "decode_workers"},
    "heads": {"kinds", "cv", "n_jobs", "seed", "grids"},
    "output": {"dir", "cache"},
}


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline (see the module docstring for the TOML keys)."""

    name: str
    train: str
    model: str
    test: str | None = None
    test_size: float | None = None
    limit: int | None = None
    per_class: int | None = None
    test_limit: int | None = None
    seed: int = 0
    batch_size: int | None = None  # None: the device's (featx.engine.defaults)
    on_error: str = "raise"
    providers: Any = None
    threads: int | None = None
    jpeg_draft: bool = False
    decode_workers: int | None = None
    heads: tuple[str, ...] = ("logreg", "svm", "knn")
    cv: int = 5
    n_jobs: int | None = -1
    grids: Mapping[str, Any] = field(default_factory=dict)
    out_dir: str | None = None
    cache: str | bool | None = None
    source: str | None = None  # the TOML file

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")

    @property
    def cache_dir(self) -> Path | None:
        if self.cache is False:
            return None
        return Path(self.cache) if isinstance(self.cache, str) else self.output_dir / "cache"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | None = None) -> "PipelineConfig":
        where = source or "pipeline"
        unknown = set(d) - {"name", *_SECTIONS}
        if unknown:
            raise ParameterError(f"{where}: unknown key(s) {sorted(unknown)}; expected 'name' and sections "
                                 f"{sorted(_SECTIONS)}")
        for section, keys in _SECTIONS.items():
            value = d.get(section, {})
            if not isinstance(value, Mapping):
                raise ParameterError(f"{where}: [{section}] must be a table")
            extra = set(value) - keys
            if extra:
                raise ParameterError(f"{where}: unknown key(s) {sorted(extra)} in [{section}]; known: {sorted(keys)}")
        ds, bb, hd, out = (d.get(s, {}) for s in ("dataset", "backbone", "heads", "output"))
        if "train" not in ds:
            raise ParameterError(f"{where}: [dataset] needs 'train' (a folder, manifest or builtin:NAME)")
        if "model" not in bb:
            raise ParameterError(f"{where}: [backbone] needs 'model' (e.g. \"efficientnet-lite0\")")
        if ds.get("test") is not None and ds.get("test_size") is not None:
            raise ParameterError(f"{where}: give either [dataset] test or test_size, not both")

        name = d.get("name") or (Path(source).stem if source else "pipeline")
        config = cls(
            name=str(name), train=str(ds["train"]), model=str(bb["model"]), test=ds.get("test"),
            test_size=ds.get("test_size"), limit=ds.get("limit"), per_class=ds.get("per_class"),
            test_limit=ds.get("test_limit"), seed=ds.get("seed", 0), batch_size=bb.get("batch_size"),
            on_error=bb.get("on_error", "raise"), providers=bb.get("providers"), threads=bb.get("threads"),
            jpeg_draft=bb.get("jpeg_draft", False), decode_workers=bb.get("decode_workers"), heads=resolve_heads(hd.get("kinds", "all")), cv=hd.get("cv", 5), n_jobs=hd.get("n_jobs", -1),
            grids=dict(hd.get("grids", {})), out_dir=out.get("dir"), cache=out.get("cache"), source=source,
        )
        config.check()
        return config

    def check(self) -> None:
        where = self.source or "pipeline"
        owner = f"pipeline {self.source}" if self.source else "PipelineConfig"
        for key in ("limit", "per_class", "test_limit", "threads", "decode_workers", "batch_size"):
            check_int(getattr(self, key), key, owner, low=1, optional=True)
        for key, low in (("cv", 2), ("seed", 0)):
            check_int(getattr(self, key), key, owner, low=low)
        check_fraction(self.test_size, "test_size", owner, optional=True)
        check_choice(self.on_error, "on_error", owner, ON_ERROR)
        check_bool(self.jpeg_draft, "jpeg_draft", owner)
        if self.cache is True or (self.cache is not None and not isinstance(self.cache, (str, bool))):
            raise invalid("cache", owner, "a directory path or false", self.cache)

        check_n_jobs(self.n_jobs)
        for kind, grid in self.grids.items():
            if kind not in self.heads:
                raise ParameterError(f"{where}: [heads.grids.{kind}] is given but {kind!r} is not in kinds "
                                     f"{list(self.heads)}")
            check_grid(kind, grid)


def load_pipeline(path) -> PipelineConfig:
    """Read and validate a pipeline TOML file.

    Raises
    ------
    ParameterError
        Missing file, bad TOML, unknown keys or values (the message names them).
    """
    path = Path(check_path(path, "path", "load_pipeline"))
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ParameterError(f"no pipeline file at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ParameterError(f"{path} is not valid TOML: {e}") from None
    return PipelineConfig.from_dict(data, source=str(path))


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did: one row per head, the selections, the files written."""

    config: PipelineConfig
    rows: list[dict]
    selections: list = field(repr=False, default_factory=list)
    reports: dict = field(repr=False, default_factory=dict)
    files: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0
    backbone: str = ""
    fingerprint_id: str = ""

    def table(self) -> str:
        return format_table(self.rows)


def format_table(rows) -> str:
    """Markdown table: head, CV accuracy ± std, fit time, then test accuracy and macro-F1 when known."""
    with_test = any(r.get("test_accuracy") is not None for r in rows)
    head = "| head | CV accuracy (± std) | folds | fit (s) |"
    head += " test accuracy | test macro-F1 |" if with_test else ""
    lines = [head + " selected |", "|---|---:|---:|---:|" + ("---:|---:|" if with_test else "") + "---|"]
    for r in rows:
        cv = "n/a" if r.get("cv_mean") is None else f"{r['cv_mean']:.4f} ± {r['cv_std']:.4f}"
        cells = [r["head"], cv, str(r.get("n_splits", "")), f"{r['fit_seconds']:.1f}"]
        if with_test:
            for key in ("test_accuracy", "test_macro_f1"):
                cells.append("n/a" if r.get(key) is None else f"{r[key]:.4f}")
        cells.append(", ".join(f"{k}={v}" for k, v in sorted(r["best_params"].items())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _split(dataset, test_size: float, seed: int):
    from sklearn.model_selection import train_test_split

    labels = [item.label for item in dataset.items]
    positions = np.arange(len(dataset))
    stratify = labels if dataset.classes is not None and None not in labels else None
    try:
        train_pos, test_pos = train_test_split(positions, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError as e:
        raise DataSourceError(f"cannot split {dataset.name} with test_size={test_size}: {e}") from None

    def pick(positions):
        return make_dataset(dataset.name, dataset.modality, [dataset.items[p] for p in sorted(positions)])

    return pick(train_pos), pick(test_pos)


def _datasets(config: PipelineConfig):
    train = open_dataset(config.train)
    if config.limit is not None or config.per_class is not None:
        train = subset(train, config.limit, per_class=config.per_class, seed=config.seed)
    if config.test is None and config.test_size is not None:
        train, test = _split(train, config.test_size, config.seed)  # carved from the (limited) train source
    elif config.test is not None:
        test = open_dataset(config.test)
    else:
        test = None
    if test is not None and config.test_limit is not None:
        test = subset(test, config.test_limit, seed=config.seed)
    if train.classes is None:
        raise DataSourceError(f"{train.name} has no labels; a pipeline trains classifiers and needs labelled data")
    return train, test


def embed_dataset(backbone, dataset, *, batch_size: int | None = None, on_error: str = "raise", warn=None,
                  progress: bool | None = None, layer: str | None = None, decode_workers: int | None = None):
    """Embed a dataset in memory (no cache): ``(X, y, ids)`` like :func:`featx.load_features`.

    With ``on_error="skip"`` bad items are left out (rows stay aligned with ``y`` and ``ids``)
    and ``warn(message)`` is called for each. ``progress``: a bar over the items (None: when stderr
    is a terminal; see :mod:`featx.progress`). ``layer``: an intermediate layer the export carries
    instead of the final features (see :mod:`featx.specs.layers`). ``decode_workers``: see :func:`featx.extraction.extract`.

    Examples
    --------
    >>> import featx
    >>> from featx.sources import open_dataset
    >>> digits = open_dataset("builtin:digits", limit=20)
    >>> X, y, ids = embed_dataset(featx.load_backbone(tiny_onnx), digits)
    >>> X.shape, len(y), list(ids) == digits.ids()
    ((20, 8), 20, True)
    """
    check_int(batch_size, "batch_size", "embed_dataset", low=1, optional=True)
    check_choice(on_error, "on_error", "embed_dataset", ON_ERROR)
    check_bool(progress, "progress", "embed_dataset", optional=True)
    check_int(decode_workers, "decode_workers", "embed_dataset", low=1, optional=True)
    ids, labels = dataset.ids(), dataset.labels()
    with progress_bar(len(ids), f"featx {backbone.name}", progress=progress) as bar:
        result = embed(backbone, [item.ref for item in dataset.items], ids, batch_size=batch_size,
                       on_error=on_error, on_batch=bar.update, workers=decode_workers).select(layer)
    for failure in result.failures:
        if warn is not None:
            warn(f"skipped {failure.id}: {failure.reason}")
    keep = result.positions
    return result.rows, None if labels is None else labels[keep], np.asarray(ids, dtype=object)[keep]


def _features(backbone, dataset, cache: Path | None, config: PipelineConfig, progress, say):
    """(X, y, extract report or None) of a dataset, through the cache when there is one."""
    if cache is None:
        X, y, _ids = embed_dataset(backbone, dataset, batch_size=config.batch_size, on_error=config.on_error,
                                   warn=say, progress=progress, decode_workers=config.decode_workers)
        return X, y, None
    report = extract(dataset, backbone, cache, batch_size=config.batch_size, on_error=config.on_error,
                     progress=progress, decode_workers=config.decode_workers)
    for line in report.failure_lines():
        say(line)
    X, y, _ids = load_features(cache, model=backbone.name)
    return X, y, report


def run_pipeline(config: PipelineConfig | str | Path, *, out_dir=None, n_jobs=None, progress: bool | None = None,
                 echo: Callable[[str], None] | None = print) -> PipelineResult:
    """Run a pipeline end to end; see the module docstring.

    Parameters
    ----------
    config : PipelineConfig or path of a TOML file
    out_dir : path, optional
        Override ``[output] dir`` (the cache follows it unless ``[output] cache`` is set).
    n_jobs : int, optional
        Override ``[heads] n_jobs``.
    progress : bool, optional
        Progress bars of the extraction and of the heads' grid searches (default: when stderr is
        a terminal).
    echo : callable or None
        Where progress lines go (``print`` by default; None: silent).

    Returns
    -------
    PipelineResult
    """
    check_path(out_dir, "out_dir", "run_pipeline", optional=True)
    check_bool(progress, "progress", "run_pipeline", optional=True)
    if not isinstance(config, PipelineConfig):
        config = load_pipeline(config)
    if out_dir is not None:
        config = dataclasses.replace(config, out_dir=str(out_dir))
    say = echo or (lambda _msg: None)
    out = config.output_dir
    cache = config.cache_dir
    timings: dict[str, float] = {}

    t = time.perf_counter()
    train_ds, test_ds = _datasets(config)
    say(f"[{config.name}] data: {len(train_ds)} train items ({train_ds.name}), "
        f"{len(test_ds) if test_ds is not None else 0} test items, {len(train_ds.classes)} classes")
    backbone = load_backbone(config.model, providers=config.providers, threads=config.threads,
                             jpeg_draft=config.jpeg_draft)
    check_modality(train_ds, backbone.modality, f"the {backbone.modality} backbone {backbone.name}")
    timings["data_and_export_s"] = time.perf_counter() - t
    say(f"[{config.name}] backbone: {backbone.name} ({backbone.modality}, {backbone.dim}-d, "
        f"fingerprint {backbone.fingerprint_id})")

    t = time.perf_counter()
    X, y, report = _features(backbone, train_ds, None if cache is None else cache / "train", config, progress, say)
    timings["extract_train_s"] = time.perf_counter() - t
    unlabelled = 0 if y is None else int((~labelled_mask(y)).sum())  # left out of training by select_head
    say(f"[{config.name}] train features: {X.shape[0]} x {X.shape[1]}"
        + (f", {unlabelled} unlabelled left out of training" if unlabelled else "")
        + (f" ({report.summary()})" if report is not None else " (in memory, no cache)"))
    Xt = yt = None
    if test_ds is not None:
        t = time.perf_counter()
        Xt, yt, report = _features(backbone, test_ds, None if cache is None else cache / "test", config, progress,
                                   say)
        timings["extract_test_s"] = time.perf_counter() - t
        say(f"[{config.name}] test features: {Xt.shape[0]} x {Xt.shape[1]}"
            + (f" ({report.summary()})" if report is not None else " (in memory, no cache)"))

    t = time.perf_counter()
    selections = train_heads(X, y, config.heads, cv=config.cv, n_jobs=config.n_jobs if n_jobs is None else n_jobs,
                             seed=config.seed, grids=config.grids, progress=progress)
    timings["train_s"] = time.perf_counter() - t

    rows, reports, files = [], {}, {"heads": {}, "reports": {}}
    for sel in selections:
        summary = sel.summary()
        row = {"head": sel.kind, "cv_mean": summary["cv_mean"], "cv_std": summary["cv_std"],
               "n_splits": sel.n_splits, "fit_seconds": sel.fit_seconds, "best_params": sel.best_params,
               "test_accuracy": None, "test_macro_f1": None, "test_balanced_accuracy": None}
        if Xt is not None and yt is not None and len(yt):
            rep = evaluate(sel.best_estimator, Xt, yt)
            rep = {"head": sel.kind, "backbone": backbone.name, "test": test_ds.name, **rep}
            reports[sel.kind] = rep
            files["reports"][sel.kind] = {k: str(v) for k, v in save_report(
                rep, out / "reports" / sel.kind, title=f"{config.name}: {sel.kind} on {backbone.name}").items()
                if v is not None}
            row.update(test_accuracy=rep["accuracy"], test_macro_f1=rep["macro_f1"],
                       test_balanced_accuracy=rep["balanced_accuracy"])
        meta = {"kind": sel.kind, "backbone": backbone.name, "model": config.model,
                "fingerprint_id": backbone.fingerprint_id, "dim": backbone.dim, "modality": backbone.modality,
                "train": train_ds.name, "n_train": int(len(X)), **summary}
        files["heads"][sel.kind] = str(save_head(sel.best_estimator, out / "heads" / f"{sel.kind}.skops",
                                                 metadata=meta))
        rows.append(row)
    result = PipelineResult(config, rows, selections, reports, files, timings, int(len(X)),
                            0 if Xt is None else int(len(Xt)), backbone.name, backbone.fingerprint_id)
    _write_summary(result, out)
    files["summary"] = str(out / "summary.md")
    say(f"[{config.name}] {backbone.name} on {train_ds.name} ({len(X)} train"
        + (f", {len(Xt)} test" if Xt is not None else "") + f"), {config.cv}-fold CV:")
    say(result.table())
    say(f"[{config.name}] heads, reports and summary in {out}")
    return result


def _write_summary(result: PipelineResult, out: Path) -> None:
    c = result.config
    data = {"name": c.name, "pipeline": c.source, "backbone": result.backbone, "fingerprint_id": result.fingerprint_id,
            "train": c.train, "test": c.test, "test_size": c.test_size, "n_train": result.n_train,
            "n_test": result.n_test, "cv": c.cv, "seed": c.seed, "rows": result.rows, "timings": result.timings,
            "files": result.files}
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, default=str)
    write_atomically(out / "summary.json", lambda tmp: Path(tmp).write_text(text + "\n"))
    md = (f"# {c.name}\n\n{result.backbone} on {c.train} ({result.n_train} train, {result.n_test} test), "
          f"{c.cv}-fold CV, seed {c.seed}.\n\n{result.table()}\n")
    write_atomically(out / "summary.md", lambda tmp: Path(tmp).write_text(md))
