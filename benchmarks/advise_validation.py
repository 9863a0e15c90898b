"""Validate ``featx advise`` against the truth: advise on a small subset, compare with the measured full benchmark.

    python benchmarks/advise_validation.py              # both datasets -> results/advise_validation.json
    python benchmarks/advise_validation.py --compare    # only recompute the comparison from the saved advice

For Fashion-MNIST (EfficientNet-Lite0 at 112 px) and fine-food reviews (MiniLM, 128 tokens), ``featx.advise``
runs on the first 20 items per class of each seed's shuffled order (the same nested subsets, seeds and test
set as the committed ``featx bench`` tables, results/fashion-mnist.json and results/fine-foods.json), with a
10-minute budget on 2 cores. Its fitted learning curves then predict each strategy's score at the larger
sizes the full benchmark measured (50, 100, 200 per class; fine-foods also 500 and all), and the prediction
is compared with the measured mean over seeds (accuracy for Fashion-MNIST; balanced accuracy for fine-foods,
whose classes are imbalanced: advise's rule). Reported: per strategy and size, predicted, interval, measured,
error; for the recommended strategy at the largest size: the error (goal: within 3 points); whether the
recommendation is within one std (over seeds) of the measured best of the strategies advise compares (goal)
and of every row of the benchmark, fine-tuning included (stated, not a goal: advise runs no fine-tuning);
the pilot's wall time against its budget (goal: within +-20 %).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from featx.strategy import advise  # noqa: E402
from featx.strategy.curves import power_law  # noqa: E402
from featx.strategy.report import to_dict  # noqa: E402
from featx.machine import machine_facts  # noqa: E402

DATASETS = {"fashion-mnist": "fashion-mnist.json", "fine-foods": "fine-foods.json"}
PER_CLASS = 20
BUDGET_S = 600.0
HEADS = ("logreg", "knn")


def run_advice(name: str) -> dict:
    t = time.perf_counter()
    advice = advise(name, per_class=PER_CLASS, budget_s=BUDGET_S, heads=HEADS, progress=print)
    doc = to_dict(advice)
    doc["wall_s"] = time.perf_counter() - t
    return doc


def compare(name: str, doc: dict) -> dict:
    bench = json.loads((HERE / "results" / DATASETS[name]).read_text())
    metric = doc["metric"]
    summary = [s for s in bench["summary"] if s["size"] == "all" or float(s["size"]) > PER_CLASS]
    by_key = {(s["strategy"], s["size"]): s for s in summary}
    sizes = sorted({s["size"] for s in summary}, key=lambda x: float("inf") if x == "all" else float(x))
    largest = sizes[-1]
    rows, errors = [], {}
    for fc in doc["forecasts"]:
        if not fc["curve"]:
            continue
        c = fc["curve"]
        for size in sizes:
            s = by_key.get((fc["strategy"], size))
            if s is None:
                continue
            pred = float(power_law(s["n_train"], c["a"], c["b"], c["c"]))
            meas = s[f"{metric}_mean"]
            rows.append({"strategy": fc["strategy"], "size": size, "n_train": s["n_train"], "predicted": pred,
                         "measured": meas, "measured_std": s[f"{metric}_std"], "error_points": 100 * (pred - meas)})
            errors.setdefault(fc["strategy"], []).append(abs(100 * (pred - meas)))
    considered = {fc["strategy"] for fc in doc["forecasts"]}
    at_largest = [s for s in summary if s["size"] == largest]
    best_considered = max((s for s in at_largest if s["strategy"] in considered), key=lambda s: s[f"{metric}_mean"])
    best_all = max((s for s in at_largest if s["strategy"] != "majority class"), key=lambda s: s[f"{metric}_mean"])
    rec = by_key.get((doc["recommended"], largest))
    rec_row = next((r for r in rows if r["strategy"] == doc["recommended"] and r["size"] == largest), None)

    def within(best):
        return bool(rec and rec[f"{metric}_mean"] >= best[f"{metric}_mean"] - best[f"{metric}_std"])

    return {
        "dataset": name, "metric": metric, "recommended": doc["recommended"], "largest_size": largest,
        "recommended_error_points": None if rec_row is None else rec_row["error_points"],
        "recommended_measured": None if rec is None else rec[f"{metric}_mean"],
        "recommended_predicted": None if rec_row is None else rec_row["predicted"],
        "within_3_points": bool(rec_row and abs(rec_row["error_points"]) <= 3),
        "measured_best_considered": {"strategy": best_considered["strategy"],
                                     "mean": best_considered[f"{metric}_mean"], "std": best_considered[f"{metric}_std"]},
        "recommendation_within_one_std_of_best_considered": within(best_considered),
        "measured_best_any": {"strategy": best_all["strategy"], "mean": best_all[f"{metric}_mean"],
                              "std": best_all[f"{metric}_std"]},
        "recommendation_within_one_std_of_best_any": within(best_all),
        "mean_abs_error_points": {k: float(np.mean(v)) for k, v in errors.items()},
        "pilot_seconds": doc["pilot"]["seconds"], "budget_s": doc["pilot"]["budget_s"],
        "pilot_over_budget": doc["pilot"]["seconds"] / doc["pilot"]["budget_s"],
        "pilot_sizes": doc["pilot"]["sizes"], "skipped_sizes": doc["pilot"]["skipped"],
        "predictions": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", action="store_true", help="recompute the comparison from the saved advice")
    ap.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    args = ap.parse_args(argv)
    out = HERE / "results" / "advise_validation.json"
    saved = json.loads(out.read_text()) if out.is_file() else {"advice": {}}
    advice = saved.get("advice", {})
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for name in args.dataset or list(DATASETS):
        if not args.compare:
            advice[name] = run_advice(name)
            out.write_text(json.dumps({**saved, "advice": advice}, indent=1))  # each dataset kept as it finishes
    results = {name: compare(name, doc) for name, doc in advice.items()}
    doc = {"schema": "featx-advise-validation/1", "command": "python benchmarks/advise_validation.py",
           "started": saved.get("started") if args.compare else started, "machine": saved.get("machine") if args.compare
           else machine_facts().to_dict(),
           "per_class": PER_CLASS, "budget_s": BUDGET_S, "heads": list(HEADS), "results": results, "advice": advice}
    out.write_text(json.dumps(doc, indent=1, default=str))
    for name, r in results.items():
        print(f"{name}: recommended {r['recommended']}; at {r['largest_size']}/class predicted "
              f"{100 * (r['recommended_predicted'] or 0):.1f} vs measured {100 * (r['recommended_measured'] or 0):.1f} "
              f"({r['recommended_error_points']:+.1f} points); best considered {r['measured_best_considered']}; "
              f"within one std: {r['recommendation_within_one_std_of_best_considered']}; "
              f"pilot {r['pilot_seconds']:.0f} s of {r['budget_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
