"""What a head does at a given size: exact or approximate, on which sample it is selected, in memory or streamed.

::

    plan_head(kind, n_rows, dim, strategy="auto", memory_budget=..., in_memory=...)  ->  HeadPlan
      strategy     exact:        the head of featx.heads.build, fitted on a matrix in memory
                   approximate:  the same grid on estimators whose cost grows linearly with n
      n_select     rows of the stratified sample the grid is cross-validated on (all, up to SELECT_ROWS)
      streamed     the winner is refitted on every row read a chunk at a time from the cache

"auto" picks by size and by predicted cost: exact up to :data:`EXACT_ROWS`, unless the
approximate head is predicted cheaper there (:func:`predicted_seconds`, a model of measured times),
approximate past it: never an approximation predicted slower than an exact head allowed at that n. Overridable (``strategy=`` in
:func:`~featx.heads.select_head`, ``--strategy`` in ``featx train``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from ..errors import ParameterError
from ..validation import check_choice, check_int
from .stream import WINDOW_ROWS

__all__ = ["STRATEGIES", "SELECT_ROWS", "EXACT_ROWS", "BYTES_PER_VALUE", "HeadPlan", "plan_head",
           "default_memory_budget", "sgd_epochs", "COSTS", "predicted_seconds", "expected_seconds"]

STRATEGIES = ("auto", "exact", "approximate")
#: Most rows the grid is cross-validated on; above it, a stratified sample of this size
#: (then the winner is refitted on every row). At 10,000 rows the exact SVM grid already takes
#: ~5 min on 2 cores (3 folds); the logreg and kNN grids about one.
SELECT_ROWS = 10_000
#: Most rows an exact head gets under "auto". The RBF SVM costs n^2 to n^3 (hours at 60,000);
#: the exact kNN scans every training row per query; logistic regression (L-BFGS) costs n per
#: iteration, so it stays exact while its matrix fits in memory.
EXACT_ROWS = {"svm": 10_000, "knn": 20_000, "logreg": None}
#: Bytes per feature value an in-memory head needs: the float32 matrix and the copies its
#: steps make (power, scale, the solver's float64).
BYTES_PER_VALUE = 16


#: The cost model: seconds of ``select_head`` (selection on ``min(n, SELECT_ROWS)`` rows, 3 folds,
#: the default grid searched as "auto" (successive halving where the sample allows), refit on all n)
#: measured by ``benchmarks/heads_scaling.py --all-heads --cost-sizes 10000`` on 2 idle Zen 4 cores
#: (2026-12-06, ``results/heads_linear.json``), Fashion-MNIST EfficientNet-Lite0 features (1280-d),
#: per head, strategy and n. Between and past the measured sizes the time is interpolated on log-log
#: axes (a power law in n); it is scaled by ``dim / 1280`` and ``cv / 3``. Only ratios matter to the
#: plan (it switches the svm and knn to their approximate heads from about 6,000 rows); the ETA of
#: ``featx train`` is as good as the machine is like the one measured.
COSTS: dict[tuple[str, str], dict[int, float]] = {
    ("logreg", "exact"): {2000: 8.9, 20_000: 29.8},
    ("logreg", "approximate"): {2000: 11.7, 20_000: 59.5},
    ("svm", "exact"): {2000: 13.6, 10_000: 266.0},
    ("svm", "approximate"): {2000: 67.2, 10_000: 116.1, 20_000: 150.0},
    ("knn", "exact"): {2000: 4.9, 10_000: 87.7, 20_000: 95.1},
    ("knn", "approximate"): {2000: 11.1, 10_000: 61.4, 20_000: 65.6},
}


def predicted_seconds(kind: str, strategy: str, n_rows: int, dim: int = 1280, cv: int = 3) -> float:
    """Predicted seconds of ``select_head`` for one head and strategy at ``n_rows`` (the cost model).

    Power-law interpolation between the measured sizes of :data:`COSTS` (extrapolation past the
    largest with the slope of the last two), scaled by ``dim / 1280`` and ``cv / 3``. Below the
    smallest measured size the time shrinks in proportion to the rows for every head and strategy
    alike, so the ranking measured there holds (two slopes extrapolated downwards would cross at
    sizes nobody measured).

    Examples
    --------
    >>> predicted_seconds("svm", "exact", 2000) < predicted_seconds("svm", "approximate", 2000)
    True
    >>> round(predicted_seconds("logreg", "exact", 10_000, dim=640), 1)
    10.4
    >>> predicted_seconds("logreg", "exact", 400) < predicted_seconds("logreg", "approximate", 400)
    True
    """
    points = sorted(COSTS[(kind, strategy)].items())
    n = max(1, int(n_rows))
    if n <= points[0][0]:
        return float(points[0][1] * n / points[0][0] * dim / 1280 * max(2, cv) / 3)
    lo, hi = points[-2], points[-1]
    for a, b in zip(points, points[1:]):
        if a[0] <= n <= b[0]:
            lo, hi = a, b
            break
    slope = math.log(hi[1] / lo[1]) / math.log(hi[0] / lo[0])
    seconds = lo[1] * (n / lo[0]) ** slope
    return float(seconds * dim / 1280 * max(2, cv) / 3)


def expected_seconds(kinds, n_rows: int, dim: int, *, cv: int = 3, strategy: str = "auto",
                     memory_budget: int | None = None, layers: int = 1) -> dict[str, float | None]:
    """The cost model's seconds per head kind for ``featx train`` (its ETA); None where no plan is possible.

    Examples
    --------
    >>> eta = expected_seconds(["logreg", "svm"], 2000, 1280, memory_budget=8 << 30)
    >>> eta["logreg"] < eta["svm"]
    True
    """
    out = {}
    for kind in kinds:
        try:
            plan = plan_head(kind, n_rows, dim, strategy=strategy, memory_budget=memory_budget)
        except (ParameterError, KeyError):
            out[kind] = None
            continue
        out[kind] = predicted_seconds(kind, plan.strategy, n_rows, dim, cv) * max(1, layers)
    return out


@dataclass(frozen=True)
class HeadPlan:
    """What :func:`~featx.heads.select_head` does for one head.

    Attributes
    ----------
    kind : str
    strategy : {"exact", "approximate"}
    n_rows : int
        Rows the winner is refitted on (all of them).
    n_select : int
        Rows the grid is cross-validated on (a stratified sample when fewer than ``n_rows``).
    streamed : bool
        Refitted over chunks of ``chunk`` rows read from the cache, never the whole matrix.
    chunk : int
        Rows read at a time.
    epochs : int
        Passes over the rows of the SGD solvers (approximate logreg, streamed svm).
    reason : str
        Why this strategy (printed by ``featx train``).
    """

    kind: str
    strategy: str
    n_rows: int
    n_select: int
    streamed: bool
    chunk: int
    epochs: int
    reason: str

    def describe(self) -> str:
        """One line: what was done.

        Examples
        --------
        >>> print(plan_head("svm", 60000, 1280, memory_budget=8 << 30).describe())
        svm: approximate (Nystroem RBF map / linear + linear SVM), selected on a stratified 10,000 of 60,000 rows, refitted on all 60,000 in memory (auto: 60,000 rows > 10,000 for an exact svm)
        """
        what = {"exact": {"logreg": "exact (L-BFGS logistic regression)", "svm": "exact (libsvm SVC)",
                          "knn": "exact (brute-force kNN)"},
                "approximate": {"logreg": "approximate (averaged SGD logistic regression)",
                                "svm": ("approximate (Nystroem RBF map / linear + "
                                        + ("SGD hinge)" if self.streamed else "linear SVM)")),
                                "knn": "approximate (PCA + inverted-file kNN index)"}}[self.strategy][self.kind]
        sample = (f"all {self.n_rows:,} rows" if self.n_select >= self.n_rows
                  else f"a stratified {self.n_select:,} of {self.n_rows:,} rows")
        where = f"streamed in chunks of {self.chunk:,} rows" if self.streamed else "in memory"
        return f"{self.kind}: {what}, selected on {sample}, refitted on all {self.n_rows:,} {where} ({self.reason})"

    def summary(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def default_memory_budget() -> int:
    """Half the memory available now (``MemAvailable``), or 2 GiB where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def sgd_epochs(n_rows: int, kind: str = "logreg") -> int:
    """Passes of the SGD solvers: about a million row updates, between 3 and 50 passes.

    The streamed svm maps every row through its kernel map again at each pass (~2.5 MFLOP a
    1280-d row with 1000 landmarks), so it makes at most 10.

    Examples
    --------
    >>> sgd_epochs(8000), sgd_epochs(60_000), sgd_epochs(1_000_000), sgd_epochs(8000, "svm")
    (50, 17, 3, 10)
    """
    return min(10 if kind == "svm" else 50, max(3, math.ceil(1_000_000 / max(1, n_rows))))


def plan_head(kind: str, n_rows: int, dim: int, *, strategy: str = "auto", memory_budget: int | None = None,
              in_memory: bool = False, chunk: int | None = None, select_rows: int = SELECT_ROWS) -> HeadPlan:
    """Choose exact or approximate, the selection sample and streaming for one head.

    Parameters
    ----------
    kind : {"logreg", "svm", "knn"}
    n_rows, dim : int
        Rows and features of the training matrix.
    strategy : {"auto", "exact", "approximate"}
        "auto": exact up to :data:`EXACT_ROWS` rows (svm 10,000, knn 20,000, logreg: while it fits
        in memory), approximate above.
    memory_budget : int, optional
        Bytes the training may use (default :func:`default_memory_budget`). A matrix needing more
        (``n_rows x dim x`` :data:`BYTES_PER_VALUE`) is streamed from the cache.
    in_memory : bool
        The rows are already an array in memory: never streamed.
    chunk : int, optional
        Rows read at a time when streaming (default: what an eighth of the budget holds), rounded
        down to whole windows of :data:`~featx.heads.stream.WINDOW_ROWS` (8192) rows, at least one.
    select_rows : int
        Most rows the grid is cross-validated on (default :data:`SELECT_ROWS`).

    Raises
    ------
    ParameterError
        Unknown strategy, or "exact" for a matrix over the memory budget.

    Examples
    --------
    >>> plan_head("logreg", 2000, 1280).strategy
    'exact'
    >>> p = plan_head("logreg", 1_000_000, 1280, memory_budget=1 << 30)
    >>> p.strategy, p.streamed, p.n_select, p.chunk
    ('approximate', True, 10000, 24576)
    """
    check_choice(strategy, "strategy", "select_head", STRATEGIES)
    budget = check_int(memory_budget, "memory_budget", "select_head", low=1, optional=True) or default_memory_budget()
    check_int(chunk, "chunk", "select_head", low=1, optional=True)
    check_int(select_rows, "select_rows", "select_head", low=1)
    need = n_rows * dim * BYTES_PER_VALUE
    fits = in_memory or need <= budget
    limit = EXACT_ROWS[kind]
    if strategy == "exact":
        if not fits:
            raise ParameterError(
                f"strategy='exact' needs the whole {n_rows:,} x {dim} matrix in memory (~{need / 2**30:.1f} GiB with "
                f"its copies), over the memory budget of {budget / 2**30:.1f} GiB; use strategy='approximate' "
                "(streamed from the cache) or raise memory_budget")
        reason = "exact: asked for"
    elif strategy == "approximate":
        reason = "approximate: asked for"
    elif not fits:
        strategy, reason = "approximate", (f"auto: the matrix needs ~{need / 2**30:.1f} GiB, over the memory budget "
                                           f"of {budget / 2**30:.1f} GiB")
    elif limit is not None and n_rows > limit:
        strategy, reason = "approximate", f"auto: {n_rows:,} rows > {limit:,} for an exact {kind}"
    else:
        exact_s, approx_s = (predicted_seconds(kind, s, n_rows, dim) for s in ("exact", "approximate"))
        if approx_s < exact_s:
            strategy, reason = "approximate", (f"auto: predicted {approx_s:.0f} s approximate < {exact_s:.0f} s exact "
                                               f"at {n_rows:,} rows")
        else:
            strategy = "exact"
            reason = f"auto: {n_rows:,} rows <= {limit:,}" if limit else "auto: the matrix fits in memory"
    rows = chunk or budget // 8 // max(1, dim * 4)
    rows = max(WINDOW_ROWS, rows // WINDOW_ROWS * WINDOW_ROWS)  # whole shuffling windows
    return HeadPlan(kind=kind, strategy=strategy, n_rows=int(n_rows), n_select=int(min(n_rows, select_rows)),
                    streamed=not fits, chunk=int(rows), epochs=sgd_epochs(n_rows, kind), reason=reason)
