"""Heads at scale: train time, peak memory and test accuracy per head and strategy, as n grows.

    python benchmarks/heads_scaling.py            # full run -> results/heads_scaling.json (~45 min on 2 cores)
    python benchmarks/heads_scaling.py --quick    # small sizes, minutes  -> results/heads_scaling.quick.json

Two parts:

a. Fashion-MNIST training split (EfficientNet-Lite0 at 112 px, the bench's input size), stratified
   subsets of 2,000, 10,000 and 60,000 images, each head ``exact`` and ``approximate``
   (``featx.heads.select_head``, 3-fold CV, the default grids), scored on the 10,000 test images.
   The exact SVM is skipped above ``--exact-svm-max`` rows (n^2 to n^3: hours at 60,000).
b. A synthetic float16 cache of 250,000 and 1,000,000 rows made from the real training embeddings
   plus Gaussian noise (0.1 of each feature's standard deviation), trained by the "auto" strategy
   under a memory budget (default 1 GiB): streamed from the HDF5 shards, scored on the real test
   images. Peak memory should not grow with n past the ids and labels (~100 bytes a row).

c. ``--all-heads`` (issue 29): at each n of ``--sizes`` (default 2,000 and 20,000), what
   ``featx train --head all --cv 3`` runs (``train_heads``, strategy "auto", search "auto": successive
   halving where the sample is large enough), timed per head with the selection's share, every head
   scored on the 10,000 test images; then each head ``exact`` and ``approximate`` alone, so that the
   strategy the plan chose is compared with the one it did not; ``--old-grid KIND`` also runs that head
   with today's full grid at the largest n (search="grid"), the accuracy the new selection must stay
   within 0.3 points of.

    python benchmarks/heads_scaling.py --all-heads                 # -> results/heads_linear.json

d. ``--intelex`` (issue 29): the same ``--head all`` with and without scikit-learn-intelex
   (``patch_sklearn()`` in the child), at each n of ``--sizes``; the time ratio per head and the
   share of the 10,000 test predictions that are equal (parity). Needs ``pip install scikit-learn-intelex``.

    python benchmarks/heads_scaling.py --intelex                   # -> results/heads_intelex.json

Every run is a child process (``--run-one``): its peak RSS (``VmHWM``) is read right after training,
before the test set is loaded; a child that only imports featx and sklearn gives the baseline.
Goals (issue 17): time per head grows at most linearly from 10k to 60k; each approximate head
within 0.5 accuracy points of the exact one at 10k and 60k (where the exact head runs); 1M rows
train with memory bounded by the chunk size, not n.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from featx.machine import peak_rss_mb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
HEADS = ("logreg", "svm", "knn")




# --------------------------------------------------------------------------- one run, in a child
def run_one(spec: dict) -> dict:
    import warnings

    import featx
    from featx.cache import FeatureReader
    from featx.heads import select_head, stratified_sample

    warnings.simplefilter("ignore")
    if spec.get("intelex"):  # before featx imports any estimator: they are looked up in sklearn's modules
        from sklearnex import patch_sklearn

        patch_sklearn(verbose=False)
    if spec.get("baseline"):
        import sklearn.linear_model  # noqa: F401  (what every run imports)

        return {"peak_rss_mb": peak_rss_mb()}
    reader = FeatureReader(spec["train"])
    t0 = time.perf_counter()
    if spec.get("size"):  # an in-memory stratified subset of the cache
        positions = stratified_sample(reader.labels, spec["size"], seed=0)
        X, y = reader.read(positions), reader.labels[positions]
    else:  # the whole cache, streamed when it does not fit the budget
        X, y = reader, reader.labels
    if spec.get("all"):  # what featx train --head all runs
        from featx.heads import train_heads

        results = train_heads(X, y, "all", cv=spec["cv"], n_jobs=spec["jobs"], seed=0, strategy=spec["strategy"],
                              select_rows=spec["select_rows"], progress=False)
        seconds = time.perf_counter() - t0
        peak = peak_rss_mb()
        Xt, yt, _ = featx.load_features(spec["test"])
        if spec.get("predictions"):  # every head's test predictions, for a parity check in the parent
            np.savez(spec["predictions"], **{r.kind: r.best_estimator.predict(Xt).astype(str) for r in results})
        heads = {r.kind: {"seconds": r.fit_seconds, "search_seconds": r.search_seconds, "search": r.search,
                          "strategy": r.plan.strategy, "plan": r.plan.describe(), "best_params": r.best_params,
                          "cv_mean": r.cv_mean, "test_accuracy": float(np.mean(r.best_estimator.predict(Xt) == yt)),
                          "notes": r.notes} for r in results}
        best = max(results, key=lambda r: r.cv_mean)
        return {"train_seconds": seconds, "peak_rss_mb": peak, "n_train": int(len(y)), "heads": heads,
                "best": best.kind, "test_accuracy": heads[best.kind]["test_accuracy"],
                "search_share": sum(h["search_seconds"] for h in heads.values()) / seconds}
    result = select_head(spec["kind"], X, y, cv=spec["cv"], n_jobs=spec["jobs"], seed=0, strategy=spec["strategy"],
                         memory_budget=spec.get("memory_budget"), select_rows=spec["select_rows"],
                         search=spec.get("search", "auto"))
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    Xt, yt, _ = featx.load_features(spec["test"])
    t1 = time.perf_counter()
    accuracy = float(np.mean(result.best_estimator.predict(Xt) == yt))
    return {"train_seconds": seconds, "peak_rss_mb": peak, "test_accuracy": accuracy,
            "predict_ms_per_item": 1000 * (time.perf_counter() - t1) / len(yt), "n_train": int(len(y)),
            "plan": result.plan.describe(), "strategy": result.plan.strategy, "streamed": result.plan.streamed,
            "n_select": result.plan.n_select, "best_params": result.best_params, "cv_mean": result.cv_mean,
            "search": result.search, "search_seconds": result.search_seconds}


def in_child(spec: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, __file__, "--run-one", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- data
def fashion_caches(home: Path, n_train: int | None, n_test: int | None) -> tuple[Path, Path]:
    """Caches of Fashion-MNIST train/test through Lite0 at 112 px (reused across runs)."""
    import featx
    from featx.bench import BenchConfig, prepare_backbone
    from featx.sources import open_dataset, subset

    bb = prepare_backbone(BenchConfig(dataset="fashion-mnist", image_size=112), "image", need_torch=False)
    caches = []
    for split, n in (("train", n_train), ("test", n_test)):
        cache = home / f"heads-scaling-fashion-mnist-{split}-{n or 'all'}"
        data = open_dataset(f"builtin:fashion-mnist:{split}")
        featx.extract(subset(data, n, seed=0) if n else data, bb.onnx_path, cache, progress=sys.stderr.isatty())
        caches.append(cache)
    return caches[0], caches[1]


def synthetic_cache(home: Path, source: Path, n_rows: int, noise: float = 0.1, shard_rows: int = 8192) -> Path:
    """A float16 cache of ``n_rows``: real embeddings drawn with replacement, plus Gaussian noise."""
    from featx.cache import CacheStore, FeatureReader, ShardData

    cache = home / f"heads-scaling-synthetic-{n_rows}"
    if (cache / "dataset.h5").is_file():
        return cache
    reader = FeatureReader(source)
    X, labels = reader.read_all(), reader.labels
    scale = noise * X.std(axis=0)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(X), n_rows)
    ids = [f"synthetic/{i:07d}" for i in range(n_rows)]
    store = CacheStore(cache)
    store.create()
    store.register_model({"name": "synthetic-lite0", "dim": int(X.shape[1]), "source": str(source.name),
                          "noise": noise}, "synthetic", "float16")
    store.write_listing(f"synthetic-{n_rows}", "image", ids, labels[picks], [""] * n_rows)
    for lo in range(0, n_rows, shard_rows):
        rows = picks[lo:lo + shard_rows]
        emb = X[rows] + rng.normal(size=(len(rows), X.shape[1])).astype(np.float32) * scale
        store.commit("synthetic-lite0", ShardData(ids[lo:lo + len(rows)], [""] * len(rows), emb),
                     fingerprint_id="synthetic", dtype="float16", durable=False)
    return cache


# --------------------------------------------------------------------------- the run
def table(rows: list[dict]) -> str:
    lines = ["| data | n | head | strategy | train (s) | peak RSS (MB) | test acc | vs exact (pt) | what was done |",
             "|---|---:|---|---|---:|---:|---:|---:|---|"]
    exact = {(r["data"], r["n"], r["kind"]): r.get("test_accuracy") for r in rows if r["strategy_asked"] == "exact"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['data']} | {r['n']:,} | {r['kind']} | {r['strategy_asked']} | | | | | {r['error']} |")
            continue
        ref = exact.get((r["data"], r["n"], r["kind"]))
        delta = "" if ref is None or r["strategy_asked"] == "exact" else f"{100 * (r['test_accuracy'] - ref):+.1f}"
        lines.append(f"| {r['data']} | {r['n']:,} | {r['kind']} | {r['strategy_asked']} | {r['train_seconds']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['test_accuracy']:.4f} | {delta} | {r['plan']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="sizes 500/2000, synthetic 20k/50k under 64 MiB, 1000 test images")
    p.add_argument("--sizes", default=None, help="Fashion-MNIST training sizes (default 2000,10000,60000)")
    p.add_argument("--synthetic", default=None, help="synthetic cache sizes (default 250000,1000000)")
    p.add_argument("--heads", default="logreg,svm,knn")
    p.add_argument("--exact-svm-max", type=int, default=10_000, help="largest n the exact SVM runs at")
    p.add_argument("--memory-budget", type=int, default=None,
                   help="bytes, for the synthetic runs (default 1 GiB; --quick: 64 MiB, so that they stream too)")
    p.add_argument("--cv", type=int, default=3)
    p.add_argument("--select-rows", type=int, default=None,
                   help="most rows the grid is cross-validated on (default featx's 10,000; --quick: 2000)")
    p.add_argument("--jobs", type=int, default=-1)
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per run")
    p.add_argument("--all-heads", action="store_true", help="part c only (issue 29): --head all and per head, 2k -> 20k")
    p.add_argument("--old-grid", default="", help="--all-heads: these heads also with the full grid at the largest n")
    p.add_argument("--cost-sizes", default="",
                   help="--all-heads: also every head both exact and approximate at these sizes (the cost model's "
                   "points between the --sizes; featx.heads.plan.COSTS)")
    p.add_argument("--old-grid-only", action="store_true",
                   help="--all-heads: only the --old-grid and --cost-sizes rows, added to the results/heads_linear.json "
                   "of an earlier run (the full-grid rows' accuracy is the reference, their time is not compared)")
    p.add_argument("--intelex", action="store_true",
                   help="part d: --head all with and without scikit-learn-intelex's patch_sklearn, at each --sizes "
                   "(default 2000,20000), with the parity of the test predictions -> results/heads_intelex.json")
    p.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_one:
        print(json.dumps(run_one(json.loads(args.run_one))))
        return 0
    if args.intelex:
        return intelex(args)
    if args.all_heads:
        return all_heads(args)
    from featx.machine import machine_facts, rounded_load_average
    from featx.files import featx_home

    home = featx_home()
    sizes = [int(s) for s in (args.sizes or ("500,2000" if args.quick else "2000,10000,60000")).split(",")]
    synth = [int(s) for s in (args.synthetic or ("20000,50000" if args.quick else "250000,1000000")).split(",")]
    heads = [h for h in args.heads.split(",") if h]
    args.memory_budget = args.memory_budget or ((64 << 20) if args.quick else (1 << 30))
    started = time.time()
    machine = machine_facts().to_dict()
    train, test = fashion_caches(home, max(sizes) if args.quick else None, 1000 if args.quick else None)
    from featx.heads import SELECT_ROWS

    select_rows = args.select_rows or (2000 if args.quick else SELECT_ROWS)
    base = {"train": str(train), "test": str(test), "cv": args.cv, "jobs": args.jobs, "select_rows": select_rows}
    rows = []

    def record(data, n, kind, strategy, spec):
        out = {"data": data, "n": n, "kind": kind, "strategy_asked": strategy, **in_child(spec, args.timeout)}
        rows.append(out)
        print(table([out]).splitlines()[-1], flush=True)

    baseline = in_child({"baseline": True}, 600)
    for n in sizes:
        for kind in heads:
            for strategy in ("exact", "approximate"):
                if strategy == "exact" and kind == "svm" and n > args.exact_svm_max:
                    rows.append({"data": "fashion-mnist", "n": n, "kind": kind, "strategy_asked": strategy,
                                 "error": f"skipped: exact SVM above {args.exact_svm_max:,} rows (n^2 to n^3)"})
                    continue
                record("fashion-mnist", n, kind, strategy, {**base, "kind": kind, "strategy": strategy, "size": n})
    for n in synth:
        cache = synthetic_cache(home, train, n)
        for kind in heads:
            record(f"synthetic f16 (budget {args.memory_budget >> 20} MiB)", n, kind, "auto",
                   {**base, "train": str(cache), "kind": kind, "strategy": "auto", "memory_budget": args.memory_budget})
    result = {
        "command": "python benchmarks/heads_scaling.py" + (" --quick" if args.quick else ""),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "load_after": rounded_load_average()},
        "baseline_peak_rss_mb": baseline.get("peak_rss_mb"), "seconds": time.time() - started,
        "rows": rows, "table": table(rows),
    }
    out = HERE / "results" / ("heads_scaling.quick.json" if args.quick else "heads_scaling.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(result["table"])
    print(f"baseline peak RSS (imports only): {result['baseline_peak_rss_mb']:.0f} MB; wrote {out}")
    return 0


def fashion_setup(args):
    """Parts c and d: ``(sizes, start time, machine facts, the child's base spec)`` on the Fashion-MNIST caches."""
    from featx.files import featx_home
    from featx.heads import SELECT_ROWS
    from featx.machine import machine_facts

    sizes = [int(s) for s in (args.sizes or "2000,20000").split(",")]
    started, machine = time.time(), machine_facts().to_dict()
    train, test = fashion_caches(featx_home(), max(sizes), None)
    base = {"train": str(train), "test": str(test), "cv": args.cv, "jobs": args.jobs,
            "select_rows": args.select_rows or SELECT_ROWS}
    return sizes, started, machine, base


def all_heads(args) -> int:
    """Part c: ``--head all`` (auto) and each head exact / approximate, at each size; -> results/heads_linear.json."""
    from featx.heads.plan import predicted_seconds
    from featx.machine import rounded_load_average

    sizes, started, machine, base = fashion_setup(args)
    runs, per_head, old, cost_points = [], [], [], []
    out = HERE / "results" / "heads_linear.json"
    if args.old_grid_only:  # keep the earlier run's timed parts as they are
        earlier = json.loads(out.read_text())
        runs, per_head, machine = earlier["all_heads"], earlier["per_head"], earlier["machine"]
        cost_points = earlier.get("cost_points", [])
        started -= earlier["seconds"]

    def write(final=False):  # after every run: a cut-short benchmark keeps what it measured
        checks = []
        for run in runs:
            for kind, head in run.get("heads", {}).items():
                other = [r for r in per_head if r["n"] == run["n"] and r["kind"] == kind and "train_seconds" in r]
                alt = other[0]["train_seconds"] if other else None
                checks.append({"n": run["n"], "kind": kind, "chosen": head["strategy"], "chosen_seconds": head["seconds"],
                               "alternative": other[0]["strategy_asked"] if other else None, "alternative_seconds": alt,
                               "alternative_accuracy": other[0].get("test_accuracy") if other else None,
                               "chosen_accuracy": head["test_accuracy"],
                               "no_slower": None if alt is None else head["seconds"] <= 1.1 * alt})
        done = [r for r in runs if "train_seconds" in r]
        result = {
            "command": "python benchmarks/heads_scaling.py --all-heads"
                       + (f" then --old-grid {args.old_grid} --old-grid-only" if args.old_grid_only else
                          f" --old-grid {args.old_grid}" if args.old_grid else ""),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "complete": final,
            "machine": {**machine, "load_after": rounded_load_average()}, "seconds": time.time() - started,
            "all_heads": runs, "per_head": per_head, "old_grid": old, "cost_points": cost_points,
            "strategy_checks": checks,
            "ratio_time": done[-1]["train_seconds"] / done[0]["train_seconds"] if len(done) > 1 else None,
            "ratio_rows": done[-1]["n"] / done[0]["n"] if len(done) > 1 else None,
            "best_accuracy": {str(r["n"]): r.get("test_accuracy") for r in done},
        }
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result

    for n in [] if args.old_grid_only else sizes:  # first what featx train --head all does, at every size: the ratio
        run = {"n": n, **in_child({**base, "all": True, "strategy": "auto", "size": n}, args.timeout)}
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "heads"}), flush=True)
        write()
    for run in [] if args.old_grid_only else runs:  # then each head alone with the strategy the plan did not choose
        for kind, head in run.get("heads", {}).items():
            other = "approximate" if head["strategy"] == "exact" else "exact"
            if other == "exact" and kind == "svm" and run["n"] > args.exact_svm_max:
                continue
            row = {"n": run["n"], "kind": kind, "strategy_asked": other,
                   "predicted_seconds": predicted_seconds(kind, other, run["n"]),
                   **in_child({**base, "kind": kind, "strategy": other, "size": run["n"]}, args.timeout)}
            per_head.append(row)
            print(json.dumps({k: row.get(k) for k in ("n", "kind", "strategy_asked", "train_seconds",
                                                      "search_seconds", "test_accuracy")}), flush=True)
            write()
    for n in [int(s) for s in args.cost_sizes.split(",") if s]:
        for kind in HEADS:
            for strategy in ("exact", "approximate"):
                row = {"n": n, "kind": kind, "strategy_asked": strategy,
                       **in_child({**base, "kind": kind, "strategy": strategy, "size": n}, args.timeout)}
                cost_points.append(row)
                print(json.dumps({k: row.get(k) for k in ("n", "kind", "strategy_asked", "train_seconds",
                                                          "test_accuracy")}), flush=True)
                write()
    for kind in [k for k in args.old_grid.split(",") if k]:
        n = max(sizes)
        row = {"n": n, "kind": kind, "search_asked": "grid",
               **in_child({**base, "kind": kind, "strategy": "auto", "size": n, "search": "grid"}, args.timeout)}
        old.append(row)
        print(json.dumps({k: row.get(k) for k in ("n", "kind", "train_seconds", "test_accuracy")}), flush=True)
        write()
    result = write(final=True)
    print(json.dumps({k: result[k] for k in ("ratio_time", "ratio_rows", "best_accuracy", "strategy_checks")}, indent=1))
    print(f"wrote {out}")
    return 0


def intelex(args) -> int:
    """Part d: ``--head all`` with and without scikit-learn-intelex, in alternation; -> results/heads_intelex.json."""
    import tempfile

    from featx.machine import rounded_load_average

    sizes, started, machine, base = fashion_setup(args)
    base = {**base, "all": True, "strategy": "auto"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            runs = {}
            for name in ("scikit-learn", "intelex"):
                saved = Path(tmp) / f"{name}-{n}.npz"
                runs[name] = in_child({**base, "size": n, "intelex": name == "intelex", "predictions": str(saved)},
                                      args.timeout)
                runs[name].pop("peak_rss_mb", None)
            plain, fast = (np.load(Path(tmp) / f"{name}-{n}.npz") for name in ("scikit-learn", "intelex"))
            parity = {kind: float(np.mean(plain[kind] == fast[kind])) for kind in plain.files}
            row = {"n": n, "runs": runs, "prediction_parity": parity,
                   "speedup": runs["scikit-learn"]["train_seconds"] / runs["intelex"]["train_seconds"],
                   "speedup_per_head": {k: runs["scikit-learn"]["heads"][k]["seconds"] / runs["intelex"]["heads"][k]["seconds"]
                                        for k in runs["intelex"]["heads"]}}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("n", "speedup", "speedup_per_head", "prediction_parity")}), flush=True)
    from importlib.metadata import version

    result = {"command": "python benchmarks/heads_scaling.py --intelex",
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {**machine, "load_after": rounded_load_average(),
                          "scikit-learn-intelex": version("scikit-learn-intelex")},
              "seconds": time.time() - started, "rows": rows}
    out = HERE / "results" / "heads_intelex.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
