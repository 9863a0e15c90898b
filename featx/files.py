"""Small file helpers shared by every module that writes: atomic writes, hashes, JSON.

A reader sees the old file or the new one, never a torn one: every write goes to a unique
temporary name in the same folder and is renamed into place with ``os.replace``.

Examples
--------
>>> from pathlib import Path
>>> path = write_text_atomically(Path("a.json"), '{"x": 1}')
>>> path.read_text(), sha256_file(path)[:12]
('{"x": 1}', '613fe5aa6534')
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import numpy as np

#: Temporary files start with this; a cache writer removes its leftovers at start.
TMP_PREFIX = ".tmp-"


def tmp_path(final: Path) -> Path:
    """A unique temporary name beside ``final``."""
    return final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}.{secrets.token_hex(4)}")


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(final, write, *, durable: bool = False) -> Path:
    """Call ``write(tmp_path)``, then rename the result onto ``final``.

    ``durable=True`` also fsyncs the file and its folder (survives power loss, not only a crash).
    On any failure the temporary file is removed and the error re-raised.
    """
    final = Path(final)
    tmp = tmp_path(final)
    try:
        write(tmp)
        if durable:
            fsync_path(tmp)
        os.replace(tmp, final)
        if durable:
            fsync_path(final.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def write_text_atomically(final, text: str, *, durable: bool = False) -> Path:
    return write_atomically(final, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_default(value):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays, paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def featx_home() -> Path:
    """Where featx keeps its files: ``$FEATX_HOME``, default ``~/.cache/featx`` (exported models in
    ``models/``, see :mod:`featx.specs.exported`; fetched datasets in ``data/``)."""
    return Path(os.environ.get("FEATX_HOME") or Path.home() / ".cache" / "featx").expanduser()
