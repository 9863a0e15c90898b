"""Per-item prediction latency of a deployed (fused) file vs today's two-stage path, measured side by side.

    python benchmarks/deploy_latency.py            # full run, ~6 min on 2 cores -> results/deploy_latency.json
    python benchmarks/deploy_latency.py --quick    # smoke run, ~2 min             -> results/deploy_latency.quick.json

For each bundled backbone (EfficientNet-Lite0 on digits, all-MiniLM-L6-v2 on fine-food reviews)
and each head kind (the estimator ``featx train`` saves for one grid point: logistic regression,
calibrated RBF SVM, distance-weighted cosine kNN), a head is fitted on real cached features,
saved, and deployed with ``featx.deploy.deploy_head`` (parity-gated). Then, on the same
preprocessed batches of real test items (batch 1 and batch 16):

- **two-stage** (what ``featx predict HEAD.skops`` does per batch): the backbone's ONNX Runtime
  session, then the scikit-learn head's ``predict`` and ``predict_proba``;
- **fused**: the deployed file's one session (``DeployedModel.run``: label and probabilities).

Preprocessing (decoding, resizing, tokenising) is the same code on both sides and is left out:
the figures are model time per item. The sides run alternately for ``--rounds`` rounds after a
warm-up, both sessions with the same threads and without spin-waiting (``FEATX_SPINNING=0``,
see below); each side's figure is the median round, and the ratio (two-stage / fused, > 1: the
fused file is faster) is of the medians of the same run.
On shared cores the figures are noisy: the load average before and after is recorded.
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


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two sessions alternate here (the backbone's and the fused file's). With ORT's spin-waiting on,
# each one's idle threads keep spinning while the other runs and take its cores: measured on 2
# cores, the side timed right after the other lost up to 40%. Off, the sides are timed alike.
os.environ.setdefault("FEATX_SPINNING", "0")

HERE = Path(__file__).resolve().parent

#: The head of each kind that is timed: one point of featx's grid, fitted as `featx train` fits it.
HEADS = {
    "logreg": {"power": ["sqrt"], "scale": ["standard"], "C": [0.1]},
    "svm": {"power": ["sqrt"], "scale": ["l2"], "kernel": ["rbf"], "C": [10.0], "gamma": ["scale"]},
    "knn": {"power": ["sqrt"], "scale": ["l2"], "metric": ["cosine"], "n_neighbors": [5], "weights": ["distance"]},
}
BACKBONES = {  # backbone -> (training source, test source)
    "efficientnet-lite0": ("builtin:digits:train", "builtin:digits:test"),
    "all-minilm-l6-v2": ("builtin:fine-foods:train", "builtin:fine-foods:test"),
}


@dataclasses.dataclass
class Sizes:
    train: int = 600  # training items per backbone (the kNN head keeps them all)
    items: int = 64  # distinct test items per side and round (cycled in batches)
    rounds: int = 7
    parity_items: int = 64


QUICK = Sizes(train=150, items=16, rounds=2, parity_items=16)


@dataclasses.dataclass
class Row:
    """One line of the result table: per-item milliseconds of each side, and their ratio."""

    backbone: str
    head: str
    batch: int
    fused_ms: float
    two_stage_ms: float
    fused_rounds: list
    two_stage_rounds: list

    @property
    def ratio(self) -> float:
        return self.two_stage_ms / self.fused_ms


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def per_item_ms(sides: dict, batches: list, rounds: int) -> dict:
    """Warm each side up, then time the sides alternately; median ms per item of each, and every round."""
    n_items = sum(len(next(iter(b.values()))) for b in batches)
    for run in sides.values():
        run(batches[0])
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            t = time.perf_counter()
            for batch in batches:
                run(batch)
            times[name].append(1000 * (time.perf_counter() - t) / n_items)
    return {name: (statistics.median(v), v) for name, v in times.items()}


def trained_head(backbone, train_source: str, kind: str, n: int, workdir: Path) -> Path:
    """Fit one head on real cached features of ``n`` training items; save it as `featx train` would."""
    import featx
    from featx.cache import CacheStore
    from featx.heads import select_head
    from featx.heads.persist import save_head
    from featx.sources import open_dataset, subset

    cache = workdir / f"cache-{backbone.name}"
    featx.extract(subset(open_dataset(train_source), n, seed=0), backbone, cache, progress=False)
    X, y, _ = featx.load_features(cache, model=backbone.name)
    result = select_head(kind, X, y, cv=3, n_jobs=1, grid=HEADS[kind])
    record = CacheStore(cache).read_model(backbone.name)
    meta = {"kind": kind, "backbone": backbone.name, "model": str(backbone.onnx_path),
            "fingerprint_id": record["fingerprint_id"], "train": train_source, **result.summary()}
    return save_head(result.best_estimator, workdir / f"{backbone.name}-{kind}.skops", metadata=meta)


def feed_batches(backbone, test_source: str, n: int, batch: int) -> list[dict]:
    """Model-ready batches of ``n`` real test items (preprocessed once, shared by both sides)."""
    from featx.sources import open_dataset, subset

    items = [backbone.decode(item.ref, item.id) for item in subset(open_dataset(test_source), n, seed=1).items]
    return [backbone.prepare(items[i:i + batch]) for i in range(0, len(items) - len(items) % batch, batch)]


def measure_backbone(name: str, sizes: Sizes, threads: int, workdir: Path) -> tuple[list[Row], dict]:
    import featx
    from featx.deploy import DeployedModel, deploy_head
    from featx.heads.persist import load_head

    train_source, test_source = BACKBONES[name]
    backbone = featx.load_backbone(name, providers="cpu", threads=threads)
    rows, facts = [], {}
    for kind in HEADS:
        log(f"{name}: fitting and deploying a {kind} head on {sizes.train} items of {train_source}")
        head_path = trained_head(backbone, train_source, kind, sizes.train, workdir)
        result = deploy_head(head_path, workdir / f"{name}-{kind}.onnx", parity_items=sizes.parity_items)
        head = load_head(head_path)
        fused = DeployedModel(result.path, providers="cpu", threads=threads)
        facts[kind] = {"parity": result.parity.to_dict(), "fused_mb": result.path.stat().st_size / 1e6,
                       "backbone_mb": backbone.onnx_path.stat().st_size / 1e6}

        def two_stage(feeds, head=head):
            features = backbone.run(feeds)
            return head.predict(features), head.predict_proba(features)

        for batch in (1, 16):
            batches = feed_batches(backbone, test_source, max(sizes.items, batch), batch)
            timed = per_item_ms({"fused": fused.predict_feeds, "two_stage": two_stage}, batches, sizes.rounds)
            row = Row(name, kind, batch, timed["fused"][0], timed["two_stage"][0], timed["fused"][1],
                      timed["two_stage"][1])
            log(f"{name} {kind} batch {batch}: fused {row.fused_ms:.2f} ms/item, two-stage "
                f"{row.two_stage_ms:.2f} ms/item, ratio {row.ratio:.2f}x")
            rows.append(row)
    return rows, facts


def table(rows: list[Row]) -> str:
    lines = ["| backbone | head | batch | fused (ms/item) | two-stage (ms/item) | two-stage / fused |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.backbone} | {r.head} | {r.batch} | {r.fused_ms:.2f} | {r.two_stage_ms:.2f} | {r.ratio:.2f}x |"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke sizes; writes deploy_latency.quick.json")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime and BLAS threads (default: all cores)")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated subset of the two")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default: benchmarks/results/...)")
    helps = {"train": "training items per backbone", "items": "distinct test items timed per round",
             "rounds": "timed rounds per side", "parity_items": "items of each deploy's parity gate"}
    for name, text in helps.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, metavar="N",
                       help=f"{text} (default {getattr(Sizes(), name)}, --quick {getattr(QUICK, name)})")
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from featx.files import write_text_atomically
    from featx.machine import load_average, machine_facts
    from featx.engine.runtime import default_threads

    given = {name: getattr(args, name) for name in helps if getattr(args, name) is not None}
    sizes = dataclasses.replace(QUICK if args.quick else Sizes(), **given)
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BACKBONES))
    if unknown:
        p.error(f"unknown backbones {unknown}; choose from {', '.join(BACKBONES)}")
    threads = args.threads or default_threads()
    out = args.out or HERE / "results" / ("deploy_latency.quick.json" if args.quick else "deploy_latency.json")
    workdir = Path(tempfile.mkdtemp(prefix="featx-deploy-latency-"))
    started, load_before, t0 = dt.datetime.now(dt.timezone.utc), load_average(), time.perf_counter()
    rows, facts = [], {}
    try:
        with threadpool_limits(threads):  # scikit-learn's BLAS gets the threads ONNX Runtime gets
            for name in names:
                got, facts[name] = measure_backbone(name, sizes, threads, workdir)
                rows += got
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + table(rows))
    load_after = load_average()
    run = {"command": "python benchmarks/deploy_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "quick": bool(args.quick), "started": started.isoformat(timespec="seconds"),
           "seconds": round(time.perf_counter() - t0, 1), "load_average": {"before": load_before, "after": load_after},
           "sizes": dataclasses.asdict(sizes), "threads": threads, "machine": machine_facts().to_dict(),
           "spinning": os.environ["FEATX_SPINNING"]}
    record = {"benchmark": "featx deploy: fused file vs two-stage prediction latency (issue 13)", "run": run,
              "noise": "wall-clock per-item times; medians of alternating rounds; shared cores make them noisy",
              "heads": HEADS, "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows],
              "deployed": facts, "table_markdown": table(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {out} in {run['seconds']:.0f} s (load average {load_before[0]:.1f} -> {load_after[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
