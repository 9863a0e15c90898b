"""The embedding cache: a directory of immutable HDF5 shards (see :mod:`featx.cache.layout`)."""

from .lock import WriterLock
from .reader import DEFAULT_CHUNK, FeatureReader, iter_features, load_features
from .shards import FAILED_CONTENT, FAILED_RETRY, ShardData, read_shard, write_shard
from .store import CacheStore, Listing, ModelState

__all__ = ["CacheStore", "DEFAULT_CHUNK", "FAILED_CONTENT", "FAILED_RETRY", "FeatureReader", "Listing", "ModelState",
           "ShardData", "WriterLock",
           "iter_features", "load_features", "read_shard", "write_shard"]
