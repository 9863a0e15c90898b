"""Classifier heads on frozen embeddings, at any number of rows.

::

    featx/heads/
      build.py    the pipelines and their grids: featx's vocabulary -> scikit-learn (pure)
      plan.py     exact or approximate, selection sample, in memory or streamed, by size
      select.py   select_head / train_heads: CV on a stratified sample, refit the winner on every row
      stream.py   the refit over chunks of rows, from an array or from the cache (same batches)
      knn.py      kNN on an inverted-file index rebuilt from plain arrays (safe to load)
      layer_choice.py select_layer: the layer of a backbone (featx.specs.layers) chosen by CV like any hyper-parameter

What each head does at which size ("auto"; ``strategy=`` overrides), ``n`` training rows:

============  ===================================  ===========================================
head          exact                                approximate
============  ===================================  ===========================================
logreg        L-BFGS while the matrix fits in      averaged SGD (log-loss, ``alpha = 1/(C n)``),
              memory (cost ~ n per iteration)      streamed over chunks of the cache
svm           libsvm SVC up to 10,000 rows         Nystroem (1000 landmarks) or linear + LinearSVC;
              (cost n^2 to n^3)                    SGD hinge when streamed
knn           brute force up to 20,000 rows        PCA to 128 dims + inverted-file index
              (every row scanned per query)        (each query scans ~1/8 of the rows)
============  ===================================  ===========================================

Every head cross-validates its grid on at most 10,000 rows (a stratified sample past that),
then refits the winner on all ``n``. The whole matrix is loaded only when it fits the memory
budget (default: half the free memory); otherwise rows are read from the HDF5 shards a chunk at
a time (``featx.cache.FeatureReader``).

Examples
--------
>>> from sklearn.datasets import load_digits
>>> X, y = load_digits(return_X_y=True)
>>> result = select_head("logreg", X[:300], y[:300], cv=3, n_jobs=1)
>>> result.kind, sorted(result.best_params)
('logreg', ['C', 'power', 'scale'])
>>> 0.8 < result.cv_mean <= 1.0
True
"""

from .build import (CALIBRATION_FOLDS, FEW_SHOT_PARAMS, HEADS, NYSTROEM_COMPONENTS, PCA_COMPONENTS, POWERS, SCALERS, SignedSqrt,
                    check_grid, check_kind, default_params, describe_params, grid_points, grid_size, head_grid,
                    head_pipeline)
from .knn import IVFKNeighborsClassifier
from .layer_choice import LayerSelection, best_layer, select_layer
from .plan import EXACT_ROWS, SELECT_ROWS, STRATEGIES, HeadPlan, default_memory_budget, plan_head
from .select import SelectionResult, check_n_jobs, resolve_heads, select_head, stratified_sample, train_heads

__all__ = ["HEADS", "SCALERS", "POWERS", "CALIBRATION_FOLDS", "FEW_SHOT_PARAMS", "NYSTROEM_COMPONENTS", "PCA_COMPONENTS", "STRATEGIES",
           "SELECT_ROWS", "EXACT_ROWS", "SignedSqrt", "IVFKNeighborsClassifier", "SelectionResult", "HeadPlan",
           "head_pipeline", "head_grid", "grid_size", "grid_points", "check_grid", "check_kind", "check_n_jobs",
           "default_params", "describe_params", "select_head", "train_heads", "resolve_heads", "plan_head",
           "default_memory_budget", "stratified_sample", "LayerSelection", "best_layer", "select_layer"]
