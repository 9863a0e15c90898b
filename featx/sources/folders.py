"""Folders of images: searched recursively (hidden files and folders skipped); the label of a file
is the name of its first-level sub-folder (None for files in the root); id = path relative to the
root (posix); sorted by id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import DataSourceError
from .items import Dataset, Item, file_stamp, make_dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def open_folder(root: Path) -> Dataset:
    """Images under ``root`` (recursive, hidden skipped), labelled by first-level sub-folder."""
    relative_paths = sorted(list_image_files(root))
    if not relative_paths:
        raise DataSourceError(
            f"no images found in folder {root}: looked recursively for {', '.join(IMAGE_EXTENSIONS)} "
            "(any case), skipping hidden files and folders"
        )
    items = [folder_item(root, rel) for rel in relative_paths]
    return make_dataset(f"folder:{root}", "image", items)


def list_image_files(root: Path) -> Iterable[str]:
    """Posix paths, relative to ``root``, of the non-hidden image files below it."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        relative_dir = Path(dirpath).relative_to(root)
        for filename in filenames:
            if not filename.startswith(".") and Path(filename).suffix.lower() in IMAGE_EXTENSIONS:
                yield (relative_dir / filename).as_posix()


def folder_item(root: Path, relative_path: str) -> Item:
    parts = relative_path.split("/")
    absolute = str(root / relative_path)
    return Item(
        id=relative_path,
        ref=absolute,
        label=parts[0] if len(parts) > 1 else None,
        stamp=file_stamp(absolute),
    )
