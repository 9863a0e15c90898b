"""Backbone graph + head graph -> one ONNX model, with featx's facts in ``metadata_props``.

::

    pixel_values (n, 3, H, W) float32            input_ids, attention_mask, token_type_ids (n, L) int64
            \\                                              /
             backbone graph (the exact exported file) -> features (n, d) float32
                                                          |
                                   head graph (``head/`` prefix) -> label (n,), probabilities (n, C)

The backbone's nodes and weights are copied as they are (same names, same opset), so the
fused file embeds exactly as the backbone file does; the head's names get the ``head/``
prefix so that nothing collides. ``onnx.compose.merge_models`` does the merge.
"""

from __future__ import annotations

import heapq
import json
from typing import Mapping

from ..errors import DeployError
from ..version import __version__
from .head import INPUT, ML_OPSET

__all__ = ["default_opset", "fuse_graphs", "set_metadata", "read_metadata_props", "PREFIX", "METADATA_PREFIX"]

#: Prefix of the head's node, edge and initializer names inside the fused graph.
PREFIX = "head/"
#: Prefix of featx's keys in ``metadata_props``.
METADATA_PREFIX = "featx."


def default_opset(model) -> int:
    """The default-domain opset a model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise DeployError("the backbone's ONNX file imports no default-domain opset; re-export it with `featx export`")


def fuse_graphs(backbone, head, features: str | None = None):
    """Merge a backbone ``ModelProto`` with a head from :func:`head_to_onnx`.

    ``features`` names the backbone output the head reads (default: the backbone's only output).
    A backbone exported with intermediate layers (``featx export --layers``) has one output per
    layer: the graph is first cut down to the nodes that output needs, so the fused file
    computes nothing the head does not read.

    Returns
    -------
    onnx.ModelProto
        The backbone's inputs; the head's outputs (``label``, ``probabilities``).

    Raises
    ------
    DeployError
        The backbone has several outputs and ``features`` names none of them, or its opsets
        clash with the head's.
    """
    from onnx import compose

    names = [o.name for o in backbone.graph.output]
    if features is None and len(names) == 1:
        features = names[0]
    if features not in names:
        raise DeployError(f"the backbone's ONNX file has outputs {names}; the head reads "
                          f"{features or 'one of them, unnamed'}")
    backbone = only_output(backbone, features)
    for entry in backbone.opset_import:  # the head's ML ops (SVM, ...) are unchanged from version 3 on
        if entry.domain == "ai.onnx.ml" and entry.version >= ML_OPSET:
            for own in head.opset_import:
                if own.domain == "ai.onnx.ml":
                    own.version = entry.version
    backbone = sorted_graph(backbone)
    head = compose.add_prefix(head, PREFIX, rename_outputs=False)
    head.ir_version = backbone.ir_version
    try:
        fused = compose.merge_models(backbone, head, io_map=[(features, PREFIX + INPUT)],
                                     producer_name="featx", producer_version=__version__,
                                     doc_string="featx deploy: backbone and scikit-learn head in one graph")
    except ValueError as e:  # onnx.compose names the clash (opset versions, IR versions, duplicate names)
        raise DeployError(f"cannot merge the backbone and head graphs: {e}") from None
    return fused


def only_output(model, name: str):
    """A copy of ``model`` with the one output ``name``, and only the nodes and initializers it needs.

    Not :class:`onnx.utils.Extractor`: it follows node inputs only, so the nodes whose outputs a
    subgraph (If, Loop, Scan) reads from the outer graph would be dropped. Here the graph's inputs,
    IR version and opsets stay as they were.
    """
    import onnx

    graph = model.graph
    if [o.name for o in graph.output] == [name]:
        return model
    needed, kept = {name}, []
    for node in reversed(graph.node):  # a valid graph is topologically sorted: consumers come after producers
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(_reads(node))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(reversed(kept))
    keep_init = [t for t in graph.initializer if t.name in needed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep_init)
    keep_out = [o for o in graph.output if o.name == name]
    del out.graph.output[:]
    out.graph.output.extend(keep_out)
    return out


def _reads(node) -> set[str]:
    """The names a node reads, those its subgraphs (If, Loop, Scan) read from the outer graph included."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for graph in [attr.g, *attr.graphs]:
            for inner in graph.node:
                names |= _reads(inner)
    return names


def sorted_graph(model):
    """The model with its nodes in topological order (ONNX Runtime runs any order; onnx.compose checks it).

    ``featx export --precision fp16`` writes its input casts last, for one.
    """
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    waiting = [sum(1 for name in set(node.input) if name not in available and name in producer)
               for node in graph.node]
    consumers: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in set(node.input):
            if name not in available and name in producer:
                consumers.setdefault(producer[name], []).append(i)
    queue = [i for i, count in enumerate(waiting) if count == 0]  # a heap: nodes keep their order where they can
    order = []
    while queue:
        i = heapq.heappop(queue)
        order.append(i)
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(queue, j)
    if len(order) != len(graph.node) or order == sorted(order):  # a cycle (onnx.compose will say), or sorted
        return model
    out = type(model)()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(graph.node[i] for i in order)
    return out


def set_metadata(model, facts: Mapping[str, object]) -> None:
    """Write ``facts`` into ``model.metadata_props`` as ``featx.KEY`` -> JSON (plain strings stay plain)."""
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    for prop in kept:
        model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in facts.items():
        text = value if isinstance(value, str) else json.dumps(value)
        model.metadata_props.add(key=METADATA_PREFIX + key, value=text)


def read_metadata_props(props: Mapping[str, str]) -> dict:
    """``{"featx.KEY": text}`` (an ONNX Runtime ``custom_metadata_map``) -> ``{KEY: value}``, JSON decoded."""
    out = {}
    for key, text in props.items():
        if not key.startswith(METADATA_PREFIX):
            continue
        try:
            out[key[len(METADATA_PREFIX):]] = json.loads(text)
        except ValueError:
            out[key[len(METADATA_PREFIX):]] = text
    return out

