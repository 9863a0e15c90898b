"""``featx extract``, ``featx info``, ``featx verify``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UsageError
from ..engine.runtime import default_threads
from ..sources import open_dataset
from .flags import add_batch_size_flag, add_json_flag, add_manifest_columns, dask_address, dask_logs, non_negative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("extract", help="embed a dataset into an HDF5 cache (resumable)")
    p.add_argument("data", help="folder of images, CSV/JSONL/Parquet manifest, .txt file, table with image bytes "
                   "(.parquet, .arrow), Hugging Face save_to_disk folder, WebDataset shards "
                   "(x.tar, 'shards/{000000..000009}.tar'), or builtin:NAME")
    p.add_argument("--model", required=True, help="backbone name or exported .onnx path")
    p.add_argument("--cache", required=True, type=Path, help="cache directory (created if missing)")
    add_batch_size_flag(p)
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="stop at the first bad item (default) or record it and go on")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--providers", default=None, help="e.g. cpu, cuda (default: CUDA when usable, else CPU)")
    where.add_argument("--device", default=None, metavar="DEVICE",
                       help="where the model runs: cpu, cuda, or cuda:N for the GPU N (one session per GPU; "
                            "default: CUDA when usable, else CPU)")
    p.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--precision", choices=("fp32", "fp16", "auto"), default="fp32",
                   help="fp16: the backbone's fp16 variant (made on first use, parity-gated; for GPUs); auto: fp16 "
                        "on a GPU where its parity allows, else fp32 (default %(default)s; variants are cached apart)")
    p.add_argument("--decode-workers", type=positive_int, default=None, metavar="N",
                   help="threads decoding and preprocessing items (default: every core on a GPU; on the CPU "
                        "the cores --threads leaves, or a quarter of them; at least 1)")
    p.add_argument("--shard-size", type=positive_int, default=1024,
                   help="items per committed shard: at most this much work is lost if the run dies "
                        "(default %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage type")
    p.add_argument("--jpeg-draft", action="store_true",
                   help="decode JPEGs at a reduced scale (2-3x faster decoding of photos; slightly different "
                        "features, cached apart)")
    p.add_argument("--limit", type=positive_int, default=None, help="a stratified subset of N items (seeded)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="worker processes computing shards (0: in-process); each gets cores/N ONNX Runtime "
                        "threads unless --threads says otherwise")
    p.add_argument("--dask", type=dask_address, default=None, metavar="ADDRESS",
                   help="compute shards on a Dask cluster: local[:N] (N worker processes here) or a scheduler "
                        "address, tcp://HOST:8786 (workers must see the model file and the items at the same "
                        "paths; pip install 'featx[dask]')")
    p.add_argument("--gpus-per-worker", type=int, choices=(0, 1), default=0,
                   help="with --dask: each shard needs the Dask resource GPU, one device per worker "
                        "(workers started with `dask worker ADDRESS --nthreads 1 --resources GPU=1`)")
    p.add_argument("--max-in-flight", type=positive_int, default=None, metavar="N",
                   help="with --workers or --dask: shards in flight at most (default: 2 per worker)")
    add_manifest_columns(p, label=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the summary is still printed)")
    add_json_flag(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("info", help="show what a cache holds")
    p.add_argument("cache", type=Path, help="cache directory")
    add_json_flag(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("verify", help="check a cache's files; exit 1 on damage")
    p.add_argument("cache", type=Path, help="cache directory")
    add_json_flag(p)
    p.set_defaults(func=cmd_verify)


def cmd_extract(args) -> int:
    from ..extraction.dispatch import process_pool
    from ..extraction.extract import extract

    dataset = open_dataset(args.data, text_column=args.text_column, path_column=args.path_column,
                           label_column=args.label_column, id_column=args.id_column, limit=args.limit)
    if args.dask and args.workers:
        raise UsageError("--workers and --dask do not go together: --dask local:N runs N workers here")
    if args.gpus_per_worker and not args.dask:
        raise UsageError("--gpus-per-worker needs --dask")
    if args.max_in_flight and not (args.dask or args.workers):
        raise UsageError("--max-in-flight needs --workers or --dask")
    executor = None
    threads = args.threads
    if args.workers:
        # N processes with all cores' threads each would oversubscribe the machine (and spin-wait)
        threads = threads or max(1, default_threads() // args.workers)
        executor = process_pool(args.workers)
    try:
        with dask_logs(args):
            report = extract(dataset, args.model, args.cache, batch_size=args.batch_size, on_error=args.on_error,
                             providers=args.device or args.providers, threads=threads, shard_size=args.shard_size,
                             decode_workers=args.decode_workers, precision=args.precision,
                             dtype=args.dtype, executor=executor, dask=args.dask,
                             gpus_per_worker=args.gpus_per_worker, max_in_flight=args.max_in_flight,
                             progress=False if args.no_progress else args.console.progress,
                             jpeg_draft=args.jpeg_draft)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    if args.json:
        args.console.document(extract_document(report))
    for line in report.failure_lines():
        args.console.result(line)
    args.console.result(report.summary())
    return 0


def extract_document(report) -> dict:
    """The JSON document of an extraction (``featx extract --json``, ``featx predict --json``)."""
    doc = dataclasses.asdict(report)
    doc["failed"] = len(report.failed) + report.failed_before
    doc["failed_this_run"] = report.failed
    doc["items_per_s"] = report.items_per_s
    doc["summary"] = report.summary()
    return doc


def cmd_info(args) -> int:
    from ..cache.verify import info

    data = info(args.cache)
    if args.json:
        args.console.document(data)
    ds = data["dataset"]
    lines = [f"cache    {data['cache']}"]
    if ds:
        classes = (", unlabelled" if not ds["classes"] else f", {len(ds['classes'])} classes"
                   if ds["target"] == "single" else f", {ds['target_summary']}")
        classes += f", {ds['unlabelled']} unlabelled" if ds["classes"] and ds["unlabelled"] else ""
        lines.append(f"dataset  {ds['name']}: {ds['items']} {ds['modality']} items{classes}")
    for name, m in data["models"].items():
        lines.append(f"model    {name}: {m['embedded']} embedded, {m['failed']} failed, {m['missing']} missing; "
                     f"dim {m['dim']} {m['dtype']}; {m['shards']} shards, {m['bytes'] / 2**20:.1f} MiB; "
                     f"fingerprint {m['fingerprint_id']}")
        if m["layers"]:
            lines.append("         layers   " + ", ".join(f"{k} (dim {d})" for k, d in m["layers"].items())
                         + ": each its own feature set (--layer NAME)")
        lines += [f"         failed {item_id}: {reason}" for item_id, reason in m["failures"].items()]
    args.console.result("\n".join(lines))
    return 0


def cmd_verify(args) -> int:
    from ..cache.verify import verify

    report = verify(args.cache)
    if args.json:
        args.console.document({"cache": str(report.cache), "ok": report.ok, "checked_shards": report.checked_shards,
                               "problems": list(report.problems), "notes": list(report.notes)})
    for note in report.notes:
        args.console.note(f"note: {note}")
    for problem in report.problems:
        args.console.problem(f"DAMAGED: {problem}")
    args.console.result(f"{'ok' if report.ok else 'damaged'}: {report.checked_shards} shard(s) checked in "
                        f"{report.cache}")
    return 0 if report.ok else 1
