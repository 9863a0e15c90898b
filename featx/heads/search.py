"""A grid search whose fits show on a progress bar (see :mod:`featx.progress`).

:func:`grid_search` returns a plain :class:`~sklearn.model_selection.GridSearchCV` when no
bar shows, else :class:`GridSearchWithBar`, which gives the same results.
"""

from __future__ import annotations

import math

from joblib import effective_n_jobs
from sklearn.model_selection import GridSearchCV, ParameterGrid

from ..progress import enabled, progress_bar

__all__ = ["GridSearchWithBar", "grid_search", "HALVING_FACTOR"]

#: Successive halving keeps a third of the candidates at each round, on three times the rows.
HALVING_FACTOR = 3

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


def _halving():
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (the documented switch)
    from sklearn.model_selection import HalvingGridSearchCV

    class HalvingSearchWithBar(HalvingGridSearchCV):
        """``HalvingGridSearchCV`` moving a bar after each round's candidates (same results)."""

        bar_label = "successive halving"

        def _run_search(self, evaluate_candidates):
            splits = max(1, int(self.n_splits_))
            total, left = 0, len(list(ParameterGrid(self.param_grid)))
            while left > 1:
                total += left
                left = math.ceil(left / self.factor)
            total += 1
            with progress_bar(total * splits, self.bar_label, unit="fit", progress=True) as bar:
                def evaluate(candidates, *args, **kwargs):
                    out = evaluate_candidates(candidates, *args, **kwargs)
                    bar.update(len(list(candidates)) * splits)
                    return out

                return super()._run_search(evaluate)

    return HalvingGridSearchCV, HalvingSearchWithBar


def __getattr__(name):  # HalvingSearchWithBar needs scikit-learn's experimental switch: made on first use
    if name == "HalvingSearchWithBar":
        return _halving()[1]
    raise AttributeError(name)


def grid_search(estimator, param_grid, *, progress: bool | None = None, label: str = "grid search",
                halving: bool = False, **kwargs):
    """A grid search over ``param_grid``, with a bar over its fits when progress is on.

    Parameters
    ----------
    estimator, param_grid, **kwargs :
        As for ``GridSearchCV``.
    progress : bool or None
        None: a bar when stderr is a terminal; True: a bar; False: none.
    label : str
        The bar's description.
    halving : bool
        Successive halving (:class:`~sklearn.model_selection.HalvingGridSearchCV`, factor
        :data:`HALVING_FACTOR`, resource: rows): every candidate on a few rows, a third of them on
        three times as many, ..., the last ones on all the rows (``min_resources="exhaust"``).
        Keyword arguments of GridSearchCV it lacks (``pre_dispatch``) are not accepted then.

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
    >>> halved = grid_search(LogisticRegression(max_iter=500), {"C": [0.1, 1.0, 10.0]}, halving=True, cv=3,
    ...                      progress=False, random_state=0)
    >>> type(halved).__name__, halved.fit(X, y).n_iterations_
    ('HalvingGridSearchCV', 2)
    """
    if halving:
        plain, barred = _halving()
        kwargs.setdefault("factor", HALVING_FACTOR)
        kwargs.setdefault("min_resources", "exhaust")
        if not enabled(progress):
            return plain(estimator, param_grid, **kwargs)
        search = barred(estimator, param_grid, **kwargs)
        search.bar_label = label
        return search
    if not enabled(progress):
        return GridSearchCV(estimator, param_grid, **kwargs)
    search = GridSearchWithBar(estimator, param_grid, **kwargs)
    search.bar_label = label
    return search
