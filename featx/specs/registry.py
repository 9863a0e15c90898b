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
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError
from . import bounds
from .hfspec import HF_KINDS, check_pooling, hf_spec_dict, merge_spec, source_name

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
        """File-system safe name: ``timm:resnet50`` -> ``timm-resnet50``."""
        return spec_file_stem(self.name)

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


def spec_file_stem(name: str) -> str:
    """File-system safe name: ``timm:resnet50`` -> ``timm-resnet50`` (see :attr:`BackboneSpec.file_stem`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


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


def featx_home() -> Path:
    """Where featx keeps its files: ``$FEATX_HOME``, default ``~/.cache/featx`` (exported models in
    ``models/``, see :mod:`featx.specs.exported`; fetched datasets in ``data/``)."""
    return Path(os.environ.get("FEATX_HOME") or Path.home() / ".cache" / "featx").expanduser()
