"""Where things live inside a cache directory, and the format constants.

::

    CACHE/                         one directory per dataset; several backbones side by side
      featx-cache.json             marker: format version, featx version, creation time
      LOCK                         the writer lock (flock); holds the writer's pid and host
      dataset.h5                   the dataset listing: ids, labels ("" = unlabelled), stamps, in dataset order
      index.h5                     read view for plain h5py (virtual datasets over the shards)
      models/NAME/model.json       the backbone fingerprint: ONNX sha256, preprocessing, dim, dtype
      models/NAME/shards/*.h5      immutable committed shards: ids, stamps, embeddings, failures
      models/NAME/quarantine/      damaged shards moved aside (their items are recomputed)

Every file is written to a temporary name in the same folder, fsynced, and renamed into
place with ``os.replace``; a shard counts as committed only once its final name exists.
No final file is ever open for writing, so a ``kill -9`` leaves at most a temporary file,
which the next writer removes.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..files import TMP_PREFIX  # noqa: F401  (re-exported: temporaries inside a cache)

FORMAT = 1
MARKER = "featx-cache.json"
LOCK = "LOCK"
DATASET = "dataset.h5"
INDEX = "index.h5"
MODELS = "models"
SHARDS = "shards"
QUARANTINE = "quarantine"
MODEL_JSON = "model.json"
SHARD_RE = re.compile(r"^shard-(\d{6,})\.h5$")
#: Target size of one HDF5 chunk of embeddings (rows x dim), for fast sequential reads.
CHUNK_BYTES = 1 << 20


def model_dir(root: Path, name: str) -> Path:
    return root / MODELS / safe_name(name)


def shards_dir(root: Path, name: str) -> Path:
    return model_dir(root, name) / SHARDS


def shard_name(seq: int) -> str:
    return f"shard-{seq:06d}.h5"


def safe_name(name: str) -> str:
    """A backbone name as a folder name (``timm:resnet50`` -> ``timm-resnet50``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
