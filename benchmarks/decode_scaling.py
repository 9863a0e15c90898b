"""Does decoding scale with the cores? Decode + preprocess alone at 1, 2, ... threads, and extraction end to end.

    python benchmarks/decode_scaling.py            # full run, ~3 min on 2 idle cores -> results/decode_scaling.json
    python benchmarks/decode_scaling.py --quick    # smoke run, ~1 min                 -> results/decode_scaling.quick.json

What it measures, on photo-sized JPEGs (1600 x 1067, quality 90, the same files as
``throughput.py``'s) and EfficientNet-Lite0's preprocessing (shorter side to 256, bicubic,
centre crop 224, normalise):

a. decode + preprocess alone: featx's own preparing routine (:func:`featx.engine.embedding.prepare_batches`,
   batches of 16, no model run) with 1, 2, ... decoding threads, images/s; the goal is >= 1.8x
   from 1 to 2 threads on 2 cores (Pillow and numpy release the GIL).
b. the bare ONNX Runtime session on pre-made tensors (all cores), images/s.
c. ``featx.extraction.extract`` of the files into a cache, end to end, at each ``decode_workers`` (ONNX
   Runtime on all cores), images/s, against the decode rate of all cores (a) and against the
   bound of sharing the cores between decoding and inference, ``1 / (1/decode + 1/session)``
   (on a CPU both need the same cores; on a GPU machine extraction should reach the decode
   rate of all cores: ``benchmarks/gpu.py`` measures that).

Sides alternate round by round; medians are reported. On shared cores the figures are noisy:
the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import add_size_flags, alternate, chosen_sizes, environment, print_table, write_jpegs  # noqa: E402


@dataclasses.dataclass
class Sizes:
    jpegs: int = 96
    side: int = 1600
    batch: int = 16
    rounds: int = 3


QUICK = Sizes(jpegs=24, rounds=1)


def decode_rate(bb, files, batch: int, workers: int) -> float:
    """Images/s of featx's preparing routine alone (load = decode + crop, collate = normalise), no model run."""
    from featx.engine.embedding import in_batches, prepare_batches

    t = time.perf_counter()
    n = sum(len(p.positions) for p in prepare_batches(bb, in_batches(files, files, batch), workers=workers))
    assert n == len(files)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes; writes decode_scaling.quick.json")
    p.add_argument("--workers", default=None, help="decoding threads to compare, e.g. 1,2,4 (default: 1..cores)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default: benchmarks/results/decode_scaling[.quick].json)")
    add_size_flags(p, Sizes, QUICK)
    args = p.parse_args(argv)


    import featx
    from featx.machine import load_average
    from featx.engine.runtime import Session, default_threads

    sizes = chosen_sizes(args, Sizes, QUICK)
    cores = default_threads()
    workers = [int(w) for w in args.workers.split(",")] if args.workers else list(range(1, cores + 1))
    out = args.out or HERE / "results" / ("decode_scaling.quick.json" if args.quick else "decode_scaling.json")
    workdir = Path(tempfile.mkdtemp(prefix="featx-decode-scaling-"))
    started, load_before, t0 = dt.datetime.now(dt.timezone.utc), load_average(), time.perf_counter()
    rows, results = [], {}

    def row(what, value, baseline, unit, goal=None, note=""):
        ratio = value / baseline if baseline else None
        verdict = None if goal is None or ratio is None else ("meets" if ratio >= goal else "misses")
        rows.append({"section": what[0], "what": what[1], "featx": value, "baseline": baseline, "unit": unit,
                     "ratio": ratio, "goal": goal, "verdict": verdict, "note": note})

    try:
        print(f"{cores} cores; writing {sizes.jpegs} photo JPEGs ({sizes.side} px) to {workdir}", flush=True)
        folder = write_jpegs(workdir / "photos", sizes.jpegs, sizes.side)
        files = sorted(str(f) for f in folder.glob("*.jpg"))
        bb = featx.load_backbone("efficientnet-lite0", providers="cpu")

        # a. decode + preprocess alone, 1..N threads, alternating
        sides = {f"{w} thread{'s' * (w > 1)}": (lambda w=w: decode_rate(bb, files, sizes.batch, w)) for w in workers}
        rates = {name: [] for name in sides}
        for fn in sides.values():  # warm-up (page cache, Pillow's plugins)
            fn()
        for _ in range(sizes.rounds):
            for name, fn in sides.items():
                rates[name].append(fn())
        decode = {name: statistics.median(v) for name, v in rates.items()}
        results["decode_preprocess"] = {"images_s": rates, "median": decode}
        one = decode[next(iter(decode))]
        for name, rate in list(decode.items())[1:]:
            goal = 1.8 if name == "2 threads" else None
            row(("a", f"decode + preprocess, {name} vs 1 thread"), rate, one, "img/s", goal)
        all_cores = max(decode.values())

        # b. the bare session on pre-made tensors, all cores
        session = Session(bb.onnx_path, providers="cpu", threads=cores)
        pool = [bb.prepare([bb.decode(f) for f in files[i:i + sizes.batch]])
                for i in range(0, min(len(files), 4 * sizes.batch), sizes.batch)]
        pool = [b for b in pool if len(b["pixel_values"]) == sizes.batch] or pool
        calls = -(-len(files) // sizes.batch)
        raw = alternate({"session": lambda: [session.run(pool[i % len(pool)]) for i in range(calls)]},
                        calls * sizes.batch, sizes.rounds)["session"]
        results["session_images_s"] = raw

        # c. extraction end to end, per decode_workers
        extract_rates = {w: [] for w in workers}
        for r in range(sizes.rounds + 1):  # round 0 warms up
            for w in workers:
                cache = workdir / f"cache-{w}-{r}"
                report = featx.extract(folder, bb, cache, batch_size=sizes.batch, decode_workers=w, progress=False)
                assert report.embedded == len(files), report.summary()
                if r:
                    extract_rates[w].append(report.items_per_s)
                shutil.rmtree(cache)
        extract = {w: statistics.median(v) for w, v in extract_rates.items()}
        results["extract_images_s"] = {"rounds": extract_rates, "median": extract}
        shared = 1.0 / (1.0 / all_cores + 1.0 / raw["median"])
        for w, rate in extract.items():
            row(("c", f"featx.extract, decode_workers={w}, vs decode rate of all cores"), rate, all_cores, "img/s",
                note=f"{rate / shared:.2f}x the shared-cores bound {shared:.1f}")
        row(("b", "bare ONNX Runtime session, pre-made tensors"), raw["median"], None, "img/s")
        best = max(extract, key=extract.get)
        results["best_decode_workers"] = best
        results["shared_cores_bound_images_s"] = shared
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)
    record = {
        "benchmark": "featx decode scaling (issue 15)",
        "command": "python benchmarks/decode_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": bool(args.quick), "started": started.isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - t0, "load_average_before": load_before, "load_average_after": load_average(),
        "noise": "wall-clock rates; medians of alternating rounds; shared cores make them noisy",
        "sizes": dataclasses.asdict(sizes), "cores": cores, "workers": workers,
        "environment": environment(cores), "table": rows, "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    os.replace(tmp, out)
    print(f"\nwrote {out} in {record['seconds']:.0f} s (load average {load_before[0]:.1f} -> "
          f"{record['load_average_after'][0]:.1f})" if load_before and record["load_average_after"] else f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
