"""EmbeddingTransformer inside scikit-learn's multi-output and regression pipelines, on texts
through the tiny text backbone: label sets with MultiOutputClassifier / OneVsRestClassifier, numbers
with Ridge and KNeighborsRegressor, cross-validated and cloned like any step."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputClassifier
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featx.estimators.transformer import EmbeddingTransformer
from featx.sources.targets import binarize

WORDS = ["dog", "night", "rain", "house", "tree", "car", "river", "hill"]


def corpus(n: int = 36, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts, sets, values = [], [], []
    for _ in range(n):
        words = list(rng.choice(WORDS[3:], size=3))
        tags = tuple(t for t in WORDS[:3] if rng.random() < 0.5)
        words += list(tags) * 2
        rng.shuffle(words)
        texts.append(" ".join(words))
        sets.append(tags)
        values.append(2.0 * tags.count("dog") + 1.0 * tags.count("rain"))
    return texts, sets, np.array(values)


def test_multi_output_and_one_vs_rest_pipelines_predict_label_sets(tiny_text_onnx):
    texts, sets, _ = corpus()
    Y, classes = binarize(sets)
    for head in (MultiOutputClassifier(LogisticRegression(max_iter=1000)),
                 OneVsRestClassifier(LogisticRegression(max_iter=1000))):
        pipe = make_pipeline(EmbeddingTransformer(str(tiny_text_onnx)), StandardScaler(), head).fit(texts, Y)
        pred = pipe.predict(texts)
        assert pred.shape == Y.shape == (len(texts), len(classes))
        assert (pred == Y).mean() > 0.8  # the tags are words of the texts: the embeddings carry them


def test_regression_pipelines_cross_validate(tiny_text_onnx):
    texts, _, y = corpus(seed=1)
    for reg in (Ridge(alpha=1.0), KNeighborsRegressor(n_neighbors=3)):
        pipe = make_pipeline(EmbeddingTransformer(str(tiny_text_onnx)), StandardScaler(), reg)
        pred = cross_val_predict(pipe, np.array(texts, dtype=object), y, cv=KFold(3, shuffle=True, random_state=0))
        assert pred.shape == y.shape and np.isfinite(pred).all()
        assert np.corrcoef(pred, y)[0, 1] > 0.5
