"""The files of a table: ``<slug>.json`` (the result), the plots and ``<slug>.md`` (the report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import write_text_atomically
from ..specs.layers import FINAL
from ..machine import MachineFacts
from .config import BASELINE_C_GRIDS
from .formatting import format_count, format_number, mean_std
from .plots import make_plots
from .result import BenchResult
from .rows import BEST_BY_CV, BEST_LAYER, LAYER_HEAD, Summary, head_strategy

#: (plot kind, title) in report order.
PLOT_TITLES = (("learning_curves", "Learning curves"), ("accuracy_vs_cost", "Accuracy vs training cost"),
               ("accuracy_vs_depth", "Accuracy vs depth (a logistic regression on each layer)"),
               ("confusion_matrix", "Confusion matrix of the best probe"))


def write_outputs(result: BenchResult, out_dir) -> dict[str, str]:
    """Write the plots, ``<slug>.json`` and ``<slug>.md`` into ``out_dir``; returns ``{plot kind: file name}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = result.slug
    result.plots = make_plots(result, out, stem)
    write_text_atomically(out / f"{stem}.json", result.to_json())
    write_text_atomically(out / f"{stem}.md", render_markdown(result))
    return result.plots


def busy_note(machine: MachineFacts, load_average_end=None) -> str | None:
    """A warning when other work shared the cores (timings are then inflated)."""
    loads = [machine.load_average, load_average_end]
    worst = max((v[0] for v in loads if v), default=None)
    cores = machine.usable_cores or 1
    if worst is not None and worst > 1.5 * cores:
        return (f"the 1-minute load average reached {worst:.1f} on {cores} usable cores during this run: other "
                "work shared the CPU, so times are inflated (torch with several threads suffers most).")
    return None


def render_markdown(result: BenchResult) -> str:
    """The report: setup, computed conclusion, the table, plots, learning-rate choice, failures."""
    lines = [f"# Frozen features vs fine-tuning: {result.dataset}", ""]
    lines += [f"Command: `{result.command}`  ", f"Machine: {result.machine.line()}  ",
              f"Run: {result.started} → {result.finished} ({result.total_seconds / 60:.1f} min)"
              + (" — **quick mode**: few sizes and seeds, tiny step budgets; not the reference numbers"
                 if result.config.quick else ""), ""]
    busy = busy_note(result.machine, result.load_average_end)
    if busy:
        lines += [f"> **Warning:** {busy}", ""]
    lines += ["## Conclusion (computed from the numbers below)", ""]
    lines += [f"- {c}" for c in result.conclusion]
    lines += ["", "## Setup", ""]
    lines += _setup(result)
    lines += _lr_selection(result)
    lines += ["", "## Results (mean ± std over seeds)", "",
              "| samples/class | strategy | n train | seeds | accuracy | balanced acc. | macro-F1 | extraction s "
              "| head/fit s | fine-tune s | total s | peak RSS MB | trained params | predict ms/item |",
              "|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [_summary_line(e) for e in result.summary]
    lines += _layer_table(result)
    lines += _selection_noise(result)
    lines += _budgets(result)
    plots = result.plots or {}
    lines += ["", "## Plots", ""]
    for key, title in PLOT_TITLES:
        if key in plots:
            lines += [f"### {title}", "", f"![{title}]({plots[key]})", ""]
    if result.best_probe is not None:
        bp = result.best_probe
        params = {k: v for k, v in bp.params.items() if k not in ("head", "chosen_by")}
        lines.append(f"Best probe: {bp.strategy} → {bp.params.get('head')} at {bp.size} samples/class, "
                     f"seed {bp.seed}, params `{json.dumps(params)}`.")
        lines.append("")
    if result.errors:
        lines += ["## Failures", "", "| samples/class | seed | strategy | error |", "|---|---|---|---|"]
        for err in result.errors:
            lines.append(f"| {err.size} | {err.seed} | {err.strategy} | {err.error[:300]} |")
        lines.append("")
    lines.append(f"Raw numbers, per row and seed: `{result.slug}.json` (schema `{result.schema}`).")
    return "\n".join(lines) + "\n"


def _setup(result: BenchResult) -> list[str]:
    cfg, sp, ft = result.config, result.splits, result.finetune
    lines = [
        f"- Training split: {sp.train_split} ({sp.train_items} items); sizes per class: "
        f"{', '.join(sp.sizes)}; seeds {sp.seeds}. {sp.sampling.capitalize()}.",
        f"- Test set (the same for every row): {sp.test}; classes {_class_counts(sp.test_class_counts)}.",
        f"- Backbone: {result.backbone} ({result.backbone_source}); preprocessing for every frozen and fine-tuned "
        f"row: `{json.dumps(result.preprocess)}`.",
    ]
    if result.extraction is not None:
        ex = result.extraction
        lines.append(f"- Extraction: {ex.per_item_s * 1000:.2f} ms/item ({ex.per_item_method}); this run "
                     f"embedded {ex.embedded} and reused {ex.cached} cached of {ex.items} items "
                     f"in {ex.seconds:.1f} s. A frozen row's extraction time = that rate × its training items.")
    if result.parity is not None:
        lines.append(f"- Same backbone check: ONNX Runtime vs the torch module used for fine-tuning differ by at most "
                     f"{result.parity.max_abs_diff:.1e} on {result.parity.inputs}.")
    if cfg.heads:
        lines.append(f"- Heads: {', '.join(cfg.heads)} with featx.heads model selection ({cfg.cv}-fold "
                     "stratified CV on the training subset, fewer folds when a class has fewer items; no selection "
                     "with 1 item per class). 'frozen: best by CV' is the head with the best CV score (its fit time "
                     "counts all heads).")
    lines.append(f"- Baselines: majority class; logistic regression (C in {list(BASELINE_C_GRIDS[result.modality])} "
                 "by CV, the heads' folds) on "
                 + ("standardised raw pixels." if result.modality == "image" else "TF-IDF word 1-2-grams."))
    if result.layers:
        lines.append(f"- Layers: the export also outputs the pooled features of {', '.join(_layer_names(result))} "
                     "(same pass, parity-checked per output; `featx export --layers`); 'frozen: logreg @ L' is "
                     f"featx's logreg head with its selection on layer L, 'frozen: best layer by CV' the layer whose "
                     "logreg has the best CV score, the final layer included (ties and no CV: the final layer).")
    if result.few_shot:
        lines.append("- Few-shot protocol: with one item per class no CV is possible, and each head is fitted with "
                     "featx's few-shot default (`featx.heads.FEW_SHOT_PARAMS`, chosen on held-out training items of "
                     "Fashion-MNIST, never a test set): "
                     + "; ".join(f"{k} `{json.dumps(v)}`" for k, v in result.few_shot.items()) + ".")
    if ft.modes:
        lines.append(f"- Fine-tuning ({', '.join(ft.modes)}) at sizes {', '.join(sp.finetune_sizes)}, seeds "
                     f"{sp.finetune_seeds}: {ft.optimizer}, {ft.schedule}, batch {ft.batch_size}, "
                     f"steps = {ft.steps_rule}, augmentation: {ft.augmentation}, torch threads: "
                     f"{ft.threads}" + (f"; partial = {ft.partial_frozen} frozen" if ft.partial_frozen else "")
                     + ". Fine-tuning time includes decoding/preprocessing the training items; loading the "
                       "pretrained weights (once per run) is not counted."
                     + (" LP-FT: the head-only recipe (the linear probe), then full fine-tuning from that head; "
                        "its time counts both." if "lp-ft" in ft.modes else "")
                     + (" SetFit: its default recipe (setfit.TrainingArguments() as shipped: one epoch of "
                        "oversampled pairs, batch 16, body lr 2e-5, logistic-regression head), the bench's token "
                        f"limit, at most {cfg.setfit_max_steps or 'unlimited'} contrastive steps."
                        if "setfit" in ft.modes else ""))
    lines.append(f"- Memory: {result.memory_method}. Latency: {result.latency_method}.")
    lines.append("- Trained params: fine-tuned rows count the parameters that receive gradients in that mode; "
                 "heads count their fitted values (logistic-regression coefficients; SVM support vectors, dual "
                 "coefficients and calibration; kNN's stored training vectors).")
    return lines


def _lr_selection(result: BenchResult) -> list[str]:
    sel = result.lr_selection
    if sel is None:
        return []
    if sel.max_epochs:
        return _epoch_selection(sel)
    lines = ["", "### Learning-rate choice (validation split, never the test set)", "",
             f"Seed {sel.seed}, {sel.per_class} per class: {sel.train_items} train / {sel.val_items} "
             f"validation items, {sel.steps} steps. Rule: {sel.rule}.", "",
             "| mode | validation accuracy per lr | chosen | seconds |", "|---|---|---|---:|"]
    for mode, choice in sel.modes.items():
        accs = ", ".join(f"{lr}: {format_number(a)}" for lr, a in choice.val_accuracy.items())
        chosen = "none (all diverged)" if choice.chosen is None else f"{choice.chosen:g}"
        lines.append(f"| {mode} | {accs} | {chosen} | {choice.seconds:.1f} |")
    lines.append("")
    lines.append("The selection time is not included in the rows' fine-tuning time (which favours fine-tuning "
                 "in the cost comparisons).")
    return lines


def _summary_line(e: Summary) -> str:
    """One row of the results table."""
    def stat(key: str) -> str:
        return mean_std(e.mean(key), e.std(key), e.n_seeds)

    return (f"| {e.size} | {e.strategy} | {e.n_train:.0f} | {e.n_seeds} | {stat('accuracy')} | "
            f"{stat('balanced_accuracy')} | {stat('macro_f1')} | {format_number(e.mean('extract_s'), 1)} | "
            f"{format_number(e.mean('fit_s'), 1)} | {format_number(e.mean('finetune_s'), 1)} | "
            f"{format_number(e.mean('total_s'), 1)} | {format_number(e.mean('peak_rss_mb'), 0)} | "
            f"{format_count(e.trainable_params)} | {format_number(e.mean('predict_ms_per_item'))} |")


def _class_counts(counts: dict) -> str:
    if len(counts) > 12:
        return f"{len(counts)} classes"
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _epoch_selection(sel) -> list[str]:
    """The learning-rate and epochs choice: per mode and rate, the best validation accuracy and its epoch."""
    lines = ["", "### Learning rate and epochs (validation split, never the test set)", "",
             f"Seed {sel.seed}, {sel.per_class} per class: {sel.train_items} train / {sel.val_items} validation "
             f"items; each rate trains {sel.max_epochs} epochs ({sel.steps_per_epoch} steps each), scored after "
             f"every epoch. Rule: {sel.rule}.", "",
             "| mode | best validation accuracy (at epoch) per lr | chosen lr | epochs | seconds |",
             "|---|---|---|---:|---:|"]
    for mode, choice in sel.modes.items():
        accs = ", ".join(f"{lr}: {format_number(a)}" + ("" if not choice.epochs or choice.epochs.get(lr) is None
                                                         else f" ({choice.epochs[lr]})")
                         for lr, a in choice.val_accuracy.items())
        chosen = "none" if choice.chosen is None else f"{choice.chosen:g}"
        epochs = "-" if choice.chosen_epochs is None else str(choice.chosen_epochs)
        cap = " (the cap)" if choice.chosen_epochs == sel.max_epochs else ""
        lines.append(f"| {mode} | {accs} | {chosen} | {epochs}{cap} | {choice.seconds:.1f} |")
    lines += ["", "The selection time is not included in the rows' fine-tuning time (which favours fine-tuning "
                  "in the cost comparisons)."]
    return lines


def _layer_names(result: BenchResult) -> list[str]:
    return [f"{k} ({v}-d)" for k, v in (result.layers or {}).items() if k != FINAL]


def _layer_table(result: BenchResult) -> list[str]:
    """Test accuracy of the logistic regression on each layer (columns in depth order, the final layer last)."""
    if not result.layers:
        return []
    names = list(result.layers)
    by = {(e.strategy, e.size): e for e in result.summary}
    strategies = {name: head_strategy(LAYER_HEAD, name) for name in names}
    sizes = list(dict.fromkeys(e.size for e in result.summary))
    lines = ["", "### Accuracy per layer (logreg, mean ± std over seeds)", "",
             "| samples/class | " + " | ".join(f"{n} ({result.layers[n]}-d)" for n in names) + " | best layer by CV |",
             "|---|" + "---|" * (len(names) + 1)]
    for size in sizes:
        cells = [by.get((strategies[n], size)) for n in names]
        if not any(cells):
            continue
        best = by.get((BEST_LAYER, size))
        lines.append(f"| {size} | " + " | ".join("-" if c is None else mean_std(c.accuracy.mean, c.accuracy.std,
                                                                                  c.n_seeds) for c in cells)
                     + f" | {'-' if best is None else mean_std(best.accuracy.mean, best.accuracy.std, best.n_seeds)} |")
    return lines


def _selection_noise(result: BenchResult) -> list[str]:
    """For each choice by CV: its CV score against its test accuracy, and how often it picked the test-best candidate."""
    lines = []
    for strategy, what in ((BEST_BY_CV, "head"), (BEST_LAYER, "layer")):
        chosen = [r for r in result.rows if r.strategy == strategy and r.cv_score is not None]
        if not chosen:
            continue
        if not lines:
            lines = ["", "### Selection noise (choices by CV, seen against the test set afterwards)", "",
                     "| choice | samples/class | subsets | CV score | test accuracy | CV - test, points | picked the "
                     "test-best candidate |", "|---|---|---:|---|---|---|---:|"]
        for size in dict.fromkeys(r.size for r in chosen):
            group = [r for r in chosen if r.size == size]
            gaps = [100 * (r.cv_score - r.accuracy) for r in group]
            hits = sum(_was_test_best(result.rows, r, what) for r in group)
            cv, acc = [r.cv_score for r in group], [r.accuracy for r in group]
            lines.append(f"| {what} | {size} | {len(group)} | {mean_std(np.mean(cv), np.std(cv), len(group))} | "
                         f"{mean_std(np.mean(acc), np.std(acc), len(group))} | "
                         f"{mean_std(np.mean(gaps), np.std(gaps), len(group), 1)} | {hits} of {len(group)} |")
    return lines


def _was_test_best(rows, chosen, what: str) -> bool:
    """Whether the candidate chosen by CV also had the best test accuracy among the candidates of its subset."""
    if what == "head":
        pool = [r for r in rows if r.family == "frozen" and r.size == chosen.size and r.seed == chosen.seed
                and r.strategy not in (BEST_BY_CV, BEST_LAYER) and " @ " not in r.strategy]
    else:
        pool = [r for r in rows if r.size == chosen.size and r.seed == chosen.seed
                and (r.strategy == head_strategy(LAYER_HEAD) or r.strategy.startswith(head_strategy(LAYER_HEAD) + " @ "))]
    return bool(pool) and chosen.accuracy >= max(r.accuracy for r in pool)


def _budgets(result: BenchResult) -> list[str]:
    """The budget every fine-tuned row used: epochs chosen, steps, the cap, and whether the cap cut it."""
    rows = [r for r in result.rows if r.family == "finetune" and "hit_cap" in r.params]
    if not rows:
        return []
    lines = ["", "### Fine-tuning budget per row (mean over seeds)", "",
             "| samples/class | strategy | epochs chosen | steps | steps wanted | cap | seeds that hit the cap |",
             "|---|---|---:|---:|---:|---:|---:|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.size, r.strategy), []).append(r)
    for (size, strategy), group in groups.items():
        p = group[0].params
        lines.append(f"| {size} | {strategy} | {p.get('epochs_chosen', '-')} | "
                     f"{np.mean([r.params['steps'] for r in group]):.0f} | "
                     f"{np.mean([r.params.get('steps_wanted') or r.params['steps'] for r in group]):.0f} | "
                     f"{p.get('max_steps') or '-'} | {sum(r.params['hit_cap'] for r in group)} of {len(group)} |")
    return lines
