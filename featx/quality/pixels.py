"""Copies of an image that its embedding misses: a perceptual hash of the pixels (imagehash's pHash).

A backbone sees a re-encoded or resized copy of a small image as another image: on Fashion-MNIST
(28 px), a JPEG copy (quality 75) resized to 32 px has a median centred cosine of 0.72 to its
original in EfficientNet-Lite0's features, and another item is nearer than the original for one
copy in five. The pixels keep it: the 256-bit pHash (``hash_size=16``: the signs of the low
frequencies of a 64 x 64 grayscale DCT against their median) of such a copy differs from its
original's in at most 22 bits (median 10, 100 copies), and on drawn shapes in at most 34 (median 8),
while 5,000 distinct Fashion-MNIST images hold 12 pairs within 32 bits (of 12.5 million; none within
25). :data:`HASH_BITS` is set between the two; ``benchmarks/audit.py`` measures precision and recall of
planted copies with it. Very smooth or flat images make an unstable pHash (many coefficients near the
median): their copies may differ in more bits and are missed.

::

    perceptual_hashes(refs)        -> (codes n x 32 uint8, valid n bool)   decode_image -> imagehash.phash
    hash_pairs(codes, bits, base)  -> (i, j, distance)                     faiss binary index, k nearest
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("featx")

#: imagehash's ``hash_size``: a hash of HASH_SIZE^2 = 256 bits.
HASH_SIZE = 16
#: At most this many of the 256 bits differ between an image and its copy (calibrated: see the docstring).
HASH_BITS = 32
#: JPEGs decode at a reduced scale no smaller than this side (pHash reads a 64 x 64 thumbnail).
DRAFT_SIDE = 64


def perceptual_hashes(refs, ids=None) -> tuple[np.ndarray, np.ndarray]:
    """The packed pHash of every image ref (a path, bytes, a pixel array, a shard reference).

    Items that cannot be decoded (a missing file, not an image) get ``valid=False`` and an all-zero code.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    >>> codes, valid = perceptual_hashes([a, a[:, ::-1], b"not an image"])
    >>> codes.shape, valid.tolist()
    ((3, 32), [True, True, False])
    """
    from PIL import Image

    from ..engine.decode import decode_image
    from ..errors import InputError
    from ..extras import require

    imagehash = require("imagehash", "audit", "comparing images by their pixels")

    def phash(image):
        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        return np.packbits(imagehash.phash(image, HASH_SIZE).hash.ravel())

    codes = np.zeros((len(refs), HASH_SIZE * HASH_SIZE // 8), np.uint8)
    valid = np.zeros(len(refs), bool)
    for n, ref in enumerate(refs):
        if ref is None:
            continue
        try:
            codes[n] = decode_image(ref, item_id=None if ids is None else str(ids[n]), jpeg_min_side=DRAFT_SIDE,
                                    reduce=phash)
            valid[n] = True
        except InputError as e:
            log.info("audit: no pixel hash for %s (%s)", ref if ids is None else ids[n], e)
    return codes, valid


def hash_pairs(codes: np.ndarray, bits: int = HASH_BITS, *, base: np.ndarray | None = None, k: int = 10,
               block: int = 8192):
    """Pairs of codes at most ``bits`` apart, among each code's ``k`` nearest: ``(i, j, distance)`` arrays.

    Within ``codes`` (``base=None``; each pair once, ``i < j``) or from each row of ``codes`` to the
    rows of ``base``. A faiss binary flat index (exact Hamming distances), searched ``block`` rows at a
    time; keeping ``k`` neighbours a row bounds the pairs by ``n k`` even when thousands of images
    share one hash (blank frames).

    Examples
    --------
    >>> c = np.zeros((3, 32), np.uint8); c[1, 0] = 0b111; c[2] = 255
    >>> [x.tolist() for x in hash_pairs(c, 4)]
    [[0], [1], [3]]
    """
    import faiss

    same = base is None
    base = codes if same else base
    found = [], [], []
    if not len(codes) or not len(base):
        return tuple(np.zeros(0, np.int64) for _ in found)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(np.ascontiguousarray(base))
    kk = min(k + (1 if same else 0), len(base))
    for lo in range(0, len(codes), block):
        dist, idx = index.search(np.ascontiguousarray(codes[lo:lo + block]), kk)
        rows = np.broadcast_to(lo + np.arange(len(idx))[:, None], idx.shape)
        keep = (idx >= 0) & (dist <= bits) & ((idx != rows) if same else True)
        for out, part in zip(found, (rows[keep], idx[keep], dist[keep])):
            out.append(part.astype(np.int64))
    i, j, d = (np.concatenate(part) for part in found)
    if same:  # each pair once, as (smaller, larger)
        i, j = np.minimum(i, j), np.maximum(i, j)
        _, first = np.unique(np.stack([i, j], axis=1), axis=0, return_index=True)
        i, j, d = i[first], j[first], d[first]
    return i, j, d
