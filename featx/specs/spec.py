"""What a backbone is: its spec, a frozen dataclass (name, modality, source recipe, preprocessing, dim).

Pure data, no look-up and no file: :mod:`featx.specs.registry` finds specs by name,
:mod:`featx.specs.record` reads the record beside an exported file.

Examples
--------
>>> from featx.specs.spec import BackboneSpec, ImagePreprocess
>>> spec = BackboneSpec(name="timm:resnet50", modality="image", source={"kind": "timm"},
...                     preprocess=ImagePreprocess(size=224, resize=256))
>>> spec.file_stem, spec.preprocess.to_dict()["interpolation"]
('timm-resnet50', 'bicubic')
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import SpecError
from . import bounds
from .layers import layered_suffix, split_layered

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
#: How the shorter-side resize and the centre crop are done (see :class:`ImagePreprocess`).
RESIZE_MODES = ("window", "full")
#: How a batch of texts is padded (see :class:`TextPreprocess`).
PADDINGS = ("longest", "max_length")
MODALITIES = ("image", "text")
#: ``jpeg_draft`` keeps JPEGs at least this many times the resize target while decoding.
JPEG_DRAFT_OVERSAMPLE = 2


@dataclass(frozen=True)
class ImagePreprocess:
    """Image preprocessing: resize the shorter side, centre-crop, scale to [0, 1], normalise.

    ``resize=None`` resizes straight to ``size`` x ``size`` (no crop).
    ``resize_mode`` says how the shorter-side resize and the crop are computed:

    - ``"window"`` (featx's own): both sides scaled by ``resize / shorter`` and rounded, and only
      the crop window resampled (Pillow maps each output pixel's centre through the window):
      fast, and a 1x5000 strip never becomes a huge intermediate image;
    - ``"full"``: the shorter side set to ``resize`` and the longer one truncated
      (``int(resize * longer / shorter)``), the whole image resized, then centre-cropped:
      exactly what torchvision's ``Resize`` + ``CenterCrop`` on PIL images and transformers'
      image processors compute (the two modes differ by up to one grey level when downsampling).
      Specs derived from a Hugging Face image processor use it.
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
    resize_mode: str = "window"

    def __post_init__(self):
        if not (isinstance(self.size, int) and self.size >= 1):
            raise SpecError(f"preprocess.size must be a positive int, got {self.size!r}")
        if self.resize is not None and not (isinstance(self.resize, int) and self.resize >= self.size):
            raise SpecError(
                f"preprocess.resize must be None or an int >= size ({self.size}), got {self.resize!r}"
            )
        bounds.check_image_side(self.size, "preprocess.size", "spec")  # before anything is allocated from it
        if self.resize is not None:
            bounds.check_image_side(self.resize, "preprocess.resize", "spec")
        if self.interpolation not in INTERPOLATIONS:
            raise SpecError(
                f"preprocess.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        object.__setattr__(self, "mean", tuple(bounds.numbers(self.mean, 3, "preprocess.mean", "spec")))
        object.__setattr__(self, "std", tuple(bounds.numbers(self.std, 3, "preprocess.std", "spec")))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SpecError(f"preprocess.mean/std must be 3 values (std > 0), got {self.mean}, {self.std}")
        if not isinstance(self.jpeg_draft, bool):
            raise SpecError(f"preprocess.jpeg_draft must be true or false, got {self.jpeg_draft!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise SpecError(f"preprocess.resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")

    @property
    def jpeg_min_side(self) -> int | None:
        """With ``jpeg_draft``: the shorter side a JPEG may be reduced to while decoding, else None."""
        return JPEG_DRAFT_OVERSAMPLE * (self.resize or self.size) if self.jpeg_draft else None

    def to_dict(self) -> dict:
        d = {"kind": "image", **dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}
        # Defaults are left out: the records (and cache fingerprints) of earlier versions stay as they were.
        if not self.jpeg_draft:
            del d["jpeg_draft"]
        if self.resize_mode == "window":
            del d["resize_mode"]
        return d


@dataclass(frozen=True)
class TextPreprocess:
    """Text preprocessing: a ``tokenizers`` tokenizer, truncation at ``max_length`` tokens.

    ``padding="longest"`` pads each batch to its longest text (the default: less work);
    ``"max_length"`` pads every text to ``max_length`` tokens, for models that pool a fixed
    position and were trained that way (SigLIP's text tower takes the last one).
    """

    max_length: int = 256
    padding: str = "longest"

    def __post_init__(self):
        if not (isinstance(self.max_length, int) and self.max_length >= 2):
            raise SpecError(f"preprocess.max_length must be an int >= 2, got {self.max_length!r}")
        bounds.check_max_length(self.max_length, "spec")
        if self.padding not in PADDINGS:
            raise SpecError(f"preprocess.padding must be one of {PADDINGS}, got {self.padding!r}")

    def to_dict(self) -> dict:
        d = {"kind": "text", **dataclasses.asdict(self)}
        if self.padding == "longest":  # the default leaves earlier records (and fingerprints) as they were
            del d["padding"]
        return d


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
    #: order (see :mod:`featx.specs.layers`); empty for a plain export.
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
        """File-system safe name: ``timm:resnet50`` -> ``timm-resnet50``.

        A model read from a local folder (its source records the folder's ``digest``) is named by
        what it is, not by how it was called: ``hf-my-vit-<digest>``, so new weights saved into the
        folder, or another folder called the same from elsewhere, give another file. An export with
        intermediate layers (``NAME@L1,L2``) sits beside the plain one: ``NAME.layers-L1-L2``.
        """
        base, layers = split_layered(self.name)
        digest = self.source.get("digest") if isinstance(self.source, Mapping) else None
        if digest and base.startswith("hf:"):  # a spec file's backbone keeps its name
            stem = folder_stem(str(self.source.get("model", "")), self.source.get("tower"), str(digest))
        else:
            stem = spec_file_stem(base)
        return stem + layered_suffix(layers)

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


def spec_file_stem(name: str) -> str:
    """File-system safe name: ``timm:resnet50`` -> ``timm-resnet50`` (see :attr:`BackboneSpec.file_stem`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def folder_stem(folder: str, tower: str | None, digest: str) -> str:
    """The file stem of a model read from a local folder: ``hf-NAME[-TOWER]-DIGEST12`` (see :attr:`BackboneSpec.file_stem`).

    Examples
    --------
    >>> folder_stem("/models/my-vit", None, "0123456789abcdef")
    'hf-my-vit-0123456789ab'
    """
    name = folder.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return spec_file_stem(f"hf-{name}" + (f"-{tower}" if tower else "")) + f"-{digest[:12]}"
