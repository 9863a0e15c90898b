"""The embedding cache: a directory of immutable HDF5 shards (see :mod:`featx.cache.layout`)."""

from ..validation import check_bool, check_path, check_str
from .lock import WriterLock
from .shards import ShardData, read_shard, write_shard
from .store import CacheStore, Listing, ModelState


def load_features(cache, model: str | None = None, *, strict: bool = False):
    """Cached embeddings in the dataset's order.

    Parameters
    ----------
    cache : path
        A cache directory written by :func:`featx.extract`.
    model : str, optional
        Backbone name; may be omitted when the cache holds a single backbone.
    strict : bool
        Raise instead of warning when items are not extracted yet or changed on disk.

    Returns
    -------
    X : ndarray of shape (n, d), float32
    y : ndarray of str (object) of shape (n,), or None when the dataset is unlabelled
    ids : ndarray of str (object) of shape (n,)
        Items that failed extraction (recorded with ``on_error="skip"``) are left out.

    Examples
    --------
    >>> import featx
    >>> _ = featx.extract("builtin:digits:test", tiny_onnx, "digits.cache")
    >>> X, y, ids = load_features("digits.cache", model="tiny-cnn")
    >>> X.shape, X.dtype, y[:3].tolist(), ids[:2].tolist()
    ((450, 8), dtype('float32'), ['1', '4', '8'], ['digits/0021', 'digits/0024'])
    """
    check_path(cache, "cache", "load_features")
    check_str(model, "model", "load_features", optional=True)
    check_bool(strict, "strict", "load_features")
    return CacheStore(cache).load(model, strict=strict)


__all__ = ["CacheStore", "Listing", "ModelState", "ShardData", "WriterLock", "load_features", "read_shard",
           "write_shard"]
