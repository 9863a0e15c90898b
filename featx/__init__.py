"""featx: transfer learning by feature extraction.

Export a frozen backbone to ONNX, cache a dataset's embeddings in HDF5 with
ONNX Runtime, and train scikit-learn heads on them.
"""

__version__ = "0.1.0"

from .backbone import Backbone, load_backbone  # noqa: E402
from .errors import FeatxError  # noqa: E402

__all__ = ["Backbone", "FeatxError", "load_backbone", "__version__"]
