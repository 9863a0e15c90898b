"""``featx audit``: label issues, duplicates, leaks and outliers of a cache, as CSV, JSON and HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import add_json_flag, folds, jobs, non_negative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("audit", help="find label errors, near-duplicates, train/test leaks and outliers "
                       "in a cache; write findings.csv/json and report.html")
    p.add_argument("cache", type=Path, help="training cache written by `featx extract`")
    p.add_argument("--test", type=Path, default=None, help="a test cache of the same backbone: copies in it are leaks")
    p.add_argument("--model", default=None, help="backbone of the features; optional when the cache holds one")
    p.add_argument("--out", type=Path, default=Path("audit"), help="folder for findings and report (default ./audit)")
    p.add_argument("--head", default="logreg", choices=("logreg", "svm", "knn"),
                   help="head whose out-of-fold probabilities rank the label issues (default logreg)")
    p.add_argument("--cv", type=folds, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine similarity from which two items are near-duplicates or a leak (default 0.9)")
    p.add_argument("--outliers", type=float, default=None, metavar="FRACTION",
                   help="share of the items flagged as outliers (default 0.01)")
    p.add_argument("--pixels", action=argparse.BooleanOptionalAction, default=None,
                   help="also compare images by a perceptual hash of their pixels (finds resized/re-encoded copies "
                   "of small images that embeddings miss; default: image caches up to 50,000 items)")
    p.add_argument("-k", "--neighbours", type=positive_int, default=10, help="neighbours per item (default 10)")
    p.add_argument("--jobs", type=jobs, default=1, help="parallel fits (default 1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the folds and of the index")
    add_json_flag(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    from ..quality import OUTLIER_FRACTION, THRESHOLD, audit, write_report

    console = args.console
    result = audit(args.cache, args.test, model=args.model, head=args.head, cv=args.cv, k=args.neighbours,
                   threshold=THRESHOLD if args.threshold is None else args.threshold,
                   outlier_fraction=OUTLIER_FRACTION if args.outliers is None else args.outliers,
                   pixels=args.pixels, seed=args.seed, n_jobs=args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = result.to_csv(args.out / "findings.csv"), result.to_json(args.out / "findings.json")
    report = write_report(result, args.out / "report.html")  # thumbnails from the refs the audit read
    if console.json:
        console.document({**result.summary(), "findings_csv": str(csv_path), "findings_json": str(json_path),
                          "report": str(report)})
        return 0
    counts = result.counts()
    console.result(f"audited {result.n_train} items" + (f" and {result.n_test} test items" if result.n_test else "")
                   + f" ({result.settings['model']}, neighbours {result.settings['neighbours']}, "
                   + (f"pixels {result.settings['pixels']}, " if "pixels" in result.settings else "")
                   + f"{result.settings.get('probabilities', 'no labels')}) in {result.settings['seconds']:.1f} s")
    for issue, n in counts.items():
        console.result(f"  {issue.replace('_', ' '):<16} {n}")
    for pair in result.confused[:3]:
        console.result(f"  most confused: {pair['given']} -> {pair['suggested']} ({pair['count']})")
    console.result(f"findings: {csv_path}, {json_path}")
    console.result(f"report:   {report.resolve().as_uri()}")
    console.result(f"retrain without them: featx train {args.cache} --exclude {csv_path}")
    return 0
