"""The record beside an exported ``.onnx`` file, read: spec, sha256, inputs, tokenizer file.

Reading only, and nothing but the spec dataclasses: the engine (:mod:`featx.engine.backbone`)
opens an exported file through :class:`ModelFile` without reaching the registry or the torch
side. Where files live and how records are written: :mod:`featx.specs.exported`.

Examples
--------
>>> from featx.specs.record import ModelFile, spec_path_for
>>> spec_path_for("models/efficientnet-lite0.onnx").name
'efficientnet-lite0.json'
>>> model = ModelFile.read(tiny_onnx)
>>> model.spec.name, model.spec.dim, model.tokenizer_path is None
('tiny-cnn', 8, True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError
from .spec import BackboneSpec


def spec_path_for(onnx_path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def tokenizer_name(stem: str) -> str:
    """The tokenizer file of the model ``STEM.onnx``: ``STEM.tokenizer.json``."""
    return f"{stem}.tokenizer.json"


def read_spec_file(path) -> dict:
    """Read a model record (written by :func:`publish` or :func:`write_spec`, or by hand with the same keys)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(
            f"no spec file {path} beside the ONNX model; export with `featx export`, "
            "or write one with featx.specs.exported.write_spec(onnx_path, spec)"
        ) from None
    except json.JSONDecodeError as e:
        raise SpecError(f"spec file {path} is not valid JSON: {e}") from None
    if "spec" not in record or "onnx" not in record:
        raise SpecError(f"spec file {path} lacks the 'spec' and 'onnx' sections")
    return record


@dataclass(frozen=True)
class ModelFile:
    """An exported model on disk: the ``.onnx`` path, its record, its spec and (texts) its tokenizer."""

    onnx_path: Path
    record: dict
    spec: BackboneSpec
    tokenizer_path: Path | None

    @classmethod
    def read(cls, onnx_path) -> "ModelFile":
        """Read the record beside ``onnx_path``.

        Raises
        ------
        SpecError
            No ONNX file, no (or a broken) record, or a text model without its tokenizer file.
        """
        path = Path(onnx_path)
        if not path.is_file():
            raise SpecError(f"no ONNX model at {path}")
        record = read_spec_file(spec_path_for(path))
        spec = BackboneSpec.from_dict(record["spec"])
        tokenizer = None
        if spec.modality == "text":
            tokenizer = path.parent / ((record.get("tokenizer") or {}).get("file") or tokenizer_name(path.stem))
            if not tokenizer.is_file():
                raise SpecError(f"text backbone {spec.name!r} has no tokenizer file at {tokenizer}")
        return cls(path, record, spec, tokenizer)
