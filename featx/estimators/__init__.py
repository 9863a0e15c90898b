"""scikit-learn estimators over backbones: EmbeddingTransformer, ZeroShotClassifier."""
