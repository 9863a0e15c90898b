"""Text files: one text item per line of a UTF-8 file; ids are ``sha1(text)`` prefixes."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataSourceError
from .items import Dataset, Item, make_dataset, text_id, unique_ids


def open_text_lines(path: Path) -> Dataset:
    """One text item per line of a UTF-8 file (only the line ending is stripped)."""
    texts = read_lines(path)
    if not texts:
        raise DataSourceError(f"text file {path} is empty: expected one text per line")
    ids = unique_ids([text_id(text) for text in texts])
    items = [Item(id=i, ref=text) for i, text in zip(ids, texts)]
    return make_dataset(f"txt:{path}", "text", items)


def read_lines(path: Path) -> list[str]:
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"text file {path} is not UTF-8 ({exc}); save it as UTF-8") from exc
    except OSError as exc:
        raise DataSourceError(f"cannot read text file {path}: {exc}") from exc
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]
