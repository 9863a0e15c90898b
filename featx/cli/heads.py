"""``featx train``, ``featx evaluate``, ``featx predict``, ``featx run``."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from ..backbone import DEFAULT_BATCH_SIZE


def register(sub) -> None:
    p = sub.add_parser("train", help="select and fit heads (logreg/svm/knn) on cached features by cross-validation")
    p.add_argument("cache", type=Path, help="cache directory written by `featx extract` (labelled dataset)")
    p.add_argument("--model", default=None,
                   help="backbone of the features (name or .onnx path); optional when the cache holds one")
    p.add_argument("--head", default="all", choices=("logreg", "svm", "knn", "all"), help="head kind (default: all)")
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--out", type=Path, default=Path("heads"), help="folder for the saved heads (default ./heads)")
    p.add_argument("--jobs", type=int, default=-1, help="parallel fits (default -1: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a saved head on a labelled test cache (JSON, Markdown, PNG)")
    p.add_argument("head", type=Path, help="a saved head (.skops, with its .json beside it)")
    p.add_argument("--cache", type=Path, required=True, help="cache of the test set (same backbone)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: HEAD's folder/NAME-report)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict a dataset with a saved head (labels and probabilities as CSV)")
    p.add_argument("head", type=Path, help="a saved head (.skops)")
    p.add_argument("data", help="folder of images, manifest, .txt file, or builtin:NAME")
    p.add_argument("--cache", type=Path, default=None, help="embed through this cache (reused and resumed)")
    p.add_argument("--out", type=Path, default=None, help="CSV file to write (default: print to stdout)")
    p.add_argument("--model", default=None,
                   help="where to load the backbone from (default: as recorded in the head's metadata)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="items per ONNX Runtime call (default %(default)s)")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="stop at the first bad item (default) or leave it out and go on")
    p.add_argument("--text-column", default=None)
    p.add_argument("--path-column", default=None)
    p.add_argument("--id-column", default=None)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("run", help="run a declarative pipeline (TOML): export, extract, train, evaluate, report")
    p.add_argument("pipeline", type=Path, help="pipeline TOML file (see pipelines/)")
    p.add_argument("--out", type=Path, default=None, help="output folder (overrides [output] dir)")
    p.add_argument("--jobs", type=int, default=None, help="parallel fits (overrides [heads] n_jobs)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)


# ----------------------------------------------------------------------------- train
def _cache_model(cache: Path, model: str | None) -> tuple[str, str]:
    """(name of the backbone in the cache, how to load it) from --model (name, .onnx path or None)."""
    from ..cache import CacheStore

    store = CacheStore(cache)
    store.check_readable()
    if model is not None and (model.endswith(".onnx") or Path(model).is_file()):
        from ..backbone import Backbone

        return store.resolve_model(Backbone(model).name), str(Path(model).resolve())
    name = store.resolve_model(model)
    return name, model or name


def cmd_train(args) -> int:
    from ..cache import CacheStore, load_features
    from ..heads import train_heads
    from ..persist import save_head
    from ..pipeline import format_table

    name, loader = _cache_model(args.cache, args.model)
    store = CacheStore(args.cache)
    record = store.read_model(name) or {}
    listing = store.read_listing()
    X, y, _ids = load_features(args.cache, model=name)
    if y is None:
        from ..errors import DataSourceError

        raise DataSourceError(f"cache {args.cache} holds an unlabelled dataset; heads need labels "
                              "(class sub-folders or a label column)")
    print(f"{name} features of {listing.name if listing else args.cache}: {X.shape[0]} x {X.shape[1]}, "
          f"{len(set(y.tolist()))} classes; selecting {args.head} by {args.cv}-fold CV")
    results = train_heads(X, y, args.head, cv=args.cv, n_jobs=args.jobs, seed=args.seed)
    rows = []
    for r in results:
        summary = r.summary()
        meta = {"kind": r.kind, "backbone": name, "model": loader, "fingerprint_id": record.get("fingerprint_id"),
                "dim": int(X.shape[1]), "modality": listing.modality if listing else None,
                "train": listing.name if listing else str(args.cache), "n_train": int(len(X)), **summary}
        path = save_head(r.best_estimator, args.out / f"{r.kind}.skops", metadata=meta)
        rows.append({"head": r.kind, "cv_mean": summary["cv_mean"], "cv_std": summary["cv_std"],
                     "n_splits": r.n_splits, "fit_seconds": r.fit_seconds, "best_params": r.best_params})
        for note in r.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"saved {path}", file=sys.stderr)
    print(format_table(rows))
    best = max(rows, key=lambda row: -1 if row["cv_mean"] is None else row["cv_mean"])
    print(f"best by CV: {best['head']} -> {args.out / (best['head'] + '.skops')}")
    return 0


# ----------------------------------------------------------------------------- evaluate
def _check_fingerprint(meta: dict, fingerprint_id: str | None, where: str) -> None:
    from ..errors import HeadError

    expected = meta.get("fingerprint_id")
    if expected and fingerprint_id and expected != fingerprint_id:
        raise HeadError(
            f"the head was trained on features of {meta.get('backbone')!r} with fingerprint {expected}, but "
            f"{where} has fingerprint {fingerprint_id} (another model file or preprocessing); "
            "features of two models must not be mixed: re-extract with the head's backbone, or retrain"
        )


def _check_dim(estimator, X, head_path) -> None:
    from ..errors import HeadError

    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and X.shape[1] != expected:
        raise HeadError(f"{head_path} expects {expected} features per row, got {X.shape[1]}")


def cmd_evaluate(args) -> int:
    from ..cache import CacheStore, load_features
    from ..errors import DataSourceError, HeadError
    from ..evaluate import evaluate, save_report, to_markdown
    from ..persist import load_head, read_metadata

    meta = read_metadata(args.head)
    estimator = load_head(args.head)
    store = CacheStore(args.cache)
    store.check_readable()
    name = meta.get("backbone")
    if name not in store.model_names():
        raise HeadError(f"{args.head} was trained on {name!r} features but cache {args.cache} holds "
                        f"{', '.join(store.model_names()) or 'none'}; run `featx extract TEST --model "
                        f"{meta.get('model', name)} --cache {args.cache}` first")
    _check_fingerprint(meta, (store.read_model(name) or {}).get("fingerprint_id"), f"cache {args.cache}")
    X, y, _ids = load_features(args.cache, model=name)
    if y is None:
        raise DataSourceError(f"cache {args.cache} holds an unlabelled dataset; evaluation needs labels "
                              "(use `featx predict` for unlabelled data)")
    _check_dim(estimator, X, args.head)
    listing = store.read_listing()
    report = {"head": meta.get("kind", Path(args.head).stem), "head_file": str(args.head), "backbone": name,
              "test": listing.name if listing else str(args.cache), **evaluate(estimator, X, y)}
    out = args.out or Path(args.head).with_name(Path(args.head).stem + "-report")
    files = save_report(report, out, title=f"{report['head']} on {report['test']}")
    print(to_markdown(report, title=f"{report['head']} on {report['test']}"))
    print("report: " + ", ".join(str(path) for path in files.values() if path is not None), file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    import numpy as np

    from ..backbone import load_backbone
    from ..persist import load_head, read_metadata
    from ..sources import open_dataset

    meta = read_metadata(args.head)
    estimator = load_head(args.head)
    backbone = load_backbone(args.model or meta.get("model") or meta["backbone"])
    _check_fingerprint(meta, backbone.fingerprint_id, f"backbone {backbone.onnx_path}")
    dataset = open_dataset(args.data, text_column=args.text_column, path_column=args.path_column,
                           id_column=args.id_column)
    if args.cache is not None:
        from ..cache import load_features
        from ..extract import extract

        report = extract(dataset, backbone, args.cache, batch_size=args.batch_size, on_error=args.on_error)
        print(report.summary(), file=sys.stderr)
        X, labels, ids = load_features(args.cache, model=backbone.name)
    else:
        from ..pipeline import embed_dataset

        X, labels, ids = embed_dataset(backbone, dataset, batch_size=args.batch_size, on_error=args.on_error,
                                       warn=lambda msg: print(msg, file=sys.stderr))
    _check_dim(estimator, X, args.head)
    pred = estimator.predict(X) if len(X) else np.empty(0, dtype=object)
    proba = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") and len(X) else None
    classes = [str(c) for c in getattr(estimator, "classes_", [])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["id", "prediction"] + (["label"] if labels is not None else [])
    header += [f"p_{c}" for c in classes] if proba is not None else []
    writer.writerow(header)
    for i in range(len(X)):
        row = [ids[i], pred[i]] + ([labels[i]] if labels is not None else [])
        row += [f"{p:.6f}" for p in proba[i]] if proba is not None else []
        writer.writerow(row)
    if args.out is None:
        sys.stdout.write(buf.getvalue())
    else:
        from ..files import write_atomically

        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.out, lambda tmp: Path(tmp).write_text(buf.getvalue()))
        print(f"wrote {len(X)} predictions to {args.out}", file=sys.stderr)
    if labels is not None and len(X):
        acc = float(np.mean(np.asarray(pred, dtype=object) == np.asarray(labels, dtype=object)))
        print(f"accuracy against the dataset's labels: {acc:.4f} ({len(X)} items)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- run
def cmd_run(args) -> int:
    from ..pipeline import run_pipeline

    run_pipeline(args.pipeline, out_dir=args.out, n_jobs=args.jobs, progress=False if args.no_progress else None)
    return 0
