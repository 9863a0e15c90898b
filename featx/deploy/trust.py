"""A deployed file's metadata checked against its graph before it is used (class 4 of issue #24).

``featx.*`` metadata_props are plain strings anyone can edit: the class names, the modality, the
preprocessing and the tokenizer's file name. :func:`check_metadata` checks their types, that the
classes are as many as the probabilities the graph outputs and in the order its classifier node
names them, and that the tokenizer sits beside the file (never ``../../etc/passwd``).

Examples
--------
>>> check_metadata("m.onnx", {"modality": "image", "classes": ["a", "b"], "preprocess": {"size": 8}},
...                probabilities_width=2, graph_labels=["a", "b"])
>>> check_metadata("m.onnx", {"modality": "image", "classes": ["b", "a"], "preprocess": {"size": 8}},
...                probabilities_width=2, graph_labels=["a", "b"])
Traceback (most recent call last):
...
featx.errors.DeployError: m.onnx: its featx.classes ['b', 'a'] are not the classes its graph predicts, in order (['a', 'b']); the metadata was edited: deploy the head again (featx deploy HEAD --out FILE)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DeployError, SpecError
from ..specs.bounds import confined

MODALITIES = ("image", "text")
#: Attributes of ONNX-ML classifier nodes that hold the class names, in the order of the probabilities.
LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


def _redeploy(path) -> str:
    return f"{path}: the metadata was edited or damaged: deploy the head again (featx deploy HEAD --out FILE)"


def check_metadata(path, metadata: dict, *, probabilities_width=None, graph_labels=None) -> None:
    """Types and cross-checks of a deployed file's ``featx.*`` metadata; a DeployError names the key.

    ``probabilities_width`` is the graph's static number of probability columns (None: unknown or no
    such output); ``graph_labels`` the class names its classifier node holds (None: none found).
    """
    modality = metadata.get("modality")
    if modality not in MODALITIES:
        raise DeployError(f"{path}: featx.modality must be one of {MODALITIES}, got {modality!r}; {_redeploy(path)}")
    classes = metadata.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                          for c in classes)):
        raise DeployError(f"{path}: featx.classes must be a non-empty JSON list of class names, got "
                          f"{str(classes)[:80]!r}; {_redeploy(path)}")
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise DeployError(f"{path}: featx.classes repeats a class name; {_redeploy(path)}")
    if not isinstance(metadata.get("preprocess"), dict):
        raise DeployError(f"{path}: featx.preprocess must be a JSON object, got {str(metadata.get('preprocess'))[:80]!r}; "
                          f"{_redeploy(path)}")
    if isinstance(probabilities_width, int) and probabilities_width != len(names):
        raise DeployError(f"{path}: featx.classes names {len(names)} classes but the graph outputs "
                          f"{probabilities_width} probabilities; {_redeploy(path)}")
    target = metadata.get("target") if isinstance(metadata.get("target"), dict) else {}
    if target.get("kind") == "multi":  # one binary classifier per label (featx.deploy.targets): labels 0/1
        if graph_labels is not None and not {str(c) for c in graph_labels} <= {"0", "1", "False", "True"}:
            raise DeployError(f"{path}: a multi-label file's graph should hold binary classifiers, but it predicts "
                              f"{[str(c) for c in graph_labels]}; {_redeploy(path)}")
    elif graph_labels is not None and [str(c) for c in graph_labels] != names:
        raise DeployError(f"{path}: its featx.classes {names} are not the classes its graph predicts, in order "
                          f"({[str(c) for c in graph_labels]}); the metadata was edited: deploy the head again "
                          "(featx deploy HEAD --out FILE)")
    record = metadata.get("tokenizer")
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("file", ""), str)
                                   and isinstance(record.get("sha256", ""), (str, type(None)))):
        raise DeployError(f"{path}: featx.tokenizer must be a JSON object with a file name; {_redeploy(path)}")


def tokenizer_path(path: Path, record: dict | None) -> Path:
    """The tokenizer beside ``path`` that ``record`` names, confined to ``path``'s folder."""
    name = (record or {}).get("file", f"{Path(path).stem}.tokenizer.json")
    try:
        return confined(Path(path).parent, name, "featx.tokenizer.file", str(path))
    except SpecError as e:
        raise DeployError(str(e)) from None


def graph_labels(path) -> list | None:
    """The class names a deployed graph predicts, in order (None when it holds none, or several that differ).

    They are the ``classlabels_*`` of an ONNX-ML classifier node, or the constant table an
    ``ArrayFeatureExtractor`` looks the arg-max up in (skl2onnx's linear heads).
    """
    import onnx
    import onnx.numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    found: list[list] = []

    def visit(graph) -> None:
        constants = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "ArrayFeatureExtractor" and node.input and node.input[0] in constants:
                values = onnx.numpy_helper.to_array(constants[node.input[0]]).ravel().tolist()  # skl2onnx's classes
                found.append([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values])
            for attr in node.attribute:
                if attr.name in LABEL_ATTRIBUTES and len(attr.strings) + len(attr.ints):
                    values = onnx.helper.get_attribute_value(attr)
                    found.append([v.decode("utf-8", "replace") if isinstance(v, bytes) else int(v) for v in values])
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)

    visit(model.graph)
    # one classifier (or several that agree, e.g. a calibrated ensemble): its classes; otherwise unknown
    return found[0] if found and all(f == found[0] for f in found) else None
