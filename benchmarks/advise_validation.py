"""Validate ``featx advise`` against the truth: advise within a budget, compare with the measured full benchmark.

    python benchmarks/advise_validation.py              # every part -> results/advise_validation.json (~27 min)
    python benchmarks/advise_validation.py --part full  # one part (full, budget); --dataset to pick one
    python benchmarks/advise_validation.py --compare    # only recompute the comparisons from the saved advice

Part ``full`` (the acceptance): the user holds the committed benchmark's whole training data (Fashion-MNIST:
the 200 per class of its largest size, EfficientNet-Lite0 at 112 px; fine-food reviews: all 4,000, MiniLM
at 128 tokens) and gives ``featx.advise`` 10 minutes on 2 cores, fine-tuning pilots included. The pilot
measures nested subsets (the same seeds, subsets and test set as the committed ``featx bench`` tables,
results/fashion-mnist.json and fine-foods.json; fine-foods' subsets keep its class proportions) as far as the
budget allows, then predicts every strategy's score at the full size. Compared with the measured mean over
seeds of the benchmark's rows (accuracy for Fashion-MNIST; balanced accuracy for fine-foods, whose classes
are imbalanced: advise's rule) at every benchmark size above the pilot's largest, the committed tables plus
:data:`EXTRA_TRUTH` (fine-tuning on all reviews, which the committed table does not run): per strategy and
size, predicted, measured, error. For the recommended strategy at the full size: the error (goal: within 3
points) and whether it is within one std of the measured best of every row at that size (goal; a one-seed
row, such as fine-foods' frozen rows at "all", has no std over seeds, so the test set's own sampling std
stands in: sqrt(sum_k r(1-r)/n_k)/K for balanced accuracy over K classes of n_k test items, sqrt(r(1-r)/n)
for accuracy). The whole call's wall time against its budget (goal: within +-20 %). Also: each probe's
curve refitted on its means per size, on every size and on the upper range advise fits; each fine-tuning
pilot against the benchmark's row of the same mode and size, where one exists.

Part ``from_20_per_class`` (kept from the first validation, 2026-12-06, frozen probes only, curves fitted on
every size): advise on the first 20 items per class, extrapolated 10x (Fashion-MNIST, 200/class) and 100x
(fine-foods, all): recomputed from the saved curves, stated, not a goal.

Part ``budget``: the CLI on data that are not builtins and larger than the budget can finish: a folder of
3,000 Fashion-MNIST PNGs (300 per class) and a CSV of the 4,000 fine-food training reviews, ``--budget 3m``
each, first runs (nothing cached); wall time of the whole command (start-up, reports) against the budget.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from featx.strategy import advise  # noqa: E402
from featx.strategy.curves import MIN_SIZES, curve_value, fit_curve, upper_range  # noqa: E402
from featx.strategy.report import to_dict  # noqa: E402
from featx.machine import machine_facts  # noqa: E402

DATASETS = {"fashion-mnist": "fashion-mnist.json", "fine-foods": "fine-foods.json"}
#: Rows measured afresh where the committed table has none: fine-tuning on all 4,000 reviews (the table
#: fine-tunes at 1, 10 and 100 per class only), `featx bench --dataset fine-foods --sizes all --finetune-sizes all
#: --heads none --no-baselines --modes partial,full,lp-ft --seeds 3 --out benchmarks/results/fine-foods-all-finetuned`.
EXTRA_TRUTH = {"fine-foods": ["fine-foods-all-finetuned/fine-foods.json"]}
#: The user's data in part "full": the committed benchmark's largest size (None: the whole training split).
FULL_PER_CLASS = {"fashion-mnist": 200, "fine-foods": None}
BUDGET_S = 600.0
HEADS = ("logreg", "knn")
BUDGET_CHECK_S = 180.0
RESULT = HERE / "results" / "advise_validation.json"


def run_advice(name: str) -> dict:
    t = time.perf_counter()
    advice = advise(name, per_class=FULL_PER_CLASS[name], budget_s=BUDGET_S, heads=HEADS, progress=print)
    doc = to_dict(advice)
    doc["wall_s"] = time.perf_counter() - t
    return doc


def size_key(size) -> float:
    return float("inf") if size == "all" else float(size)


def sampling_std(rate: float, test_counts: dict, metric: str) -> float:
    """The test set's sampling std of a score ``rate`` (binomial per class; see the module docstring)."""
    if metric == "balanced_accuracy":
        k = len(test_counts)
        return math.sqrt(sum(rate * (1 - rate) / n for n in test_counts.values())) / k
    return math.sqrt(rate * (1 - rate) / sum(test_counts.values()))


def compare(name: str, doc: dict) -> dict:
    """Predictions of the saved advice against the committed benchmark's measured rows."""
    bench = json.loads((HERE / "results" / DATASETS[name]).read_text())
    metric = doc["metric"]
    test_counts = bench["splits"]["test_class_counts"]
    measured_top = max(float(v["n_train"]) for f in doc["forecasts"] for v in f["measured"].values())
    summary = [s for s in bench["summary"] if s["strategy"] != "majority class"]
    for extra in EXTRA_TRUTH.get(name, ()):  # fresh rows the committed table lacks (same splits and test set)
        path = HERE / "results" / extra
        if path.is_file():
            more = json.loads(path.read_text())
            assert more["splits"]["test_class_counts"] == test_counts, f"{extra}: another test set"
            summary += [s for s in more["summary"] if (s["strategy"], s["size"]) not in
                        {(t["strategy"], t["size"]) for t in summary}]
    by_key = {(s["strategy"], s["size"]): s for s in summary}
    larger = sorted({s["size"] for s in summary if s["n_train"] > measured_top}, key=size_key)
    full = max((s["size"] for s in summary), key=size_key)  # the benchmark's full size
    rows, errors = [], {}
    for fc in doc["forecasts"]:
        if not fc["curve"]:
            continue
        for size in larger:
            s = by_key.get((fc["strategy"], size))
            if s is None:
                continue
            pred = float(curve_value(fc["curve"], s["n_train"]))
            meas = s[f"{metric}_mean"]
            rows.append({"strategy": fc["strategy"], "size": size, "n_train": s["n_train"], "predicted": pred,
                         "measured": meas, "measured_std": s[f"{metric}_std"], "error_points": 100 * (pred - meas),
                         "extrapolation": s["n_train"] / max(v["n_train"] for v in fc["measured"].values())})
            errors.setdefault(fc["strategy"], []).append(abs(100 * (pred - meas)))
    # a fine-tuning pilot (capped steps, one rate) against the benchmark's row of the same mode and size
    # (its rate chosen from a grid, a larger cap): what the pilot's shortcuts cost
    pilots = [{"strategy": fc["strategy"], "size": size, "pilot": v["mean"], "pilot_seeds": v["seeds"],
               "bench": by_key[(fc["strategy"], size)][f"{metric}_mean"],
               "difference_points": 100 * (v["mean"] - by_key[(fc["strategy"], size)][f"{metric}_mean"])}
              for fc in doc["forecasts"] if fc["family"] == "finetune" for size, v in fc["measured"].items()
              if (fc["strategy"], size) in by_key]
    # the fit's choice of points, checked: each curve refitted on its measured means per size, on every size
    # (the small-data region included) and on the upper range advise fits (featx.strategy.curves.upper_range)
    refits = {"all sizes": [], "upper range": []}
    for fc in doc["forecasts"]:
        s = by_key.get((fc["strategy"], full))
        if fc["family"] == "finetune" or s is None or len(fc["measured"]) < MIN_SIZES:
            continue
        n = np.array([v["n_train"] for v in fc["measured"].values()])
        y = np.array([v["mean"] for v in fc["measured"].values()])
        for rule, keep in (("all sizes", n > 0), ("upper range", upper_range(n))):
            curve = fit_curve(n[keep], y[keep], n_boot=0)
            refits[rule].append(abs(100 * (curve.predict(s["n_train"]) - s[f"{metric}_mean"])))
    at_full = [s for s in summary if s["size"] == full]
    best = max(at_full, key=lambda s: s[f"{metric}_mean"])
    best_std = best[f"{metric}_std"] if best["n_seeds"] > 1 else sampling_std(best[f"{metric}_mean"], test_counts,
                                                                                metric)
    rec = by_key.get((doc["recommended"], full))
    rec_row = next((r for r in rows if r["strategy"] == doc["recommended"] and r["size"] == full), None)
    pilot = doc["pilot"]
    return {
        "dataset": name, "metric": metric, "recommended": doc["recommended"], "full_size": full,
        "n_full": doc["n_full"], "pilot_largest_n_train": measured_top,
        "recommended_extrapolation": None if rec_row is None else rec_row["extrapolation"],
        "recommended_predicted": None if rec_row is None else rec_row["predicted"],
        "recommended_measured": None if rec is None else rec[f"{metric}_mean"],
        "recommended_error_points": None if rec_row is None else rec_row["error_points"],
        "within_3_points": bool(rec_row and abs(rec_row["error_points"]) <= 3),
        "measured_best": {"strategy": best["strategy"], "mean": best[f"{metric}_mean"], "std": best_std,
                          "std_from": "seeds" if best["n_seeds"] > 1 else "test-set sampling"},
        "recommendation_within_one_std_of_best": bool(rec and rec[f"{metric}_mean"] >= best[f"{metric}_mean"]
                                                      - best_std),
        "mean_abs_error_points": {k: float(np.mean(v)) for k, v in errors.items()},
        "pilot_seconds": pilot["seconds"], "budget_s": pilot["budget_s"],
        "pilot_over_budget": pilot["seconds"] / pilot["budget_s"], "pilot_sizes": pilot["sizes"],
        "skipped_sizes": pilot["skipped"], "finetune": pilot.get("finetune"),
        "finetune_pilot_vs_bench": pilots,
        "refit_on_means_abs_error_points": {rule: {"mean": float(np.mean(v)), "max": float(np.max(v))}
                                            for rule, v in refits.items() if v},
        "predictions": rows,
    }


def budget_data(root: Path) -> dict[str, Path]:
    """A folder of 300 Fashion-MNIST PNGs per class and a CSV of the 4,000 fine-food training reviews."""
    import csv

    from PIL import Image

    from featx.sources.builtins import read_builtin

    folder = root / "fashion-300"
    table = read_builtin("fashion-mnist", "train")
    taken: dict = {}
    for i, (pixels, label) in enumerate(zip(table.refs, table.labels)):
        if taken.get(label, 0) >= 300:
            continue
        taken[label] = taken.get(label, 0) + 1
        target = folder / label.replace("/", "-")
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(target / f"{i}.png")
    reviews = read_builtin("fine-foods", "train")
    csv_path = root / "reviews.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(reviews.refs, reviews.labels))
    return {"image folder (3,000 PNGs, 10 classes)": folder, "CSV of texts (4,000 reviews, 2 classes)": csv_path}


def run_budget_checks() -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, data in budget_data(Path(tmp)).items():
            cmd = [sys.executable, "-m", "featx", "advise", str(data), "--budget", f"{BUDGET_CHECK_S:.0f}s",
                   "--out", str(Path(tmp) / "advice")]
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            wall = time.perf_counter() - t
            print(done.stdout[-3000:], done.stderr[-3000:])
            stem = "advice-" + data.stem if data.suffix else "advice-" + data.name
            doc = json.loads((Path(tmp) / "advice" / f"{stem}.json").read_text()) if done.returncode == 0 else {}
            pilot = doc.get("pilot", {})
            out.append({"data": what, "command": f"featx advise {data.name} --budget {BUDGET_CHECK_S:.0f}s",
                        "exit": done.returncode, "wall_s": wall, "budget_s": BUDGET_CHECK_S,
                        "wall_over_budget": wall / BUDGET_CHECK_S, "pilot_seconds": pilot.get("seconds"),
                        "sizes": pilot.get("sizes"), "skipped": pilot.get("skipped"),
                        "finetune": pilot.get("finetune"), "recommended": doc.get("recommended"),
                        "metric": doc.get("metric"),
                        "summary": [line.replace(f"{tmp}/", "") for line in done.stdout.strip().splitlines()[:4]]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", action="store_true", help="recompute the comparisons from the saved advice")
    ap.add_argument("--part", action="append", choices=["full", "budget"])
    ap.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    args = ap.parse_args(argv)
    saved = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    doc = {"schema": "featx-advise-validation/2", "command": "python benchmarks/advise_validation.py",
           **{k: saved[k] for k in ("started", "machine", "advice", "advice_20_per_class", "budget") if k in saved}}
    if "advice_20_per_class" not in doc and saved.get("schema") == "featx-advise-validation/1":
        doc["advice_20_per_class"] = saved["advice"]  # the first validation's pilots (frozen probes only)
        doc.pop("advice", None)
    parts = [] if args.compare else (args.part or ["full", "budget"])
    if parts:
        doc["started"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        doc["machine"] = machine_facts().to_dict()
    if "full" in parts:
        doc.setdefault("advice", {})
        for name in args.dataset or list(DATASETS):
            doc["advice"][name] = run_advice(name)
            RESULT.write_text(json.dumps(doc, indent=1, default=str))  # each dataset kept as it finishes
    if "budget" in parts:
        doc["budget"] = run_budget_checks()
    doc.update({"budget_s": BUDGET_S, "heads": list(HEADS), "full_per_class": FULL_PER_CLASS})
    doc["results"] = {name: compare(name, advice) for name, advice in doc.get("advice", {}).items()}
    doc["results_20_per_class"] = {name: compare(name, advice)
                                   for name, advice in doc.get("advice_20_per_class", {}).items()}
    RESULT.write_text(json.dumps(doc, indent=1, default=str))
    for part in ("results", "results_20_per_class"):
        for name, r in doc[part].items():
            err = r["recommended_error_points"]
            pred, meas = r["recommended_predicted"] or 0, r["recommended_measured"] or 0
            print(f"{part} {name}: recommended {r['recommended']}; at {r['full_size']}/class predicted "
                  f"{100 * pred:.1f} vs measured {100 * meas:.1f} ({'-' if err is None else f'{err:+.1f}'} points); "
                  f"best {r['measured_best']}; within one std: {r['recommendation_within_one_std_of_best']}; "
                  f"pilot {r['pilot_seconds']:.0f} s of {r['budget_s']:.0f} s")
    for b in doc.get("budget", []):
        print(f"budget {b['data']}: {b['wall_s']:.0f} s of {b['budget_s']:.0f} s ({b['wall_over_budget']:.2f}), "
              f"sizes {b['sizes']}, skipped {b['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
