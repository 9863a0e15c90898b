"""Deploy: a trained head and its exact backbone fused into one ONNX file, gated on parity.

::

    HEAD.skops + HEAD.json --load_head--> sklearn pipeline --head_to_onnx (skl2onnx + converters)--> head graph
    backbone .onnx (fingerprint checked) -----------------------------------------------------> backbone graph
                                           fuse_graphs (onnx.compose) + metadata_props --> staged file
                                           measure_parity vs featx predict (<= 1e-4, labels equal) --> OUT.onnx

    package layout
      converters.py   featx's own skl2onnx converters (SignedSqrt, scalers, kNN) and their registry
      head.py         a fitted head -> ONNX: float32 features in, label + probabilities out
      compose.py      backbone graph + head graph -> one model; metadata_props in and out
      parity.py       the gate: which items, both paths, the report
      model.py        DeployedModel: run a deployed file with featx's preprocessing
      build.py        deploy_head: the steps above, publishing the file only when the gate passes
      raw.py          `--raw`: decoding, resizing and tokenising inside the graph (onnxruntime-extensions)

The one guarantee: a file exists at ``OUT`` only if, on real items, its probabilities are
within :data:`PARITY_TOLERANCE` of ``featx predict`` with the head and every label agrees.

A deployed file has the backbone's inputs (``pixel_values`` (n, 3, H, W) float32, preprocessed;
or ``input_ids``, ``attention_mask``, ``token_type_ids`` (n, L) int64) and two outputs:
``label`` (n,) (the class names, strings) and ``probabilities`` (n, C) float32, columns in
``classes`` order (a head without probabilities has ``label`` only). Its ``metadata_props``
hold, as JSON under ``featx.KEY``:

==============  ==========================================================================
key             value
==============  ==========================================================================
format          layout version (1)
version         featx version that wrote it
modality        ``"image"`` or ``"text"``
preprocess      featx's preprocessing: ``size``, ``resize``, ``interpolation``, ``mean``,
                ``std`` (images); ``max_length`` (texts)
inputs          the input names, types and shapes
outputs         ``["label", "probabilities"]``
classes         class names in probability-column order
backbone        name, ``fingerprint_id``, full fingerprint, precision (fp32/fp16/int8) and
                the export's recorded parity (vs PyTorch, or vs fp32 for a variant)
head            the head file, its sha256, kind, parameters, steps
tokenizer       texts: the tokenizer file beside the model, its sha256, ``max_length``
parity          the gate's measurement: items, max difference, labels that differ
==============  ==========================================================================

Examples
--------
>>> from featx.deploy import deploy_head, DeployedModel            # doctest: +SKIP
>>> result = deploy_head("heads/logreg.skops", "digits.onnx")       # doctest: +SKIP
>>> result.parity.max_abs_diff <= 1e-4                             # doctest: +SKIP
True
>>> DeployedModel("digits.onnx").predict(["seven.png"])            # doctest: +SKIP
array(['7'], dtype=object)
"""

from .build import PRECISIONS, DeployResult, deploy_head
from .converters import CONVERTERS, register_converter
from .model import DeployedModel, Predictions
from .parity import DEFAULT_PARITY_ITEMS, PARITY_TOLERANCE, ParityReport

__all__ = ["deploy_head", "DeployResult", "DeployedModel", "Predictions", "ParityReport", "PARITY_TOLERANCE",
           "DEFAULT_PARITY_ITEMS", "PRECISIONS", "CONVERTERS", "register_converter"]
