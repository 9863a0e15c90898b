"""One benchmark table, end to end: :func:`run_benchmark`.

    phase 1, every size and seed:  baselines (raw pixels decoded once)  |  frozen heads (features extracted once,
                                   every layer the export carries)  |  a logreg per layer, the layer chosen by CV
    phase 2, fine-tuning sizes and seeds:  parity check, learning rates and epochs chosen, one row per mode
                                           (LP-FT after its probe; SetFit with its own recipe)
    then: summary over seeds -> conclusion -> BenchResult -> JSON, plots, Markdown
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Callable

from ..heads import FEW_SHOT_PARAMS
from ..specs.layers import FINAL
from ..machine import machine_facts, rounded_load_average
from .baselines import raw_pixels_of, run_baselines
from .conclusion import conclude
from .config import BenchConfig, check_config, slug
from .config import SETFIT
from .finetuned import finetune_setup, partial_frozen, run_finetune, select_learning_rates, selection_modes
from .frozen import extract_features, run_heads, run_layers, warm_up_workers
from .meter import memory_method
from .models import check_parity, prepare_backbone
from .plots import best_probe
from .progress import Progress
from .report import busy_note, write_outputs
from .result import BenchResult, SplitRecord
from .peers import run_setfit
from .rows import FT_MODE_LABELS, LAYER_HEAD, Failure, head_strategy, summarize
from .splits import class_counts, load_splits, resolve_sizes, size_label, train_positions, training_subset
from .table import Context, Table

LATENCY_METHOD = ("wall time to predict the whole test set from raw items, divided by its size: frozen rows = "
                  "measured extraction time per item + head predict; fine-tuned rows = decode, preprocess and "
                  "forward in batches of 64; baselines = features + predict")
PROPORTIONAL = ("; proportional subsets: a size is the largest class's items, every other class takes its share "
                "(ceil(size x its size / the largest class's), at least 1), so each subset keeps the split's class "
                "proportions")
SAMPLING = ("per seed, each class shuffled once; a subset of n per class takes the first n of each class (nested "
            "subsets); 'all' = the whole training split, the same for every seed, so its baseline and frozen rows "
            "(deterministic given the subset) run for the first seed only")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_benchmark(config: BenchConfig, out_dir="benchmarks/results", *, command: str | None = None,
                  progress: Progress | Callable[[str], None] | None = None, write: bool = True) -> BenchResult:
    """Run one benchmark table and write ``<out>/<dataset>.json``, ``.md`` and plots.

    Parameters
    ----------
    config : BenchConfig
        See :func:`featx.bench.preset` for the stated defaults.
    out_dir : path
    command : str, optional
        The command line to record in the report.
    progress : Progress or callable, optional
        Where the progress goes (default: :class:`Progress`: lines and a bar of the rows on stderr
        when it is a terminal); a callable gets one line per step.
    write : bool
        Write the files (else only return the result).

    Returns
    -------
    BenchResult
        Every row, the summary and the conclusion; ``.to_dict()`` is the JSON document
        (schema ``featx-bench/1``).
    """
    check_config(config)
    say = progress if isinstance(progress, Progress) else Progress(write=progress)
    try:
        return _run(config, out_dir, command, say, write)
    finally:
        say.close()


def _run(config: BenchConfig, out_dir, command: str | None, say: Progress, write: bool) -> BenchResult:
    t_start = time.perf_counter()
    started = _now()
    splits = load_splits(config)
    ctx = Context(config, splits, say)
    modality = ctx.modality
    sizes = resolve_sizes(splits, config.sizes)
    ft_sizes = sizes if config.finetune_sizes is None else resolve_sizes(splits, config.finetune_sizes)
    ft_seeds = list(config.run_finetune_seeds)
    modes = list(config.finetune_modes) if ft_sizes and ft_seeds else []
    batch_size = config.batch_size or (32 if modality == "image" else 16)
    say(f"{config.dataset}: {len(splits.train)} training items, test = {splits.test_note}; sizes {sizes}, "
        f"seeds {list(config.seeds)}")

    machine = machine_facts()
    busy = busy_note(machine)
    if busy:
        say(f"WARNING: {busy}")
    bb = prepare_backbone(config, modality, need_torch=bool(modes))
    say(f"backbone {bb.name}: {bb.onnx_path}")
    result = BenchResult(
        dataset=config.dataset, slug=slug(config.dataset) + (".quick" if config.quick else ""), modality=modality,
        backbone=bb.name, backbone_source=bb.source, preprocess=bb.spec.preprocess.to_dict(),
        command=command or "featx.bench.run_benchmark(...)", config=config, machine=machine, started=started,
        memory_method=memory_method(), latency_method=LATENCY_METHOD,
        splits=SplitRecord(train_split=splits.train.name, train_items=len(splits.train), test=splits.test_note,
                           test_items=len(splits.test), classes=list(splits.classes),
                           test_class_counts=class_counts(splits.test), sizes=[size_label(s) for s in sizes],
                           seeds=list(config.seeds), finetune_sizes=[size_label(s) for s in ft_sizes],
                           finetune_seeds=ft_seeds if modes else [],
                           sampling=SAMPLING + (PROPORTIONAL if config.proportional else "")),
        finetune=finetune_setup(config, modes, batch_size))
    table = Table(say)

    # ---- phase 1: simple baselines and frozen-feature heads, every size and seed
    # every training item any row of phase 1 uses, across seeds and sizes
    used = sorted({p for seed in config.seeds for s in sizes for p in train_positions(splits, seed, s)})
    # rows attempted per subset
    per_subset = (2 if config.baselines else 0) + len(config.heads) + (len(bb.layers) if config.heads else 0)
    say.expect(sum(per_subset * (1 if size == "all" else len(config.seeds)) for size in sizes))
    if config.heads:
        features, result.extraction = extract_features(ctx, used, bb)
        result.layers = {**bb.layers, FINAL: bb.spec.dim} if bb.layers else None
        result.few_shot = {kind: FEW_SHOT_PARAMS[kind] for kind in config.heads}
        warm_up_workers(config.threads)
    raw = raw_pixels_of(ctx, used) if config.baselines and modality == "image" else None
    for size in sizes:
        # 'all' is the same subset for every seed, and heads and baselines are deterministic given their
        # subset (seeded folds): one seed says it all.
        for seed in (config.seeds[:1] if size == "all" else config.seeds):
            subset = training_subset(splits, seed, size)
            if config.baselines:
                run_baselines(ctx, subset, table, raw)
            if config.heads:
                heads = run_heads(ctx, subset, table, features, result.extraction)
                final = next((r for r in heads if r.strategy == head_strategy(LAYER_HEAD)), None)
                run_layers(ctx, subset, table, features, result.extraction, final)

    # ---- phase 2: fine-tuning (same backbone, same preprocessing: checked), learning rates chosen first
    if modes:
        sample = [splits.train.items[p].ref for p in train_positions(splits, ft_seeds[0], 1)][:4]
        bb.parity = check_parity(bb, sample, config.threads)
        say(f"parity ONNX Runtime vs torch at the benchmark's preprocessing: max |diff| = "
            f"{bb.parity.max_abs_diff:.2e}")
        if "partial" in modes:
            result.finetune.partial_frozen = partial_frozen(bb, config.frozen_blocks)
        choices = {}
        if selection_modes(modes):
            result.lr_selection = select_learning_rates(ctx, bb, result.finetune, ft_seeds[0])
            choices = result.lr_selection.modes
        for mode, choice in choices.items():
            if choice.error:
                table.errors.append(Failure(size="-", seed=ft_seeds[0], strategy=FT_MODE_LABELS[mode],
                                            error=choice.error))
        runs = [mode for mode in modes if mode == SETFIT or choices[mode].chosen is not None]
        say.expect(len(ft_sizes) * len(ft_seeds) * len(runs))
        for size in ft_sizes:
            for seed in ft_seeds:
                subset = training_subset(splits, seed, size)
                for mode in runs:
                    if mode == SETFIT:
                        run_setfit(ctx, subset, table, bb)
                    else:
                        run_finetune(ctx, subset, table, bb, mode=mode, choice=choices[mode], batch_size=batch_size,
                                     probe=choices.get("head"))
    result.parity = bb.parity

    result.rows, result.errors = table.rows, table.errors
    result.summary = summarize(result.rows)
    result.conclusion, result.headline = conclude(result.summary, cores=machine.usable_cores,
                                                  failures=len(result.errors), rows=result.rows,
                                                  selection=result.lr_selection,
                                                  test_counts=result.splits.test_class_counts)
    result.best_probe = best_probe(result.rows)
    result.finished = _now()
    result.load_average_end = rounded_load_average()
    result.total_seconds = time.perf_counter() - t_start
    if write:
        write_outputs(result, out_dir)
        say(f"wrote {Path(out_dir) / (result.slug + '.json')} and {Path(out_dir) / (result.slug + '.md')}")
    return result
