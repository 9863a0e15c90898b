"""Scaling out extraction: in-process, a process pool and Dask, at 1 and 2 workers of 1 thread each.

    python benchmarks/scaling.py                 # 2000 Fashion-MNIST images, 3 rounds (~15 min on 2 cores)
                                                 #   -> results/scaling.json
    python benchmarks/scaling.py --quick         # 200 images, 1 round (~2 min) -> results/scaling.quick.json

EfficientNet-Lite0 (exported on first use) embeds a stratified subset of the Fashion-MNIST test
split into a fresh cache per run, with shards of 100 images and batches of 16:

=============  ==========================================================================
in-process     ``featx.extraction.extract`` in this process, 1 ONNX Runtime thread (and, for scale,
               all cores' threads)
pool-N         ``featx.extract(executor=featx.extraction.dispatch.process_pool(N))``, 1 thread per worker
dask-N         ``featx.extract(dask=client)`` on a ``LocalCluster`` of N worker processes of
               1 Dask thread and 1 ONNX Runtime thread each
=============  ==========================================================================

Pools and clusters are started and warmed up (a small extraction) before the timed runs, so the
figures are steady-state throughput; a Dask run still pays its per-run worker plugin (loading the
backbone on every worker). The configurations run alternately for ``--rounds`` rounds; the table
gives the median items/s of each and the ratios the issue sets goals for: Dask within 5% of the
process pool at the same workers (ratio >= 0.95), and 2 workers >= 1.6x one worker (two cores
are the ceiling). On shared cores the figures are noise: the load average before and after each
run is recorded, and the report says when it exceeded the cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
SHARD = 100
BATCH = 16
WARMUP_IMAGES = 64
GOAL_DASK_VS_POOL = 0.95
GOAL_TWO_VS_ONE = 1.6


def configs(cores: int) -> list[dict]:
    """The configurations, in the order each round runs them."""
    return [
        {"name": "in-process (1 thread)", "kind": "local", "workers": 1, "threads": 1},
        {"name": f"in-process ({cores} threads)", "kind": "local", "workers": 1, "threads": cores},
        {"name": "pool-1", "kind": "pool", "workers": 1, "threads": 1},
        {"name": "pool-2", "kind": "pool", "workers": 2, "threads": 1},
        {"name": "dask-1", "kind": "dask", "workers": 1, "threads": 1},
        {"name": "dask-2", "kind": "dask", "workers": 2, "threads": 1},
    ]


def start_engines(stack: ExitStack, runs: list[dict]) -> dict:
    """A started process pool / Dask client per configuration that needs one (kept for every round)."""
    from distributed import Client, LocalCluster

    from featx.extraction.dispatch import process_pool

    engines = {}
    for c in runs:
        if c["kind"] == "pool":
            engines[c["name"]] = stack.enter_context(process_pool(c["workers"]))
        elif c["kind"] == "dask":
            cluster = stack.enter_context(LocalCluster(n_workers=c["workers"], threads_per_worker=1, processes=True,
                                                       dashboard_address=":0", silence_logs=logging.ERROR))
            engines[c["name"]] = stack.enter_context(Client(cluster))
    return engines


def extract_once(c: dict, engine, dataset, model: str, cache: Path) -> float:
    import featx

    kwargs = {"executor": engine} if c["kind"] == "pool" else {"dask": engine} if c["kind"] == "dask" else {}
    t0 = time.perf_counter()
    report = featx.extract(dataset, model, cache, batch_size=BATCH, shard_size=SHARD, threads=c["threads"],
                           progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    assert report.embedded == len(dataset), report.summary()
    return seconds


def ratio(rates: dict, a: str, b: str) -> float | None:
    return rates[a] / rates[b] if rates.get(a) and rates.get(b) else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 images, 1 round (a smoke run)")
    p.add_argument("--images", type=int, default=None, help="images of Fashion-MNIST's test split (default 2000)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over all configurations (default 3)")
    p.add_argument("--model", default="efficientnet-lite0", help="backbone (default efficientnet-lite0)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default: results/scaling[.quick].json)")
    args = p.parse_args(argv)
    images = args.images or (200 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)

    import featx
    from featx.machine import machine_facts, rounded_load_average, usable_cores

    cores = usable_cores() or 1
    model = str(featx.load_backbone(args.model).onnx_path)  # export on first use, before any timing
    dataset = featx.open_dataset("builtin:fashion-mnist:test", limit=images)
    warmup = featx.open_dataset("builtin:fashion-mnist:test", limit=WARMUP_IMAGES)
    runs = configs(cores)
    seconds: dict[str, list[float]] = {c["name"]: [] for c in runs}
    loads: dict[str, list] = {c["name"]: [] for c in runs}
    facts = machine_facts()
    t_start = time.perf_counter()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="featx-scaling-") as tmp:
        engines = start_engines(stack, runs)
        for k, c in enumerate(runs):  # every engine loads the backbone and creates its sessions
            extract_once(c, engines.get(c["name"]), warmup, model, Path(tmp) / f"warm-{k}")
        for r in range(rounds):
            for k, c in enumerate(runs):
                before = rounded_load_average()
                s = extract_once(c, engines.get(c["name"]), dataset, model, Path(tmp) / f"r{r}-{k}")
                seconds[c["name"]].append(s)
                loads[c["name"]].append({"before": before, "after": rounded_load_average()})
                print(f"round {r + 1}/{rounds}  {c['name']:<24} {images / s:7.1f} images/s  (load {before})",
                      file=sys.stderr, flush=True)
    rates = {name: images / statistics.median(s) for name, s in seconds.items()}
    ratios = {
        "dask-1 / pool-1": ratio(rates, "dask-1", "pool-1"),
        "dask-2 / pool-2": ratio(rates, "dask-2", "pool-2"),
        "pool-2 / pool-1": ratio(rates, "pool-2", "pool-1"),
        "dask-2 / dask-1": ratio(rates, "dask-2", "dask-1"),
        "pool-1 / in-process (1 thread)": ratio(rates, "pool-1", "in-process (1 thread)"),
    }
    goals = {
        "dask within 5% of the pool at 1 worker": _at_least(ratios["dask-1 / pool-1"], GOAL_DASK_VS_POOL),
        "dask within 5% of the pool at 2 workers": _at_least(ratios["dask-2 / pool-2"], GOAL_DASK_VS_POOL),
        "pool: 2 workers >= 1.6x one": _at_least(ratios["pool-2 / pool-1"], GOAL_TWO_VS_ONE),
        "dask: 2 workers >= 1.6x one": _at_least(ratios["dask-2 / dask-1"], GOAL_TWO_VS_ONE),
    }
    peak_load = max((l["after"][0] for ls in loads.values() for l in ls if l["after"]), default=None)
    result = {
        "benchmark": "scaling", "quick": args.quick, "model": args.model, "images": images, "rounds": rounds,
        "shard_size": SHARD, "batch_size": BATCH,
        "command": " ".join(["python", "benchmarks/scaling.py", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                     else argv)]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": facts.to_dict(), "seconds": round(time.perf_counter() - t_start, 1),
        "configs": [{**c, "seconds": [round(v, 3) for v in seconds[c["name"]]],
                     "items_per_s": round(rates[c["name"]], 2), "load_average": loads[c["name"]]} for c in runs],
        "ratios": {k: None if v is None else round(v, 3) for k, v in ratios.items()},
        "goals": goals,
        "noisy": bool(peak_load is not None and peak_load > cores),
        "peak_load_1min": peak_load,
    }
    out = args.out or HERE / "results" / ("scaling.quick.json" if args.quick else "scaling.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"-> {out}")
    return 0


def _at_least(value: float | None, goal: float) -> bool | None:
    return None if value is None else bool(value >= goal)


def table(result: dict) -> str:
    """The Markdown table of a result: items/s per configuration, then the ratios and goals."""
    lines = [f"{result['model']} on {result['images']} Fashion-MNIST images, median of {result['rounds']} round(s); "
             f"{result['machine']['cpu']}, {result['machine']['usable_cores']} usable cores; "
             f"peak 1-min load average {result['peak_load_1min']}" + (" (noisy: above the cores)" if result["noisy"]
                                                                      else ""),
             "", "| configuration | workers | ORT threads each | images/s |", "|---|---:|---:|---:|"]
    lines += [f"| {c['name']} | {c['workers']} | {c['threads']} | {c['items_per_s']:.1f} |" for c in result["configs"]]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {'-' if v is None else f'{v:.3f}'} |" for k, v in result["ratios"].items()]
    lines += ["", "| goal | met |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["goals"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
