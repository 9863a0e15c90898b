"""A grid search whose fits show on a progress bar (see :mod:`featx.progress`).

:func:`grid_search` returns a plain :class:`~sklearn.model_selection.GridSearchCV` when no
bar shows, else :class:`GridSearchWithBar`, which gives the same results.
"""

from __future__ import annotations

import math

from joblib import effective_n_jobs
from sklearn.model_selection import GridSearchCV, ParameterGrid

from ..progress import enabled, progress_bar

__all__ = ["GridSearchWithBar", "grid_search"]

#: Fits per worker in one chunk of candidates: the bar moves after each chunk, and the workers
#: wait for the chunk's slowest fit before the next one starts.
FITS_PER_WORKER = 8


class GridSearchWithBar(GridSearchCV):
    """``GridSearchCV`` evaluating its candidates a chunk at a time, moving a bar after each chunk.

    Each chunk gives every worker about :data:`FITS_PER_WORKER` fits; the workers wait for a
    chunk's slowest fit before the next chunk starts, so the search takes a few percent longer
    (timed measurements, such as ``featx bench``'s, run without a bar). ``cv_results_`` and
    ``best_index_`` are those of a plain ``GridSearchCV`` (candidates keep their order).
    ``_run_search`` is scikit-learn's documented hook for scheduling a search's candidates
    (its successive halving and scikit-optimize use it); the bar lives in this process only,
    never in the workers that receive the search.
    """

    #: The bar's description (set by :func:`grid_search`; not an estimator parameter).
    bar_label = "grid search"

    def _run_search(self, evaluate_candidates):
        candidates = list(ParameterGrid(self.param_grid))
        splits = max(1, int(self.n_splits_))
        chunk = max(1, math.ceil(FITS_PER_WORKER * effective_n_jobs(self.n_jobs) / splits))
        with progress_bar(len(candidates) * splits, self.bar_label, unit="fit", progress=True) as bar:
            for start in range(0, len(candidates), chunk):
                part = candidates[start:start + chunk]
                evaluate_candidates(part)
                bar.update(len(part) * splits)


def grid_search(estimator, param_grid, *, progress: bool | None = None, label: str = "grid search", **kwargs):
    """A grid search over ``param_grid``, with a bar over its fits when progress is on.

    Parameters
    ----------
    estimator, param_grid, **kwargs :
        As for ``GridSearchCV``.
    progress : bool or None
        None: a bar when stderr is a terminal; True: a bar; False: none.
    label : str
        The bar's description.

    Returns
    -------
    GridSearchCV or GridSearchWithBar

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> plain = grid_search(LogisticRegression(max_iter=500), {"C": [0.1, 1.0, 10.0]}, progress=False, cv=3)
    >>> type(plain).__name__
    'GridSearchCV'
    >>> barred = grid_search(LogisticRegression(max_iter=500), {"C": [0.1, 1.0, 10.0]}, progress=True, cv=3)
    >>> plain.fit(X, y).best_params_ == barred.fit(X, y).best_params_
    True
    """
    if not enabled(progress):
        return GridSearchCV(estimator, param_grid, **kwargs)
    search = GridSearchWithBar(estimator, param_grid, **kwargs)
    search.bar_label = label
    return search
