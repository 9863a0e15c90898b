"""featx: transfer learning by feature extraction.

Export a frozen backbone to ONNX, cache a dataset's embeddings in HDF5 with
ONNX Runtime, and train scikit-learn heads on them.
"""

__version__ = "0.1.0"

from .backbone import Backbone, load_backbone  # noqa: E402
from .cache import load_features  # noqa: E402
from .errors import FeatxError  # noqa: E402
from .extract import ExtractReport, extract  # noqa: E402
from .sources import Dataset, Item, open_dataset  # noqa: E402

__all__ = ["Backbone", "Dataset", "ExtractReport", "FeatxError", "Item", "extract", "load_backbone",
           "load_features", "open_dataset", "__version__"]
