"""featx: transfer learning by feature extraction.

Export a frozen backbone to ONNX, cache a dataset's embeddings in HDF5 with
ONNX Runtime, and train scikit-learn heads on them.
"""

from .version import __version__
from .engine.backbone import Backbone, load_backbone
from .cache import FeatureReader, iter_features, load_features
from .errors import FeatxError
from .extraction.extract import ExtractReport, extract
from .sources import Dataset, Item, open_dataset

# scikit-learn-based parts load on first use (importing sklearn costs ~2 s).
_LAZY = {
    "EmbeddingTransformer": "estimators.transformer",
    "head_pipeline": "heads", "head_grid": "heads", "select_head": "heads", "train_heads": "heads",
    "SelectionResult": "heads",
    "evaluate_predictions": "heads.evaluate", "save_report": "heads.evaluate",
    "save_head": "heads.persist", "load_head": "heads.persist", "read_metadata": "heads.persist",
    "load_pipeline": "pipeline", "run_pipeline": "pipeline",
    "deploy_head": "deploy", "DeployedModel": "deploy",
    "ZeroShotClassifier": "estimators.zeroshot",
    "audit": "audit",
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'featx' has no attribute {name!r}")


__all__ = ["Backbone", "Dataset", "FeatureReader", "iter_features", "ExtractReport", "FeatxError", "Item", "extract", "load_backbone",
           "load_features", "open_dataset", "__version__", *_LAZY]
