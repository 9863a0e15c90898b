"""The k nearest rows of every row by cosine similarity: exact for small caches, faiss for large ones.

Rows are L2-normalised, so the inner product is the cosine similarity. Both ways read the cache a
chunk at a time (:meth:`featx.cache.FeatureReader.chunks`) and keep only ``n x k`` results:

- exact (``n <= exact_max``): the normalised rows in float32 (n x d) and blocked matrix products
  of ``block`` query rows at a time, so memory is ``n d + block n`` floats;
- approximate: a faiss ``PCA(d -> dim) + IVF-Flat`` index trained on a sample, filled and searched a
  chunk at a time (``n x dim`` floats); near-duplicate candidates are then re-scored on the full rows.
"""

from __future__ import annotations

import numpy as np

#: Rows up to which the neighbours are exact (1280-d float32: 250 MB at 50,000 rows).
EXACT_MAX = 50_000


def _normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def column_mean(reader, chunk: int = 8192) -> np.ndarray:
    """Mean row of a reader (float64 sums, a chunk at a time).

    Backbone features after a ReLU are all positive, so raw cosines crowd near 1; the rows are
    centred on the training mean before they are normalised.
    """
    total = np.zeros(reader.dim, np.float64)
    for _, X in reader.chunks(chunk):
        total += X.sum(axis=0, dtype=np.float64)
    return (total / max(reader.n_rows, 1)).astype(np.float32)


def read_normalised(reader, mean=None, chunk: int = 8192) -> np.ndarray:
    """All rows of a reader, centred on ``mean`` and L2-normalised, float32 (read a chunk at a time)."""
    out = np.empty((reader.n_rows, reader.dim), np.float32)
    for where, X in reader.chunks(chunk):
        out[where] = _normalise(X if mean is None else X - mean)
    return out


def exact_neighbours(queries: np.ndarray, base: np.ndarray, k: int, *, same: bool, block: int = 2048):
    """Top-``k`` cosine neighbours of normalised ``queries`` in normalised ``base`` (self left out when ``same``).

    Examples
    --------
    >>> X = _normalise(np.array([[1, 0], [0.9, 0.1], [0, 1]]))
    >>> idx, sim = exact_neighbours(X, X, 1, same=True)
    >>> idx.ravel().tolist(), sim.ravel().astype(float).round(3).tolist()
    ([1, 0, 1], [0.994, 0.994, 0.11])
    """
    n = len(queries)
    k = min(k, len(base) - (1 if same else 0))
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for lo in range(0, n, block):
        s = queries[lo:lo + block] @ base.T
        if same:
            s[np.arange(len(s)), np.arange(lo, lo + len(s))] = -np.inf
        idx[lo:lo + block], sim[lo:lo + block] = _top_k(s, k)
    return idx, sim


class ApproximateIndex:
    """faiss ``PCA + IVF-Flat`` over a reader's normalised rows, filled a chunk at a time."""

    def __init__(self, reader, mean, *, dim: int = 64, seed: int = 0, chunk: int = 8192, sample: int = 65_536):
        import faiss

        self.mean = mean
        n = reader.n_rows
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(n, size=min(sample, n), replace=False))
        Xs = _normalise(reader.read(train) - mean)
        self.dim = min(dim, reader.dim)
        self.pca = faiss.PCAMatrix(reader.dim, self.dim)
        self.pca.train(Xs)
        nlist = int(max(16, min(4 * np.sqrt(n), len(Xs) // 39)))
        quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.train(self._project(Xs))
        del Xs
        self.index.nprobe = 8
        self.chunk = chunk
        for _, X in reader.chunks(chunk):
            self.index.add(self._project(_normalise(X - self.mean)))

    def _project(self, Xn: np.ndarray) -> np.ndarray:
        return _normalise(self.pca.apply(np.ascontiguousarray(Xn)))

    def search(self, reader, k: int, *, same: bool):
        """Top-``k`` neighbours of every row of ``reader`` (self left out when ``same``)."""
        n = reader.n_rows
        kk = k + 1 if same else k
        idx = np.empty((n, k), np.int64)
        sim = np.empty((n, k), np.float32)
        for where, X in reader.chunks(self.chunk):
            s, i = self.index.search(self._project(_normalise(X - self.mean)), kk)
            if same:  # drop the row itself (or the last when the row is not among its own neighbours)
                rows = np.arange(where.start, where.stop)[:, None]
                keep = i != rows
                keep[keep.sum(axis=1) > k, -1] = False
                i = i[keep].reshape(len(i), k)
                s = s[keep].reshape(len(s), k)
            idx[where], sim[where] = i, s
        return idx, sim


def neighbours(reader, k: int, mean, *, base=None, exact_max: int = EXACT_MAX, seed: int = 0):
    """Top-``k`` cosine neighbours of every row of ``reader`` among ``base``'s rows (default: its own).

    Returns ``(idx, sim, method)``: positions in ``base`` (n x k; -1 where the index found fewer),
    cosine similarities (approximate ones in the PCA space) and ``"exact"`` or ``"faiss-ivf"``.
    """
    same = base is None
    base = reader if same else base
    if max(reader.n_rows, base.n_rows) <= exact_max:
        B = read_normalised(base, mean)
        Q = B if same else read_normalised(reader, mean)
        idx, sim = exact_neighbours(Q, B, k, same=same)
        return idx, sim, "exact"
    index = ApproximateIndex(base, mean, seed=seed)
    idx, sim = index.search(reader, k, same=same)
    return idx, sim, "faiss-ivf"


def rescore(reader, base, pairs: np.ndarray, mean, block: int = 16_384) -> np.ndarray:
    """Exact cosine similarity of row pairs ``(i in reader, j in base)``, read from the cache."""
    out = np.zeros(len(pairs), np.float32)
    for lo in range(0, len(pairs), block):  # a block of pairs at a time: memory bounded by the block
        part = pairs[lo:lo + block]
        a = _normalise(reader.read(part[:, 0]) - mean)
        b = _normalise(base.read(part[:, 1]) - mean)
        out[lo:lo + block] = np.einsum("ij,ij->i", a, b)
    return out
