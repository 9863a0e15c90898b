"""Backbone specs: what a backbone is, how to load it, and how to prepare its input.

A spec is a frozen dataclass read from a TOML file (one file per backbone): the bundled
``models/*.toml``, the user's own in the folders named by ``$FEATX_MODELS``
(``os.pathsep``-separated), or one given as ``featx export --spec FILE.toml``
(:func:`load_spec_file`). Or it is built from a recipe name:

- ``timm:NAME`` -- any timm model (``timm:resnet50``); its preprocessing comes
  from timm's pretrained config at export time;
- ``hf:MODEL`` -- a Hugging Face image or text encoder by hub id or local folder, and
  ``hf:MODEL#image`` / ``hf:MODEL#text`` -- a tower of a CLIP or SigLIP model; their
  preprocessing and pooling come from the model's files (:mod:`featx.specs.hfspec`).

Any ``torch.nn.Module`` can be exported from Python with :func:`featx.torchmodels.export.export_module`.

Examples
--------
>>> from featx.specs.registry import get_spec
>>> spec = get_spec("efficientnet-lite0")
>>> spec.modality, spec.dim, spec.preprocess.size
('image', 1280, 224)
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError
from .hfspec import HF_KINDS, check_pooling, hf_spec_dict, merge_spec, source_name
from .spec import (IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, ImagePreprocess, TextPreprocess,  # noqa: F401
                   preprocess_from_dict, spec_file_stem)

#: The environment variable naming folders of the user's own spec files (``os.pathsep``-separated).
USER_MODELS_ENV = "FEATX_MODELS"
#: Top-level keys of a spec file (``source`` and ``preprocess`` are sections).
SPEC_KEYS = ("name", "modality", "dim", "pooling", "normalize", "license", "description", "source", "preprocess")


def models_dir() -> Path:
    """The folder of bundled specs: ``featx/models`` in a wheel, ``models/`` in a checkout."""
    package = Path(__file__).resolve().parent.parent  # featx/
    for candidate in (package / "models", package.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise SpecError(f"no models/ folder found in or beside {package}; reinstall featx")


def user_model_dirs() -> list[Path]:
    """The folders named by ``$FEATX_MODELS`` (``os.pathsep``-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get(USER_MODELS_ENV, "").split(os.pathsep) if p.strip()]


@dataclass(frozen=True)
class SpecEntry:
    """A spec file: its spec as written (``written``), where it came from, and the spec to use.

    ``origin`` is ``"bundled"`` or ``"user"``; for a transformers source (``hf``, ``hf-image``,
    ``hf-clip``) the file's keys are laid over what featx derives from the model (:meth:`resolve`).
    """

    path: Path
    origin: str
    written: Mapping[str, Any]
    spec: BackboneSpec

    def resolve(self) -> BackboneSpec:
        """The spec to export: a transformers source merged with what its model's files say."""
        if self.spec.source.get("kind") not in HF_KINDS:
            return self.spec
        try:
            derived = hf_spec_dict(source_name(self.written["source"]))
            spec = BackboneSpec.from_dict(merge_spec(derived, self.written))
        except SpecError as e:
            raise SpecError(f"{self.path}: {e}") from None
        check_pooling("dual" if spec.source["kind"] == "hf-clip" else spec.modality, spec.pooling, str(self.path))
        return spec


def load_spec_file(path, origin: str = "user") -> SpecEntry:
    """Read one spec file (TOML, the bundled format).

    Raises
    ------
    SpecError
        The file cannot be read, is not TOML, or a key is missing, unknown or invalid: the message
        names the file and the key.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            written = tomllib.load(f)
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec file: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    unknown = sorted(set(written) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r}; a spec file has the keys {', '.join(SPEC_KEYS)}")
    for section in ("source", "preprocess"):
        if not isinstance(written.get(section, {}), dict):
            raise SpecError(f"{path}: {section} must be a [{section}] table, got {written[section]!r}")
    source = dict(written.get("source", {}))
    model = source.get("model")
    if source.get("kind") in HF_KINDS and isinstance(model, str) and model.startswith(("./", "../")):
        source["model"] = str((path.parent / model).resolve())  # relative to the spec file
        written = {**written, "source": source}
    try:
        spec = BackboneSpec.from_dict(written)
        if not isinstance(spec.name, str) or not spec.name.strip():
            raise SpecError(f"name must be a non-empty string, got {spec.name!r}")
        if "kind" not in spec.source:
            raise SpecError("source.kind is missing: it names the recipe (efficientnet-lite, timm, hf, hf-image, "
                            "hf-clip)")
    except (SpecError, TypeError) as e:
        raise SpecError(f"{path}: {e}") from None
    return SpecEntry(path, origin, written, spec)


@dataclass(frozen=True)
class Registry:
    """Every spec file found: bundled ones, then those in ``$FEATX_MODELS``; and the broken ones."""

    entries: Mapping[str, SpecEntry]
    problems: Mapping[Path, SpecError]
    claimed: Mapping[str, Path] = dataclasses.field(default_factory=dict)  # broken files: the name they give

    @classmethod
    def scan(cls) -> "Registry":
        entries: dict[str, SpecEntry] = {}
        problems: dict[Path, SpecError] = {}
        claimed: dict[str, Path] = {}
        folders = [(models_dir(), "bundled")] + [(d, "user") for d in user_model_dirs()]
        for folder, origin in folders:
            if origin == "user" and not folder.is_dir():
                problems[folder] = SpecError(f"{folder}: named by ${USER_MODELS_ENV} but not a folder")
                continue
            for path in sorted(folder.glob("*.toml")):
                try:
                    entry = load_spec_file(path, origin)
                except SpecError as e:
                    if origin == "bundled":
                        raise
                    problems[path] = e
                    claimed[_intended_name(path)] = path
                    continue
                name = entry.spec.name
                if name in entries or is_recipe(name):
                    first = "a recipe prefix" if is_recipe(name) else str(entries[name].path)
                    problems[path] = SpecError(f"{path}: the name {name!r} is taken ({first}); rename it")
                    continue
                entries[name] = entry
        return cls(entries, problems, claimed)


def _intended_name(path: Path) -> str:
    """The name a broken spec file gives (its ``name`` key when it still parses), else its file stem."""
    try:
        with open(path, "rb") as f:
            name = tomllib.load(f).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else path.stem


def _registry() -> dict[str, BackboneSpec]:
    return {name: entry.spec for name, entry in Registry.scan().entries.items()}


def list_specs() -> list[BackboneSpec]:
    """All registered backbones (bundled and ``$FEATX_MODELS``), sorted by name."""
    return sorted(_registry().values(), key=lambda s: s.name)


def is_recipe(name: str) -> bool:
    """Whether ``name`` is a recipe name (``timm:NAME``, ``hf:MODEL``) rather than a registered one."""
    return isinstance(name, str) and name.startswith(("timm:", "hf:"))




def get_spec(name: str, *, resolve: bool = True) -> BackboneSpec:
    """Look up a registered backbone (bundled or ``$FEATX_MODELS``), or build the spec of a recipe.

    ``timm:NAME`` needs nothing; ``hf:MODEL[#TOWER]`` reads the model's configuration files
    (:func:`featx.specs.hfspec.hf_spec_dict`), and so does a spec file with a transformers source,
    unless ``resolve=False`` (then its spec is returned as the file writes it: enough for its
    name and file stem).
    """
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"a backbone name must be a non-empty string, got {name!r}")
    if name.startswith("timm:"):
        arch = name[5:]
        return BackboneSpec(
            name=name,
            modality="image",
            source={"kind": "timm", "arch": arch, "packages": ["timm"]},
            preprocess=ImagePreprocess(),  # replaced by timm's pretrained config at export
            pooling="timm forward_features + forward_head(pre_logits=True)",
            license="see the timm model card",
            description=f"timm model {arch!r} (downloads weights from the Hugging Face hub)",
        )
    if name.startswith("hf:"):
        return BackboneSpec.from_dict(hf_spec_dict(name))
    registry = Registry.scan()
    if name in registry.entries:
        return registry.entries[name].resolve() if resolve else registry.entries[name].spec
    if name in registry.claimed:
        raise registry.problems[registry.claimed[name]]
    unreadable = f"; spec files that could not be read: {', '.join(map(str, registry.problems))}" \
        if registry.problems else ""
    raise SpecError(
        f"unknown backbone {name!r}. Known: {', '.join(sorted(registry.entries))}; "
        "or use 'timm:NAME', 'hf:HUB_ID', 'hf:/path/to/model', a spec file (featx export --spec FILE.toml, or a "
        f"folder in ${USER_MODELS_ENV}), or a path to an exported .onnx file{unreadable}."
    )
