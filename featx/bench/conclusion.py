"""The conclusion of a table, computed from its summary: nothing in it is written by hand.

Winner per size against the best row of another family (a tie when within one standard
deviation over seeds), the regimes (consecutive sizes won by one family), the probe against
full fine-tuning (accuracy and cost ratios, latency), and whether scratch training or the
simple baselines beat the probe.
"""

from __future__ import annotations

from typing import Sequence

from .formatting import percent, percent_mean_std, span
from .rows import BEST_BY_CV, FT_MODE_LABELS, Summary
from .splits import size_key

FAMILY_NAMES = {"frozen": "frozen-feature heads", "finetune": "fine-tuning", "baseline": "the simple baselines"}
#: Rows the probe is compared with at every size where both ran.
CHALLENGERS = ("from scratch", "raw pixels + logreg", "TF-IDF + logreg")


def _pm(entry: Summary) -> str:
    return percent_mean_std(entry.accuracy.mean, entry.accuracy.std, entry.n_seeds)


def conclude(summary: Sequence[Summary], *, cores, failures: int = 0) -> tuple[list[str], str | None]:
    """Sentences computed from the summary, and the headline (the probe vs fine-tuning at the largest size).

    ``cores`` is what the costs were measured on; ``failures`` the number of rows that failed.
    """
    by_size: dict = {}
    for e in summary:
        if e.accuracy is not None:
            by_size.setdefault(e.size, []).append(e)
    if not by_size:
        return ["No row produced a result."], None
    sizes = sorted(by_size, key=size_key)
    lines = _winners(by_size, sizes)
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
