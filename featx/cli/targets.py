"""The parts of ``featx train``/``evaluate``/``predict`` for targets beyond one label (label sets,
numbers): thin adapters over :mod:`featx.heads.targets` and :mod:`featx.heads.target_report`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import UsageError


def train_targets(args, reader, y, kind: str, *, name: str, loader, record: dict, listing, train_name: str,
                  unlabelled: int) -> int:
    """Select the heads of a multi-label or numeric target by CV, save each with its metadata."""
    from ..heads.persist import save_head
    from ..heads.targets import MULTILABEL_HEADS, REGRESSION_HEADS, train_target_heads
    console = args.console
    allowed = MULTILABEL_HEADS if kind == "multi" else REGRESSION_HEADS
    if args.head != "all" and args.head not in allowed:
        raise UsageError(f"--head {args.head} does not fit a {'multi-label' if kind == 'multi' else 'numeric'} "
                         f"target: use {', '.join(allowed)} or all")
    X = reader.read_all()
    console.result(f"{name} features of {train_name}: {reader.n_rows} x {reader.dim}, "
                   + ("multi-label" if kind == "multi" else "numeric") + " target"
                   + (f" ({unlabelled} unlabelled items left out)" if unlabelled else "")
                   + f"; selecting {', '.join(allowed) if args.head == 'all' else args.head} by {args.cv}-fold CV, "
                   f"layer {reader.layer}")
    t0 = time.perf_counter()
    results, extra = train_target_heads(X, list(y), kind, None if args.head == "all" else (args.head,),
                                        delimiter=args.label_delimiter, cv=args.cv, seed=args.seed,
                                        n_jobs=args.jobs, threshold=args.threshold)
    if kind == "multi":
        console.result(f"{len(extra['labels'])} labels: {', '.join(extra['labels'][:20])}"
                       + (", ..." if len(extra["labels"]) > 20 else ""))
    rows = []
    for r in results:
        meta = {"kind": r.kind, "backbone": name, "model": loader, "fingerprint_id": record.get("fingerprint_id"),
                "dim": int(reader.dim), "modality": listing.modality if listing else None, "train": train_name,
                "n_train": int(reader.n_rows), "layer": reader.layer, "best_params": r.best_params,
                "cv": r.cv, "threshold": r.threshold, **extra}
        path = save_head(r.estimator, args.out / f"{r.kind}.skops", metadata=meta)
        for note in r.notes:
            console.warn(note)
        console.note(f"saved {path}")
        rows.append({"head": r.kind, **{f"cv_{k}": v for k, v in r.cv.items()}, "best_params": r.best_params,
                     "fit_seconds": r.fit_seconds, "file": str(path)})
    key = "cv_map" if kind == "multi" else "cv_r2"
    best = max(rows, key=lambda row: row[key])
    if args.json:
        console.document({"backbone": name, "train": train_name, "cache": str(args.cache), "target": kind,
                          "n": int(reader.n_rows), "unlabelled": unlabelled, "dim": int(reader.dim), "cv": args.cv,
                          "seed": args.seed, "seconds": time.perf_counter() - t0, "heads": rows, **extra,
                          "best": best["head"], "best_file": best["file"]})
    console.result(_table(rows))
    console.result(f"best by CV: {best['head']} ({key[3:]} {best[key]:.4f}) -> {best['file']}; "
                   f"{len(rows)} head(s) in {time.perf_counter() - t0:.1f} s")
    return 0


def _table(rows: list[dict]) -> str:
    """The heads as a Markdown table: the CV metrics, fit time, the parameters selected."""
    metrics = [k for k in rows[0] if k.startswith("cv_")]
    lines = ["| head | " + " | ".join(f"CV {k[3:].replace('_', '-')}" for k in metrics) + " | fit (s) | selected |",
             "|---|" + "---:|" * (len(metrics) + 1) + "---|"]
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["best_params"].items())
        lines.append(f"| {row['head']} | " + " | ".join(f"{row[k]:.4f}" for k in metrics)
                     + f" | {row['fit_seconds']:.1f} | {params} |")
    return "\n".join(lines)


def evaluate_targets(args, estimator, meta: dict, X, y, *, name: str, test: str) -> int:
    """``featx evaluate`` of a multi-label or numeric head."""
    from ..heads.target_report import evaluate_target, save_target_report, summary_line

    report = {"head": meta.get("kind", Path(args.head).stem), "head_file": str(args.head), "backbone": name,
              "test": test, **evaluate_target(estimator, meta, X, y)}
    out = args.out or Path(args.head).with_name(Path(args.head).stem + "-report")
    title = f"{report['head']} on {test}"
    files = save_target_report(report, out, title=title)
    if args.json:
        args.console.document({**report, "files": {k: None if v is None else str(v) for k, v in files.items()}})
    args.console.note("report: " + ", ".join(str(p) for p in files.values() if p is not None))
    args.console.result(f"{title}: {summary_line(report)}"
                        + (f" ({report['unlabelled']} unlabelled items left out)" if report["unlabelled"] else "")
                        + (f"; labels seen in the test set only: {', '.join(report['unseen_labels'])}"
                           if report.get("unseen_labels") else ""))
    return 0


def predict_targets(estimator, meta: dict, X) -> tuple[list, np.ndarray | None, list[str]]:
    """``(predictions, scores, score columns)``: the predicted label set (a JSON list, as featx keeps
    label sets) and one score per label, or the predicted number."""
    from ..heads.targets import multilabel_predict

    if meta["target"] == "numeric":
        return [float(v) for v in estimator.predict(X)] if len(X) else [], None, []
    if not len(X):
        return [], None, list(meta["labels"])
    scores, sets = multilabel_predict(estimator, X, meta["labels"], meta["threshold"])
    return [json.dumps(list(s), ensure_ascii=False) for s in sets], scores, list(meta["labels"])
