"""``featx.audit``: label issues, near-duplicates, train/test leaks and outliers of a cache."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter

import numpy as np

from ..errors import CacheError, ParameterError
from ..validation import check_int
from .findings import ISSUES, AuditResult, Finding
from .labels import LABEL_ROWS, head_probabilities, knn_probabilities, rank_label_issues
from .neighbours import EXACT_MAX, column_mean, neighbours, rescore
from .pixels import HASH_BITS, hash_pairs, perceptual_hashes

log = logging.getLogger("featx")

#: Default cosine similarity (of rows centred on the training mean) from which two rows are near-duplicates:
#: calibrated on planted re-encoded/resized JPEG copies and edited texts (benchmarks/audit.py).
THRESHOLD = 0.9
#: Share of the rows flagged as outliers (largest mean distance to their k nearest rows).
OUTLIER_FRACTION = 0.01
#: Rows of an image cache up to which the audit also hashes the pixels by default (it decodes every image).
PIXEL_ROWS = 50_000


def audit(cache, test=None, *, model: str | None = None, head: str = "logreg", params=None, grid=None, cv: int = 5,
          k: int = 10, threshold: float = THRESHOLD, outlier_fraction: float = OUTLIER_FRACTION,
          pixels: bool | None = None, pixel_bits: int = HASH_BITS, exact_max: int = EXACT_MAX,
          label_rows: int = LABEL_ROWS, seed: int = 0, n_jobs=1) -> AuditResult:
    """Audit a labelled cache (and a test cache) from its embeddings.

    Parameters
    ----------
    cache : path
        The training cache (``featx extract``).
    test : path, optional
        A test cache of the same backbone: its items that nearly copy a training item are leaks.
    model : str, optional
        Backbone name, optional when the cache holds one.
    head : {"logreg", "svm", "knn"}
        The head whose out-of-fold probabilities rank the label issues.
    params : dict, optional
        The head's parameters (featx vocabulary); default: chosen by :func:`~featx.heads.select_head`.
    grid : dict or list of dict, optional
        The grid ``select_head`` searches (default: the head's own).
    cv : int
        Stratified, shuffled, seeded folds (``seed``), as ``select_head`` runs them.
    k : int
        Neighbours kept per row (the report's neighbours, the outlier score, the large-cache vote).
    threshold : float
        Cosine similarity of centred rows at or above which two items are near-duplicates or a leak.
    outlier_fraction : float
        Share of rows flagged as outliers.
    pixels : bool, optional
        Also compare the images' pixels (a perceptual hash, :mod:`featx.quality.pixels`): finds the
        resized or re-encoded copies of small images that their embeddings miss. Default (None): for
        image caches of up to :data:`PIXEL_ROWS` rows whose files can be reopened (it decodes every
        image again); True: at any size; False: never.
    pixel_bits : int
        Most of the 256 pHash bits that may differ between an image and its copy.
    exact_max : int
        Rows up to which neighbours are exact; above, a faiss PCA + IVF index.
    label_rows : int
        Rows up to which label issues come from the head's CV; above, from the leave-one-out kNN vote.
    seed : int
    n_jobs : int or None

    Returns
    -------
    AuditResult

    Examples
    --------
    >>> import featx
    >>> _ = featx.extract("builtin:digits:test", tiny_onnx, "digits.cache")
    >>> result = audit("digits.cache", params={"C": 1.0}, k=5)
    >>> result.n_train, sorted(result.counts()) == sorted(ISSUES), result.settings["neighbours"]
    (450, True, 'exact')
    """
    from ..cache import CacheStore, FeatureReader

    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ParameterError(f"The 'threshold' parameter of audit must be a float in (0, 1]. Got {threshold!r} instead.")
    if not isinstance(outlier_fraction, (int, float)) or not 0 <= outlier_fraction < 1:
        raise ParameterError("The 'outlier_fraction' parameter of audit must be a float in [0, 1). "
                             f"Got {outlier_fraction!r} instead.")
    check_int(k, "k", "audit", low=1)
    check_int(pixel_bits, "pixel_bits", "audit", low=0, high=255)
    if pixels not in (None, True, False):
        raise ParameterError(f"The 'pixels' parameter of audit must be True, False or None. Got {pixels!r} instead.")
    t0 = time.perf_counter()
    reader = FeatureReader(cache, model)
    if reader.n_rows < 3:
        raise CacheError(f"cache {cache} holds {reader.n_rows} rows; an audit needs at least 3")
    testr = None
    if test is not None:
        testr = FeatureReader(test, reader.model)
        if testr.dim != reader.dim:
            raise CacheError(f"test cache {test} holds {testr.dim}-d {reader.model} rows, the training cache {reader.dim}-d")
    ids, labels = reader.ids, reader.labels
    mean = column_mean(reader)
    idx, sim, method = neighbours(reader, k, mean, exact_max=exact_max, seed=seed)
    findings: list[Finding] = []
    settings = {"model": reader.model, "k": int(idx.shape[1]), "neighbours": method, "outlier_fraction": outlier_fraction}

    def names(row):
        return [str(ids[j]) for j in row if j >= 0]

    # exact byte copies, by the content hash of each item (file bytes, pixels or text)
    listing = CacheStore(cache).read_listing()  # read once: the contents, the modality, the report's name
    refs = listing_refs(listing, ids, cache)
    test_refs = item_refs(test, testr.ids) if testr is not None else None
    hashes = content_hashes(refs)
    test_hashes = content_hashes(test_refs)
    byte_pairs = set()
    if hashes is not None:
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h in first:
                byte_pairs.add((first[h], i))
                findings.append(Finding(str(ids[i]), "exact_duplicate", 1.0, "train", _label(labels, i), None,
                                        [str(ids[first[h]])], "bytes"))
            else:
                first[h] = i
    # copies by their pixels (image caches): {(i, j): bits apart} within training, {test row: (j, bits)} for leaks
    pixel_pairs, pixel_leaks = {}, {}
    if refs is not None and listing.modality == "image" and (pixels or (pixels is None and len(ids) <= PIXEL_ROWS)):
        codes = perceptual_hashes(refs, ids)
        pixel_pairs = _pixel_pairs(codes, pixel_bits)
        if test_refs is not None:
            pixel_leaks = _pixel_leaks(perceptual_hashes(test_refs, testr.ids), codes, pixel_bits)
        settings["pixels"] = f"pHash, at most {pixel_bits} of 256 bits apart"
    # near-duplicates within the training cache
    rows, cols = np.nonzero((idx >= 0) & (sim >= threshold - (0.05 if method != "exact" else 0)))
    a, b = rows, idx[rows, cols]
    keys = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1).reshape(-1, 2)
    keys, first = np.unique(keys, axis=0, return_index=True)
    scores = sim[rows, cols][first]
    if method != "exact" and len(keys):  # candidates from the reduced index, kept on their exact cosine
        scores = rescore(reader, reader, keys, mean)
    kept = np.flatnonzero(scores >= threshold)
    for n in kept[np.argsort(-scores[kept], kind="stable")]:
        i, j = int(keys[n, 0]), int(keys[n, 1])
        if (i, j) not in byte_pairs:
            signal = "embedding+pixels" if pixel_pairs.pop((i, j), None) is not None else "embedding"
            findings.append(Finding(str(ids[j]), "near_duplicate", float(scores[n]), "train", _label(labels, j), None,
                                    [str(ids[i])], signal))
    for (i, j), bits in sorted(pixel_pairs.items(), key=lambda kv: kv[1]):  # the copies only the pixels found
        if (i, j) not in byte_pairs:
            findings.append(Finding(str(ids[j]), "near_duplicate", 1 - bits / 256, "train", _label(labels, j), None,
                                    [str(ids[i])], "pixels"))
    # leaks: test items whose nearest training item is a copy
    if testr is not None:
        tidx, tsim, _ = neighbours(testr, k, mean, base=reader, exact_max=exact_max, seed=seed)
        if method != "exact" and len(testr.ids):
            keys = np.stack([np.arange(len(tidx)), np.clip(tidx[:, 0], 0, None)], axis=1)
            tsim[:, 0] = rescore(testr, reader, keys, mean)
        by_hash = {} if hashes is None or test_hashes is None else {h: i for i, h in enumerate(hashes)}
        for t, tid in enumerate(testr.ids):
            copy = by_hash.get(test_hashes[t]) if by_hash else None
            if copy is not None:
                findings.append(Finding(str(tid), "leak", 1.0, "test", _label(testr.labels, t), _label(labels, copy),
                                        [str(ids[copy])], "bytes"))
            elif tsim[t, 0] >= threshold:
                near = [j for j, s in zip(tidx[t], tsim[t]) if j >= 0 and s >= threshold] or [tidx[t, 0]]
                signal = "embedding"
                if t in pixel_leaks:  # the pixels' copy first: the stronger evidence of which item was copied
                    signal, copy = "embedding+pixels", pixel_leaks[t][0]
                    near = [copy] + [j for j in near if j != copy]
                findings.append(Finding(str(tid), "leak", float(tsim[t, 0]), "test", _label(testr.labels, t),
                                        _label(labels, near[0]), names(near), signal))
            else:
                continue
            pixel_leaks.pop(t, None)
        for t, (j, bits) in sorted(pixel_leaks.items(), key=lambda kv: kv[1][1]):  # the leaks only the pixels found
            findings.append(Finding(str(testr.ids[t]), "leak", 1 - bits / 256, "test", _label(testr.labels, t),
                                    _label(labels, j), [str(ids[j])], "pixels"))
    # outliers: far from everything (mean distance to the k nearest rows)
    distance = 1.0 - np.where(idx >= 0, sim, 0).mean(axis=1)
    n_out = int(round(outlier_fraction * len(ids)))
    for i in np.argsort(-distance, kind="stable")[:n_out]:
        findings.append(Finding(str(ids[i]), "outlier", float(distance[i]), "train", _label(labels, i), None,
                                names(idx[i])))
    # label issues
    confused = []
    if labels is not None:
        findings_l, settings_l, confused = _label_findings(reader, labels, idx, sim, head=head, params=params,
                                                           grid=grid, cv=cv, seed=seed, n_jobs=n_jobs,
                                                           label_rows=label_rows, names=names)
        findings += findings_l
        settings.update(settings_l)
    order = {issue: n for n, issue in enumerate(ISSUES)}
    findings.sort(key=lambda f: (order[f.issue], -f.score))
    settings["seconds"] = round(time.perf_counter() - t0, 3)
    settings["train"] = listing.name if listing else str(cache)
    shown = {f.id for f in findings if f.split == "train"} | {n for f in findings for n in f.neighbours}
    return AuditResult(findings, int(reader.n_rows), 0 if testr is None else int(testr.n_rows), float(threshold),
                       _per_class(findings, labels, ids), confused, settings, _refs_of(ids, refs, shown),
                       _refs_of(testr.ids if testr is not None else [], test_refs,
                                {f.id for f in findings if f.split == "test"}))


def _refs_of(ids, refs, wanted: set) -> dict:
    """``{id: ref}`` of the ``wanted`` ids (what the report shows), or {} without refs."""
    return {} if refs is None else {str(i): r for i, r in zip(ids, refs) if str(i) in wanted}


def _pixel_pairs(codes, bits: int) -> dict:
    """``{(i, j): bits apart}`` (i < j) of the training images whose pHashes are at most ``bits`` apart."""
    valid = np.flatnonzero(codes[1])
    a, b, d = hash_pairs(codes[0][valid], bits)
    return {(i, j): dist for i, j, dist in zip(valid[a].tolist(), valid[b].tolist(), d.tolist())}


def _pixel_leaks(test_codes, codes, bits: int) -> dict:
    """``{test row: (nearest training row, bits apart)}`` of the test images a training image nearly copies."""
    rows, valid = np.flatnonzero(test_codes[1]), np.flatnonzero(codes[1])
    a, b, d = hash_pairs(test_codes[0][rows], bits, base=codes[0][valid])
    nearest: dict[int, tuple[int, int]] = {}
    for t, j, dist in zip(rows[a].tolist(), valid[b].tolist(), d.tolist()):
        if t not in nearest or dist < nearest[t][1]:
            nearest[t] = (j, dist)
    return nearest


def _label(labels, i):
    return None if labels is None or labels[i] is None else str(labels[i])


def _label_findings(reader, labels, idx, sim, *, head, params, grid, cv, seed, n_jobs, label_rows, names):
    from ..sources.items import labelled_mask

    rows = np.flatnonzero(labelled_mask(labels))
    classes, codes = np.unique(labels[rows].astype(str), return_inverse=True)
    if len(classes) < 2:
        return [], {"labels": "fewer than 2 classes: no label issues"}, []
    settings = {"head": head}
    if len(rows) <= label_rows and np.bincount(codes).min() >= 2:
        X = reader.read(rows)
        probs, used, n_splits = head_probabilities(X, codes, head, cv=cv, seed=seed, n_jobs=n_jobs, params=params,
                                                   grid=grid)
        del X
        settings.update(probabilities=f"{head} out-of-fold, {n_splits} folds", head_params=used)
    else:
        code_of = np.full(len(labels), -1)
        code_of[rows] = codes
        nidx = np.where(idx >= 0, code_of[np.clip(idx, 0, None)], -1)
        nidx = np.where(nidx >= 0, idx, -1)  # neighbours without a label do not vote
        vote_idx = np.where(nidx[rows] >= 0, np.searchsorted(rows, np.clip(nidx[rows], 0, None)), -1)
        probs = knn_probabilities(vote_idx, sim[rows], codes, len(classes))
        settings.update(probabilities=f"leave-one-out vote of the {idx.shape[1]} nearest rows")
    issues, quality = rank_label_issues(codes, probs, n_jobs=n_jobs)
    suggested = probs.argmax(axis=1)
    out = [Finding(str(reader.ids[rows[p]]), "label", float(1 - quality[p]), "train", str(classes[codes[p]]),
                   str(classes[suggested[p]]), names(idx[rows[p]])) for p in issues]
    pairs = Counter((f.given, f.suggested) for f in out)
    confused = [{"given": g, "suggested": s, "count": c} for (g, s), c in pairs.most_common()]
    return out, settings, confused


def _per_class(findings, labels, ids) -> dict:
    if labels is None:
        return {}
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    out: dict = {}
    for f in findings:
        if f.split == "train":
            key = str(label_of.get(f.id))
            out.setdefault(key, dict.fromkeys(ISSUES, 0))[f.issue] += 1
    return dict(sorted(out.items()))


def content_hashes(refs):
    """sha1 of each item's content (file bytes, pixels, text), or None without refs (see :func:`item_refs`)."""
    if refs is None:
        return None
    out = []
    for i, ref in enumerate(refs):
        if ref is None:
            out.append(f"missing:{i}")
        elif isinstance(ref, np.ndarray):
            out.append(hashlib.sha1(ref.tobytes()).hexdigest())
        elif isinstance(ref, str) and ref.startswith("/"):
            try:
                with open(ref, "rb") as f:
                    out.append(hashlib.file_digest(f, "sha1").hexdigest())
            except OSError:
                out.append(f"unreadable:{i}")
        else:
            out.append(hashlib.sha1(str(ref).encode("utf-8", "surrogatepass")).hexdigest())
    return out


def item_refs(cache, ids):
    """Each id's ref (a file path, a pixel array or the text), from the dataset the cache's listing names;
    None when it cannot be reopened (a synthetic cache, a moved folder)."""
    from ..cache import CacheStore

    return listing_refs(CacheStore(cache).read_listing(), ids, cache)


def listing_refs(listing, ids, cache):
    """:func:`item_refs` from a listing already read (``cache`` names it in the log)."""
    from ..errors import FeatxError
    from ..sources import open_dataset

    if listing is None:
        return None
    source = listing.name  # "builtin:NAME[:split]" opens as is; "folder:/path", "txt:/path"... by their path
    kind, _, rest = source.partition(":")
    if kind != "builtin" and rest.startswith("/"):
        source = rest
    try:
        dataset = open_dataset(source)
    except (FeatxError, OSError, ValueError) as e:
        log.info("audit: no item contents for %s (%s)", cache, e)
        return None
    by_id = {item.id: item.ref for item in dataset.items}
    if not all(i in by_id for i in ids[: min(len(ids), 50)]):
        return None
    return [by_id.get(i) for i in ids]
