"""Built-in datasets: where their data live, how to fetch them, how to read them.

Three datasets are built in, each with a ``train`` and a ``test`` split:

- ``digits`` -- scikit-learn's 1797 handwritten digits (8x8 grey, labels "0".."9");
  ships with scikit-learn, nothing to fetch. No split given: all 1797 images.
- ``fashion-mnist`` -- 70 000 Zalando articles (28x28 grey, 10 class names), from the
  Debian package ``dataset-fashion-mnist`` (``sudo apt-get install dataset-fashion-mnist``,
  or ``fetch("fashion-mnist")`` to extract it under ``$FEATX_HOME/data`` without root).
  No split given: ``train``.
- ``fine-foods`` -- 5000 Amazon fine-food reviews (text, "great"/"other"), from the Debian
  package ``r-cran-modeldata`` that ``fetch("fine-foods")`` downloads and extracts under
  ``$FEATX_HOME/data`` (never installs it: that would pull in R). No split given: ``train``.

:func:`read_builtin` returns a :class:`BuiltinTable` (ids, refs, labels); :func:`open_builtin`
turns it into a :class:`~featx.sources.Dataset` (the ``builtin:NAME[:SPLIT]`` source).

Examples
--------
>>> table = read_builtin("digits", "test")
>>> table.modality, len(table.ids), table.ids[0], table.refs[0].shape, table.labels[0]
('image', 450, 'digits/0021', (8, 8), '1')
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DataSourceError
from ..extras import require
from ..files import write_text_atomically
from ..files import featx_home
from .items import Dataset, Item, file_stamp, make_dataset

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILE_PREFIX = {"train": "train", "test": "t10k"}
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
MODELDATA_PACKAGE = "r-cran-modeldata"
MODELDATA_RDATA_PREFIX = Path("usr/lib/R/site-library/modeldata/data/Rdata")
FINE_FOODS_OBJECTS = {"train": "training_data", "test": "testing_data"}
FINE_FOODS_COPY_NAME = "featx-fine-foods.json"
FINE_FOODS_COPY_FORMAT = 1
APT_TIMEOUT_S = 900


@dataclass(frozen=True)
class BuiltinTable:
    """One split of a built-in dataset, as parallel sequences."""

    modality: str
    ids: list[str]
    refs: Sequence  # np.ndarray images (views into one array) or str texts
    labels: list[str]


@dataclass(frozen=True)
class BuiltinSpec:
    """What :func:`read_builtin` needs to know about one built-in dataset."""

    name: str
    splits: tuple[str, ...]
    default_split: str | None  # None: all items
    read: Callable[[str | None], BuiltinTable]


def featx_data_dir() -> Path:
    """Where fetched data live: ``$FEATX_DATA``, default ``$FEATX_HOME/data`` (``~/.cache/featx/data``)."""
    return Path(os.environ["FEATX_DATA"]).expanduser() if os.environ.get("FEATX_DATA") else featx_home() / "data"


# --------------------------------------------------------------------------- digits

def read_digits(split: str | None) -> BuiltinTable:
    """scikit-learn's digits as uint8 images (``round(x * 255 / 16)``), split 75/25 stratified."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    indices = digits_split_indices(digits.target, split)
    return BuiltinTable(
        modality="image",
        ids=[f"digits/{i:04d}" for i in indices],
        refs=[images[i] for i in indices],
        labels=[str(digits.target[i]) for i in indices],
    )


def digits_split_indices(target: np.ndarray, split: str | None) -> list[int]:
    """Sorted indices of ``split``: ``train_test_split(test_size=0.25, stratify=y, random_state=0)``."""
    if split is None:
        return list(range(len(target)))
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(target)), test_size=0.25, stratify=target, random_state=0
    )
    return sorted(int(i) for i in (train if split == "train" else test))


# --------------------------------------------------------------------------- fashion-mnist

def fashion_mnist_dir() -> Path:
    """The folder holding the Fashion-MNIST ``*.gz`` files.

    ``$FEATX_FASHION_MNIST_DIR`` when set; else ``/usr/share/datasets/fashion-mnist`` when the
    Debian package is installed; else the copy that ``fetch("fashion-mnist")`` extracts.
    """
    override = os.environ.get("FEATX_FASHION_MNIST_DIR")
    if override:
        return Path(override).expanduser()
    if FASHION_MNIST_SYSTEM_DIR.is_dir():
        return FASHION_MNIST_SYSTEM_DIR
    extracted = featx_data_dir() / FASHION_MNIST_PACKAGE / "usr/share/datasets/fashion-mnist"
    return extracted if extracted.is_dir() else FASHION_MNIST_SYSTEM_DIR


def fashion_mnist_files(root: Path, split: str) -> tuple[Path, Path]:
    prefix = FASHION_MNIST_FILE_PREFIX[split]
    return root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"


def missing_fashion_mnist_message(root: Path, missing: Path) -> str:
    if os.environ.get("FEATX_FASHION_MNIST_DIR"):
        where = f"$FEATX_FASHION_MNIST_DIR points to {root}, which lacks {missing.name}"
    else:
        where = f"{missing} not found"
    return (
        f"builtin:fashion-mnist needs the Debian package {FASHION_MNIST_PACKAGE}: {where}. "
        f"Install it with: sudo apt-get install {FASHION_MNIST_PACKAGE} "
        "(or, without root: featx data fetch fashion-mnist)"
    )


def read_fashion_mnist(split: str | None) -> BuiltinTable:
    """One split of Fashion-MNIST; refs are (28, 28) uint8 read-only views into one array."""
    split = split or "train"
    root = fashion_mnist_dir()
    images_path, labels_path = fashion_mnist_files(root, split)
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DataSourceError(missing_fashion_mnist_message(root, path))
    labels = read_idx(labels_path, expected_magic=2049)
    images = read_idx(images_path, expected_magic=2051)
    if images.shape[0] != labels.shape[0]:
        raise DataSourceError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; reinstall {FASHION_MNIST_PACKAGE}"
        )
    return BuiltinTable(
        modality="image",
        ids=[f"fashion-mnist/{split}/{i:05d}" for i in range(len(labels))],
        refs=list(images),
        labels=[FASHION_MNIST_CLASSES[k] for k in labels],
    )


def read_idx(path: Path, *, expected_magic: int) -> np.ndarray:
    """Read a gzipped IDX file of uint8 values (MNIST format) into a read-only array."""
    try:
        with gzip.open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataSourceError(f"cannot read {path}: {exc}; reinstall {FASHION_MNIST_PACKAGE}") from exc
    if len(data) < 4 or struct.unpack(">I", data[:4])[0] != expected_magic:
        raise DataSourceError(f"{path} is not an IDX file (expected magic number {expected_magic})")
    ndim = expected_magic & 0xFF
    header_size = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    if len(data) != header_size + int(np.prod(shape)):
        raise DataSourceError(
            f"{path} is truncated or damaged: header says shape {shape}, "
            f"found {len(data) - header_size} bytes of values; reinstall {FASHION_MNIST_PACKAGE}"
        )
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


# --------------------------------------------------------------------------- fine-foods

def fine_foods_dir() -> Path:
    """Where ``fetch("fine-foods")`` extracts ``r-cran-modeldata``: ``$FEATX_HOME/data/r-cran-modeldata``."""
    return featx_data_dir() / MODELDATA_PACKAGE


def missing_fine_foods_message(package_dir: Path) -> str:
    return (
        f"builtin:fine-foods needs the Debian package {MODELDATA_PACKAGE} extracted in "
        f"{package_dir}, which lacks {MODELDATA_RDATA_PREFIX}.rdb. Run: featx data fetch fine-foods "
        f"(or: cd {package_dir.parent} && apt-get download {MODELDATA_PACKAGE} && "
        f"dpkg-deb -x {MODELDATA_PACKAGE}_*.deb {MODELDATA_PACKAGE})"
    )


def read_fine_foods(split: str | None) -> BuiltinTable:
    """One split of the fine-food reviews (4000 train / 1000 test); text = review, label = score."""
    split = split or "train"
    package_dir = fine_foods_dir()
    rdb = package_dir / f"{MODELDATA_RDATA_PREFIX}.rdb"
    if not rdb.is_file():
        raise DataSourceError(missing_fine_foods_message(package_dir))
    columns = load_fine_foods_splits(package_dir)[split]
    return BuiltinTable(
        modality="text",
        ids=[f"fine-foods/{split}/{i:04d}" for i in range(len(columns["text"]))],
        refs=columns["text"],
        labels=columns["label"],
    )


def load_fine_foods_splits(package_dir: Path) -> dict[str, dict[str, list]]:
    """``{split: {"text": [...], "label": [...]}}``, from the JSON copy when it is current.

    The first call parses the R data (about 1 s) and writes the copy atomically beside it;
    a damaged or stale copy is parsed again, never fatal.
    """
    prefix = package_dir / MODELDATA_RDATA_PREFIX
    source_stamp = file_stamp(f"{prefix}.rdb")
    copy_path = package_dir / FINE_FOODS_COPY_NAME
    cached = read_json_copy(copy_path)
    if cached.get("format") == FINE_FOODS_COPY_FORMAT and cached.get("source_stamp") == source_stamp:
        return cached["splits"]
    splits = parse_fine_foods(prefix)
    write_json_atomically(
        copy_path,
        {"format": FINE_FOODS_COPY_FORMAT, "source_stamp": source_stamp, "splits": splits},
    )
    return splits


def parse_fine_foods(prefix: Path) -> dict[str, dict[str, list]]:
    """Parse ``training_data`` / ``testing_data`` from modeldata's lazy-load database."""
    objects = read_lazyload_database(prefix)
    splits = {}
    for split, object_name in FINE_FOODS_OBJECTS.items():
        frame = objects[object_name]()
        splits[split] = {
            "text": [none_if_missing(v) for v in frame["review"].tolist()],
            "label": [None if none_if_missing(v) is None else str(v) for v in frame["score"].tolist()],
        }
    return splits


def none_if_missing(value):
    try:
        return None if value is None or bool(value != value) else value  # NaN, pd.NA
    except TypeError:
        return None  # pd.NA compared to itself


def read_lazyload_database(prefix: Path) -> dict[str, Callable[[], object]]:
    """R's lazy-load database (``.rdx`` index + ``.rdb`` blobs): name -> loader of that object."""
    require("rdata", "fine-foods", "builtin:fine-foods (R data)")
    index = parse_r_object(unpack_r_blob(Path(f"{prefix}.rdx").read_bytes()))
    blob = Path(f"{prefix}.rdb").read_bytes()

    def loader(offset: int, length: int):
        return lambda: parse_r_object(unpack_r_blob(blob[offset:offset + length]))

    return {str(name): loader(int(o), int(n)) for name, (o, n) in index["variables"].items()}


def unpack_r_blob(blob: bytes) -> bytes:
    """Decompress one entry of an R lazy-load database (gzip, xz 'Z', bzip2 '2', zlib '1', raw '0')."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    size, kind = struct.unpack(">I", blob[:4])[0], blob[4:5]
    if kind == b"Z":
        data = lzma.decompress(
            blob[5:], format=lzma.FORMAT_RAW,
            filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}],
        )
    elif kind == b"2":
        data = bz2.decompress(blob[5:])
    elif kind == b"1":
        data = zlib.decompress(blob[5:])
    elif kind == b"0":
        data = blob[5:]
    else:
        data = zlib.decompress(blob[4:])
    if len(data) != size:
        raise DataSourceError(f"damaged R data entry: expected {size} bytes, got {len(data)}")
    return data


def parse_r_object(raw: bytes):
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS", tibble constructors
        return rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))


# --------------------------------------------------------------------------- small file helpers

def read_json_copy(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomically(path: Path, data: dict) -> None:
    """Write to a unique temporary name, then rename; a failure only costs speed next time."""
    try:
        write_text_atomically(path, json.dumps(data, ensure_ascii=False))
    except OSError:
        pass


# --------------------------------------------------------------------------- registry and fetch

BUILTINS: dict[str, BuiltinSpec] = {
    "digits": BuiltinSpec("digits", ("train", "test"), None, read_digits),
    "fashion-mnist": BuiltinSpec("fashion-mnist", ("train", "test"), "train", read_fashion_mnist),
    "fine-foods": BuiltinSpec("fine-foods", ("train", "test"), "train", read_fine_foods),
}


def known_builtins_text() -> str:
    return ", ".join(f"builtin:{name}[:{'|:'.join(spec.splits)}]" for name, spec in BUILTINS.items())


def builtin_spec(name: str) -> BuiltinSpec:
    spec = BUILTINS.get(name)
    if spec is None:
        raise DataSourceError(f"unknown builtin dataset {name!r}; known: {known_builtins_text()}")
    return spec


def resolve_split(spec: BuiltinSpec, split: str | None) -> str | None:
    """The split actually read (the default one when ``split`` is None); checks it exists."""
    if split is None:
        return spec.default_split
    if split not in spec.splits:
        raise DataSourceError(
            f"unknown split {split!r} of builtin:{spec.name}; known splits: {', '.join(spec.splits)}"
        )
    return split


def read_builtin(name: str, split: str | None = None) -> BuiltinTable:
    """Read one split of a built-in dataset (the default split when ``split`` is None)."""
    spec = builtin_spec(name)
    return spec.read(resolve_split(spec, split))


def fetch_builtin(name: str) -> Path:
    """Make a built-in dataset's data available locally and return the folder holding them.

    ``fine-foods`` runs ``apt-get download r-cran-modeldata`` and ``dpkg-deb -x`` into
    ``$FEATX_HOME/data/r-cran-modeldata`` (nothing is installed); ``fashion-mnist`` uses
    ``/usr/share/datasets/fashion-mnist`` when present, else extracts ``dataset-fashion-mnist``
    the same way; ``digits`` ships with scikit-learn. Nothing needs root. Safe to call again:
    existing data are kept (fine-foods is parsed once, into a JSON copy beside it).

    Parameters
    ----------
    name : str
        ``"digits"``, ``"fashion-mnist"`` or ``"fine-foods"`` (``"builtin:"`` prefix allowed).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataSourceError
        Unknown name, or the download failed (the message gives the commands to run by hand).

    Examples
    --------
    >>> fetch_builtin("digits").name
    'data'
    """
    name = name.removeprefix("builtin:").split(":")[0].lower()
    builtin_spec(name)
    if name == "digits":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data"
    if name == "fashion-mnist":
        root = fashion_mnist_dir()
        if all(p.is_file() for split in FASHION_MNIST_FILE_PREFIX for p in fashion_mnist_files(root, split)):
            return root
        if os.environ.get("FEATX_FASHION_MNIST_DIR"):
            raise DataSourceError(missing_fashion_mnist_message(root, fashion_mnist_files(root, "train")[0]))
        extracted = download_debian_package(FASHION_MNIST_PACKAGE, featx_data_dir() / FASHION_MNIST_PACKAGE)
        return extracted / "usr/share/datasets/fashion-mnist"
    package_dir = download_debian_package(MODELDATA_PACKAGE, fine_foods_dir())
    if not Path(f"{package_dir / MODELDATA_RDATA_PREFIX}.rdb").is_file():
        raise DataSourceError(missing_fine_foods_message(package_dir))
    load_fine_foods_splits(package_dir)
    return package_dir


def download_debian_package(package: str, dest: Path) -> Path:
    """``apt-get download PACKAGE`` and ``dpkg-deb -x`` it into ``dest`` (atomically); keep an existing one."""
    if dest.is_dir():
        return dest
    manual = f"cd {dest.parent} && apt-get download {package} && dpkg-deb -x {package}_*.deb {dest.name}"
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataSourceError(
                f"cannot fetch the Debian package {package}: {tool} not found (not a Debian/Ubuntu "
                f"machine?). On one that is, run: {manual}; then copy {dest} here"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=dest.parent))
    try:
        run_tool(["apt-get", "download", package], cwd=work, package=package, manual=manual)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise DataSourceError(f"apt-get download {package} produced no .deb file; run: {manual}")
        run_tool(["dpkg-deb", "-x", str(debs[-1]), str(work / "root")], cwd=work, package=package, manual=manual)
        try:
            os.replace(work / "root", dest)
        except OSError:
            if not dest.is_dir():  # else another process finished first: keep theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def run_tool(command: list[str], *, cwd: Path, package: str, manual: str) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataSourceError(f"{' '.join(command)} failed: {exc}. Run by hand: {manual}") from exc
    if done.returncode != 0:
        details = " | ".join(line for line in done.stderr.strip().splitlines()[-3:])
        raise DataSourceError(
            f"{' '.join(command)} failed (exit {done.returncode}): {details}. "
            f"If the package is unknown, run 'sudo apt-get update' first; by hand: {manual}"
        )


def open_builtin(source: str) -> Dataset:
    """``builtin:NAME[:SPLIT]`` as a Dataset with in-memory images or texts."""
    parts = source.split(":")
    if len(parts) > 3:
        raise DataSourceError(f"malformed builtin source {source!r}: expected builtin:NAME[:SPLIT]")
    name = parts[1].lower()
    spec = builtin_spec(name)
    split = resolve_split(spec, parts[2].lower() if len(parts) == 3 else None)
    table = read_builtin(name, split)
    items = [Item(id=i, ref=ref, label=label) for i, ref, label in zip(table.ids, table.refs, table.labels)]
    canonical = f"builtin:{name}" + (f":{split}" if split else "")
    return make_dataset(canonical, table.modality, items)
