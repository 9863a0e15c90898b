"""The fine-tuned rows (:mod:`featx.torchmodels.finetune`): head only, partial, full, from scratch, and LP-FT.

Per mode the learning rate and the number of epochs are chosen once on a validation split carved
from one seed's subset of ``lr_select_per_class`` per class (never the test set): each rate trains
``epochs`` epochs (the stated maximum) with the validation accuracy measured after every epoch,
and the (rate, epoch) with the best accuracy wins (early stopping; ties: the first rate listed, the
earliest epoch). Every size and seed then trains that many epochs: ``ceil(epochs x n / batch)``
steps, at least ``min_steps``, cut at ``max_steps`` (the cost cap of a row; a row cut there records
``hit_cap``, and the conclusion says so).

LP-FT (Kumar et al., 2022): the head-only row's recipe first (the linear probe, its own rate and
epochs), then full fine-tuning starting from that head, with the rate and epochs chosen for it the
same way; its cost is both phases'.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import FeatxError, ParameterError
from ..torchmodels.finetune import finetune, frozen_prefix, head_weights, predict, steps_for
from .config import LP_FT, SETFIT, BenchConfig
from .formatting import format_number
from .meter import Meter
from .models import BenchBackbone
from .result import FinetuneSetup, LrChoice, LrSelection
from .rows import FT_MODE_LABELS, FinetuneRow, scores
from .splits import Splits, Subset
from .table import Context, Table

LR_RULE = ("per mode, each learning rate trains the stated maximum of epochs on the other items of the same "
           "subset, scored on the validation items after every epoch; the (rate, epochs) with the highest "
           "validation accuracy is chosen (ties: the first rate listed, the fewest epochs; early stopping), then "
           "used for every size and seed")


def finetune_setup(config: BenchConfig, modes, batch_size: int) -> FinetuneSetup:
    """How every fine-tuned row of the table trains, as the report states it."""
    return FinetuneSetup(modes=list(modes), batch_size=batch_size, optimizer="AdamW, weight decay 1e-4",
                         schedule="cosine decay to 0",
                         steps_rule=(f"the epochs chosen on the validation split (at most {config.epochs:g}) x n / "
                                     f"batch, at least {config.min_steps}, cut at {config.max_steps} (the cap)"),
                         augmentation="none", threads=config.threads)


def selection_modes(modes) -> list[str]:
    """The modes whose rate and epochs are chosen: LP-FT needs the head-only choice (its probe phase)."""
    tuned = [m for m in modes if m != SETFIT]
    return (["head"] if LP_FT in tuned and "head" not in tuned else []) + tuned


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
    """Per mode: train on 80% of a seed's subset of ``lr_select_per_class``, score the other 20% after every
    epoch; keep the best (rate, epochs)."""
    config = ctx.config
    tr, va = lr_split(ctx.splits, config, seed)
    X_tr, y_tr = [i.ref for i in tr], [i.label for i in tr]
    X_va, y_va = [i.ref for i in va], [i.label for i in va]
    per_epoch = math.ceil(len(tr) / min(setup.batch_size, len(tr)))
    max_epochs = max(1, math.ceil(config.epochs))
    steps = per_epoch * max_epochs
    split = SelectionSplit((X_tr, y_tr), (X_va, y_va), per_epoch, steps, seed, setup.batch_size)
    choices: dict[str, LrChoice] = {}
    for mode in selection_modes(setup.modes):
        init = None
        if mode == LP_FT:  # the probe phase on the same items, with the head-only choice
            head = choices.get("head")
            if head is None or head.chosen is None:
                choices[mode] = LrChoice(grid=list(config.lrs[mode]), val_accuracy={}, chosen=None, seconds=0.0,
                                         error="LP-FT needs a head-only learning rate, and none was chosen")
                continue
            init = finetune(bb.torch_backbone, X_tr, y_tr, mode="head", lr=head.chosen,
                            steps=per_epoch * head.chosen_epochs, batch_size=setup.batch_size, seed=seed,
                            classes=ctx.splits.classes, threads=config.threads)
        choices[mode] = _choose(ctx, bb, mode, split, init)
    return LrSelection(seed=seed, per_class=config.lr_select_per_class, train_items=len(tr), val_items=len(va),
                       steps=steps, rule=LR_RULE, modes=choices, max_epochs=max_epochs, steps_per_epoch=per_epoch)


@dataclass
class SelectionSplit:
    """The items of the learning-rate and epochs choice, and how long each of its runs trains."""

    train: tuple  # (items, labels)
    val: tuple
    per_epoch: int  # steps per epoch of the training items
    steps: int  # the stated maximum of epochs, in steps
    seed: int
    batch_size: int


def _choose(ctx: Context, bb: BenchBackbone, mode: str, split: SelectionSplit, init) -> LrChoice:
    """Every rate of ``mode``'s grid, the validation accuracy after each epoch; the best (rate, epochs)."""
    config = ctx.config
    grid = list(config.lrs[mode])
    curves, t0, steps = {}, time.perf_counter(), split.steps
    for lr in grid:
        try:
            r = finetune(bb.torch_backbone, *split.train, mode="full" if mode == LP_FT else mode, lr=lr, steps=steps,
                         batch_size=split.batch_size, seed=split.seed, val=split.val, eval_every=split.per_epoch,
                         frozen_blocks=config.frozen_blocks,
                         classes=ctx.splits.classes, threads=config.threads, log_every=max(1, steps // 10),
                         init_head=init)
            curves[lr] = [h["val_accuracy"] for h in r.history if "val_accuracy" in h]
        except FeatxError as e:  # diverged: never chosen
            curves[lr] = None
            ctx.say(f"  lr {lr:g} for {mode}: {e}")
        best = None if curves[lr] is None else max(curves[lr])
        ctx.say(f"  lr selection {mode:<8} lr={lr:g}: best val accuracy {format_number(best)}"
                + ("" if best is None else f" after {1 + curves[lr].index(best)} epoch(s)"))
    choice = LrChoice(grid=grid, val_accuracy={f"{lr:g}": None if c is None else max(c) for lr, c in curves.items()},
                      chosen=None, seconds=time.perf_counter() - t0,
                      curves={f"{lr:g}": c for lr, c in curves.items()},
                      epochs={f"{lr:g}": None if c is None else 1 + c.index(max(c)) for lr, c in curves.items()})
    usable = [lr for lr in grid if curves[lr] is not None]
    if usable:
        choice.chosen = max(usable, key=lambda lr: max(curves[lr]))  # ties: the first in the stated grid
        choice.chosen_epochs = choice.epochs[f"{choice.chosen:g}"]
    else:
        choice.error = f"every learning rate in {grid} diverged; mode {mode!r} left out"
    return choice


def budget(config: BenchConfig, n: int, batch_size: int, epochs: int) -> dict:
    """The steps of a row of ``n`` items that trains ``epochs`` epochs, and whether the cap cut it.

    Examples
    --------
    >>> from featx.bench import BenchConfig
    >>> budget(BenchConfig("d", min_steps=20, max_steps=150), 1000, 32, 10)
    {'epochs_chosen': 10, 'steps': 150, 'max_steps': 150, 'hit_cap': True, 'steps_wanted': 313}
    """
    wanted = steps_for(n, batch_size, epochs, config.min_steps)
    return {"epochs_chosen": int(epochs), "steps": min(wanted, int(config.max_steps)),
            "max_steps": int(config.max_steps), "hit_cap": wanted > config.max_steps, "steps_wanted": wanted}


def finetune_row(ctx: Context, subset: Subset, bb: BenchBackbone, *, mode: str, choice: LrChoice,
                 batch_size: int, probe: LrChoice | None = None) -> FinetuneRow:
    """Fine-tune in ``mode`` at the chosen rate and epochs on the subset, then predict the test set from raw items.

    LP-FT (``probe``: the head-only choice) first fits the probe, then fine-tunes everything from it."""
    config = ctx.config
    spent, init, plan = 0.0, None, budget(config, subset.n_train, batch_size, choice.chosen_epochs)
    common = dict(batch_size=batch_size, seed=subset.seed, frozen_blocks=config.frozen_blocks,
                  classes=ctx.splits.classes, ids=[i.id for i in subset.items], threads=config.threads)
    with Meter() as m:
        if mode == LP_FT:
            probe_plan = budget(config, subset.n_train, batch_size, probe.chosen_epochs)
            first = finetune(bb.torch_backbone, subset.refs, subset.labels, mode="head", lr=probe.chosen,
                             steps=probe_plan["steps"], **common)
            spent, init = first.seconds, head_weights(first)
            plan |= {"probe_lr": probe.chosen, "probe_steps": probe_plan["steps"],
                     "hit_cap": plan["hit_cap"] or probe_plan["hit_cap"]}
        result = finetune(bb.torch_backbone, subset.refs, subset.labels, mode="full" if mode == LP_FT else mode,
                          lr=choice.chosen, steps=plan["steps"], log_every=max(1, plan["steps"] // 10),
                          init_head=init, **common)
    test_refs = ctx.test_refs
    t = time.perf_counter()
    pred = predict(result, test_refs, threads=config.threads)
    latency = (time.perf_counter() - t) / len(test_refs)
    losses = [h["loss"] for h in result.history]
    return FinetuneRow.scored(subset, FT_MODE_LABELS[mode], "finetune",
                              scores(ctx.test_labels, pred, ctx.splits.classes), finetune_s=spent + result.seconds,
                              peak_rss_mb=m.peak_mb, trainable_params=result.trainable_params,
                              predict_ms_per_item=latency * 1000,
                              params={"mode": mode, "lr": choice.chosen, "batch_size": result.batch_size,
                                      "epochs": round(result.steps * result.batch_size / subset.n_train, 2), **plan},
                              total_params=result.total_params, loss_first=losses[0], loss_last=losses[-1],
                              seconds_per_step=result.seconds / result.steps)


def run_finetune(ctx: Context, subset: Subset, table: Table, bb: BenchBackbone, *, mode: str, choice: LrChoice,
                 batch_size: int, probe: LrChoice | None = None) -> None:
    """One fine-tuned row of one subset."""
    row = table.attempt(subset, FT_MODE_LABELS[mode],
                        lambda: finetune_row(ctx, subset, bb, mode=mode, choice=choice, batch_size=batch_size,
                                             probe=probe))
    if row:
        cap = " (hit the cap)" if row.params["hit_cap"] else ""
        table.report(row, f"{row.params['steps']} steps{cap} in {row.finetune_s:.1f}s (lr {choice.chosen:g})")
