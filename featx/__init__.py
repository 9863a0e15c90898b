"""featx: transfer learning by feature extraction.

Export a frozen backbone to ONNX, cache a dataset's embeddings in HDF5 with
ONNX Runtime, and train scikit-learn heads on them.
"""

from .errors import FeatxError
from .version import __version__

# Everything else loads on first use, so that `featx --help` or a cached re-run pays only for what
# it uses (h5py, scikit-learn ~1 s, onnx, torch: tests/test_startup.py checks which modules load).
_LAZY = {
    "Backbone": "engine.backbone", "load_backbone": "factory",
    "FeatureReader": "cache", "iter_features": "cache", "load_features": "cache",
    "ExtractReport": "extraction.extract", "extract": "extraction.extract",
    "Dataset": "sources", "Item": "sources", "open_dataset": "sources",
    "EmbeddingTransformer": "estimators.transformer",
    "head_pipeline": "heads", "head_grid": "heads", "select_head": "heads", "train_heads": "heads",
    "SelectionResult": "heads",
    "evaluate_predictions": "heads.evaluate", "save_report": "heads.evaluate",
    "save_head": "heads.persist", "load_head": "heads.persist", "read_metadata": "heads.persist",
    "load_pipeline": "pipeline", "run_pipeline": "pipeline",
    "deploy_head": "deploy", "DeployedModel": "deploy",
    "ZeroShotClassifier": "estimators.zeroshot",
    "advise": "strategy",
    "audit": "quality",
}


def __getattr__(name):
    from importlib import import_module
    from importlib.util import find_spec

    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    elif not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:  # a subpackage: featx.sources
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'featx' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = ["FeatxError", "__version__", *_LAZY]
