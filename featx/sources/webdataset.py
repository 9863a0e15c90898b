"""WebDataset tar shards: what img2dataset and clip-retrieval write.

A shard is an uncompressed tar whose members are grouped into samples by key: the member name
up to the first dot of its file name (``train/000123.jpg`` and ``train/000123.cls`` are the
sample ``train/000123``). Shards are a path, or a brace pattern over several
(``shards/{000000..000009}.tar``, ``shards/{a,b}.tar``), read in the order written.

- id: the key (unique across the shards);
- image: the sample's first member with an image extension (``.jpg``, ``.png``, ...);
  its ``ref`` is the member's place in the shard (:class:`~featx.sources.refs.FileRange`), read
  when decoded: listing reads only the tar headers and the label members, nothing is extracted
  to disk, and a listing holds a few hundred bytes per sample however large the shards;
- label: the member named by ``label_column`` (an extension: ``cls``, ``txt``, ``json``...),
  else the first present of ``.cls``, ``.txt``, ``.json``: its UTF-8 text stripped, or from a
  JSON object its first key among the manifests' label names (``label``, ``class``, ...); an
  empty or absent label is no label;
- stamp: the image member's ``size:mtime`` from its tar header.

A sample without an image is listed with no image (the decoder reports it under ``on_error``), and
so is a sample whose label member is bad (not UTF-8, over 1 MiB, not JSON): the item fails, not the
source; a damaged shard (a truncated tar, a bad header) is an error naming it.

Examples
--------
>>> expand_braces("shards/{000..002}.tar")
['shards/000.tar', 'shards/001.tar', 'shards/002.tar']
>>> expand_braces("{a,b}/{0..1}.tar")
['a/0.tar', 'a/1.tar', 'b/0.tar', 'b/1.tar']
>>> sample_key("train/000123.seg.png")
('train/000123', 'seg.png')
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

from ..errors import DataSourceError
from .folders import IMAGE_EXTENSIONS
from .items import Dataset, Item, clean_label, make_dataset
from .manifests import LABEL_COLUMNS, MAX_NAMED
from .refs import BadMember, FileRange

#: Members read for a label, in this order, when ``label_column`` names none.
LABEL_MEMBERS = ("cls", "txt", "json")
#: A label member larger than this is not a label.
MAX_LABEL_BYTES = 1 << 20
_IMAGE_SUFFIXES = {suffix.lstrip(".") for suffix in IMAGE_EXTENSIONS}
_BRACES = re.compile(r"\{([^{}]*)\}")


def is_brace_pattern(text: str) -> bool:
    """Whether ``text`` holds a ``{first..last}`` or ``{a,b}`` part."""
    return any(".." in m.group(1) or "," in m.group(1) for m in _BRACES.finditer(text))


def expand_braces(pattern: str) -> list[str]:
    """Every name a pattern stands for, in order: ``{000..009}`` (zero-padded as the first
    bound is written) and ``{a,b,c}`` parts, any number of them."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numbers = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numbers:
        first, last = numbers.groups()
        if int(last) < int(first):
            raise DataSourceError(f"brace range {{{body}}} of {pattern!r} counts down; write {{{last}..{first}}}")
        width = len(first) if first.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise DataSourceError(f"cannot expand {{{body}}} in {pattern!r}: write {{000000..000009}} or {{a,b}}")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def sample_key(member_name: str) -> tuple[str, str]:
    """``(key, extension)`` of a member: the name up to the first dot of its file name, and the rest."""
    folder, _, file_name = member_name.rpartition("/")
    stem, _, extension = file_name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension


def open_webdataset(name: str, shards: list[Path], label_member: str | None = None) -> Dataset:
    """The samples of tar shards, in order (see the module's notes)."""
    if label_member is not None:
        label_member = label_member.lstrip(".")
    items = [item for shard in shards for item in shard_items(shard, label_member)]
    if not any(item.ref is not None for item in items):
        raise DataSourceError(
            f"no image members found in {name}: expected samples such as 000000.jpg + 000000.cls, with one of "
            f"the extensions {', '.join(IMAGE_EXTENSIONS)}")
    repeated = [key for key, count in Counter(item.id for item in items).items() if count > 1]
    if repeated:
        raise DataSourceError(
            f"{name} has {len(repeated)} key(s) used by more than one sample: "
            f"{', '.join(map(repr, repeated[:MAX_NAMED]))}{', ...' if len(repeated) > MAX_NAMED else ''}; "
            "keys are the ids and must be unique across the shards")
    return make_dataset(name, "image", items)


def shard_items(shard: Path, label_member: str | None) -> list[Item]:
    """The samples of one shard, made items (members of a sample are consecutive)."""
    items: list[Item] = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            key, members = None, {}
            for member in tar:
                if not member.isfile() or member.name.rpartition("/")[2].startswith("."):
                    continue
                member_key, extension = sample_key(member.name)
                if not extension:
                    continue
                if member_key != key and members:
                    items.append(sample_item(tar, shard, key, members, label_member))
                    members = {}
                key = member_key
                members.setdefault(extension.lower(), member)
            if members:
                items.append(sample_item(tar, shard, key, members, label_member))
    except (tarfile.TarError, EOFError) as e:
        after = f" after {len(items)} samples" if items else ""
        raise DataSourceError(f"WebDataset shard {shard} is damaged{after} ({e}): it must be an uncompressed "
                              "tar (decompress a .tar.gz first); download or write it again") from e
    except OSError as e:
        raise DataSourceError(f"cannot read WebDataset shard {shard}: {e}") from e
    return items


def sample_item(tar: tarfile.TarFile, shard: Path, key: str, members: dict, label_member: str | None) -> Item:
    image = next((m for ext, m in members.items() if ext.rpartition(".")[2] in _IMAGE_SUFFIXES), None)
    label_names = (label_member,) if label_member is not None else LABEL_MEMBERS
    label_name = next((ext for ext in label_names if ext in members), None)
    try:
        label = member_label(tar, shard, members[label_name], label_name) if label_name else None
    except DataSourceError as e:  # one bad label member is that sample's failure, under on_error
        member = members[label_name]
        return Item(id=key, ref=BadMember(str(shard), f"sample {key}: {e}"), label=None,
                    stamp=f"{member.size}:{int(member.mtime * 1_000_000_000)}")
    if image is None:
        return Item(id=key, ref=None, label=label)
    return Item(id=key, ref=FileRange(str(shard), image.offset_data, image.size), label=label,
                stamp=f"{image.size}:{int(image.mtime * 1_000_000_000)}")


def member_label(tar: tarfile.TarFile, shard: Path, member: tarfile.TarInfo, extension: str) -> str | None:
    """The label a member holds: its stripped text, or a JSON object's label field."""
    where = f"label member {member.name} of WebDataset shard {shard}"
    if member.size > MAX_LABEL_BYTES:
        raise DataSourceError(f"{where} is {member.size:,} bytes, over {MAX_LABEL_BYTES:,}: not a label; "
                              "name the label member with label_column= / --label-column")
    try:
        text = tar.extractfile(member).read().decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{where} is not UTF-8 text ({e})") from e
    if extension.rpartition(".")[2] != "json":
        return text or None
    try:
        value = json.loads(text) if text else None
    except ValueError as e:
        raise DataSourceError(f"{where} is not valid JSON: {e}") from e
    if isinstance(value, dict):
        value = next((value[k] for k in LABEL_COLUMNS if k in value), None)
    if isinstance(value, dict) or (isinstance(value, str) and not value.strip()):
        return None
    return value if isinstance(value, list) else clean_label(value)  # a list: a label set, read by make_dataset
