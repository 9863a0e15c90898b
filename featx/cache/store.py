"""The cache directory: listing, backbone fingerprints, committed shards, read view.

Only :class:`CacheStore` touches the files; :func:`featx.extract` drives it and
:class:`~featx.cache.reader.FeatureReader` reads it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheCorruptError, CacheError, CacheMismatchError
from ..files import write_text_atomically
from ..layers import FINAL
from ..validation import check_path
from ..version import __version__
from . import layout
from .layout import DATASET, INDEX, MARKER, MODEL_JSON, MODELS, QUARANTINE, SHARD_RE, TMP_PREFIX
from .shards import STR, ShardData, read_shard, write_h5_atomically, write_shard

log = logging.getLogger("featx")


@dataclass
class Listing:
    """The dataset a cache was last extracted from, in its order."""

    name: str
    modality: str
    ids: np.ndarray  # object array of str
    labels: np.ndarray | None  # object array of str, or None when unlabelled
    stamps: np.ndarray  # object array of str ("" = none)


@dataclass
class ModelState:
    """What is committed for one backbone: the newest row or failure per id."""

    rows: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # id -> (shard index, row, stamp)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (stamp, reason)
    shards: list[Path] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)  # embeddings per shard, when kept
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    def is_done(self, item_id: str, stamp: str) -> bool:
        """Committed (embedded or failed) with the same stamp."""
        if item_id in self.rows:
            return self.rows[item_id][2] == stamp
        if item_id in self.failed:
            return self.failed[item_id][0] == stamp
        return False


class CacheStore:
    """A featx cache directory (see :mod:`featx.cache.layout` for the files).

    Parameters
    ----------
    root : path
        The cache directory. Created by :meth:`create`; must already be a cache for reading.
    """

    def __init__(self, root):
        self.root = Path(check_path(root, "root", "CacheStore"))

    # ---------------------------------------------------------------- the directory
    def exists(self) -> bool:
        return (self.root / MARKER).is_file()

    def check_readable(self) -> None:
        if not self.root.exists():
            raise CacheError(f"no cache at {self.root}; create one with `featx extract DATA --cache {self.root}`")
        if not self.root.is_dir():
            raise CacheError(f"{self.root} is a file, not a featx cache directory; pass a directory to --cache")
        if not self.exists():
            raise CacheError(f"{self.root} is not a featx cache (no {MARKER} inside)")
        marker = json.loads((self.root / MARKER).read_text())
        if marker.get("format", 0) > layout.FORMAT:
            raise CacheError(f"cache {self.root} has format {marker['format']}; this featx reads up to "
                             f"{layout.FORMAT}: upgrade featx")

    def create(self) -> None:
        """Make the directory a cache (no-op when it already is one)."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"{self.root} is a file; --cache must be a directory (it will be created)")
        if self.root.is_dir() and not self.exists() and any(self.root.iterdir()):
            raise CacheError(f"{self.root} exists, is not empty and is not a featx cache; choose another --cache")
        (self.root / MODELS).mkdir(parents=True, exist_ok=True)
        if not self.exists():
            marker = {"format": layout.FORMAT, "featx": __version__,
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            write_text_atomically(self.root / MARKER, json.dumps(marker, indent=2), durable=True)

    def remove_temporaries(self) -> int:
        """Delete temporary files left by a killed writer (call only while holding the lock)."""
        n = 0
        for path in self.root.rglob(f"{TMP_PREFIX}*"):
            path.unlink(missing_ok=True)
            n += 1
        return n

    # ---------------------------------------------------------------- listing
    def write_listing(self, name: str, modality: str, ids, labels, stamps) -> None:
        def fill(f):
            f.attrs["name"] = name
            f.attrs["modality"] = modality
            f.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=STR)
            f.create_dataset("stamps", data=np.array([s or "" for s in stamps], dtype=object), dtype=STR)
            if labels is not None:
                f.create_dataset("labels", data=np.array([str(v) for v in labels], dtype=object), dtype=STR)

        write_h5_atomically(self.root / DATASET, fill)

    def read_listing(self) -> Listing | None:
        path = self.root / DATASET
        if not path.exists():
            return None
        try:
            with h5py.File(path, "r") as f:
                labels = f["labels"].asstr()[()].astype(object) if "labels" in f else None
                return Listing(str(f.attrs["name"]), str(f.attrs["modality"]), f["ids"].asstr()[()].astype(object),
                               labels, f["stamps"].asstr()[()].astype(object))
        except (OSError, KeyError) as e:
            raise CacheCorruptError(f"{path} is damaged ({e}); run `featx extract` again to rewrite it") from None

    # ---------------------------------------------------------------- models
    def model_names(self) -> list[str]:
        base = self.root / MODELS
        if not base.is_dir():
            return []
        return sorted(json.loads((d / MODEL_JSON).read_text())["name"] for d in base.iterdir()
                      if (d / MODEL_JSON).is_file())

    def read_model(self, name: str) -> dict | None:
        path = layout.model_dir(self.root, name) / MODEL_JSON
        return json.loads(path.read_text()) if path.is_file() else None

    def resolve_model(self, model: str | None) -> str:
        names = self.model_names()
        if model is None:
            if len(names) == 1:
                return names[0]
            if not names:
                raise CacheError(f"cache {self.root} holds no features yet; run `featx extract` first")
            raise CacheError(f"cache {self.root} holds features of several backbones ({', '.join(names)}); "
                             "pass model=NAME")
        if model not in names:
            known = ", ".join(names) or "none"
            raise CacheError(f"cache {self.root} holds no features of {model!r}; it holds: {known}")
        return model

    def register_model(self, fingerprint: dict, fingerprint_id: str, dtype: str) -> None:
        """Record a backbone, or check it against the one recorded: refuse to mix features."""
        name = fingerprint["name"]
        record = {"name": name, "fingerprint_id": fingerprint_id, "fingerprint": fingerprint, "dtype": dtype,
                  "featx": __version__}
        existing = self.read_model(name)
        if existing is None:
            mdir = layout.model_dir(self.root, name)
            (mdir / layout.SHARDS).mkdir(parents=True, exist_ok=True)
            write_text_atomically(mdir / MODEL_JSON, json.dumps(record, indent=2), durable=True)
            return
        old = existing["fingerprint"]
        changed = [k for k in sorted(set(old) | set(fingerprint)) if old.get(k) != fingerprint.get(k)]
        if existing.get("dtype") != dtype:
            changed.append(f"storage dtype ({existing.get('dtype')} -> {dtype})")
        if changed:
            raise CacheMismatchError(
                f"cache {self.root} holds features of {name!r} made with a different "
                f"{' and '.join(_describe_change(k, old, fingerprint) for k in changed)}; featx will not mix "
                "features of two models. Use another --cache, or delete "
                f"{layout.model_dir(self.root, name)} to start this backbone over."
            )

    # ---------------------------------------------------------------- shards
    def shard_paths(self, name: str) -> list[Path]:
        sdir = layout.shards_dir(self.root, name)
        if not sdir.is_dir():
            return []
        return sorted(p for p in sdir.iterdir() if SHARD_RE.match(p.name))

    def scan(self, name: str, *, verify: bool = True, keep_embeddings: bool = False,
             layer: str | None = None) -> ModelState:
        """Read what is committed for ``name``; damaged shards are listed, not fatal.

        ``verify`` checks each shard's checksum (reads its embeddings); ``keep_embeddings``
        keeps them in ``state.arrays`` (implies ``verify``): the final features, or the rows of
        the intermediate ``layer``.
        """
        verify = verify or keep_embeddings
        state = ModelState()
        fingerprint_id = (self.read_model(name) or {}).get("fingerprint_id")
        for path in self.shard_paths(name):
            try:
                data, attrs = read_shard(path, embeddings=verify)
                if attrs.get("fingerprint_id") != fingerprint_id:
                    raise ValueError(f"fingerprint {attrs.get('fingerprint_id')} != model.json's {fingerprint_id}")
                if verify and data.checksum() != attrs.get("checksum"):
                    raise ValueError("checksum mismatch (bit rot or a partial write)")
            except Exception as e:  # any damage: unreadable, truncated, wrong content
                state.damaged.append((path, f"{type(e).__name__}: {e}"))
                continue
            k = len(state.shards)
            state.shards.append(path)
            if keep_embeddings:
                state.arrays.append(data.embeddings if layer in (None, FINAL) else data.layers[layer])
            for row, (item_id, stamp) in enumerate(zip(data.ids, data.stamps)):
                state.rows[item_id] = (k, row, stamp)
                state.failed.pop(item_id, None)
            for item_id, stamp, reason in zip(data.failed_ids, data.failed_stamps, data.failed_reasons):
                state.failed[item_id] = (stamp, reason)
                state.rows.pop(item_id, None)
        return state

    def quarantine(self, path: Path, reason: str) -> Path:
        qdir = path.parent.parent / QUARANTINE
        qdir.mkdir(exist_ok=True)
        target = qdir / path.name
        os.replace(path, target)
        log.warning("moved damaged shard %s to %s (%s); its items will be recomputed", path, target, reason)
        return target

    def commit(self, name: str, data: ShardData, *, fingerprint_id: str, dtype: str, durable: bool = True) -> Path:
        """Publish one shard (the coordinator calls this; only it holds the lock)."""
        paths = self.shard_paths(name) + sorted((layout.model_dir(self.root, name) / QUARANTINE).glob("shard-*.h5"))
        seq = 1 + max((int(SHARD_RE.match(p.name).group(1)) for p in paths), default=-1)
        final = layout.shards_dir(self.root, name) / layout.shard_name(seq)
        return write_shard(final, data, model=name, fingerprint_id=fingerprint_id, dtype=dtype, durable=durable)

    # ---------------------------------------------------------------- read view for plain h5py
    def rebuild_index(self) -> Path:
        """Write ``index.h5``: the listing, and per backbone virtual datasets over its shards."""
        listing = self.read_listing()

        def fill(f):
            f.attrs["featx"] = __version__
            f.attrs["format"] = layout.FORMAT
            if listing is not None:
                g = f.create_group("dataset")
                g.attrs["name"] = listing.name
                g.create_dataset("ids", data=listing.ids, dtype=STR)
                if listing.labels is not None:
                    g.create_dataset("labels", data=listing.labels, dtype=STR)
            for name in self.model_names():
                self._index_model(f, self.root, name, listing)

        return write_h5_atomically(self.root / INDEX, fill, durable=False)

    def _index_model(self, f, where: Path, name: str, listing: Listing | None) -> None:
        record = self.read_model(name)
        state = self.scan(name, verify=False)
        g = f.create_group(f"models/{layout.safe_name(name)}")
        g.attrs["name"] = name
        g.attrs["fingerprint"] = json.dumps(record["fingerprint"], sort_keys=True)
        dim, dtype = int(record["fingerprint"]["dim"]), np.dtype(record["dtype"])
        sizes = []
        for path in state.shards:
            with h5py.File(path, "r") as s:
                sizes.append(s["embeddings"].shape[0])
        total = int(sum(sizes))
        emb = h5py.VirtualLayout(shape=(total, dim), dtype=dtype)
        ids = h5py.VirtualLayout(shape=(total,), dtype=STR)
        start = 0
        for path, n in zip(state.shards, sizes):
            if n:
                rel = os.path.relpath(path, where)
                emb[start:start + n] = h5py.VirtualSource(rel, "embeddings", shape=(n, dim), dtype=dtype)
                ids[start:start + n] = h5py.VirtualSource(rel, "ids", shape=(n,), dtype=STR)
            start += n
        g.create_virtual_dataset("embeddings", emb, fillvalue=np.nan)
        g.create_virtual_dataset("ids", ids)
        for layer, layer_dim in record["fingerprint"].get("layers", {}).items():  # same rows, one per layer
            rows = h5py.VirtualLayout(shape=(total, int(layer_dim)), dtype=dtype)
            start = 0
            for path, n in zip(state.shards, sizes):
                if n:
                    rows[start:start + n] = h5py.VirtualSource(os.path.relpath(path, where), f"layers/{layer}",
                                                               shape=(n, int(layer_dim)), dtype=dtype)
                start += n
            g.create_virtual_dataset(f"layers/{layer}", rows, fillvalue=np.nan)
        if listing is not None:
            offsets = np.cumsum([0] + sizes)
            rows = np.full(len(listing.ids), -1, np.int64)
            for pos, (item_id, stamp) in enumerate(zip(listing.ids, listing.stamps)):
                hit = state.rows.get(item_id)
                if hit is not None and hit[2] == stamp:
                    rows[pos] = offsets[hit[0]] + hit[1]
            g.create_dataset("rows", data=rows)


def _describe_change(key: str, old: dict, new: dict) -> str:
    if key == "onnx_sha256":
        return f"model file (sha256 {str(old.get(key))[:12]}… -> {str(new.get(key))[:12]}…)"
    if key == "preprocess":
        diffs = [f"{k}: {old[key].get(k)} -> {new[key].get(k)}" for k in sorted(set(old[key]) | set(new[key]))
                 if old[key].get(k) != new[key].get(k)]
        return f"preprocessing ({'; '.join(diffs)})"
    if key == "tokenizer_sha256":
        return "tokenizer"
    if key == "layers":
        return f"intermediate layers ({_names(old.get(key))} -> {_names(new.get(key))})"
    if key.startswith("storage dtype"):
        return key
    return f"{key} ({old.get(key)} -> {new.get(key)})"


def _names(layers) -> str:
    return ", ".join(layers or {}) or "none"
