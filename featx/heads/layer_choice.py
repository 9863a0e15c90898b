"""The layer as a hyper-parameter: select a head on each layer's features, keep the layer with the best CV score.

::

    select_layer(kind, {layer: X or FeatureReader}, y)
      select_head on each layer      the same seed: the same selection sample and the same folds
      the best mean CV accuracy      ties, and no CV possible (a class with one item): the first layer given
      -> LayerSelection              the chosen layer, its SelectionResult, every layer's CV score

``featx train --layer all`` passes ``final`` first (see :mod:`featx.specs.layers`), so the backbone's own
output is kept unless an earlier layer scores higher.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> y = np.repeat(["a", "b"], 40)
>>> informative = np.c_[(y == "a") + rng.normal(0, 0.3, 80), rng.normal(size=(80, 3))]
>>> noise = rng.normal(size=(80, 4))
>>> chosen = select_layer("logreg", {"final": noise, "block3": informative}, y, cv=3, n_jobs=1)
>>> chosen.layer, chosen.scores["block3"] > chosen.scores["final"]
('block3', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import ParameterError
from .select import SelectionResult, select_head

__all__ = ["LayerSelection", "best_layer", "select_layer"]


@dataclass
class LayerSelection:
    """The outcome of :func:`select_layer` for one head kind.

    Attributes
    ----------
    layer : str
        The layer chosen.
    result : SelectionResult
        The head selected and refitted on that layer's features.
    scores : dict
        Mean CV accuracy of the best grid point per layer (None without CV), in the order given.
    results : dict
        Every layer's :class:`~featx.heads.SelectionResult`.
    """

    layer: str
    result: SelectionResult
    scores: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """A JSON-ready summary: the chosen layer, every layer's CV score, and the chosen head's summary."""
        return {"layer": self.layer, "layer_scores": dict(self.scores), **self.result.summary()}


def select_layer(kind: str, features: Mapping[str, Any], y=None, **select_kwargs) -> LayerSelection:
    """Select ``kind`` on each layer's features (:func:`~featx.heads.select_head`); keep the best layer by CV.

    Parameters
    ----------
    kind : {"logreg", "svm", "knn"}
    features : mapping
        ``{layer: X}``, each X an array (n, d_layer) or a :class:`featx.cache.FeatureReader` of the
        same rows, in the order of preference (ties go to the first).
    y : array, optional
        Labels (default: the first reader's).
    **select_kwargs
        Passed to :func:`~featx.heads.select_head` (``cv``, ``n_jobs``, ``seed``...); the same for
        every layer, so every layer is cross-validated on the same folds.

    Returns
    -------
    LayerSelection

    Raises
    ------
    ParameterError
        No layer given.
    """
    if not features:
        raise ParameterError("The 'features' parameter of select_layer must map at least one layer to its "
                             "features. Got an empty mapping instead.")
    results = {layer: select_head(kind, X, y, **select_kwargs) for layer, X in features.items()}
    scores = {layer: None if math.isnan(r.cv_mean) else float(r.cv_mean) for layer, r in results.items()}
    best = best_layer(scores)
    return LayerSelection(best, results[best], scores, results)


def best_layer(scores: Mapping[str, float | None]) -> str:
    """The layer with the highest CV score; ties, and no score at all, go to the first given.

    Examples
    --------
    >>> best_layer({"final": 0.80, "block4": 0.85, "block7": 0.85}), best_layer({"final": None, "block4": None})
    ('block4', 'final')
    """
    scored = [layer for layer, s in scores.items() if s is not None]
    return max(scored, key=lambda layer: scores[layer]) if scored else next(iter(scores))
