"""Model selection: cross-validate a head's grid on a stratified sample, refit the winner on every row.

::

    select_head(kind, X, y)       X: an array, or a featx.cache.FeatureReader (rows read as needed)
      plan_head                   exact or approximate; selection sample; in memory or streamed
      stratified_sample           at most SELECT_ROWS rows, every class kept
      GridSearchCV                stratified, shuffled, seeded k-fold on the sample; successive halving
                                  (HalvingGridSearchCV) when the sample is large enough (search="auto")
      refit                       exact: the pipeline on the whole matrix;
                                  approximate: its transformers on the sample, its classifier on
                                  every row (SGD over batches, or a kernel map / PCA a chunk at a time);
                                  an approximate logreg is selected as the exact one (same objective)

The selected SVM is refitted inside :class:`~sklearn.calibration.CalibratedClassifierCV`
(sigmoid, ``ensemble=False``) so that it has ``predict_proba``; its predictions are the argmax of
those probabilities (scikit-learn deprecated ``SVC(probability=True)`` in 1.9). A streamed SVM
(SGD hinge) has no ``predict_proba``: calibrating it would take three more passes over the rows.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError, ParameterError
from .search import HALVING_FACTOR, grid_search
from ..sources import labelled_mask
from ..validation import check_int, invalid
from .build import (calibration_folds, HEADS, check_grid, check_kind, default_params, grid_points, head_grid,
                    head_pipeline, plain)
from .plan import SELECT_ROWS, HeadPlan, plan_head, sgd_epochs
from .stream import ArrayRows, check_finite, fit_sgd, rows_of, transform_all

__all__ = ["SelectionResult", "select_head", "train_heads", "resolve_heads", "check_n_jobs", "stratified_sample",
           "SEARCHES", "HALVING_ROWS_PER_CLASS", "use_halving"]

#: How the grid is searched: "grid" (every point on every fold), "halving" (successive halving),
#: "auto" (halving when its first round has :data:`HALVING_ROWS_PER_CLASS` rows a class, else grid).
SEARCHES = ("auto", "grid", "halving")
#: Rows per class the first round of successive halving needs under search="auto": below it the
#: first round's scores are too noisy to drop two thirds of the candidates on (the full grid is cheap there).
HALVING_ROWS_PER_CLASS = 30


@dataclass
class SelectionResult:
    """The outcome of :func:`select_head` for one head.

    Attributes
    ----------
    kind : str
        ``"logreg"``, ``"svm"`` or ``"knn"``.
    best_estimator : sklearn.pipeline.Pipeline
        The best grid point, refitted on all the data.
    best_params : dict
        Its parameters, in the grid's vocabulary (``{"scale": "l2", "C": 10.0}``).
    cv_mean, cv_std : float
        Mean and standard deviation of its accuracy over the folds (NaN without CV).
    fit_seconds : float
        Wall-clock time of the whole selection: search, refit, calibration.
    cv_results : dict
        Per grid point: ``params`` (list of dicts), ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time`` (lists); empty without CV.
    n_splits : int
        Folds used (0 when fitted without CV).
    notes : list of str
        What was adapted to the data (fewer folds, pruned grid values, no CV...).
    plan : HeadPlan
        Exact or approximate, the selection sample, in memory or streamed.
    search : str
        How the grid was searched: ``"grid"`` or ``"halving"`` (``""`` without CV).
    search_seconds : float
        Wall-clock time of the cross-validated search alone (the selection's share of ``fit_seconds``).
    """

    kind: str
    best_estimator: Any
    best_params: dict
    cv_mean: float
    cv_std: float
    fit_seconds: float
    cv_results: dict = field(default_factory=dict, repr=False)
    n_splits: int = 0
    notes: list = field(default_factory=list)
    plan: HeadPlan | None = None
    search: str = ""
    search_seconds: float = 0.0

    def summary(self) -> dict:
        """A JSON-ready summary (no estimator)."""
        out = {"kind": self.kind, "best_params": self.best_params, "cv_mean": _none_if_nan(self.cv_mean),
               "cv_std": _none_if_nan(self.cv_std), "fit_seconds": round(self.fit_seconds, 3),
               "n_splits": self.n_splits, "notes": list(self.notes), "search": self.search,
               "search_seconds": round(self.search_seconds, 3)}
        if self.plan is not None:
            out.update(strategy=self.plan.strategy, n_select=self.plan.n_select, streamed=self.plan.streamed,
                       plan=self.plan.describe())
        return out


def _none_if_nan(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ------------------------------------------------------------------------ checks
def check_n_jobs(n_jobs, owner: str = "select_head") -> None:
    """``None`` or a non-zero int (``-1``: all cores), else :class:`~featx.errors.ParameterError`."""
    if check_int(n_jobs, "n_jobs", owner, optional=True) == 0:
        raise invalid("n_jobs", owner, "None or a non-zero int (-1: all cores)", n_jobs)


def _check_labels(y, n_rows: int):
    if y is None:
        raise InputError("y is None: heads need labels; extract a labelled dataset (class folders or a label column)")
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"y must be 1-D (one label per row); got shape {y.shape}")
    if n_rows != len(y):
        raise InputError(f"X has {n_rows} rows but y has {len(y)} labels")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise InputError(f"a head needs at least 2 classes; y holds {len(classes)} ({classes[:1].tolist()})")
    return y, classes, counts


def _labelled_rows(kind: str, rows, y, notes: list):
    """``(rows, y)`` without the unlabelled rows (None, NaN or blank labels: never a class), noted when any."""
    if y is None or len(y) != rows.n_rows:
        return rows, y  # _check_labels says what is wrong
    y = np.asarray(y)
    if y.dtype.kind not in "OUSf":
        return rows, y
    keep = labelled_mask(y)
    if keep.all():
        return rows, y
    notes.append(f"{kind}: {int((~keep).sum())} unlabelled row(s) left out of training")
    return rows.take(np.flatnonzero(keep)), y[keep]


def _check_array(X):
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D array of features (n_samples, n_features); got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"X must be numeric; got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise InputError(f"X has NaN/inf in {len(bad)} row(s) (first: {bad[:5].tolist()}); "
                         "drop or recompute those items")
    return X


def stratified_sample(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted positions of ``size`` rows with the class proportions of ``y``, at least 2 of each class that has 2.

    Examples
    --------
    >>> y = np.array(["a"] * 90 + ["b"] * 10)
    >>> s = stratified_sample(y, 20, seed=0)
    >>> len(s), int((y[s] == "b").sum())
    (20, 2)
    """
    n = len(y)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = counts * size / n
    take = np.floor(quota).astype(int)
    extra = size - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:extra]] += 1
    take = np.minimum(counts, np.maximum(take, np.minimum(counts, 2)))
    largest = int(np.argmax(take))  # the rows given to small classes come from the largest one
    take[largest] = max(min(counts[largest], 2), take[largest] - (take.sum() - size))
    chosen = [rng.choice(np.flatnonzero(inverse == c), take[c], replace=False) for c in range(len(classes))]
    return np.sort(np.concatenate(chosen))


def _prune_neighbors(grid: list[dict[str, list]], max_k: int, notes: list) -> list[dict[str, list]]:
    out = []
    for part in grid:
        if "n_neighbors" in part:
            ks = [k for k in part["n_neighbors"] if k <= max_k]
            if len(ks) < len(part["n_neighbors"]):
                dropped = [k for k in part["n_neighbors"] if k > max_k]
                notes.append(f"n_neighbors {dropped} dropped: a training fold has only {max_k} rows")
            part = {**part, "n_neighbors": ks or [max(1, max_k)]}
        out.append(part)
    return out


def use_halving(search: str, n_candidates: int, n_rows: int, n_classes: int) -> bool:
    """Whether ``search`` means successive halving for this many candidates, rows and classes.

    Examples
    --------
    >>> use_halving("auto", 18, 10_000, 10), use_halving("auto", 18, 2000, 10), use_halving("grid", 18, 10_000, 10)
    (True, False, False)
    """
    if search != "auto":
        return search == "halving" and n_candidates > 1
    rounds = 1 + math.ceil(math.log(max(1, n_candidates), HALVING_FACTOR)) if n_candidates > 1 else 1
    return n_candidates > 1 and n_rows / HALVING_FACTOR ** (rounds - 1) >= HALVING_ROWS_PER_CLASS * n_classes


# ------------------------------------------------------------------------ selection
def select_head(kind: str, X, y=None, *, cv: int = 5, n_jobs: int | None = -1, seed: int = 0, grid=None,
                scoring: str = "accuracy", calibrate: bool = True, strategy: str = "auto",
                memory_budget: int | None = None, chunk: int | None = None,
                select_rows: int = SELECT_ROWS, progress: bool | None = None, search: str = "auto") -> SelectionResult:
    """Pick the best point of a head's grid by cross-validation and refit it on all the data.

    Parameters
    ----------
    kind : {"logreg", "svm", "knn"}
    X : array of shape (n, d), or featx.cache.FeatureReader
        Features (embeddings). A reader is read a sample and a chunk at a time: a cache larger
        than memory is streamed, never loaded whole.
    y : array of shape (n,), optional
        Labels; default: the reader's labels. Rows whose label is missing (None, NaN, blank) are
        left out, with a note saying how many.
    cv : int
        Folds of the stratified, shuffled, seeded k-fold. When the smallest class has fewer
        items, the folds are reduced to that count (with a warning); with a single item in some
        class the head is fitted with :data:`~featx.heads.FEW_SHOT_PARAMS` and no CV (with a warning).
    n_jobs : int or None
        Parallel fits (``-1``: all cores; ``None`` or ``1``: this process). BLAS is limited to
        one thread per fit, which is much faster than oversubscribing on a busy machine.
    seed : int
        Seed of the fold shuffling, of the selection sample and of the approximate heads.
    grid : dict or list of dict, optional
        Replace :func:`~featx.heads.head_grid` (featx vocabulary: ``{"scale": ["l2"], "C": [1, 10]}``).
    scoring : str
        A scikit-learn scorer name.
    calibrate : bool
        Refit the selected SVM inside a sigmoid calibration so that it has ``predict_proba``.
    strategy : {"auto", "exact", "approximate"}
        See :func:`~featx.heads.plan_head`: "auto" is exact while cheap, approximate past a size.
    memory_budget : int, optional
        Bytes the training may hold; a cache needing more is streamed (default: half the free memory).
    chunk : int, optional
        Rows read at a time when streaming.
    select_rows : int
        Most rows the grid is cross-validated on; above it, a stratified sample of this size.
    progress : bool or None
        A bar over the fits of the search (None: when stderr is a terminal; see :mod:`featx.progress`).
    search : {"auto", "grid", "halving"}
        "grid": every point on every fold. "halving": successive halving
        (:class:`~sklearn.model_selection.HalvingGridSearchCV`, factor 3): every point on a few rows,
        the best third on three times as many..., the last on the whole sample: a small multiple
        of one fit's cost instead of points x folds. "auto": halving when its first round has
        :data:`HALVING_ROWS_PER_CLASS` rows a class, else the grid. The notes say which was done.

    Returns
    -------
    SelectionResult

    Raises
    ------
    ParameterError
        Unknown kind, bad ``cv``/``seed``/``grid``/``strategy``.
    InputError
        X and y do not fit together, X has NaN, fewer than 2 classes.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> r = select_head("knn", X[:200], y[:200], cv=3, n_jobs=1)
    >>> r.n_splits, r.cv_mean > 0.8, r.plan.strategy
    (3, True, 'exact')
    >>> r = select_head("logreg", X[:600], y[:600], cv=3, n_jobs=1, strategy="approximate")
    >>> type(r.best_estimator[-1]).__name__, r.cv_mean > 0.8
    ('SGDClassifier', True)
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    check_kind(kind)
    check_int(cv, "cv", "select_head", low=2)
    check_int(seed, "seed", "select_head", low=0)
    check_n_jobs(n_jobs)
    if search not in SEARCHES:
        raise invalid("search", "select_head", f"one of {SEARCHES}", search)
    rows = rows_of(X) if hasattr(X, "read") else ArrayRows(_check_array(X))
    if not isinstance(rows, ArrayRows) and y is None:
        y = rows.labels
    notes: list[str] = []
    rows, y = _labelled_rows(kind, rows, y, notes)
    y, classes, _ = _check_labels(y, rows.n_rows)
    plan = plan_head(kind, rows.n_rows, rows.dim, strategy=strategy, memory_budget=memory_budget,
                     in_memory=isinstance(rows, ArrayRows), chunk=chunk, select_rows=select_rows)
    approximate = plan.strategy == "approximate"
    grid = check_grid(kind, head_grid(kind, approximate) if grid is None else grid, approximate)
    t0 = time.perf_counter()
    sample = stratified_sample(y, plan.n_select, seed)
    Xs, ys = rows.read(sample), y[sample]
    check_finite(Xs, sample)
    _, counts = np.unique(ys, return_counts=True)
    smallest = int(counts.min())
    fit = _Refit(kind, plan, rows, y, classes, Xs, ys, seed, calibrate, notes, n_jobs)
    if smallest < 2:
        lonely = np.unique(ys)[counts < 2][:5].tolist()
        msg = (f"{kind}: class(es) {lonely} have a single item, so no cross-validation is possible; "
               "fitted the few-shot default (unit-length rows, a fixed C: featx.heads.FEW_SHOT_PARAMS) without "
               "model selection (no CV score)")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)
        params = default_params(kind)  # unit-length rows and a fixed C: sound for a few items
        if kind == "knn":
            params["n_neighbors"] = min(int(params["n_neighbors"]), smallest)
        if approximate and kind == "svm" and params.get("kernel") == "rbf":
            params["gamma"] = fit.gamma(params["power"], params["scale"])
        with threadpool_limits(limits=1, user_api="blas"):
            estimator = fit.refit(params)
        return SelectionResult(kind, estimator, _plain_params(params), float("nan"), float("nan"),
                               time.perf_counter() - t0, {}, 0, notes, plan)
    n_splits = cv
    if smallest < cv:
        n_splits = smallest
        msg = (f"{kind}: the smallest class has {smallest} items, fewer than cv={cv}; "
               f"using {n_splits}-fold cross-validation")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)
    if plan.n_select < plan.n_rows:
        notes.append(f"{kind}: grid cross-validated on a stratified {len(sample):,} of {plan.n_rows:,} rows; "
                     "the winner refitted on all of them")
    max_test = math.ceil(len(ys) / n_splits) + len(classes)  # stratified folds may be a little larger
    n_fit = max(1, len(ys) - max_test)
    points = grid_points(_prune_neighbors(grid, n_fit, notes))
    if approximate:
        points = [fit.resolve(point, n_fit) for point in points]
    space = []
    for point in points:
        pipe = fit.pipeline(point, n_train=n_fit, selecting=True)
        space.append({name: [step] for name, step in pipe.steps})
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    halving = use_halving(search, len(points), len(ys), len(classes))
    searcher = grid_search(fit.pipeline(points[0], n_train=n_fit, selecting=True), space, cv=splitter,
                           scoring=scoring, n_jobs=n_jobs, refit=False, error_score="raise", progress=progress,
                           label=f"featx {kind}", halving=halving, **({"random_state": seed} if halving else {}))
    t_search = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # of grid points that are not chosen
            searcher.fit(Xs, ys)
        search_seconds = time.perf_counter() - t_search
        res, best = _per_point(searcher, space) if halving else (searcher.cv_results_, int(searcher.best_index_))
        if halving:
            notes.append(f"{kind}: successive halving: " + " -> ".join(
                f"{c} candidates on {r:,} rows" for c, r in zip(searcher.n_candidates_, searcher.n_resources_))
                + f" ({sum(searcher.n_candidates_) * n_splits} fits holding "
                f"{sum(map(math.prod, zip(searcher.n_candidates_, searcher.n_resources_))) / (len(points) * len(ys)):.0%}"
                f" of the rows of the full grid's {len(points) * n_splits} fits on {len(ys):,} rows)")
        params = _plain_params(points[best])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            estimator = fit.refit(params)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append(f"{kind}: the final fit stopped before converging ({params})")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes[:] = list(dict.fromkeys(notes))
    cv_results = {
        "params": [_plain_params(p) for p in points],
        "mean_test_score": [float(v) for v in res["mean_test_score"]],
        "std_test_score": [float(v) for v in res["std_test_score"]],
        "rank_test_score": [int(v) for v in res["rank_test_score"]],
        "mean_fit_time": [float(v) for v in res["mean_fit_time"]],
    }
    if halving:
        cv_results["n_resources"] = [int(v) for v in res["n_resources"]]
    return SelectionResult(kind, estimator, params, float(res["mean_test_score"][best]),
                           float(res["std_test_score"][best]), time.perf_counter() - t0, cv_results, n_splits, notes,
                           plan, "halving" if halving else "grid", search_seconds)


def _per_point(searcher, space) -> tuple[dict, int]:
    """A halving search's results, one row per grid point (its last round), and the best point's index.

    Points are ranked by the rows of their last round, then by score: the survivors of the last round first.
    """
    res = searcher.cv_results_

    def key(params):
        return tuple(sorted((name, id(value)) for name, value in params.items()))

    index = {key({name: values[0] for name, values in point.items()}): i for i, point in enumerate(space)}
    last = {}
    for row, params in enumerate(res["params"]):
        last[index[key(params)]] = row  # rounds come in order: the last row of a point is its last round
    rows = [last[i] for i in range(len(space))]
    out = {name: [res[name][row] for row in rows]
           for name in ("mean_test_score", "std_test_score", "mean_fit_time", "n_resources")}
    order = sorted(range(len(rows)), key=lambda i: (-out["n_resources"][i], -out["mean_test_score"][i]))
    out["rank_test_score"] = [0] * len(rows)
    for rank, i in enumerate(order, 1):
        out["rank_test_score"][i] = rank
    return out, index[key(res["params"][int(searcher.best_index_)])]


def _plain_params(params: Mapping[str, Any]) -> dict:
    return {k: plain(v) for k, v in params.items()}


@dataclass
class _Refit:
    """Builds a head's pipelines for a plan and refits the winner on every row."""

    kind: str
    plan: HeadPlan
    rows: Any
    y: np.ndarray
    classes: np.ndarray
    Xs: np.ndarray
    ys: np.ndarray
    seed: int
    calibrate: bool
    notes: list
    n_jobs: Any = None  # the calibration's folds, fitted in parallel

    @property
    def approximate(self) -> bool:
        return self.plan.strategy == "approximate"

    def gamma(self, power: str, scale: str) -> float:
        """The RBF ``gamma="scale"`` of SVC (``1 / (d var(X))``) on the sample after power and scale."""
        pre = head_pipeline("logreg", scale=scale, power=power)[:-1]
        Z = pre.fit_transform(self.Xs)
        return float(1.0 / (Z.shape[1] * Z.var())) if Z.var() > 0 else 1.0

    def resolve(self, point: dict, n_fit: int) -> dict:
        """An approximate grid point made concrete: numeric gamma, components the fold can hold."""
        point = dict(point)
        if point.get("gamma") == "scale":
            point["gamma"] = self.gamma(point.get("power", "none"), point.get("scale", "standard"))
        if self.kind == "knn" and "n_components" in point:
            point["n_components"] = int(min(point["n_components"], n_fit, self.Xs.shape[1]))
        if self.kind == "svm" and "n_components" in point:
            point["n_components"] = int(min(point["n_components"], n_fit))
        return point

    def pipeline(self, params: Mapping[str, Any], *, n_train: int, selecting: bool):
        """The head for ``params``; ``selecting``: the pipeline cross-validated on the sample.

        An approximate logreg is selected as the exact one (the same objective in ``C``, and
        L-BFGS is cheaper than SGD on a sample), an approximate kNN with exact neighbours on the
        reduced rows, an approximate svm with LinearSVC: the winner is then refitted as planned.
        """
        params = dict(params)
        scale, power = params.pop("scale", "standard"), params.pop("power", "none")
        if not self.approximate or (selecting and self.kind == "logreg"):
            return head_pipeline(self.kind, scale=scale, power=power, **params)
        if self.kind != "knn":
            params.setdefault("epochs", sgd_epochs(n_train, self.kind))
        return head_pipeline(self.kind, scale=scale, power=power, approximate=True, n_train=n_train,
                             index=not selecting, streamed=self.plan.streamed and not selecting, seed=self.seed,
                             **params)

    def refit(self, params: Mapping[str, Any]):
        """Fit the chosen point on every row (the SVM inside a sigmoid calibration when possible)."""
        if self.approximate and self.kind == "knn":
            params = {**params, "n_components": int(min(params.get("n_components", self.Xs.shape[1]),
                                                         len(self.ys), self.Xs.shape[1]))}
        pipe = self.pipeline(params, n_train=self.plan.n_rows, selecting=False)
        if not self.approximate:
            X = self.Xs if self.plan.n_select >= self.plan.n_rows else self.rows.read(np.arange(self.plan.n_rows))
            self._calibrated(pipe)
            return pipe.fit(X, self.y)
        steps = pipe.steps[:-1]
        Z = self.Xs
        for _, step in steps:  # transformers fitted on the selection sample
            if step not in (None, "passthrough"):
                Z = step.fit_transform(Z, self.ys)
        clf = pipe.steps[-1][1]
        if hasattr(clf, "partial_fit"):
            fit_sgd(clf, steps, self.rows, self.y, self.classes, epochs=self.plan.epochs, seed=self.seed,
                    chunk=self.plan.chunk)
            if self.kind == "svm":
                self.notes.append("svm: streamed (SGD hinge); the head has no predict_proba")
            return pipe
        self._calibrated(pipe)
        pipe.steps[-1][1].fit(transform_all(steps, self.rows, self.plan.chunk), self.y)
        return pipe

    def _calibrated(self, pipe) -> None:
        """Wrap an SVM's classifier step in a sigmoid calibration (in place), when possible."""
        if self.kind != "svm" or not self.calibrate:
            return
        folds = min(calibration_folds(len(self.y)), int(np.unique(self.y, return_counts=True)[1].min()))
        if folds >= 2:
            from sklearn.calibration import CalibratedClassifierCV

            pipe.steps[-1] = ("clf", CalibratedClassifierCV(pipe.steps[-1][1], method="sigmoid", cv=folds,
                                                            ensemble=False, n_jobs=self.n_jobs))
        else:
            self.notes.append("svm: too few items per class to calibrate probabilities; the head has no predict_proba")


def train_heads(X, y=None, heads: Sequence[str] = HEADS, *, cv: int = 5, n_jobs: int | None = -1, seed: int = 0,
                grids: Mapping[str, Any] | None = None, strategy: str = "auto", memory_budget: int | None = None,
                chunk: int | None = None, select_rows: int = SELECT_ROWS,
                progress: bool | None = None, search: str = "auto") -> list[SelectionResult]:
    """Select every head in ``heads`` on the same folds; see :func:`select_head`.

    Parameters
    ----------
    X : array, or featx.cache.FeatureReader
        Features (a reader streams a cache larger than memory).
    y : array, optional
        Labels (default: the reader's).
    heads : sequence of str, or "all"
        Head kinds, run in this order.
    cv, n_jobs, seed, strategy, memory_budget, chunk, select_rows, progress, search :
        As in :func:`select_head`.
    grids : dict, optional
        ``{kind: grid}`` replacing the default grid of some heads.

    Returns
    -------
    list of SelectionResult
        In the order of ``heads``.
    """
    heads = resolve_heads(heads)
    grids = dict(grids or {})
    unknown = sorted(set(grids) - set(heads))
    if unknown:
        raise ParameterError(f"grids given for head(s) {unknown} that are not trained; heads: {list(heads)}")
    return [select_head(kind, X, y, cv=cv, n_jobs=n_jobs, seed=seed, grid=grids.get(kind), strategy=strategy,
                        memory_budget=memory_budget, chunk=chunk, select_rows=select_rows, progress=progress,
                        search=search)
            for kind in heads]


def resolve_heads(heads) -> tuple[str, ...]:
    """``"all"``, one kind, or a sequence of kinds -> a tuple of kinds (no repeats)."""
    if isinstance(heads, str):
        heads = HEADS if heads == "all" else (heads,)
    heads = tuple(dict.fromkeys(heads))
    if not heads:
        raise ParameterError("The 'heads' parameter must name at least one head. Got an empty list instead.")
    for kind in heads:
        if kind not in HEADS:
            raise ParameterError(f"The 'heads' parameter must hold kinds among {HEADS} or be 'all'. "
                                 f"Got {kind!r} instead.")
    return heads
