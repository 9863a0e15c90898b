"""Optional parts of featx, and the pip extra that installs each (``pyproject.toml``).

``pip install featx`` installs what every command needs: ONNX Runtime, onnx, scikit-learn,
joblib, numpy, h5py, and Pillow, tokenizers, tqdm, skops, threadpoolctl, pandas. The rest:

============  =====================================  ==================================
extra         installs                               for
============  =====================================  ==================================
plots         matplotlib                             confusion-matrix PNGs, benchmark plots
parquet       pyarrow                                Parquet manifests, tables, HF dataset folders
fine-foods    rdata                                  ``builtin:fine-foods`` (R data)
export        torch, transformers, weight packages   ``featx export``, first use of a backbone
finetune      export's                               fine-tuning (``featx bench``)
timm          timm (and export's)                    ``timm:NAME`` backbones
bench         finetune's, plots', psutil             ``featx bench`` with memory figures
deploy        skl2onnx, onnxruntime-extensions       ``featx deploy`` (``--raw``: the extensions)
dask          distributed (and dask)                 ``--dask``: extraction and head selection on a cluster
dev           pytest, sentence-transformers, ...     the test suite
============  =====================================  ==================================

A missing one is met by :class:`~featx.errors.MissingDependencyError` naming the extra.

Examples
--------
>>> require("numpy", "none", "arrays").__name__
'numpy'
>>> require("no_such_module_xyz", "plots", "drawing a plot")
Traceback (most recent call last):
...
featx.errors.MissingDependencyError: drawing a plot needs no_such_module_xyz: pip install 'featx[plots]'
"""

from __future__ import annotations

import importlib

from .errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, purpose: str):
    """Import ``module``, or raise :class:`MissingDependencyError` saying which extra installs it.

    Parameters
    ----------
    module : str
        The import name (``"matplotlib"``, ``"pyarrow"``).
    extra : str
        The featx extra that installs it (``"plots"``).
    purpose : str
        What needs it, to start the message (``"the confusion-matrix PNG"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"{purpose} needs {module}: pip install 'featx[{extra}]'") from e
