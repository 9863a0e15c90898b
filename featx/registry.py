"""Backbone specs: what a backbone is, how to load it, and how to prepare its input.

A spec is a frozen dataclass read from ``models/*.toml`` (one file per backbone)
or built from a generic recipe name:

- ``timm:NAME`` -- any timm model (``timm:resnet50``); its preprocessing comes
  from timm's pretrained config at export time;
- ``hf:ID`` -- any Hugging Face text encoder (``hf:sentence-transformers/all-mpnet-base-v2``),
  mean-pooled and L2-normalised.

Any ``torch.nn.Module`` can be exported from Python with :func:`featx.export.export_module`.

Examples
--------
>>> from featx.registry import get_spec
>>> spec = get_spec("efficientnet-lite0")
>>> spec.modality, spec.dim, spec.preprocess.size
('image', 1280, 224)
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import SpecError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
MODALITIES = ("image", "text")
#: ``jpeg_draft`` keeps JPEGs at least this many times the resize target while decoding.
JPEG_DRAFT_OVERSAMPLE = 2


@dataclass(frozen=True)
class ImagePreprocess:
    """Image preprocessing: resize the shorter side, centre-crop, scale to [0, 1], normalise.

    ``resize=None`` resizes straight to ``size`` x ``size`` (no crop).
    ``jpeg_draft=True`` lets JPEG files decode at a reduced scale (1/2, 1/4 or 1/8, done by
    libjpeg inside the DCT) that keeps the shorter side at least twice the resize target:
    photo-sized JPEGs decode 2-3x faster, features change slightly (cosine > 0.998 on Lite0,
    measured in ``benchmarks/throughput.py``), and caches keep the two apart.
    """

    size: int = 224
    resize: int | None = 256
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    jpeg_draft: bool = False

    def __post_init__(self):
        if not (isinstance(self.size, int) and self.size >= 1):
            raise SpecError(f"preprocess.size must be a positive int, got {self.size!r}")
        if self.resize is not None and not (isinstance(self.resize, int) and self.resize >= self.size):
            raise SpecError(
                f"preprocess.resize must be None or an int >= size ({self.size}), got {self.resize!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise SpecError(
                f"preprocess.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SpecError(f"preprocess.mean/std must be 3 values (std > 0), got {self.mean}, {self.std}")
        if not isinstance(self.jpeg_draft, bool):
            raise SpecError(f"preprocess.jpeg_draft must be true or false, got {self.jpeg_draft!r}")

    @property
    def jpeg_min_side(self) -> int | None:
        """With ``jpeg_draft``: the shorter side a JPEG may be reduced to while decoding, else None."""
        return JPEG_DRAFT_OVERSAMPLE * (self.resize or self.size) if self.jpeg_draft else None

    def to_dict(self) -> dict:
        d = {"kind": "image", **dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}
        if not self.jpeg_draft:  # the default leaves the records (and cache fingerprints) of earlier versions as they were
            del d["jpeg_draft"]
        return d


@dataclass(frozen=True)
class TextPreprocess:
    """Text preprocessing: a ``tokenizers`` tokenizer, truncation at ``max_length`` tokens."""

    max_length: int = 256

    def __post_init__(self):
        if not (isinstance(self.max_length, int) and self.max_length >= 2):
            raise SpecError(f"preprocess.max_length must be an int >= 2, got {self.max_length!r}")

    def to_dict(self) -> dict:
        return {"kind": "text", **dataclasses.asdict(self)}


def preprocess_from_dict(d: Mapping[str, Any], modality: str) -> ImagePreprocess | TextPreprocess:
    d = {k: v for k, v in d.items() if k != "kind"}
    cls = ImagePreprocess if modality == "image" else TextPreprocess
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise SpecError(f"unknown {modality} preprocess keys {sorted(unknown)}; known: {sorted(names)}")
    return cls(**d)


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is: name, modality, source recipe, preprocessing, output dim."""

    name: str
    modality: str
    source: Mapping[str, Any]
    preprocess: ImagePreprocess | TextPreprocess
    dim: int | None = None
    pooling: str = ""
    normalize: bool = False
    license: str = "unknown"
    description: str = ""
    #: Pooled intermediate layers the export carries beside the final output: ``{name: dim}`` in depth
    #: order (see :mod:`featx.layers`); empty for a plain export.
    layers: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", {str(k): int(v) for k, v in dict(self.layers or {}).items()})
        if self.modality not in MODALITIES:
            raise SpecError(f"backbone {self.name!r}: modality must be one of {MODALITIES}, got {self.modality!r}")
        want = ImagePreprocess if self.modality == "image" else TextPreprocess
        if not isinstance(self.preprocess, want):
            raise SpecError(f"backbone {self.name!r}: {self.modality} backbone needs a {want.__name__}")

    @property
    def file_stem(self) -> str:
        """File-system safe name: ``timm:resnet50`` -> ``timm-resnet50``."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "modality": self.modality,
            "dim": self.dim,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "license": self.license,
            "description": self.description,
            "source": dict(self.source),
            "preprocess": self.preprocess.to_dict(),
        } | ({"layers": dict(self.layers)} if self.layers else {})  # a plain spec's record is unchanged

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BackboneSpec":
        try:
            modality = d["modality"]
            return cls(
                name=d["name"],
                modality=modality,
                source=dict(d.get("source", {})),
                preprocess=preprocess_from_dict(d.get("preprocess", {}), modality),
                dim=d.get("dim"),
                pooling=d.get("pooling", ""),
                normalize=bool(d.get("normalize", False)),
                license=d.get("license", "unknown"),
                description=d.get("description", ""),
                layers=d.get("layers") or {},
            )
        except KeyError as e:
            raise SpecError(f"backbone spec is missing the key {e.args[0]!r}") from None

    def replace(self, **changes) -> "BackboneSpec":
        return dataclasses.replace(self, **changes)


def models_dir() -> Path:
    """The folder of bundled specs: ``featx/models`` in a wheel, ``models/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "models", here.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise SpecError(f"no models/ folder found beside {here}; reinstall featx")


def _registry() -> dict[str, BackboneSpec]:
    specs = {}
    for path in sorted(models_dir().glob("*.toml")):
        with open(path, "rb") as f:
            try:
                spec = BackboneSpec.from_dict(tomllib.load(f))
            except (tomllib.TOMLDecodeError, SpecError) as e:
                raise SpecError(f"{path}: {e}") from None
        specs[spec.name] = spec
    return specs


def list_specs() -> list[BackboneSpec]:
    """All registered backbones, sorted by name."""
    return sorted(_registry().values(), key=lambda s: s.name)


def get_spec(name: str) -> BackboneSpec:
    """Look up a registered backbone, or build the spec of a ``timm:`` / ``hf:`` recipe."""
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
        hub_id = name[3:]
        return BackboneSpec(
            name=name,
            modality="text",
            source={"kind": "hf", "hub_id": hub_id, "packages": ["transformers"]},
            preprocess=TextPreprocess(max_length=512),  # capped by the tokenizer's model_max_length at export
            pooling="mean over the attention mask",
            normalize=True,
            license="see the Hugging Face model card",
            description=f"Hugging Face encoder {hub_id!r} (downloads weights from the hub)",
        )
    registry = _registry()
    if name not in registry:
        raise SpecError(
            f"unknown backbone {name!r}. Known: {', '.join(sorted(registry))}; "
            "or use 'timm:NAME', 'hf:HUB_ID', or a path to an exported .onnx file."
        )
    return registry[name]


def featx_home() -> Path:
    """Where featx keeps its files: ``$FEATX_HOME``, default ``~/.cache/featx`` (exported models in
    ``models/``, see :mod:`featx.modelfiles`; fetched datasets in ``data/``)."""
    return Path(os.environ.get("FEATX_HOME") or Path.home() / ".cache" / "featx").expanduser()
