"""`featx audit` against planted truth, and at scale.

    python benchmarks/audit.py            # -> results/audit.json (~15 min on 2 busy cores)

a. Fashion-MNIST (EfficientNet-Lite0 features): a stratified 2,000 training and 500 test images
   written as PNG files in class folders; 5 % of the training labels flipped (the file moved to
   another class's folder); 50 test images copied into training and 50 training images copied
   within training, each re-encoded as JPEG (quality 75) and resized 28 -> 32 px (found by the pixels'
   perceptual hash: their embeddings do not find them).
b. Fine-food reviews (all-MiniLM-L6-v2 features): 2,000 training and 500 test reviews in CSV
   manifests, 5 % of the training labels flipped, 50 test and 50 training reviews copied into
   training with small edits (a word dropped, punctuation, case).
   For both: precision/recall of the flipped labels in the top 5 % of label findings (k = the
   number flipped) and among all of them; precision/recall of the planted duplicates and leaks at
   several cosine thresholds (the calibration); test accuracy of a logreg head trained with and
   without the flagged items.
c. Scale: synthetic float16 caches of 100,000 and 1,000,000 rows (384-d, 10 classes, Gaussian
   blobs), audited in a child process: wall time and peak RSS (``VmHWM``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from featx.machine import peak_rss_mb
from featx.quality import THRESHOLD  # the default cosine threshold

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.8, 0.85, 0.9, 0.95)
N_COPIES = 50




def jpeg_copy(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR).save(path, quality=75)


def edit_text(text: str, rng) -> str:
    words = text.split()
    if len(words) > 4:
        del words[int(rng.integers(1, len(words) - 1))]
    out = " ".join(words)
    return (out[:1].upper() + out[1:] + "!") if rng.random() < 0.5 else out.lower() + " ."


# --------------------------------------------------------------------------- planted datasets
def plant_images(work: Path, n_train: int, n_test: int, rng):
    from PIL import Image

    from featx.sources import open_dataset, subset

    train = subset(open_dataset("builtin:fashion-mnist:train"), n_train, seed=0).items
    test = subset(open_dataset("builtin:fashion-mnist:test"), n_test, seed=0).items
    classes = sorted({i.label for i in train})
    flip = set(rng.choice(n_train, int(0.05 * n_train), replace=False).tolist())
    truth = {"flipped": set(), "pairs": set(), "leaks": set()}
    for split, items in (("train", train), ("test", test)):
        for n, item in enumerate(items):
            label = item.label
            if split == "train" and n in flip:
                label = classes[(classes.index(label) + int(rng.integers(1, len(classes)))) % len(classes)]
            folder = work / split / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(item.ref).save(folder / f"{n:05d}.png")
            if split == "train" and n in flip:
                truth["flipped"].add(f"{label}/{n:05d}.png")
    for n in rng.choice(n_test, N_COPIES, replace=False):  # leaks: test images in training
        item = test[n]
        jpeg_copy(item.ref, work / "train" / item.label / f"leak-{n:05d}.jpg")
        truth["leaks"].add((f"{item.label}/{n:05d}.png", f"{item.label}/leak-{n:05d}.jpg"))
    for n in rng.choice(sorted(set(range(n_train)) - flip), N_COPIES, replace=False):
        item = train[n]
        jpeg_copy(item.ref, work / "train" / item.label / f"copy-{n:05d}.jpg")
        truth["pairs"].add(frozenset((f"{item.label}/{n:05d}.png", f"{item.label}/copy-{n:05d}.jpg")))
    return str(work / "train"), str(work / "test"), truth


def plant_texts(work: Path, n_train: int, n_test: int, rng):
    from featx.sources import open_dataset, subset

    train = subset(open_dataset("builtin:fine-foods:train"), n_train, seed=0).items
    test = subset(open_dataset("builtin:fine-foods:test"), n_test, seed=0).items
    classes = sorted({i.label for i in train})
    rows = [[i.ref, i.label] for i in train]
    flip = rng.choice(n_train, int(0.05 * n_train), replace=False)
    for n in flip:
        rows[n][1] = classes[1 - classes.index(rows[n][1])]
    leaks, pairs = [], []
    for n in rng.choice(n_test, N_COPIES, replace=False):
        leaks.append((int(n), len(rows)))
        rows.append([edit_text(test[n].ref, rng), test[n].label])
    for n in rng.choice(sorted(set(range(n_train)) - set(flip.tolist())), N_COPIES, replace=False):
        pairs.append((int(n), len(rows)))
        rows.append([edit_text(train[n].ref, rng), train[n].label])
    work.mkdir(parents=True, exist_ok=True)
    for name, table in (("train.csv", rows), ("test.csv", [[i.ref, i.label] for i in test])):
        with open(work / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(table)
    return str(work / "train.csv"), str(work / "test.csv"), {"flip_rows": flip.tolist(), "leak_rows": leaks,
                                                            "pair_rows": pairs}


# --------------------------------------------------------------------------- scoring
def prf(found: set, truth: set) -> dict:
    hit = len(found & truth)
    return {"found": len(found), "planted": len(truth), "correct": hit,
            "precision": round(hit / len(found), 4) if found else None,
            "recall": round(hit / len(truth), 4) if truth else None}


def score(result, truth, n_train: int) -> dict:
    labels = [f for f in result.findings if f.issue == "label"]
    k = int(round(0.05 * n_train))
    top = {f.id for f in labels[:k]}
    out = {"label_top5pct": {**prf(top, truth["flipped"]), "k": k}, "label_all": prf({f.id for f in labels}, truth["flipped"])}
    def copies(keep) -> dict:
        pairs = {frozenset((f.id, f.neighbours[0])) for f in result.findings
                 if f.issue in ("near_duplicate", "exact_duplicate") and keep(f)}
        leaks = {(f.id, n) for f in result.findings if f.issue == "leak" and keep(f) for n in f.neighbours[:1]}
        return {"duplicates": prf(pairs, truth["pairs"]), "leaks": prf(leaks, truth["leaks"]),
                "both": prf(pairs | {frozenset(p) for p in leaks},
                            truth["pairs"] | {frozenset(p) for p in truth["leaks"]})}

    # the embeddings' cosine threshold moves; byte copies and pixel (pHash) copies are kept at their own bounds
    out["duplicates_and_leaks_by_threshold"] = {str(t): copies(lambda f, t=t: f.signal != "embedding" or f.score >= t)
                                                for t in THRESHOLDS}
    out["duplicates_and_leaks_default"] = {**copies(lambda f: f.signal != "embedding" or f.score >= THRESHOLD),
                                           "threshold": THRESHOLD, "pixel_bits": result.settings.get("pixels")}
    out["duplicates_and_leaks_by_signal"] = {
        signal: copies(lambda f, s=signal: f.signal == s and (s != "embedding" or f.score >= THRESHOLD))
        for signal in ("bytes", "embedding", "pixels", "embedding+pixels")}
    return out


def retrained(train_cache, test_cache, result, params) -> dict:
    import featx
    from featx.heads import head_pipeline

    X, y, ids = featx.load_features(train_cache)
    Xt, yt, tids = featx.load_features(test_cache)
    leaked = result.ids("leak")
    clean_test = ~np.isin(tids, list(leaked))
    out = {}
    for name, drop in (("all", set()), ("without_label_issues", result.ids("label")),
                       ("without_all_findings", result.ids() - leaked)):
        keep = ~np.isin(ids, list(drop))
        head = head_pipeline("logreg", **params).fit(X[keep], y[keep])
        out[name] = {"n_train": int(keep.sum()), "test_accuracy": round(float(head.score(Xt, yt)), 4),
                     "test_accuracy_without_leaked": round(float(head.score(Xt[clean_test], yt[clean_test])), 4)}
    return out


def planted_part(kind: str, work: Path, n_train: int, n_test: int, model: str) -> dict:
    import featx
    from featx.quality import audit

    rng = np.random.default_rng(0)
    if kind == "images":
        train_src, test_src, truth = plant_images(work / "data", n_train, n_test, rng)
    else:
        train_src, test_src, raw = plant_texts(work / "data", n_train, n_test, rng)
    caches = []
    t0 = time.perf_counter()
    for src, name in ((train_src, "train"), (test_src, "test")):
        featx.extract(src, model, work / f"cache-{name}", progress=False)
        caches.append(work / f"cache-{name}")
    extract_s = time.perf_counter() - t0
    if kind == "texts":  # rows of the CSVs -> ids of the caches
        ids = featx.FeatureReader(caches[0]).ids
        tids = featx.FeatureReader(caches[1]).ids
        truth = {"flipped": {ids[n] for n in raw["flip_rows"]},
                 "pairs": {frozenset((ids[a], ids[b])) for a, b in raw["pair_rows"]},
                 "leaks": {(tids[a], ids[b]) for a, b in raw["leak_rows"]}}
    t0 = time.perf_counter()
    result = audit(caches[0], caches[1], grid={"scale": ["l2"], "C": [1.0, 10.0, 100.0]}, threshold=min(THRESHOLDS))
    audit_s = time.perf_counter() - t0
    out = {"model": model, "n_train": result.n_train, "n_test": result.n_test, "extract_seconds": round(extract_s, 1),
           "audit_seconds": round(audit_s, 1),
           "settings": {k: v for k, v in result.settings.items() if k != "train"},
           "counts": result.counts(),  # settings: no paths of this machine
           "confused": result.confused[:5], **score(result, truth, n_train)}
    default = [f for f in result.findings if f.issue not in ("near_duplicate", "leak") or f.signal != "embedding"
               or f.score >= THRESHOLD]
    result.findings = default  # what the default threshold flags, for the retrained heads
    out["retrained_logreg"] = retrained(caches[0], caches[1], result, result.settings["head_params"])
    return out


# --------------------------------------------------------------------------- scale
def synthetic_cache(path: Path, n_rows: int, dim: int = 384, shard_rows: int = 8192) -> Path:
    from featx.cache import CacheStore, ShardData

    if (path / "dataset.h5").is_file():
        return path
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, size=(10, dim)).astype(np.float32)
    labels = np.array([f"c{i}" for i in rng.integers(0, 10, n_rows)], dtype=object)
    ids = [f"synthetic/{i:07d}" for i in range(n_rows)]
    store = CacheStore(path)
    store.create()
    store.register_model({"name": "synthetic", "dim": dim}, "synthetic", "float16")
    store.write_listing(f"synthetic-{n_rows}", "image", ids, labels, [""] * n_rows)
    codes = np.array([int(s[1:]) for s in labels])
    for lo in range(0, n_rows, shard_rows):
        c = codes[lo:lo + shard_rows]
        emb = centres[c] + rng.normal(0, 1.5, size=(len(c), dim)).astype(np.float32)
        store.commit("synthetic", ShardData(ids[lo:lo + len(c)], [""] * len(c), emb),
                     fingerprint_id="synthetic", dtype="float16", durable=False)
    return path


def scale_one(cache: str) -> dict:
    import featx

    t0 = time.perf_counter()
    result = featx.audit(cache)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "counts": result.counts(), "neighbours": result.settings["neighbours"],
            "probabilities": result.settings.get("probabilities")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("FEATX_HOME", ".featx")) / "bench-audit")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--scale", default="100000,1000000")
    p.add_argument("--parts", default="images,texts,scale")
    p.add_argument("--out", type=Path, default=HERE / "results" / "audit.json",
                   help="JSON written (parts already in it are kept)")
    p.add_argument("--scale-one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scale_one:
        print(json.dumps(scale_one(args.scale_one)))
        return
    out = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
           "load_average_at_start": os.getloadavg()[0], "command": "python benchmarks/audit.py"}
    path = args.out
    if path.is_file():
        out = {**json.loads(path.read_text()), **{k: out[k] for k in ("date", "cpus")}}
    parts = args.parts.split(",")
    if "images" in parts:
        out["fashion_mnist"] = planted_part("images", args.work / "fashion", args.n_train, args.n_test,
                                            "efficientnet-lite0")
        path.write_text(json.dumps(out, indent=1, default=str))
    if "texts" in parts:
        out["fine_foods"] = planted_part("texts", args.work / "foods", args.n_train, args.n_test, "all-minilm-l6-v2")
        path.write_text(json.dumps(out, indent=1, default=str))
    if "scale" in parts:
        base = subprocess.run([sys.executable, "-c", "import featx, featx.quality, sklearn, faiss, cleanlab\n"
                               "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"],
                              capture_output=True, text=True, check=True)
        out["scale"] = {"baseline_import_rss_mb": round(int(base.stdout) / 1024, 1), "dim": 384, "dtype": "float16"}
        for n in (int(s) for s in args.scale.split(",")):
            cache = synthetic_cache(args.work / f"synthetic-{n}", n)
            # one OpenMP thread: faiss's spinning threads on an oversubscribed machine cost more than they give
            run = subprocess.run([sys.executable, __file__, "--scale-one", str(cache)], capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
            if run.returncode:
                raise SystemExit(run.stderr[-3000:])
            out["scale"][str(n)] = json.loads(run.stdout.strip().splitlines()[-1])
            path.write_text(json.dumps(out, indent=1, default=str))
    path.write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
