"""``EmbeddingTransformer``: featx as a scikit-learn transformer, from raw inputs to embeddings.

Drop a frozen backbone into existing scikit-learn code::

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    clf = make_pipeline(featx.EmbeddingTransformer("efficientnet-lite0"), LogisticRegression())
    clf.fit(train_paths, train_labels).predict(test_paths)

It follows the estimator contract: ``__init__`` stores its arguments; ``fit`` validates them and
loads the backbone (its ONNX Runtime session is created on first use and never pickled); it
clones, pickles, grid-searches (its own parameters included) and supports
``set_output(transform="pandas")``.

Examples
--------
>>> import numpy as np
>>> from featx.estimators.transformer import EmbeddingTransformer
>>> et = EmbeddingTransformer("efficientnet-lite0", batch_size=8)  # exported on first use  # doctest: +SKIP
>>> et = EmbeddingTransformer(tiny_onnx, batch_size=8)             # or an exported .onnx file
>>> et.fit_transform(np.zeros((2, 28, 28), np.uint8)).shape
(2, 8)
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..factory import load_backbone
from ..cache import CacheStore
from ..engine.defaults import ON_ERROR_ALIGNED
from ..engine.embedding import embed
from ..errors import CacheDatasetError, CacheError, CacheLockedError, InputError, ItemFailedError
from ..extraction.extract import extract
from ..sources import Item, file_stamp, make_dataset
from ..specs.layers import FINAL, check_layer
from ..validation import check_bool, check_choice, check_int, check_path, check_str, invalid

__all__ = ["EmbeddingTransformer"]

#: The dataset name the transformer records in its cache.
CACHE_DATASET = "featx:EmbeddingTransformer"
#: How long ``transform`` waits for another process's writer lock on the cache.
LOCK_WAIT_S = 120.0


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\x00")
    return h.hexdigest()[:32]


class EmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Embed raw inputs (images or texts) with a frozen ONNX backbone.

    Parameters
    ----------
    model : str or path, default="efficientnet-lite0"
        A registered backbone name (exported on first use), ``timm:NAME``, ``hf:ID``, or the
        path of an exported ``.onnx`` file with its spec JSON beside it.
    cache : path, optional
        A cache directory of this transformer's own: embeddings of items seen before are read
        from it instead of recomputed (items are keyed by file path and stamp, or by a hash of
        the text / pixels). Don't point it at a cache made by ``featx extract`` for a dataset.
    batch_size : int, optional
        Items per ONNX Runtime call (default: 16 on the CPU, 128 on a GPU). Features do not
        depend on it beyond ~1e-6.
    providers : str or list of str, optional
        ONNX Runtime providers (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); default: CUDA when usable, else CPU.
    threads : int, optional
        ONNX Runtime intra-op threads (default: the cores available).
    on_error : {"raise", "nan"}, default="raise"
        A bad item (unreadable file, empty text, NaN output) raises an error naming its position,
        or gives a row of NaN (with a warning) so that the rows stay aligned with the input.
    jpeg_draft : bool, default=False
        Image backbones: decode JPEGs at a reduced scale (faster on photos, slightly different
        features; see :class:`featx.specs.spec.ImagePreprocess`).
    layer : str, optional
        An intermediate layer the backbone's export carries (``featx export NAME --layers ...``,
        see :mod:`featx.specs.layers`): its pooled features instead of the final ones (None or ``"final"``).
        A parameter like any other: ``GridSearchCV`` can choose it.
    decode_workers : int, optional
        Threads decoding and preprocessing items (default: every core on a GPU; on the CPU the
        cores ONNX Runtime leaves free, at least 1). Features do not depend on it.

    Attributes
    ----------
    backbone_ : featx.Backbone
        The loaded backbone (its ONNX Runtime session is created lazily and dropped on pickling).
    layer_ : str
        The layer the rows come from (``"final"`` unless ``layer`` names another).
    n_features_out_ : int
        Embedding dimension (of ``layer``).
    n_features_in_ : int
        1, only when fitted on a one-column DataFrame (with ``feature_names_in_``).

    Notes
    -----
    Inputs to ``fit``/``transform``: a list (or tuple, pandas Series, one-column DataFrame,
    1-D object/str array) of items -- file paths, encoded bytes, PIL images or uint8 arrays for
    image backbones; strings for text backbones -- or a uint8 image batch ``(n, H, W[, C])``,
    or a model-ready float32 batch ``(n, 3, S, S)`` (never cached).
    The output is float32 ``(n, n_features_out_)``, one row per input item, in order.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> digits = load_digits()
    >>> images = (digits.images * 16).astype(np.uint8)  # 8x8 grey images, 0..255
    >>> clf = make_pipeline(EmbeddingTransformer(tiny_onnx), StandardScaler(), LogisticRegression(max_iter=1000))
    >>> clf.fit(images[:1000], digits.target[:1000]).predict(images[1000:1003]).shape
    (3,)
    >>> clf.score(images[1000:], digits.target[1000:]) > 0.3  # a random 8-d CNN: far above chance (0.1)
    True
    """

    def __init__(self, model="efficientnet-lite0", cache=None, batch_size=None, providers=None, threads=None,
                 on_error="raise", jpeg_draft=False, layer=None, decode_workers=None):
        self.model = model
        self.cache = cache
        self.batch_size = batch_size
        self.providers = providers
        self.threads = threads
        self.on_error = on_error
        self.jpeg_draft = jpeg_draft
        self.layer = layer
        self.decode_workers = decode_workers

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        owner = type(self).__name__
        if not (isinstance(self.model, os.PathLike) or (isinstance(self.model, str) and self.model.strip())):
            raise invalid("model", owner, "a backbone name or the path of an exported .onnx file", self.model)
        check_path(self.cache, "cache", owner, optional=True)
        check_int(self.batch_size, "batch_size", owner, low=1, optional=True)
        check_int(self.decode_workers, "decode_workers", owner, low=1, optional=True)
        providers = self.providers
        if not (providers is None or isinstance(providers, str)
                or (isinstance(providers, (list, tuple)) and providers and all(isinstance(p, str) for p in providers))):
            raise invalid("providers", owner, "None, a str such as 'cpu' or 'cuda,cpu', or a list of str", providers)
        check_int(self.threads, "threads", owner, low=1, optional=True)
        check_choice(self.on_error, "on_error", owner, ON_ERROR_ALIGNED)
        check_bool(self.jpeg_draft, "jpeg_draft", owner)
        check_str(self.layer, "layer", owner, optional=True)

    # ------------------------------------------------------------------ estimator API
    def fit(self, X=None, y=None):
        """Validate the parameters and load the backbone (exporting it on first use).

        Parameters
        ----------
        X : sequence of items, optional
            Only checked for its form; nothing is embedded.
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        self.backbone_ = load_backbone(self.model, providers=self.providers, threads=self.threads,
                                       jpeg_draft=bool(self.jpeg_draft))
        self.layer_ = check_layer(self.layer, self.backbone_.layers, f"backbone {self.backbone_.name!r}")
        self.n_features_out_ = int(self.backbone_.dim if self.layer_ == FINAL else self.backbone_.layers[self.layer_])
        for attr in ("n_features_in_", "feature_names_in_"):
            self.__dict__.pop(attr, None)
        if X is not None:
            self._to_items(X)
            columns = getattr(X, "columns", None)
            if columns is not None:
                self.n_features_in_ = 1
                self.feature_names_in_ = np.asarray([str(c) for c in columns], dtype=object)
        return self

    def transform(self, X):
        """Embed the items of ``X``.

        Parameters
        ----------
        X : sequence of items or array
            See the class notes.

        Returns
        -------
        ndarray of shape (n, n_features_out_), float32

        Raises
        ------
        InputError, ItemFailedError
            A bad input (its position is named), with ``on_error="raise"``.
        """
        check_is_fitted(self, "backbone_")
        self._validate_params()
        items = self._to_items(X)
        columns = getattr(X, "columns", None)
        expected = getattr(self, "feature_names_in_", None)
        if columns is not None and expected is not None and [str(c) for c in columns] != list(expected):
            raise InputError(f"X has column {list(columns)} but {type(self).__name__} was fitted on {list(expected)}")
        dim = self.n_features_out_
        if isinstance(items, np.ndarray):  # a model-ready float batch
            return self.backbone_.embed(items, batch_size=self._batch_size(), layer=self.layer_)
        if not items:
            return np.empty((0, dim), np.float32)
        if self.cache is not None:
            return self._transform_cached(items)
        return self._transform_direct(items)

    def get_feature_names_out(self, input_features=None):
        """Output feature names: ``["<model>_0", "<model>_1", ...]``.

        Returns
        -------
        ndarray of str (object)
        """
        check_is_fitted(self, "backbone_")
        prefix = self.backbone_.spec.file_stem + ("" if self.layer_ == FINAL else f"_{self.layer_}")
        return np.asarray([f"{prefix}_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # lists of paths / texts / images, not a numeric matrix
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True  # texts, and paths of images
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False  # same input, same batch size -> same output (CPU)
        tags.requires_fit = True
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []  # always float32
        return tags

    # ------------------------------------------------------------------ inputs
    def _to_items(self, X):
        """X -> a list of items, or a float32 NCHW batch (returned as is)."""
        name = type(self).__name__
        if isinstance(X, (str, bytes, os.PathLike)):
            raise InputError(f"{name} takes a sequence of items, got a single {type(X).__name__}; "
                             "wrap it in a list: [item]")
        if type(X).__module__.startswith("scipy.sparse"):  # refused by fit as by transform
            raise InputError(f"{name} cannot embed a sparse matrix: give image paths, uint8 images, texts, or a "
                             "dense float32 (n, 3, S, S) model-ready batch")
        if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
            if X.shape[1] != 1:
                raise InputError(f"{name} takes one column of items; got a DataFrame with {X.shape[1]} columns "
                                 f"{list(X.columns)[:5]}: select one, e.g. df['path']")
            return X.iloc[:, 0].tolist()
        if hasattr(X, "iloc") and hasattr(X, "tolist"):  # pandas Series
            return X.tolist()
        if isinstance(X, np.ndarray):
            return self._array_items(X)
        if hasattr(X, "__iter__"):
            return list(X)
        raise InputError(f"{name} takes a list of items (paths, images, texts) or an image array; "
                         f"got {type(X).__name__}")

    def _array_items(self, X: np.ndarray):
        name = type(self).__name__
        if X.dtype.kind in "OUS":
            if X.ndim == 1:
                return X.tolist()
            if X.ndim == 2 and X.shape[1] == 1:
                return X[:, 0].tolist()
            raise InputError(f"{name} takes a 1-D array of items (or one column); got shape {X.shape}")
        if X.dtype == np.uint8 or X.dtype == np.uint16:
            if X.ndim in (3, 4):
                return list(X)
            raise InputError(f"{name}: a {X.dtype} image array must be a batch (n, H, W) or (n, H, W, C); "
                             f"got shape {X.shape} (wrap a single image in a list)")
        if X.dtype.kind == "f" and X.ndim == 4:
            return X  # model-ready batch: the backbone checks dtype and shape
        raise InputError(f"{name} cannot embed a {X.dtype} array of shape {X.shape}: give image paths, uint8 "
                         "images, texts, or a float32 (n, 3, S, S) model-ready batch")

    def _batch_size(self) -> int:
        return int(self.batch_size or self.backbone_.default_batch_size)

    # ------------------------------------------------------------------ without a cache
    def _transform_direct(self, items: list) -> np.ndarray:
        result = embed(self.backbone_, items, batch_size=self._batch_size(),
                       on_error="raise" if self.on_error == "raise" else "skip",
                       workers=self.decode_workers).select(self.layer_)
        self._warn_failed([(f.id, f.reason) for f in result.failures])
        return result.dense(np.nan)

    def _warn_failed(self, failed) -> None:
        if failed:
            shown = "; ".join(f"{n}: {r}" for n, r in failed[:3])
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            warnings.warn(f"{type(self).__name__}: {len(failed)} item(s) failed and got NaN rows: {shown}{more}",
                          UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ with a cache
    def _item_key(self, item) -> tuple[str, str]:
        """A stable id (and file stamp) for an item, so that the cache recognises it next time."""
        if self.backbone_.modality == "text":
            if isinstance(item, str):
                return "text:" + _sha(item.encode("utf-8", "surrogatepass")), ""
            return "value:" + _sha(type(item).__name__.encode(), repr(item).encode()), ""
        if isinstance(item, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(item))
            return "path:" + path, file_stamp(path) or ""
        if isinstance(item, (bytes, bytearray, memoryview)):
            return "bytes:" + _sha(bytes(item)), ""
        if isinstance(item, np.ndarray):
            arr = np.ascontiguousarray(item)
            return "array:" + _sha(str(arr.dtype).encode(), str(arr.shape).encode(), arr.tobytes()), ""
        try:
            from PIL import Image

            if isinstance(item, Image.Image):
                orientation = item.getexif().get(0x0112, 1)
                return "pil:" + _sha(item.mode.encode(), str(item.size).encode(), str(orientation).encode(),
                                     item.tobytes()), ""
        except ImportError:  # pragma: no cover - Pillow is a dependency
            pass
        return "value:" + _sha(type(item).__name__.encode(), repr(item).encode()), ""

    def _transform_cached(self, items: list) -> np.ndarray:
        bb = self.backbone_
        keys = [self._item_key(item) for item in items]
        unique: dict[str, Item] = {}
        for item, (key, stamp) in zip(items, keys):
            if key not in unique:
                unique[key] = Item(id=key, ref=item, label=None, stamp=stamp or None)
        dataset = make_dataset(CACHE_DATASET, bb.modality, list(unique.values()))
        on_error = "raise" if self.on_error == "raise" else "skip"
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                extract(dataset, bb, self.cache, batch_size=self._batch_size(), on_error=on_error,
                        progress=False, decode_workers=self.decode_workers)
                break
            except CacheLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            except ItemFailedError as e:
                position = next((i for i, (k, _) in enumerate(keys) if k == e.item_id), None)
                raise ItemFailedError(f"#{position}" if position is not None else e.item_id, e.reason) from None
            except CacheDatasetError as e:
                raise CacheDatasetError(f"{e}. EmbeddingTransformer(cache=...) needs a cache directory of its own, "
                                        "not one made by `featx extract`") from None
        # Read by id from the committed shards (not the listing, which a concurrent transform may rewrite).
        state = CacheStore(self.cache).scan(bb.name, keep_embeddings=True, layer=self.layer_)
        out = np.empty((len(items), self.n_features_out_), np.float32)
        failed = []
        for i, (key, stamp) in enumerate(keys):
            hit = state.rows.get(key)
            if hit is not None and hit[2] == stamp:
                out[i] = state.arrays[hit[0]][hit[1]]
            elif key in state.failed:
                out[i] = np.nan
                failed.append((f"#{i}", state.failed[key][1]))
            else:
                raise CacheError(f"cache {self.cache} lacks the embedding of item #{i} after extraction "
                                 "(damaged shard, or a concurrent writer removed it?); run `featx verify "
                                 f"{self.cache}` and try again")
        self._warn_failed(failed)
        return out
