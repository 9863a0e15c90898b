"""Every error featx raises on purpose, in one place.

Each class also derives from the builtin that fits, so callers can catch
``FeatxError`` or the builtin (``ValueError``, ``FileNotFoundError``...).
Messages name the item, say what was expected and what was found, and what to do.
"""


class FeatxError(Exception):
    """Base class of all featx errors."""


class ParameterError(FeatxError, ValueError):
    """A function or estimator parameter has an invalid value; the message names both."""


class UsageError(ParameterError):
    """The command line is wrong (a flag's value, or flags that do not go together); ``featx`` exits 2."""


class InstallError(FeatxError, FileNotFoundError):
    """A file that ships with featx is missing: the installation is incomplete."""


class SpecError(FeatxError, ValueError):
    """A backbone spec or name is invalid or unknown."""


class MissingDependencyError(FeatxError, ImportError):
    """An optional dependency (torch, a model package...) is not installed."""


class ExportError(FeatxError, RuntimeError):
    """Export to ONNX failed, or its parity check with PyTorch failed."""


class InputError(FeatxError, ValueError):
    """An input item (image, text, array) cannot be used; the message names it."""


class UnreadableItemError(InputError):
    """An item's file could not be read (missing, permission denied, an I/O error): a property of the
    machine at that moment, not of the item's bytes, so a later extraction tries the item again."""


class ModelInputError(FeatxError, ValueError):
    """A batch does not match what the ONNX model expects (dtype, rank, shape, names)."""


class NonFiniteOutputError(FeatxError, ValueError):
    """The model produced NaN or infinite values for an item."""


class DataSourceError(FeatxError, ValueError):
    """A dataset (folder, manifest, builtin) cannot be read."""


class CacheError(FeatxError, RuntimeError):
    """The embedding cache cannot be used as asked."""


class CacheAccessError(CacheError, OSError):
    """The cache directory or a file in it cannot be read or written (permissions, a read-only disk,
    a parent folder that does not exist)."""


class CacheLockedError(CacheError):
    """Another process holds the cache's writer lock."""


class CacheMismatchError(CacheError):
    """The cache holds features of a different model file or preprocessing."""


class CacheDatasetError(CacheError):
    """The cache was made for another dataset (one cache holds one dataset)."""


class CacheCorruptError(CacheError):
    """A committed file of the cache is damaged."""


class WorkerError(FeatxError, RuntimeError):
    """A worker of a parallel extraction died (killed, out of memory) or cannot do the work (a model file or an
    item it cannot read); committed work is kept."""


class ClusterError(FeatxError, ConnectionError):
    """A Dask cluster cannot be reached or used as asked (no scheduler at the address, no workers, no GPU workers)."""


class ItemFailedError(FeatxError, RuntimeError):
    """An item failed during extraction with ``on_error='raise'``."""

    def __init__(self, item_id, reason):
        self.item_id = item_id
        self.reason = reason
        super().__init__(
            f"item {item_id!r} failed: {reason}. Committed work is kept; fix or remove "
            "the item, or re-run with --on-error skip to record it and go on."
        )


class UntrustedTypeError(FeatxError, ValueError):
    """A saved head contains types outside featx's trusted list."""


class HeadError(FeatxError, ValueError):
    """A saved head cannot be read, or does not fit the features or backbone it is used with."""


class DeployError(FeatxError, RuntimeError):
    """A head cannot be fused with its backbone into one ONNX file, or the fused file failed its parity gate."""
