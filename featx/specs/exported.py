"""Exported model files: where they live, the spec JSON beside each ``.onnx``, and name -> file.

::

    $FEATX_HOME/models/                      exported_dir()
      efficientnet-lite0.onnx                the model (dynamic batch axis)
      efficientnet-lite0.json                its record: spec, sha256, inputs/outputs, exporter, parity
      efficientnet-lite0-int8.onnx           a variant (variant_stem): a model of its own ...
      efficientnet-lite0-int8.json           ... whose record adds a "quantization" section
      all-minilm-l6-v2.onnx
      all-minilm-l6-v2.json
      all-minilm-l6-v2.tokenizer.json        text models: the tokenizer, named in the record

The guarantee: a record is published last, so a ``.json`` beside an ``.onnx`` means a complete
export (:func:`publish`). Every record, whether from :mod:`featx.torchmodels.export` (fp32),
:mod:`featx.torchmodels.quantize` (int8/fp16) or :func:`write_spec` (a model exported elsewhere), is built by
:func:`model_record`. Nothing here imports torch or exports anything: :mod:`featx.torchmodels.provision`
exports on first use.

Examples
--------
>>> from featx.specs.exported import variant_stem
>>> variant_stem("efficientnet-lite0", "int8")
'efficientnet-lite0-int8'
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import SpecError
from ..files import sha256_file, write_text_atomically
from .record import ModelFile, read_spec_file, spec_path_for, tokenizer_name  # noqa: F401
from .hfspec import local_stem
from .layers import layered_suffix, split_layered
from .registry import get_spec, is_recipe
from ..files import featx_home
from .spec import BackboneSpec, spec_file_stem
from ..version import __version__

#: Version of the record layout (``featx_spec_format``).
SPEC_FORMAT = 1


def exported_dir() -> Path:
    """Where ``featx export`` puts models: ``$FEATX_HOME/models``."""
    return featx_home() / "models"


def exported_path(name: str) -> Path:
    """Where ``featx export NAME`` puts a registered backbone (or a ``timm:``/``hf:`` recipe).

    A recipe name needs no look-up (an ``hf:`` model exported before is found offline); a local
    folder's is named by its content (:attr:`featx.specs.spec.BackboneSpec.file_stem`).
    """
    base, layers = split_layered(name)
    stem = local_stem(base) or (spec_file_stem(base) if is_recipe(base) else get_spec(base, resolve=False).file_stem)
    return exported_dir() / f"{stem}{layered_suffix(layers)}.onnx"


def variant_stem(stem: str, mode: str) -> str:
    """``efficientnet-lite0`` + ``int8`` -> ``efficientnet-lite0-int8``."""
    return f"{stem}-{mode}"


def find_onnx(name_or_path) -> Path | None:
    """A backbone name, variant name or ``.onnx`` path -> its exported file; None when not exported yet.

    A path (anything ending in ``.onnx``, or an existing file) must exist. A name is looked up in
    :func:`exported_dir`: first as a file stem (``efficientnet-lite0-int8``, a variant made by
    ``featx export --quantize``), then as a registered backbone or recipe.

    Raises
    ------
    SpecError
        A path with no file, or a name that is neither exported nor registered.
    """
    text = str(name_or_path)
    if text.endswith(".onnx") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"no ONNX model at {path}")
        return path
    variant = exported_dir() / f"{text}.onnx"
    if variant.is_file() and spec_path_for(variant).is_file():
        return variant
    path = exported_path(text)  # an unknown name raises here
    return path if path.is_file() and spec_path_for(path).is_file() else None


def locate_onnx(name_or_path) -> Path:
    """Like :func:`find_onnx`, but a backbone not exported yet is an error that says what to run."""
    path = find_onnx(name_or_path)
    if path is None:
        raise SpecError(f"backbone {str(name_or_path)!r} is not exported yet; run `featx export {name_or_path}`")
    return path


# --------------------------------------------------------------------------- writing
def model_record(spec: BackboneSpec, onnx_path, *, exporter: dict, parity: dict, tokenizer: dict | None = None,
                 session=None, opset: int | None = None, **sections) -> dict:
    """The record of a model file: the one builder for fp32 exports, variants and outside models.

    Parameters
    ----------
    spec : BackboneSpec
    onnx_path : path
        The ONNX file as it is now (hashed here); the record names it by its file name.
    exporter : dict
        What made the file (:func:`tool_versions`, or ``{"method": "external"}``).
    parity : dict
        How close it is to its reference (``max_abs_diff`` at least).
    tokenizer : dict, optional
        ``{"file", "sha256"}`` of a text model's tokenizer (:func:`copy_tokenizer`).
    session : featx.engine.runtime.Session, optional
        When given, the record lists the model's inputs and outputs, with ``opset``.
    **sections
        Further sections (``fusion``, ``quantization``).
    """
    onnx_path = Path(onnx_path)
    onnx = {"file": onnx_path.name, "sha256": sha256_file(onnx_path)}
    if session is not None:
        onnx |= {"opset": opset, "inputs": [_io(i) for i in session.inputs],
                 "outputs": [_io(o) for o in session.session.get_outputs()]}
    return {"featx_spec_format": SPEC_FORMAT, "spec": spec.to_dict(), "onnx": onnx, "tokenizer": tokenizer,
            "exporter": exporter, "parity": parity, **sections}


def _io(arg) -> dict:
    return {"name": arg.name, "shape": [d if isinstance(d, int) else str(d) for d in arg.shape], "type": arg.type}


def tool_versions(method: str, *modules: str) -> dict:
    """The ``exporter`` section: featx's version, the versions of ``modules``, the method and the time."""
    versions = {m: importlib.import_module(m).__version__ for m in modules}
    return {"featx": __version__, **versions, "method": method,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def copy_tokenizer(tokenizer_json, folder, stem: str) -> dict:
    """Copy a ``tokenizer.json`` into ``folder`` as the tokenizer of ``STEM.onnx``; its record section."""
    target = Path(folder) / tokenizer_name(stem)
    if Path(tokenizer_json).resolve() != target.resolve():
        shutil.copyfile(tokenizer_json, target)
    return {"file": target.name, "sha256": sha256_file(target)}


def staging_dir(out_dir, stem: str):
    """A temporary folder inside ``out_dir`` to build ``STEM.onnx`` in (a context manager, removed after)."""
    return tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{stem}-")


def publish(staged_onnx, record: dict, out_dir) -> Path:
    """Move a model built in a staging folder (and its tokenizer) into ``out_dir``, its record last.

    The record's presence marks a complete export: a reader never sees a record whose model is
    not in place yet.
    """
    staged_onnx, out_dir = Path(staged_onnx), Path(out_dir)
    staged_record = staged_onnx.parent / "spec.json"
    staged_record.write_text(json.dumps(record, indent=2))
    onnx_path = out_dir / record["onnx"]["file"]
    os.replace(staged_onnx, onnx_path)
    if record.get("tokenizer"):
        name = record["tokenizer"]["file"]
        os.replace(staged_onnx.parent / name, out_dir / name)
    os.replace(staged_record, spec_path_for(onnx_path))
    return onnx_path


def write_spec(onnx_path, spec: BackboneSpec, *, tokenizer_json=None) -> Path:
    """Write a minimal record beside an existing ONNX file (for models exported elsewhere).

    Returns the record's path.
    """
    onnx_path = Path(onnx_path)
    tokenizer = None if tokenizer_json is None else copy_tokenizer(tokenizer_json, onnx_path.parent, onnx_path.stem)
    record = model_record(spec, onnx_path, tokenizer=tokenizer, exporter={"method": "external"},
                          parity={"max_abs_diff": None})
    return write_text_atomically(spec_path_for(onnx_path), json.dumps(record, indent=2))
