"""The fine-tuned rows (:mod:`featx.finetune`): head only, partial, full, and from scratch.

Per mode the learning rate is chosen once on a validation split carved from one seed's
subset of ``lr_select_per_class`` per class (never the test set), then used at every size
and seed. Steps: ``ceil(epochs x n / batch)`` clipped to ``[min_steps, max_steps]``.
"""

from __future__ import annotations

import time

from ..errors import FeatxError, ParameterError
from ..finetune import finetune, frozen_prefix, predict, steps_for
from .config import BenchConfig
from .formatting import format_number
from .meter import Meter
from .models import BenchBackbone
from .result import FinetuneSetup, LrChoice, LrSelection
from .rows import FT_MODE_LABELS, FinetuneRow, scores
from .splits import Splits, Subset
from .table import Context, Table

LR_RULE = ("per mode, the learning rate with the highest validation accuracy (ties: the first listed), trained on "
           "the other items of the same subset; then used for every size and seed")


def finetune_setup(config: BenchConfig, modes, batch_size: int) -> FinetuneSetup:
    """How every fine-tuned row of the table trains, as the report states it."""
    return FinetuneSetup(modes=list(modes), batch_size=batch_size, optimizer="AdamW, weight decay 1e-4",
                         schedule="cosine decay to 0",
                         steps_rule=(f"ceil({config.epochs:g} epochs x n / batch), clipped to [{config.min_steps}, "
                                     f"{config.max_steps}]"),
                         augmentation="none", threads=config.threads)


def partial_frozen(bb: BenchBackbone, frozen_blocks: int | None) -> str:
    """What the partial mode freezes, in words: ``stem + first 8 of 16 blocks``."""
    _, k, n_blocks = frozen_prefix(bb.torch_backbone, frozen_blocks)
    return f"stem + first {k} of {n_blocks} blocks"


def lr_split(splits: Splits, config: BenchConfig, seed: int) -> tuple[list, list]:
    """Training and validation items of the learning-rate choice: ``val_fraction`` of each class held out."""
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
    return ([splits.train.items[p] for p in sorted(train_pos)], [splits.train.items[p] for p in sorted(val_pos)])


def select_learning_rates(ctx: Context, bb: BenchBackbone, setup: FinetuneSetup, seed: int) -> LrSelection:
    """Per mode: train on 80% of a seed's subset of ``lr_select_per_class``, score the other 20%."""
    config = ctx.config
    tr, va = lr_split(ctx.splits, config, seed)
    X_tr, y_tr = [i.ref for i in tr], [i.label for i in tr]
    X_va, y_va = [i.ref for i in va], [i.label for i in va]
    steps = steps_for(len(tr), setup.batch_size, config.epochs, config.min_steps, config.max_steps)
    choices = {}
    for mode in setup.modes:
        grid = list(config.lrs[mode])
        results = {}
        t0 = time.perf_counter()
        for lr in grid:
            try:
                r = finetune(bb.torch_backbone, X_tr, y_tr, mode=mode, lr=lr, steps=steps,
                             batch_size=setup.batch_size, seed=seed, val=(X_va, y_va),
                             frozen_blocks=config.frozen_blocks, classes=ctx.splits.classes, threads=config.threads,
                             log_every=max(1, steps // 10))
                results[lr] = r.val_accuracy
            except FeatxError as e:  # diverged: never chosen
                results[lr] = None
                ctx.say(f"  lr {lr:g} for {mode}: {e}")
            ctx.say(f"  lr selection {mode:<8} lr={lr:g}: val accuracy {format_number(results[lr])}")
        usable = [lr for lr in grid if results[lr] is not None]
        choice = LrChoice(grid=grid, val_accuracy={f"{lr:g}": results[lr] for lr in grid}, chosen=None,
                          seconds=time.perf_counter() - t0)
        if usable:
            choice.chosen = max(usable, key=lambda lr: results[lr])  # ties: the first in the stated grid
        else:
            choice.error = f"every learning rate in {grid} diverged; mode {mode!r} left out"
        choices[mode] = choice
    return LrSelection(seed=seed, per_class=config.lr_select_per_class, train_items=len(tr), val_items=len(va),
                       steps=steps, rule=LR_RULE, modes=choices)


def finetune_row(ctx: Context, subset: Subset, bb: BenchBackbone, *, mode: str, lr: float,
                 batch_size: int) -> FinetuneRow:
    """Fine-tune in ``mode`` at ``lr`` on the subset, then predict the test set from raw items."""
    config = ctx.config
    steps = steps_for(subset.n_train, batch_size, config.epochs, config.min_steps, config.max_steps)
    with Meter() as m:
        result = finetune(bb.torch_backbone, subset.refs, subset.labels, mode=mode, lr=lr, steps=steps,
                          batch_size=batch_size, seed=subset.seed, frozen_blocks=config.frozen_blocks,
                          classes=ctx.splits.classes, ids=[i.id for i in subset.items], threads=config.threads,
                          log_every=max(1, steps // 10))
    test_refs = ctx.test_refs
    t = time.perf_counter()
    pred = predict(result, test_refs, threads=config.threads)
    latency = (time.perf_counter() - t) / len(test_refs)
    losses = [h["loss"] for h in result.history]
    return FinetuneRow.scored(subset, FT_MODE_LABELS[mode], "finetune",
                              scores(ctx.test_labels, pred, ctx.splits.classes), finetune_s=result.seconds,
                              peak_rss_mb=m.peak_mb, trainable_params=result.trainable_params,
                              predict_ms_per_item=latency * 1000,
                              params={"mode": mode, "lr": lr, "steps": result.steps, "batch_size": result.batch_size,
                                      "epochs": round(result.steps * result.batch_size / subset.n_train, 2)},
                              total_params=result.total_params, loss_first=losses[0], loss_last=losses[-1],
                              seconds_per_step=result.seconds / result.steps)


def run_finetune(ctx: Context, subset: Subset, table: Table, bb: BenchBackbone, *, mode: str, lr: float,
                 batch_size: int) -> None:
    """One fine-tuned row of one subset."""
    row = table.attempt(subset, FT_MODE_LABELS[mode],
                        lambda: finetune_row(ctx, subset, bb, mode=mode, lr=lr, batch_size=batch_size))
    if row:
        table.report(row, f"{row.params['steps']} steps in {row.finetune_s:.1f}s (lr {lr:g})")
