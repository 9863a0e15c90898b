"""Learning curves: a saturating power law ``score(n) = a - b * n**-c`` fitted to measured points (the
upper part of the measured range: :func:`upper_range`), with bootstrap intervals on its predictions.

The fit is :func:`scipy.optimize.curve_fit` (bounded: ``0 <= a <= 1``, ``b >= 0``,
``0.05 <= c <= 2``); the interval resamples the measured points (one point per size and seed) with
replacement, refits, and takes the percentiles of the refitted predictions.

Examples
--------
>>> import numpy as np
>>> n = np.repeat([1, 2, 5, 10, 20], 3)
>>> y = 0.9 - 0.5 * n ** -0.5 + np.tile([-0.01, 0.0, 0.01], 5)
>>> curve = fit_curve(n, y, n_boot=50)
>>> round(curve.predict(1000), 2)
0.88
>>> low, high = curve.interval(1000)
>>> low <= curve.predict(1000) <= high
True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

#: Fewest distinct sizes a curve is fitted on (three parameters).
MIN_SIZES = 3
BOUNDS = ([0.0, 0.0, 0.05], [1.0, 5.0, 2.0])


def power_law(n, a, b, c):
    """``a - b * n**-c``: rises towards ``a`` as ``n`` grows."""
    return a - b * np.power(np.asarray(n, dtype=float), -c)


def upper_range(n) -> np.ndarray:
    """Which points a curve is fitted on: the sizes at or above the geometric middle of the measured range
    (at least the :data:`MIN_SIZES` largest). Small subsets sit near chance, in a regime that does not follow
    the power law, and would pull the fit's exponent down (learning curves' "small-data region", Hestness
    et al. 2017); the prediction is about large sizes, so the fit reads the upper part of the curve.

    Examples
    --------
    >>> upper_range([2, 2, 5, 10, 20, 50, 100, 200]).tolist()
    [False, False, False, False, True, True, True, True]
    >>> upper_range([2, 5, 10]).tolist()
    [True, True, True]
    """
    n = np.asarray(n, dtype=float)
    sizes = np.unique(n)
    floor = min(np.sqrt(sizes[0] * sizes[-1]), sizes[-min(MIN_SIZES, len(sizes))])
    return n >= floor


def curve_value(curve: dict, n) -> np.ndarray:
    """A saved curve's score at ``n`` (:meth:`Curve.to_dict`, or a fine-tuning pilot's reference curve plus
    its measured ``offset``), clipped to [0, 1].

    Examples
    --------
    >>> float(curve_value({"a": 0.9, "b": 0.5, "c": 1.0, "offset": 0.05}, 10))
    0.9
    """
    value = power_law(n, curve["a"], curve["b"], curve["c"]) + curve.get("offset", 0.0)
    return np.clip(value, 0.0, 1.0)


def _fit(n: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import curve_fit

    a0 = float(min(1.0, max(y.max(), 1e-3)))
    b0 = float(max(a0 - y[n == n.min()].mean(), 1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _ = curve_fit(power_law, n, y, p0=[a0, min(b0, 4.9), 0.5], bounds=BOUNDS, maxfev=5000)
    return params


@dataclass(frozen=True)
class Curve:
    """A fitted learning curve: the parameters, the bootstrap refits, and the measured points."""

    params: tuple  # (a, b, c)
    boot: np.ndarray  # (n_boot, 3) refitted parameters
    n: tuple  # measured sizes (one per point)
    y: tuple  # measured scores
    level: float = 0.9

    def predict(self, n) -> float:
        """The fitted score at ``n`` training items (per class or in all: the unit of the fit)."""
        return float(power_law(n, *self.params))

    def interval(self, n) -> tuple[float, float]:
        """The bootstrap interval of the prediction at ``n`` (``level``, percentiles)."""
        preds = power_law(n, self.boot[:, 0], self.boot[:, 1], self.boot[:, 2])
        tail = (1 - self.level) / 2 * 100
        low, high = np.percentile(preds, [tail, 100 - tail])
        return float(low), float(high)

    @property
    def ceiling(self) -> float:
        """``a``: the score the curve tends to with unlimited labels."""
        return float(self.params[0])

    def to_dict(self) -> dict:
        return {"a": float(self.params[0]), "b": float(self.params[1]), "c": float(self.params[2]),
                "bootstrap": int(len(self.boot)), "level": self.level}


def fit_curve(n, y, *, n_boot: int = 200, level: float = 0.9, seed: int = 0) -> Curve:
    """Fit ``a - b * n**-c`` to scores ``y`` measured at sizes ``n`` (several seeds per size welcome).

    Parameters
    ----------
    n, y : array-like
        One measured point each: the training size and the score (in [0, 1]).
    n_boot : int
        Bootstrap refits for the intervals.
    level : float
        Coverage of :meth:`Curve.interval`.
    seed : int
        The bootstrap's random seed.

    Raises
    ------
    ParameterError
        Fewer than :data:`MIN_SIZES` distinct sizes, or a score outside [0, 1] or not finite.
    """
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    if n.shape != y.shape or n.ndim != 1:
        raise ParameterError(f"a learning curve needs as many sizes as scores; got {n.shape} and {y.shape}")
    if not (np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()) or not (n > 0).all():
        raise ParameterError("a learning curve needs positive sizes and finite scores in [0, 1]; "
                             f"got sizes {n.tolist()} and scores {y.tolist()}")
    if len(np.unique(n)) < MIN_SIZES:
        raise ParameterError(f"a learning curve needs scores at {MIN_SIZES} or more sizes; got "
                             f"{sorted(set(n.tolist()))}: measure more sizes (a larger budget or more data)")
    params = _fit(n, y)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(n), len(n))
        if len(np.unique(n[idx])) < MIN_SIZES:
            continue
        boot.append(_fit(n[idx], y[idx]))
    boot = np.array(boot) if boot else params[None, :]
    return Curve(tuple(float(p) for p in params), boot, tuple(n.tolist()), tuple(y.tolist()), level)
