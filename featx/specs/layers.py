"""Intermediate layers of a backbone: their names, the ONNX outputs that carry them, the checks.

A backbone's features are the pooled output of its last layer (``final``). For data unlike the
pre-training data, earlier layers often transfer better (Yosinski et al., 2014), so an export can
carry pooled outputs of chosen intermediate layers beside the final one, computed in the same pass::

    featx export efficientnet-lite0 --layers block4,block10
      efficientnet-lite0.onnx   outputs: features (n, 1280), features_block4 (n, 40), features_block10 (n, 112)
      efficientnet-lite0.json   spec.layers = {"block4": 40, "block10": 112}; parity measured per output

Names, from the blocks featx finds in the torch module
(:func:`featx.torchmodels.layer_outputs.module_blocks`):

- image backbones: ``blockK``, the output of the K-th block (0-based; EfficientNet-Lite0 has 16 MBConv
  blocks, ``block0`` to ``block15``), pooled as the final output is: the mean over height and width
  (tokens of a transformer: their mean);
- text encoders: ``layerK``, the hidden states after the K-th transformer layer (``layer0``: the
  embeddings' output; Hugging Face's ``hidden_states[K]``), pooled as the final output is: the mean
  over the attention mask, then unit length when the spec normalises.

``final`` (:data:`FINAL`) names the backbone's own output: the default wherever a layer is chosen
(:func:`featx.load_features`, ``featx train --layer``, :class:`featx.EmbeddingTransformer`).
The cache keeps each layer as its own feature set (:mod:`featx.cache`). Where the layers sit in a
torch module and how their outputs are pooled there: :mod:`featx.torchmodels.layer_outputs`.

Examples
--------
>>> output_name("final"), output_name("block4")
('features', 'features_block4')
>>> check_layer(None, {"block4": 40}), check_layer("block4", {"block4": 40})
('final', 'block4')
"""

from __future__ import annotations

import re
from typing import Mapping

from ..errors import SpecError

#: The backbone's own (last, pooled) output.
FINAL = "final"
#: ONNX output name of the final features; a layer's is ``features_<name>``.
FINAL_OUTPUT = "features"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def output_name(layer: str) -> str:
    """The ONNX output that carries a layer's pooled features."""
    return FINAL_OUTPUT if layer == FINAL else f"{FINAL_OUTPUT}_{layer}"


def check_layer(layer, layers: Mapping[str, int], where: str = "this backbone") -> str:
    """``layer`` (None: :data:`FINAL`) if ``where`` has it, else :class:`~featx.errors.SpecError` listing them."""
    layer = FINAL if layer is None else layer
    if layer != FINAL and layer not in layers:
        have = ", ".join([FINAL, *layers])
        raise SpecError(f"{where} has no layer {layer!r}; it has: {have}. Intermediate layers are exported with "
                        f"`featx export NAME --layers {layer}` (then extract again, into a new cache)")
    return layer


def parse_layers(text) -> tuple[str, ...]:
    """``"block4, block10"`` or a sequence -> ``("block4", "block10")``; names checked, no repeats.

    Examples
    --------
    >>> parse_layers("block4, block10")
    ('block4', 'block10')
    """
    names = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    names = tuple(dict.fromkeys(n for n in names if n))
    for name in names:
        if name == FINAL or not _NAME.match(name):
            raise SpecError(f"a layer name is a letter then letters, digits or '_', and not {FINAL!r} (the "
                            f"backbone's own output, always there). Got {name!r}.")
    return names


#: Between a backbone's name and the layers its export carries: ``efficientnet-lite0@block4,block10``.
LAYERED = "@"


def layered_name(name: str, layers) -> str:
    """The name of ``name``'s export that carries ``layers`` beside its final output.

    A layered export is a model file of its own, beside the plain one: caches and heads made with
    the plain export stay valid (see :mod:`featx.torchmodels.export`).

    Examples
    --------
    >>> layered_name("efficientnet-lite0", "block4, block10")
    'efficientnet-lite0@block4,block10'
    >>> split_layered("efficientnet-lite0@block4,block10"), split_layered("all-minilm-l6-v2")
    (('efficientnet-lite0', ('block4', 'block10')), ('all-minilm-l6-v2', ()))
    """
    return f"{name}{LAYERED}{','.join(parse_layers(layers))}"


def split_layered(name: str) -> tuple[str, tuple[str, ...]]:
    """``NAME@L1,L2`` -> ``(NAME, (L1, L2))``; a name without layers -> ``(name, ())``."""
    base, sep, layers = str(name).rpartition(LAYERED)
    if not sep or not base or "/" in layers:
        return str(name), ()
    return base, parse_layers(layers)


def layered_suffix(layers) -> str:
    """What a layered export adds to its base's file stem: ``.layers-block4-block10`` ("" for none)."""
    return f".layers-{'-'.join(layers)}" if layers else ""

