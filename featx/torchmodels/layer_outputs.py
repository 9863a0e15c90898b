"""Intermediate layers in a torch module: where each named layer sits, and its pooled output beside the final one.

The names and their checks are :mod:`featx.specs.layers`' (torch-free); this is the torch side,
used by export (:func:`featx.torchmodels.export.export_module` with ``layers``), fine-tuning (the
blocks to freeze) and the benchmark's torch backbones. torch is imported only when
:func:`layered_module` runs.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import SpecError
from ..specs.layers import parse_layers


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
