"""``featx train``, ``featx evaluate``, ``featx predict``, ``featx run``."""

from __future__ import annotations

import argparse
import csv
import io
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import interrupts
from ..engine.backbone import Backbone
from ..factory import load_backbone
from ..errors import CacheError, DataSourceError, HeadError, UsageError
from ..files import write_atomically
from ..sources import check_modality, labelled_mask, open_dataset
from ..sources.targets import target_kind
from .flags import (add_batch_size_flag, add_json_flag, add_manifest_columns, dask_address, dask_logs, folds, jobs, non_negative_int,
                    positive_int)

# featx.heads, featx.pipeline and featx.deploy are imported inside the commands that use them:
# they load scikit-learn (~2 s), which the other commands and `featx --help` need not wait for.


def register(sub) -> None:
    p = sub.add_parser("train", help="select and fit heads (logreg/svm/knn) on cached features by cross-validation")
    p.add_argument("cache", type=Path, help="cache directory written by `featx extract` (labelled dataset)")
    p.add_argument("--model", default=None,
                   help="backbone of the features (name or .onnx path); optional when the cache holds one")
    p.add_argument("--head", default="all", choices=("logreg", "svm", "knn", "ridge", "svr", "all"),
                   help="head kind (default: all); ridge and svr for numeric targets")
    p.add_argument("--target", default="auto", choices=("auto", "single", "multi", "numeric"),
                   help="what the labels are (default auto: label sets are multi-label, non-integral numbers numeric)")
    p.add_argument("--label-delimiter", default=None, metavar="TEXT",
                   help="labels written as one delimiter-separated string per item (e.g. '|'): multi-label")
    p.add_argument("--threshold", default="global", choices=("global", "per-label"),
                   help="multi-label: one threshold for all labels, or one per label, chosen on out-of-fold scores")
    p.add_argument("--layer", default=None, metavar="NAME|all",
                   help="features of an intermediate layer the export carries (`featx export NAME --layers ...`), "
                        "or 'all': each head on every layer, the layer chosen by CV (default: the final features)")
    p.add_argument("--cv", type=folds, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--out", type=Path, default=Path("heads"), help="folder for the saved heads (default ./heads)")
    p.add_argument("--jobs", type=jobs, default=-1, help="parallel fits (default -1: all cores)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the folds, the selection sample and the SGD order")
    p.add_argument("--strategy", choices=("auto", "exact", "approximate"), default="auto",
                   help="exact heads, approximate ones (cost linear in the rows), or auto: exact while cheap "
                        "(svm up to 10,000 rows, knn up to 20,000, logreg while it fits in memory)")
    p.add_argument("--memory-budget", type=parse_size, default=None, metavar="SIZE",
                   help="memory the training may use, e.g. 4G or 512M (default: half the free memory); "
                        "a larger cache is streamed from disk a chunk at a time")
    p.add_argument("--chunk", type=positive_int, default=None, metavar="ROWS",
                   help="rows read at a time when streaming, in whole windows of 8192 "
                        "(default: what an eighth of the memory budget holds)")
    p.add_argument("--select-rows", type=positive_int, default=None, metavar="ROWS",
                   help="most rows the grid is cross-validated on; a stratified sample above (default 10,000)")
    p.add_argument("--dask", type=dask_address, default=None, metavar="ADDRESS",
                   help="run the cross-validation fits on a Dask cluster through joblib: local[:N] or a scheduler "
                        "address, tcp://HOST:8786 (--jobs -1: every thread of the cluster; pip install 'featx[dask]')")
    p.add_argument("--exclude", type=Path, default=None, metavar="CSV",
                   help="leave out the items of a findings.csv written by `featx audit` (or any CSV with an id column)")
    add_json_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a saved head on a labelled test cache (JSON, Markdown, PNG)")
    p.add_argument("head", type=Path, help="a saved head (.skops, with its .json beside it)")
    p.add_argument("--cache", type=Path, required=True, help="cache of the test set (same backbone)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: HEAD's folder/NAME-report)")
    add_json_flag(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict a dataset with a saved head or a deployed .onnx file "
                                       "(labels and probabilities as CSV)")
    p.add_argument("head", type=Path, help="a saved head (.skops), or a file written by `featx deploy` (.onnx)")
    p.add_argument("data", help="folder of images, manifest, .txt file, table, Hugging Face save_to_disk folder, "
                                "WebDataset shards, or builtin:NAME (see `featx data show`)")
    p.add_argument("--cache", type=Path, default=None, help="embed through this cache (reused and resumed)")
    p.add_argument("--out", type=Path, default=None, help="CSV file to write (default: print to stdout)")
    p.add_argument("--model", default=None,
                   help="where to load the backbone from (default: as recorded in the head's metadata)")
    add_batch_size_flag(p)
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="stop at the first bad item (default) or leave it out and go on")
    add_manifest_columns(p, label=False)
    p.add_argument("--json", action="store_true",
                   help="print a summary (counts, accuracy, the CSV file) as one JSON document on stdout; needs --out")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("run", help="run a declarative pipeline (TOML): export, extract, train, evaluate, report")
    p.add_argument("pipeline", type=Path, help="pipeline TOML file (see pipelines/)")
    p.add_argument("--out", type=Path, default=None, help="output folder (overrides [output] dir)")
    p.add_argument("--jobs", type=jobs, default=None, help="parallel fits (overrides [heads] n_jobs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the step lines are still printed)")
    p.set_defaults(func=cmd_run)


# ----------------------------------------------------------------------------- train
def _cache_model(cache: Path, model: str | None) -> tuple[str, str]:
    """(name of the backbone in the cache, how to load it) from --model (name, .onnx path or None)."""
    from ..cache import CacheStore

    store = CacheStore(cache)
    store.check_readable()
    if model is not None and (model.endswith(".onnx") or Path(model).is_file()):
        return store.resolve_model(Backbone(model).name), str(Path(model).resolve())
    name = store.resolve_model(model)
    return name, model or name


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"100000"`` (bytes) -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4G, 512M, 1.5GiB, 100000)")
    value = float(match.group(1)) * 1024 ** "BKMGT".index(match.group(2).upper() or "B")
    if value < 1:
        raise argparse.ArgumentTypeError(f"a memory budget must be at least 1 byte; got {text!r}")
    return int(value)


def cmd_train(args) -> int:
    # --dask: joblib's Dask backend, so that the grid searches' fits run on the cluster's workers
    from ..extraction.cluster import joblib_on

    with dask_logs(args), joblib_on(args.dask) if args.dask else nullcontext():
        return _train(args)


def _train(args) -> int:
    from ..cache import CacheStore
    from ..cache import FeatureReader
    from ..heads.persist import save_head

    from ..heads import SELECT_ROWS, resolve_heads, select_layer
    from ..heads.plan import expected_seconds
    from ..pipeline import format_table

    console = args.console
    name, loader = _cache_model(args.cache, args.model)
    store = CacheStore(args.cache)
    record = store.read_model(name) or {}
    listing = store.read_listing()
    # rows are read as the plan needs them, never all at once
    reader = _reader_with_rows(args.cache, name, "train on", layer=None if args.layer == "all" else args.layer)
    readers = {reader.layer: reader}
    if args.layer == "all":  # the layer is chosen by CV like any hyper-parameter; "final" first wins ties
        readers |= {layer: FeatureReader(args.cache, model=name, layer=layer) for layer in reader.layers}
        if len(readers) == 1:  # say so rather than silently train on the final layer only
            console.note(f"--layer all: {name}'s cache holds no intermediate layers, so only its final features "
                         f"are used; export with `featx export {name} --layers ...` and extract again to compare layers")
    y = reader.labels
    if y is None:
        raise DataSourceError(f"cache {args.cache} holds an unlabelled dataset; heads need labels "
                              "(class sub-folders or a label column)")
    labelled = labelled_mask(y)
    unlabelled = int((~labelled).sum())
    if unlabelled:  # a missing label is never a class: those items are left out, and counted
        readers = {key: each.take(np.flatnonzero(labelled)) for key, each in readers.items()}
        reader = readers[reader.layer]
        y = reader.labels
    if args.exclude is not None:  # featx audit's findings: retrain without the flagged items
        from ..quality import read_excluded

        excluded = read_excluded(args.exclude)
        keep = np.flatnonzero([i not in excluded for i in reader.ids])
        console.result(f"--exclude {args.exclude}: {reader.n_rows - len(keep)} flagged item(s) left out")
        readers = {key: each.take(keep) for key, each in readers.items()}
        reader = readers[reader.layer]
        y = reader.labels
    train_name = listing.name if listing else str(args.cache)
    target = "multi" if args.label_delimiter is not None else target_kind(y, args.target)
    if target != "single":  # label sets or numbers: featx.heads.targets
        from .targets import train_targets

        return train_targets(args, reader, y, target, name=name, loader=loader, record=record, listing=listing,
                             train_name=train_name, unlabelled=unlabelled)
    n_classes = len(set(y.tolist()))
    layers = ", ".join(f"{k} ({v.dim})" for k, v in readers.items())
    console.result(f"{name} features of {train_name}: {reader.n_rows} x {reader.dim} ({reader.dtype} on disk), "
                   f"{n_classes} classes" + (f" ({unlabelled} unlabelled items left out)" if unlabelled else "")
                   + f"; selecting {args.head} by {args.cv}-fold CV"
                   + (f" on layers {layers}" if len(readers) > 1 else f", layer {reader.layer}"))
    t0 = time.perf_counter()
    rows = []
    kinds = resolve_heads(args.head)
    eta = expected_seconds(kinds, reader.n_rows, reader.dim, cv=args.cv, strategy=args.strategy,
                           memory_budget=args.memory_budget, layers=len(readers))
    for done, kind in enumerate(kinds):
        interrupts.check()  # between heads: a Ctrl-C swallowed by a callback stops here
        left = [eta[k] for k in kinds[done:]]
        if eta[kind] is not None:  # the cost model of featx.heads.plan: ETA per head and for the heads left
            console.note(f"head {done + 1}/{len(kinds)} {kind}: expected ~{eta[kind]:.0f} s"
                         + (f", ~{sum(left):.0f} s for the {len(left)} heads left" if len(left) > 1 and None not in left
                            else "") + f" ({time.perf_counter() - t0:.0f} s elapsed)")
        chosen = select_layer(kind, readers, y, cv=args.cv, n_jobs=args.jobs, seed=args.seed,
                              progress=console.progress, strategy=args.strategy, memory_budget=args.memory_budget,
                              chunk=args.chunk, select_rows=SELECT_ROWS if args.select_rows is None else args.select_rows)
        r, used = chosen.result, readers[chosen.layer]
        console.result(r.plan.describe())
        if len(readers) > 1:
            console.result(f"{kind}: layer {chosen.layer} by CV ("
                           + ", ".join(f"{k} {_score(v)}" for k, v in chosen.scores.items()) + ")")
        summary = chosen.summary()
        meta = {"kind": r.kind, "backbone": name, "model": loader, "fingerprint_id": record.get("fingerprint_id"),
                "dim": int(used.dim), "modality": listing.modality if listing else None,
                "train": train_name, "n_train": int(reader.n_rows), **summary}
        path = save_head(r.best_estimator, args.out / f"{r.kind}.skops", metadata=meta)
        rows.append({"head": r.kind, "layer": chosen.layer, "cv_mean": summary["cv_mean"], "cv_std": summary["cv_std"],
                     "n_splits": r.n_splits, "fit_seconds": r.fit_seconds, "best_params": r.best_params,
                     "strategy": r.plan.strategy, "n_select": r.plan.n_select, "streamed": r.plan.streamed,
                     "plan": r.plan.describe(), "file": str(path), "notes": list(r.notes)})
        for note in r.notes:  # the same text as the warning select_head gave: printed once
            console.warn(note)
        console.note(f"saved {path}")
    best = max(rows, key=lambda row: -1 if row["cv_mean"] is None else row["cv_mean"])
    if args.json:
        console.document({"backbone": name, "train": train_name, "cache": str(args.cache), "n": int(reader.n_rows),
                          "unlabelled": unlabelled, "dim": int(reader.dim), "classes": n_classes, "cv": args.cv,
                          "seed": args.seed,
                          "seconds": time.perf_counter() - t0, "heads": rows, "best": best["head"],
                          "best_file": best["file"]})
    console.result(format_table(rows))
    console.result(f"best by CV: {best['head']} ({_score(best['cv_mean'])}) -> {best['file']}; "
                   f"{len(rows)} head(s) in {time.perf_counter() - t0:.1f} s")
    return 0


def _reader_with_rows(cache: Path, name: str, doing: str, layer: str | None = None) -> FeatureReader:
    """A reader of the cache's features (of ``layer``), or a :class:`CacheError` saying why it has none."""
    from ..cache import FeatureReader

    reader = FeatureReader(cache, model=name, layer=layer)
    if not reader.n_rows:
        missing = reader.missing
        raise CacheError(f"cache {cache} holds no features of {name!r} to {doing}: {len(missing['failed'])} item(s) "
                         f"failed extraction, {missing['not_extracted']} not extracted yet, {missing['changed']} "
                         f"changed on disk since; `featx info {cache}` lists the failures")
    return reader


def _score(value) -> str:
    return "no CV score" if value is None else f"CV accuracy {value:.4f}"


def _head_layer(meta: dict) -> str | None:
    """The layer a saved head was trained on (``featx train --layer``); None: the final features."""
    return meta.get("layer")


# ----------------------------------------------------------------------------- evaluate
def _check_fingerprint(meta: dict, fingerprint_id: str | None, where: str) -> None:
    expected = meta.get("fingerprint_id")
    if expected and fingerprint_id and expected != fingerprint_id:
        raise HeadError(
            f"the head was trained on features of {meta.get('backbone')!r} with fingerprint {expected}, but "
            f"{where} has fingerprint {fingerprint_id} (another model file or preprocessing); "
            "features of two models must not be mixed: re-extract with the head's backbone, or retrain"
        )


def _check_dim(estimator, X, head_path) -> None:
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and X.shape[1] != expected:
        raise HeadError(f"{head_path} expects {expected} features per row, got {X.shape[1]}")


def cmd_evaluate(args) -> int:
    from ..cache import CacheStore
    from ..heads.evaluate import evaluate
    from ..heads.evaluate import save_report
    from ..heads.evaluate import to_markdown
    from ..heads.persist import load_head
    from ..heads.persist import read_metadata

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
    reader = _reader_with_rows(args.cache, name, "evaluate", layer=_head_layer(meta))
    X, y = reader.read_all(), reader.labels
    if y is None:
        raise DataSourceError(f"cache {args.cache} holds an unlabelled dataset; evaluation needs labels "
                              "(use `featx predict` for unlabelled data)")
    _check_dim(estimator, X, args.head)
    listing = store.read_listing()
    if meta.get("target") in ("multi", "numeric"):
        from .targets import evaluate_targets

        return evaluate_targets(args, estimator, meta, X, y, name=name,
                                test=listing.name if listing else str(args.cache))
    report = {"head": meta.get("kind", Path(args.head).stem), "head_file": str(args.head), "backbone": name,
              "test": listing.name if listing else str(args.cache), **evaluate(estimator, X, y)}
    out = args.out or Path(args.head).with_name(Path(args.head).stem + "-report")
    title = f"{report['head']} on {report['test']}"
    files = save_report(report, out, title=title)  # the PNG is None without matplotlib
    if args.json:
        args.console.document({**report, "files": {k: None if v is None else str(v) for k, v in files.items()}})
    else:
        args.console.result(to_markdown(report, title=title))
    args.console.note("report: " + ", ".join(str(path) for path in files.values() if path is not None))
    args.console.result(f"{title}: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f} "
                        f"on {report['n']} items"
                        + (f" ({report['unlabelled']} unlabelled items left out)" if report["unlabelled"] else ""))
    return 0


# ----------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    console = args.console
    if args.json and args.out is None:
        raise UsageError("--json prints a summary on stdout: give --out for the predictions' CSV")
    t0 = time.perf_counter()
    done = _predict_deployed(args) if args.head.suffix == ".onnx" else _predict_with_head(args)
    ids, pred, labels, proba, classes = done.ids, done.pred, done.labels, done.proba, done.classes
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["id", "prediction"] + (["label"] if labels is not None else [])
    header += [f"p_{c}" for c in classes] if proba is not None else []
    writer.writerow(header)
    for i in range(len(ids)):
        row = [ids[i], pred[i]] + ([labels[i]] if labels is not None else [])
        row += [f"{p:.6f}" for p in proba[i]] if proba is not None else []
        writer.writerow(row)
    if args.out is None:
        console.data(buf.getvalue())
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.out, lambda tmp: Path(tmp).write_text(buf.getvalue()))
    acc = None
    scored = np.zeros(len(ids), bool) if labels is None else labelled_mask(labels)
    if scored.any() and done.target == "numeric":  # the mean absolute error instead
        acc = float(np.mean(np.abs(np.asarray(pred, float)[scored] - np.asarray(labels[scored], float))))
    elif scored.any():  # against the items that have a label (label sets: the exact set)
        acc = float(np.mean(np.asarray(pred, dtype=object)[scored] == np.asarray(labels, dtype=object)[scored]))
    seconds = time.perf_counter() - t0
    skipped = done.items - len(ids)
    if args.json:
        console.document({"head": str(args.head), "backbone": done.backbone, "data": done.data,
                          "items": done.items, "predicted": int(len(ids)), "skipped": skipped,
                          "accuracy": acc, "classes": classes, "out": str(args.out), "seconds": seconds,
                          "extraction": done.extraction})
    summary = (f"predicted {len(ids)} of {done.items} items" + (f" ({skipped} skipped)" if skipped else "")
               + f" in {seconds:.1f} s ({len(ids) / seconds if seconds > 0 else 0.0:.1f} items/s)"
               + (f" -> {args.out}" if args.out is not None else "")
               + (f"; {dict(numeric='MAE', multi='exact-set accuracy').get(done.target, 'accuracy')} against the "
                  f"dataset's labels: {acc:.4f}"
                  if acc is not None else "")
               + (f" ({len(ids) - int(scored.sum())} unlabelled)" if acc is not None and not scored.all() else ""))
    console.note(summary)  # on stderr: predict's stdout is for the CSV (or the JSON document)
    return 0


@dataclass
class _Predicted:
    """What either kind of model predicted for a dataset, for the CSV and the summary."""

    ids: Any
    pred: Any
    labels: Any
    proba: Any
    classes: list
    backbone: str
    data: str
    items: int
    extraction: Any = None
    target: str = "single"


def _predict_with_head(args) -> _Predicted:
    """A saved head (.skops) and its backbone: embed (through the cache when given), then the head."""
    from ..cache import load_features
    from ..extraction.extract import extract
    from ..heads.persist import load_head
    from ..heads.persist import read_metadata
    from .cache import extract_document

    console = args.console
    meta = read_metadata(args.head)
    estimator = load_head(args.head)
    backbone = load_backbone(args.model or meta.get("model") or meta["backbone"])
    _check_fingerprint(meta, backbone.fingerprint_id, f"backbone {backbone.onnx_path}")
    dataset = open_dataset(args.data, text_column=args.text_column, path_column=args.path_column,
                           id_column=args.id_column)
    check_modality(dataset, backbone.modality, f"{args.head} (on the {backbone.modality} backbone {backbone.name})")
    extraction = None
    if args.cache is not None:
        report = extract(dataset, backbone, args.cache, batch_size=args.batch_size, on_error=args.on_error,
                         progress=console.progress)
        extraction = extract_document(report)
        console.note(report.summary())
        X, labels, ids = load_features(args.cache, model=backbone.name, layer=_head_layer(meta))
    else:
        from ..pipeline import embed_dataset

        X, labels, ids = embed_dataset(backbone, dataset, batch_size=args.batch_size, on_error=args.on_error,
                                       warn=console.note, progress=console.progress, layer=_head_layer(meta))
    _check_dim(estimator, X, args.head)
    if meta.get("target") in ("multi", "numeric"):
        from .targets import predict_targets

        pred, proba, classes = predict_targets(estimator, meta, X)
        return _Predicted(ids, pred, labels, proba, classes, backbone.name, dataset.name, len(dataset), extraction,
                          meta["target"])
    pred = estimator.predict(X) if len(X) else np.empty(0, dtype=object)
    proba = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") and len(X) else None
    return _Predicted(ids, pred, labels, proba, [str(c) for c in getattr(estimator, "classes_", [])],
                      backbone.name, dataset.name, len(dataset), extraction)


def _predict_deployed(args) -> _Predicted:
    """A file written by ``featx deploy``: its own backbone and preprocessing, one session."""
    from ..deploy import DeployedModel

    if args.cache is not None or args.model is not None:
        raise UsageError(f"--cache and --model go with a .skops head; {args.head} holds its backbone")
    model = DeployedModel(args.head)
    dataset = open_dataset(args.data, text_column=args.text_column, path_column=args.path_column,
                           id_column=args.id_column)
    check_modality(dataset, model.modality, str(args.head))
    result = model.predict_items([item.ref for item in dataset.items], ids=dataset.ids(), batch_size=args.batch_size,
                                 on_error=args.on_error, warn=args.console.note, progress=args.console.progress)
    labels = dataset.labels()
    ids = np.asarray(dataset.ids(), dtype=object)[result.kept]
    target = model.metadata.get("target") or {}
    if target.get("kind") == "multi":  # the predicted set: the labels whose probability reaches the threshold
        import json

        picked = result.probabilities >= np.asarray(target["threshold"], dtype=np.float32) - 1e-6
        sets = [json.dumps([c for c, on in zip(model.classes, row) if on], ensure_ascii=False) for row in picked]
        return _Predicted(ids, sets, None if labels is None else labels[result.kept], result.probabilities,
                          model.classes, model.spec.name, dataset.name, len(dataset), None, "multi")
    return _Predicted(ids, result.labels, None if labels is None else labels[result.kept], result.probabilities,
                      model.classes, model.spec.name, dataset.name, len(dataset))


# ----------------------------------------------------------------------------- run
def cmd_run(args) -> int:
    from ..pipeline import run_pipeline

    run_pipeline(args.pipeline, out_dir=args.out, n_jobs=args.jobs,
                 progress=False if args.no_progress else args.console.progress, echo=args.console.result)
    return 0
