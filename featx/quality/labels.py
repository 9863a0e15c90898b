"""Label issues: out-of-fold predicted probabilities ranked by cleanlab (confident learning)."""

from __future__ import annotations

import numpy as np

from ..extras import require

#: Rows up to which the probabilities come from a head's cross-validation; above, from the kNN vote.
LABEL_ROWS = 20_000


def _cleanlab():
    require("cleanlab", "audit", "finding label issues")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    return find_label_issues, get_label_quality_scores


def head_probabilities(X, codes, kind: str, *, cv: int, seed: int, n_jobs, params=None, grid=None):
    """Out-of-fold probabilities of featx's head: the grid point :func:`~featx.heads.select_head` picks
    (same stratified, shuffled, seeded folds), then :func:`sklearn.model_selection.cross_val_predict`.

    Returns ``(pred_probs, params, n_splits)``.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from ..heads import head_pipeline, select_head

    n_splits = int(min(cv, np.bincount(codes).min()))
    if params is None:
        params = select_head(kind, X, codes, cv=n_splits, n_jobs=n_jobs, seed=seed, grid=grid, calibrate=False,
                             progress=False).best_params
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    extra = {"probability": True, "random_state": seed} if kind == "svm" else {}  # SVC: Platt scaling
    pipe = head_pipeline(kind, **params, **extra)
    probs = cross_val_predict(pipe, X, codes, cv=folds, method="predict_proba", n_jobs=n_jobs)
    return probs, dict(params), n_splits


def knn_probabilities(idx: np.ndarray, sim: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Leave-one-out class probabilities from each row's k nearest neighbours (similarity-weighted,
    smoothed by one pseudo-vote spread over the classes): what a large cache uses instead of CV.

    Examples
    --------
    >>> idx = np.array([[1, 2], [0, 2], [0, 1]]); sim = np.ones((3, 2))
    >>> knn_probabilities(idx, sim, np.array([0, 0, 1]), 2).round(2).tolist()
    [[0.5, 0.5], [0.5, 0.5], [0.83, 0.17]]
    """
    probs = np.full((len(idx), n_classes), 1.0 / n_classes)
    weights = np.clip(sim, 0, None)
    valid = idx >= 0
    rows = np.repeat(np.arange(len(idx)), idx.shape[1])[valid.ravel()]
    np.add.at(probs, (rows, codes[idx[valid]]), weights[valid])
    return probs / probs.sum(axis=1, keepdims=True)


def rank_label_issues(codes: np.ndarray, probs: np.ndarray, n_jobs=1):
    """cleanlab's issues (positions, most likely first) and every row's label quality (0 to 1)."""
    find_label_issues, get_label_quality_scores = _cleanlab()
    issues = find_label_issues(codes, probs, return_indices_ranked_by="self_confidence", n_jobs=n_jobs or 1)
    quality = get_label_quality_scores(codes, probs, method="self_confidence")
    return np.asarray(issues, dtype=np.int64), np.asarray(quality, dtype=np.float64)
