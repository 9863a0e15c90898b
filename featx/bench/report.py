"""The files of a table: ``<slug>.json`` (the result), the plots and ``<slug>.md`` (the report)."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_text_atomically
from ..machine import MachineFacts
from .config import BASELINE_C_GRIDS
from .formatting import format_count, format_number, mean_std
from .plots import make_plots
from .result import BenchResult
from .rows import Summary

#: (plot kind, title) in report order.
PLOT_TITLES = (("learning_curves", "Learning curves"), ("accuracy_vs_cost", "Accuracy vs training cost"),
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
    if ft.modes:
        lines.append(f"- Fine-tuning ({', '.join(ft.modes)}) at sizes {', '.join(sp.finetune_sizes)}, seeds "
                     f"{sp.finetune_seeds}: {ft.optimizer}, {ft.schedule}, batch {ft.batch_size}, "
                     f"steps = {ft.steps_rule}, augmentation: {ft.augmentation}, torch threads: "
                     f"{ft.threads}" + (f"; partial = {ft.partial_frozen} frozen" if ft.partial_frozen else "")
                     + ". Fine-tuning time includes decoding/preprocessing the training items; loading the "
                       "pretrained weights (once per run) is not counted.")
    lines.append(f"- Memory: {result.memory_method}. Latency: {result.latency_method}.")
    lines.append("- Trained params: fine-tuned rows count the parameters that receive gradients in that mode; "
                 "heads count their fitted values (logistic-regression coefficients; SVM support vectors, dual "
                 "coefficients and calibration; kNN's stored training vectors).")
    return lines


def _lr_selection(result: BenchResult) -> list[str]:
    sel = result.lr_selection
    if sel is None:
        return []
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
