"""``info`` (what a cache holds) and ``verify`` (is every committed file intact)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import CacheCorruptError, CacheError
from . import layout
from .shards import FAILED_CONTENT, read_shard
from ..sources.targets import describe_target, target_kind
from .store import CacheStore


def info(cache) -> dict:
    """A summary of a cache: dataset, and per backbone rows, failures, dim, dtype, size on disk."""
    store = CacheStore(cache)
    store.check_readable()
    listing = store.read_listing()
    out = {"cache": str(store.root), "dataset": None, "models": {}}
    if listing is not None:
        labelled = [] if listing.labels is None else [v for v in listing.labels if v is not None]
        out["dataset"] = {"name": listing.name, "modality": listing.modality, "items": len(listing.ids),
                          "classes": sorted(set(labelled)) or None, "unlabelled": len(listing.ids) - len(labelled),
                          # the kind is written in the labels (featx.sources.targets), so under the checksum
                          "target": target_kind(labelled) if labelled else None,
                          "target_summary": describe_target(labelled) if labelled else None}
    current = {} if listing is None else dict(zip(listing.ids, listing.stamps))
    for name in store.model_names():
        record = store.read_model(name)
        state = store.scan(name, verify=False)
        done = sum(1 for i, (_, _, s) in state.rows.items() if current.get(i) == s)
        failed = {i: r for i, (s, r, _) in state.failed.items() if current.get(i) == s}
        retried = sum(1 for i, (s, _, kind) in state.failed.items() if current.get(i) == s and kind != FAILED_CONTENT)
        size = sum(p.stat().st_size for p in state.shards)
        out["models"][name] = {
            "dim": record["fingerprint"]["dim"], "layers": dict(record["fingerprint"].get("layers", {})),
            "dtype": record["dtype"],
            "fingerprint_id": record["fingerprint_id"], "onnx_sha256": record["fingerprint"]["onnx_sha256"],
            "preprocess": record["fingerprint"]["preprocess"], "embedded": done, "failed": len(failed),
            "failed_to_retry": retried,
            "missing": max(0, len(current) - done - len(failed)), "shards": len(state.shards),
            "damaged_shards": len(state.damaged), "bytes": size, "failures": dict(list(failed.items())[:20]),
        }
    return out


@dataclass
class VerifyReport:
    """Problems found by :func:`verify`; ``ok`` when there are none."""

    cache: str
    checked_shards: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(cache) -> VerifyReport:
    """Check every committed file: the marker, the listing (its checksum), each backbone's fingerprint
    record, each shard (opens, checksum, fingerprint, finite values), the index. A problem is reported
    with what to do, and the other files are still checked."""
    store = CacheStore(cache)
    report = VerifyReport(str(store.root))
    try:
        store.check_readable()
    except CacheCorruptError as e:  # a damaged marker: the rest can still be checked
        report.problems.append(str(e))
    except CacheError as e:
        if not store.root.exists():  # nothing to verify: an error, not a damaged cache
            raise
        report.problems.append(str(e))
        return report
    try:
        if store.read_listing() is None:
            report.notes.append("no dataset listing yet (no extraction has started)")
    except CacheError as e:
        report.problems.append(str(e))
    for leftover in store.root.rglob(f"{layout.TMP_PREFIX}*"):
        report.notes.append(f"temporary file left by an interrupted writer (removed by the next extract): {leftover}")
    for record_path in sorted((store.root / layout.MODELS).glob(f"*/{layout.MODEL_JSON}")):
        try:
            record = store.model_record(record_path)
        except CacheError as e:
            report.problems.append(str(e))
            continue
        name = record["name"]
        for path in store.shard_paths(name):
            report.checked_shards += 1
            try:
                data, attrs = read_shard(path)
            except Exception as e:
                report.problems.append(f"{path}: cannot be read ({type(e).__name__}: {e})")
                continue
            if attrs.get("fingerprint_id") != record["fingerprint_id"]:
                report.problems.append(f"{path}: written by another model (fingerprint {attrs.get('fingerprint_id')})")
            if data.checksum() != attrs.get("checksum"):
                report.problems.append(f"{path}: checksum mismatch (damaged content)")
            if data.embeddings.size and not np.isfinite(data.embeddings).all():
                report.problems.append(f"{path}: holds NaN/inf embeddings; the next `featx extract` recomputes its items")
            expected = record["fingerprint"].get("layers", {})
            if sorted(data.layers) != sorted(expected):
                report.problems.append(f"{path}: holds layers {sorted(data.layers)}, model.json says {sorted(expected)}")
            for layer, rows in data.layers.items():
                if rows.size and not np.isfinite(rows).all():
                    report.problems.append(f"{path}: holds NaN/inf features of layer {layer}")
            if data.embeddings.ndim != 2 or (data.embeddings.size and data.embeddings.shape[1] != record["fingerprint"]["dim"]):
                report.problems.append(f"{path}: embeddings of shape {data.embeddings.shape}, "
                                       f"expected dim {record['fingerprint']['dim']}")
        quarantined = list((layout.model_dir(store.root, name) / layout.QUARANTINE).glob("*.h5"))
        if quarantined:
            report.notes.append(f"{name}: {len(quarantined)} damaged shard(s) were quarantined and recomputed")
    index = store.root / layout.INDEX
    if not index.exists():
        report.notes.append("index.h5 is missing (rebuilt by the next extract)")
    else:
        try:
            import h5py

            with h5py.File(index, "r") as f:
                json.dumps(list(f.keys()))
        except Exception as e:
            report.problems.append(f"{index}: cannot be read ({e}); the next extract rebuilds it")
    return report
