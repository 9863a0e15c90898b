"""The conclusion of a table, computed from its summary (and rows): nothing in it is written by hand.

Winner per size against the best row of another family (a tie when within one standard
deviation over seeds), the regimes (consecutive sizes won by one family), the probe against
full fine-tuning (accuracy and cost ratios, latency), whether scratch training or the simple
baselines beat the probe, the few-shot probe against the head-only fine-tuning (the same model
class), LP-FT and SetFit against their references, which layer wins at each size and what choosing
it by CV gives, and which fine-tuned rows hit their step cap.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ..heads.evaluate import choose_metric
from .formatting import percent, percent_mean_std, span
from .rows import BEST_BY_CV, BEST_LAYER, FT_MODE_LABELS, LAYER_HEAD, Summary, head_strategy
from .splits import size_key

FAMILY_NAMES = {"frozen": "frozen-feature heads", "finetune": "fine-tuning", "baseline": "the simple baselines"}
#: The layer rows' head on the final features ("frozen: logreg").
LAYER_PROBE = head_strategy(LAYER_HEAD)
#: Rows the probe is compared with at every size where both ran.
CHALLENGERS = ("from scratch", "raw pixels + logreg", "TF-IDF + logreg")


def _pm(entry: Summary) -> str:
    return percent_mean_std(entry.accuracy.mean, entry.accuracy.std, entry.n_seeds)


def conclude(summary: Sequence[Summary], *, cores, failures: int = 0, rows: Sequence | None = None,
             selection=None, test_counts: dict | None = None) -> tuple[list[str], str | None]:
    """Sentences computed from the summary, and the headline (the probe vs fine-tuning at the largest size).

    ``cores`` is what the costs were measured on; ``failures`` the number of rows that failed; ``rows``
    (the table's rows) say which fine-tuned rows hit their step cap, ``selection`` (the
    :class:`~featx.bench.result.LrSelection`) which modes chose the most epochs allowed. ``test_counts``
    (items per class of the test set): when the classes are imbalanced
    (:func:`featx.heads.evaluate.choose_metric`), every comparison reads balanced accuracy instead of
    accuracy, and the first sentence says so.
    """
    metric, why = choose_metric(test_counts) if test_counts else ("accuracy", "")
    if metric != "accuracy":
        summary = [dataclasses.replace(e, accuracy=getattr(e, metric)) for e in summary]
    by_size: dict = {}
    for e in summary:
        if e.accuracy is not None:
            by_size.setdefault(e.size, []).append(e)
    if not by_size:
        return ["No row produced a result."], None
    sizes = sorted(by_size, key=size_key)
    lines = [f"The test set's {why[0].lower()}{why[1:]}; below, 'accuracy' is balanced accuracy."] \
        if metric != "accuracy" else []
    lines += _winners(by_size, sizes)
    probe_name = _probe_name(summary)
    headline = _probe_vs_finetuning(lines, by_size, sizes, summary, probe_name, cores)
    for other in CHALLENGERS:
        beats = [s for s in sizes
                 if (o := _find(by_size[s], other)) and (p := _find(by_size[s], probe_name))
                 and o.accuracy.mean > p.accuracy.mean]
        present = [s for s in sizes if _find(by_size[s], other)]
        if present and probe_name:
            if beats:
                lines.append(f"{other} beats the probe at {span(beats)} samples/class (of {span(present)} tested).")
            else:
                lines.append(f"{other} never beats the probe (sizes {span(present)}).")
    lines += _few_shot(by_size, sizes)
    lines += _against(by_size, sizes, FT_MODE_LABELS["lp-ft"], FT_MODE_LABELS["full"])
    lines += _against(by_size, sizes, FT_MODE_LABELS["setfit"], probe_name)
    lines += _layers(by_size, sizes)
    lines += _caps(rows or [])
    lines += _epoch_caps(selection)
    if failures:
        lines.append(f"{failures} row(s) failed and are missing from the table (see 'Failures').")
    return lines, headline


def _find(entries: Sequence[Summary], strategy: str | None) -> Summary | None:
    return next((e for e in entries if e.strategy == strategy), None)


def _winners(by_size: dict, sizes: list) -> list[str]:
    """The best row per size against the best of another family, then the regimes."""
    lines, winners = [], {}
    for size in sizes:
        ranked = sorted(by_size[size], key=lambda e: -e.accuracy.mean)
        best = ranked[0]
        winners[size] = best
        # the runner-up from another family: "frozen: best by CV" duplicates a frozen head
        second = next((e for e in ranked if e.family != best.family), None)
        sentence = f"At {size} samples/class the best is {best.strategy} ({_pm(best)})"
        if second is not None:
            gap = best.accuracy.mean - second.accuracy.mean
            noise = max(best.accuracy.std or 0.0, second.accuracy.std or 0.0)
            within = (" (within one std over seeds: a tie)" if min(best.n_seeds, second.n_seeds) > 1
                      and gap <= noise else "")
            sentence += (f", {100 * gap:.1f} points ahead of the best of {FAMILY_NAMES[second.family]}, "
                         f"{second.strategy} ({_pm(second)}){within}")
        lines.append(sentence + ".")
    runs = []  # regimes: consecutive sizes won by the same family
    for size in sizes:
        family = winners[size].family
        if runs and runs[-1][0] == family:
            runs[-1][1].append(size)
        else:
            runs.append((family, [size]))
    if len(runs) == 1:
        lines.append(f"{FAMILY_NAMES[runs[0][0]].capitalize()} win at every size tested "
                     f"({', '.join(map(str, runs[0][1]))} samples/class).")
    else:
        lines.append("Regimes: " + "; ".join(f"{FAMILY_NAMES[f]} at {span(s)}" for f, s in runs) + " samples/class.")
    return lines


def _probe_name(summary: Sequence[Summary]) -> str | None:
    """The probe: "frozen: best by CV" when it ran, else the first frozen head."""
    if any(e.strategy == BEST_BY_CV for e in summary):
        return BEST_BY_CV
    frozen = [e for e in summary if e.family == "frozen"]
    return frozen[0].strategy if frozen else None


def _probe_vs_finetuning(lines: list[str], by_size: dict, sizes: list, summary: Sequence[Summary],
                         probe_name: str | None, cores) -> str | None:
    """Append the probe-vs-fine-tuning sentences to ``lines``; return the one at the largest size."""
    ft_name = next((FT_MODE_LABELS[m] for m in ("full", "partial", "head")
                    if any(e.strategy == FT_MODE_LABELS[m] for e in summary)), None)
    pairs = []
    for size in sizes:
        p, f = _find(by_size[size], probe_name), _find(by_size[size], ft_name)
        if p and f and f.accuracy.mean and p.total_s is not None:
            pairs.append((size, p, f))
    headline = None
    for size, p, f in pairs:
        ratio_acc = p.accuracy.mean / f.accuracy.mean
        f_cost = f.mean("total_s") or 0
        cost_ratio = f_cost / max(p.total_s.mean, 1e-9)
        cost_text = (f"at 1/{cost_ratio:.0f} of its training cost" if cost_ratio >= 1.5 else
                     f"at {1 / cost_ratio:.1f}x its training cost" if cost_ratio < 1 / 1.5 else
                     "at about the same training cost")
        sentence = (f"At {size} samples/class the probe ({probe_name}) reaches {100 * ratio_acc:.0f}% of "
                    f"{ft_name} accuracy ({percent(p.accuracy.mean)} vs {percent(f.accuracy.mean)}) {cost_text} "
                    f"({p.total_s.mean:.1f} s extraction + head vs {f.mean('total_s'):.1f} s fine-tuning on "
                    f"{cores} cores).")
        lines.append(sentence)
        if size == pairs[-1][0]:
            headline = sentence
    if pairs:
        size, p, f = pairs[-1]
        p_latency, f_latency = p.mean("predict_ms_per_item"), f.mean("predict_ms_per_item")
        if p_latency and f_latency:
            lines.append(f"Prediction: {p_latency:.2f} ms/item for the probe (extraction + head) "
                         f"vs {f_latency:.2f} ms/item for the fine-tuned model.")
    return headline


def _tie(a: Summary, b: Summary) -> bool:
    """Within one standard deviation over seeds of each other (the larger of the two stds)."""
    return abs(a.accuracy.mean - b.accuracy.mean) <= max(a.accuracy.std or 0.0, b.accuracy.std or 0.0)


def _few_shot(by_size: dict, sizes: list) -> list[str]:
    """At the smallest size: the frozen logistic regression against the head-only fine-tuning (same model class)."""
    size = sizes[0]
    probe, head = _find(by_size[size], "frozen: logreg"), _find(by_size[size], FT_MODE_LABELS["head"])
    if not (probe and head):
        return []
    verdict = ("above it" if probe.accuracy.mean > head.accuracy.mean else
               "within one std over seeds" if _tie(probe, head) else "below it by more than one std")
    return [f"At {size} samples/class the frozen logistic regression ({_pm(probe)}) against {head.strategy}, the same "
            f"model class ({_pm(head)}): {verdict}."]


def _against(by_size: dict, sizes: list, name: str, reference: str | None) -> list[str]:
    """``name`` against ``reference``, in points, at every size where both ran."""
    pairs = [(s, a, b) for s in sizes if (a := _find(by_size[s], name)) and (b := _find(by_size[s], reference))]
    if not pairs:
        return []
    parts = [f"{100 * (a.accuracy.mean - b.accuracy.mean):+.1f} points at {s}" + (" (a tie)" if _tie(a, b) and
                                                                                  a.n_seeds > 1 else "")
             for s, a, b in pairs]
    return [f"{name} vs {reference}: {'; '.join(parts)} samples/class."]


def _layers(by_size: dict, sizes: list) -> list[str]:
    """Which layer's logistic regression is best at each size, and what choosing the layer by CV gives."""
    lines, final_best, earlier = [], [], []
    for size in sizes:
        layer_rows = [e for e in by_size[size] if e.strategy.startswith(f"{LAYER_PROBE} @ ")]
        final = _find(by_size[size], LAYER_PROBE)
        if not layer_rows or final is None:
            continue
        best = max(layer_rows, key=lambda e: e.accuracy.mean)
        if best.accuracy.mean > final.accuracy.mean:
            earlier.append(f"{size} ({best.strategy.split(' @ ')[1]} {_pm(best)} vs the final layer {_pm(final)}"
                           + (", within one std" if _tie(best, final) else "") + ")")
        else:
            final_best.append(size)
    if final_best or earlier:
        text = "Layers (a logistic regression on each layer's pooled features): "
        text += "; ".join(([f"the final layer is best at {span(final_best)} samples/class"] if final_best else [])
                          + ([f"an earlier layer at {'; '.join(earlier)}"] if earlier else []))
        lines.append(text + ".")
    chosen = [(s, b, f) for s in sizes if (b := _find(by_size[s], BEST_LAYER)) and (f := _find(by_size[s], LAYER_PROBE))]
    if chosen:
        lines.append(f"Choosing the layer by CV ({BEST_LAYER}) against the final layer's logistic regression: "
                     + "; ".join(f"{100 * (b.accuracy.mean - f.accuracy.mean):+.1f} points at {s}" for s, b, f in chosen)
                     + " samples/class.")
    return lines


def _caps(rows: Sequence) -> list[str]:
    """The fine-tuned rows cut by their step cap (rows that record ``hit_cap``), per strategy and size."""
    budgeted = [r for r in rows if r.family == "finetune" and "hit_cap" in r.params]
    if not budgeted:
        return []
    hit: dict = {}
    for r in budgeted:
        if r.params["hit_cap"]:
            hit.setdefault((r.strategy, r.size), []).append(r)
    if not hit:
        return ["No fine-tuned row hit its step cap: each trained the epochs chosen on the validation split."]
    parts = []
    for (strategy, size), group in hit.items():
        seeds = sum(1 for r in budgeted if r.strategy == strategy and r.size == size)
        first = group[0].params
        if "probe_steps" in first and first.get("steps_wanted", 0) <= first.get("max_steps", 0):
            # LP-FT whose full fine-tuning fitted its budget: the cap cut its linear-probe stage
            parts.append(f"{strategy} at {size} samples/class ({len(group)} of {seeds} seeds: its linear-probe "
                         f"stage, {first['probe_steps']} steps)")
            continue
        wanted = f"; it wanted {first['steps_wanted']}" if first.get("steps_wanted") else ""
        parts.append(f"{strategy} at {size} samples/class ({len(group)} of {seeds} seeds: {first['steps']} steps"
                     f"{wanted})")
    return ["Hit the step cap (so trained fewer epochs than chosen on the validation split, or for SetFit fewer "
            "pairs than its recipe): " + "; ".join(parts) + "."]


def _epoch_caps(selection) -> list[str]:
    """The modes whose validation accuracy peaked at the last epoch allowed: the cap, not early stopping, ended them."""
    if selection is None or not selection.max_epochs:
        return []
    capped = [FT_MODE_LABELS.get(m, m) for m, c in selection.modes.items() if c.chosen_epochs == selection.max_epochs]
    if not capped:
        return [f"Every fine-tuned mode stopped early, before the cap of {selection.max_epochs} epochs (validation "
                "accuracy peaked earlier)."]
    return [f"{', '.join(capped)} chose the cap of {selection.max_epochs} epochs (validation accuracy was highest at "
            "the last epoch allowed): more epochs might have helped them."]
