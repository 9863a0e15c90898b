"""Intermediate layers of a backbone: their names, where they sit in the torch module, their pooled outputs.

A backbone's features are the pooled output of its last layer (``final``). For data unlike the
pre-training data, earlier layers often transfer better (Yosinski et al., 2014), so an export can
carry pooled outputs of chosen intermediate layers beside the final one, computed in the same pass::

    featx export efficientnet-lite0 --layers block4,block10
      efficientnet-lite0.onnx   outputs: features (n, 1280), features_block4 (n, 40), features_block10 (n, 112)
      efficientnet-lite0.json   spec.layers = {"block4": 40, "block10": 112}; parity measured per output

Names, from the blocks featx finds in the module (:func:`module_blocks`):

- image backbones: ``blockK``, the output of the K-th block (0-based; EfficientNet-Lite0 has 16 MBConv
  blocks, ``block0`` to ``block15``), pooled as the final output is: the mean over height and width
  (tokens of a transformer: their mean);
- text encoders: ``layerK``, the hidden states after the K-th transformer layer (``layer0``: the
  embeddings' output; Hugging Face's ``hidden_states[K]``), pooled as the final output is: the mean
  over the attention mask, then unit length when the spec normalises.

``final`` (:data:`FINAL`) names the backbone's own output: the default wherever a layer is chosen
(:func:`featx.load_features`, ``featx train --layer``, :class:`featx.EmbeddingTransformer`).
The cache keeps each layer as its own feature set (:mod:`featx.cache`). torch is imported only when
:func:`layered_module` runs.

Examples
--------
>>> output_name("final"), output_name("block4")
('features', 'features_block4')
>>> check_layer(None, {"block4": 40}), check_layer("block4", {"block4": 40})
('final', 'block4')
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

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


def module_blocks(module, blocks=None):
    """``(stem, blocks, unused)`` of a torch backbone: modules before the blocks, the blocks, modules never run.

    EfficientNet (``_blocks``): stem = conv_stem + bn0. BERT-like (``encoder.layer``): stem =
    embeddings, unused = pooler (mean pooling does not use it). timm (``blocks``/``stages``) and
    generic modules with a ``blocks`` attribute: stem = the modules registered before it. ``blocks``
    given: those, no stem. ``(None, None, [])`` when no blocks are found.
    """
    inner = getattr(module, "model", module)
    if blocks is not None:
        return [], list(blocks), []
    if hasattr(inner, "_blocks"):
        return [inner._conv_stem, inner._bn0], list(inner._blocks), [getattr(inner, "_fc", None)]
    encoder = getattr(inner, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer"):
        return [inner.embeddings], list(encoder.layer), [getattr(inner, "pooler", None)]
    for name in ("blocks", "stages", "layers"):
        seq = getattr(inner, name, None)
        if seq is not None and hasattr(seq, "__len__"):
            stem = []
            for child_name, child in inner.named_children():
                if child_name == name:
                    break
                stem.append(child)
            return stem, list(seq), []
    return None, None, []


def available_layers(module, modality: str, blocks=None) -> dict:
    """``{name: torch module whose output is that layer}``, in depth order (see the module docstring)."""
    stem, found, _ = module_blocks(module, blocks)
    if found is None:
        return {}
    if modality == "image":
        return {f"block{k}": m for k, m in enumerate(found)}
    inner = getattr(module, "model", module)
    out = {"layer0": inner.embeddings} if hasattr(inner, "embeddings") else {}
    return out | {f"layer{k + 1}": m for k, m in enumerate(found)}


def layered_module(module, modality: str, names: Sequence[str], *, normalize: bool = False, blocks=None):
    """A torch module returning ``(final, layer_1, ...)``: the pooled outputs of ``module`` and of ``names``.

    Forward hooks catch each layer's output while ``module`` runs once; the outputs are pooled as
    the final one is (see the module docstring). ``module.layer_names`` lists ``names``.

    Raises
    ------
    SpecError
        A name the module does not have (the message lists those it has).
    """
    import torch

    names = parse_layers(names)
    where = available_layers(module, modality, blocks)
    unknown = [n for n in names if n not in where]
    if unknown:
        have = ", ".join(where) or "none (featx finds no blocks in it)"
        raise SpecError(f"{type(module).__name__} has no layer(s) {unknown}; its layers: {have}")

    class LayeredOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.module = module
            self.layer_names = names
            self.targets = [where[n] for n in names]  # a plain list: not registered twice

        def forward(self, *inputs):
            caught = {}
            hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: caught.__setitem__(k, out))
                     for k, m in enumerate(self.targets)]
            try:
                final = self.module(*inputs)
            finally:
                for hook in hooks:
                    hook.remove()
            return (final, *(_pool(caught[k], inputs) for k in range(len(names))))

    def _pool(x, inputs):
        x = x[0] if isinstance(x, (tuple, list)) else x
        if modality == "image":
            return x.mean(dim=(2, 3)) if x.dim() == 4 else x.mean(dim=1) if x.dim() == 3 else x
        mask = inputs[1].unsqueeze(-1).to(x.dtype)  # attention_mask
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if normalize else pooled

    return LayeredOutputs().eval()
