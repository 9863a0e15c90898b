"""The cache directory: listing, backbone fingerprints, committed shards, read view.

Only :class:`CacheStore` touches the files; :func:`featx.extraction.extract` drives it and
:class:`~featx.cache.reader.FeatureReader` reads it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheAccessError, CacheCorruptError, CacheError, CacheMismatchError
from ..files import write_text_atomically
from ..specs.layers import FINAL
from ..validation import check_path
from ..version import __version__
from . import layout
from .layout import DATASET, INDEX, MARKER, MODEL_JSON, MODELS, QUARANTINE, SHARD_RE, TMP_PREFIX
from .shards import (FAILED_CONTENT, FAILED_RETRY, STR, ShardData, checksum, read_shard, write_h5_atomically,
                     write_shard)

log = logging.getLogger("featx")


@dataclass
class Listing:
    """The dataset a cache was last extracted from, in its order."""

    name: str
    modality: str
    ids: np.ndarray  # object array of str
    labels: np.ndarray | None  # object array of str (None: an unlabelled item), or None when no item has a label
    stamps: np.ndarray  # object array of str ("" = none)


@dataclass
class ModelState:
    """What is committed for one backbone: the newest row or failure per id."""

    rows: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # id -> (shard index, row, stamp)
    failed: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> (stamp, reason, kind)
    shards: list[Path] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)  # embeddings per shard, when kept
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    def is_done(self, item_id: str, stamp: str) -> bool:
        """Embedded with the same stamp, or failed with the same stamp for its content (bad bytes).

        A failure that was not the content's (a file that could not be read, an unexpected error)
        is never done: the next extraction tries the item again.
        """
        if item_id in self.rows:
            return self.rows[item_id][2] == stamp
        if item_id in self.failed:
            failed_stamp, _, kind = self.failed[item_id]
            return failed_stamp == stamp and kind == FAILED_CONTENT
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
        marker = self._read_json(self.root / MARKER, "the cache's marker",
                                 "`featx extract` into this cache rewrites it")
        if not isinstance(marker.get("format"), int):
            raise CacheCorruptError(f"{self.root / MARKER} is damaged (no format version); `featx extract` into this "
                                    "cache rewrites it")
        if marker["format"] > layout.FORMAT:
            raise CacheError(f"cache {self.root} has format {marker['format']}; this featx reads up to "
                             f"{layout.FORMAT}: upgrade featx")

    def create(self) -> None:
        """Make the directory a cache (no-op when it already is one; a damaged marker is rewritten)."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"{self.root} is a file; --cache must be a directory (it will be created)")
        if self.root.is_dir() and not self.exists() and any(self.root.iterdir()):
            raise CacheError(f"{self.root} exists, is not empty and is not a featx cache; choose another --cache")
        with cache_access(self.root, "create"):
            (self.root / MODELS).mkdir(parents=True, exist_ok=True)
            if self.exists():
                try:
                    self.check_readable()
                    return
                except CacheCorruptError as e:  # only the marker is damaged: everything else checks itself
                    log.warning("%s; rewriting it", e)
            marker = {"format": layout.FORMAT, "featx": __version__,
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            write_text_atomically(self.root / MARKER, json.dumps(marker, indent=2), durable=True)

    def _read_json(self, path: Path, what: str, advice: str) -> dict:
        """A JSON object from a small file of the cache, or :class:`CacheCorruptError` saying what to do."""
        with cache_access(self.root, "read"):
            text = path.read_bytes()
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise CacheCorruptError(f"{path} ({what}) is damaged (not JSON: {str(e)[:80]}); {advice}") from None
        if not isinstance(value, dict):
            raise CacheCorruptError(f"{path} ({what}) is damaged (not a JSON object); {advice}")
        return value

    def remove_temporaries(self) -> int:
        """Delete temporary files left by a killed writer (call only while holding the lock)."""
        n = 0
        for path in self.root.rglob(f"{TMP_PREFIX}*"):
            path.unlink(missing_ok=True)
            n += 1
        return n

    # ---------------------------------------------------------------- listing
    def write_listing(self, name: str, modality: str, ids, labels, stamps) -> None:
        ids = np.array(list(ids), dtype=object)
        stamps = np.array([s or "" for s in stamps], dtype=object)
        labels = None if labels is None else stored_labels(labels)  # "" marks an unlabelled item

        def fill(f):
            f.attrs["name"] = name
            f.attrs["modality"] = modality
            f.create_dataset("ids", data=ids, dtype=STR)
            f.create_dataset("stamps", data=stamps, dtype=STR)
            if labels is not None:
                f.create_dataset("labels", data=labels, dtype=STR)
            f.attrs["checksum"] = _listing_checksum(name, modality, ids, labels, stamps)

        with cache_access(self.root, "write to"):
            write_h5_atomically(self.root / DATASET, fill)

    def read_listing(self) -> Listing | None:
        """The listing, checked against its checksum; None before the first extraction.

        Raises
        ------
        CacheCorruptError
            Unreadable, or its ids, labels or stamps were changed after writing (the message names
            the dataset, when readable, and says how to rewrite it).
        """
        path = self.root / DATASET
        if not path.exists():
            return None
        name = None
        try:
            with cache_access(self.root, "read"), h5py.File(path, "r") as f:
                name, modality = str(f.attrs["name"]), str(f.attrs["modality"])
                ids, stamps = f["ids"].asstr()[()].astype(object), f["stamps"].asstr()[()].astype(object)
                labels = f["labels"].asstr()[()].astype(object) if "labels" in f else None
                stored = f.attrs.get("checksum")
            if len(stamps) != len(ids) or (labels is not None and len(labels) != len(ids)):
                raise ValueError(f"{len(ids)} ids, {len(stamps)} stamps, {len(labels or [])} labels")
            if stored is not None and stored != _listing_checksum(name, modality, ids, labels, stamps):
                raise ValueError("checksum mismatch: its ids, labels or stamps were changed after it was written")
        except CacheAccessError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            which = f"`featx extract` of the dataset it lists ({name})" if name else "the `featx extract` that made it"
            raise CacheCorruptError(f"{path} (the dataset listing) is damaged ({e}); run {which} again: it "
                                    "rewrites the listing, and the features already extracted are kept") from None
        if labels is not None:
            labels[labels == ""] = None
        return Listing(name, modality, ids, labels, stamps)

    def listed_name(self) -> str | None:
        """The dataset name in the listing, even when the rest of it is damaged (None when unreadable)."""
        try:
            with h5py.File(self.root / DATASET, "r") as f:
                return str(f.attrs["name"])
        except (OSError, KeyError, ValueError, TypeError):
            return None

    # ---------------------------------------------------------------- models
    def model_names(self) -> list[str]:
        base = self.root / MODELS
        if not base.is_dir():
            return []
        return sorted(self.model_record(d / MODEL_JSON)["name"] for d in base.iterdir() if (d / MODEL_JSON).is_file())

    def read_model(self, name: str) -> dict | None:
        path = layout.model_dir(self.root, name) / MODEL_JSON
        return self.model_record(path) if path.is_file() else None

    def model_record(self, path: Path) -> dict:
        """The record of ``models/NAME/model.json``, checked (:class:`CacheCorruptError` saying what to do)."""
        advice = (f"run the same `featx extract` again (the same --model): it rewrites it when the shards were made "
                  f"by that backbone; or delete {path.parent} to start this backbone over")
        record = self._read_json(path, "the backbone's fingerprint", advice)
        fingerprint = record.get("fingerprint")
        if not (isinstance(record.get("name"), str) and isinstance(record.get("fingerprint_id"), str)
                and isinstance(fingerprint, dict) and isinstance(fingerprint.get("dim"), int)
                and isinstance(record.get("dtype"), str)):
            raise CacheCorruptError(f"{path} (the backbone's fingerprint) is damaged (fields missing); {advice}")
        return record

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
        try:
            existing = self.read_model(name)
        except CacheCorruptError as damaged:  # rewritten only when every shard was made by this backbone
            others = self._shard_fingerprints(name) - {fingerprint_id}
            if others:
                raise CacheMismatchError(
                    f"{damaged}. Its shards were made by another model file or preprocessing (fingerprint "
                    f"{', '.join(sorted(others))}), so it cannot be rewritten from this one: extract with that "
                    f"model, or delete {layout.model_dir(self.root, name)} to start this backbone over") from None
            log.warning("%s; rewriting it from %s (the shards match)", damaged, name)
            existing = None
        if existing is None:
            mdir = layout.model_dir(self.root, name)
            with cache_access(self.root, "write to"):
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

    def _shard_fingerprints(self, name: str) -> set[str]:
        """Fingerprint ids of the readable shards of ``name`` (read from their attributes only)."""
        found = set()
        for path in self.shard_paths(name):
            try:
                with h5py.File(path, "r") as f:
                    found.add(str(f.attrs["fingerprint_id"]))
            except (OSError, KeyError):
                continue  # a damaged shard is quarantined by the scan
        return found

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
                if verify and not all(np.isfinite(a).all() for a in (data.embeddings, *data.layers.values())):
                    raise ValueError("rows that are not finite as stored (recomputed; such items become failures)")
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
            kinds = data.failed_kinds or [FAILED_RETRY] * len(data.failed_ids)  # before kinds: retried
            for item_id, stamp, reason, kind in zip(data.failed_ids, data.failed_stamps, data.failed_reasons, kinds):
                state.failed[item_id] = (stamp, reason, kind)
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
        with cache_access(self.root, "write to"):
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
                    g.create_dataset("labels", data=stored_labels(listing.labels), dtype=STR)
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


@contextmanager
def cache_access(root: Path, doing: str):
    """Turn an OSError about access to the cache (permissions, a read-only or missing folder) into a
    :class:`~featx.errors.CacheAccessError` that names the cache and says what to do."""
    try:
        yield
    except CacheError:
        raise
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        if e.errno in (errno.EACCES, errno.EPERM):
            need = "read" if doing == "read" else "write"
            raise CacheAccessError(
                f"cannot {doing} cache {root}: permission denied{where}. featx needs {need} access to the "
                f"cache directory and its files: fix their permissions, or use another --cache") from None
        if e.errno == errno.EROFS:
            raise CacheAccessError(f"cannot {doing} cache {root}: it is on a read-only file system{where}; "
                                   "use a --cache on a writable disk") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR) and doing == "create":
            raise CacheAccessError(
                f"cannot create cache {root}: a folder above it does not exist or is not a folder{where}; "
                "give a --cache whose parent folder exists") from None
        raise


def _listing_checksum(name: str, modality: str, ids, labels, stamps) -> str:
    return checksum([[name, modality], list(ids), list(stamps), [] if labels is None else list(labels)])


def stored_labels(labels) -> np.ndarray:
    """Labels as the listing stores them: str, ``""`` for an unlabelled item (read back as None)."""
    return np.array(["" if v is None else str(v) for v in labels], dtype=object)


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
