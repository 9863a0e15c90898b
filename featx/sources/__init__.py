"""Datasets as ordered lists of items with stable ids and optional labels.

::

    featx/sources/
      __init__.py    the public API below
      items.py       Item, Dataset, make_dataset, file_stamp; ids: text_id, unique_ids, utf8_text; clean_label
      kinds.py       open_dataset: which kind of source a name, path or object is (the tables of kinds)
      folders.py     a folder of images, labelled by first-level sub-folder
      manifests.py   CSV / TSV / JSON Lines / Parquet tables with a path or text column
      textlines.py   a .txt file, one text per line
      tables.py      tables with the images inside: Hugging Face datasets (folders, objects), Arrow, Parquet
      webdataset.py  WebDataset tar shards (a path or a brace pattern), streamed, never extracted
      refs.py        references to image bytes inside a shard or a table, read when decoded
      builtins.py    builtin:digits, builtin:fashion-mnist, builtin:fine-foods (and fetching them)
      subsets.py     subset: deterministic, label-stratified

The guarantee: the same source lists the same items with the same ids, in the same order. Pure
listing: nothing here decodes an image or tokenizes a text (:mod:`featx.engine.decode` does), and
missing or broken files (a corrupt tar member, a bad cell) are left for the decoder to report
per item, under the caller's ``on_error``; a missing or empty label is no label, never a class. One more kind of source:
see :mod:`featx.sources.kinds`.

A source is one of:

- a folder of images, searched recursively (hidden files and folders skipped); the label of
  a file is the name of its first-level sub-folder (None for files in the root);
  id = path relative to the root (posix); sorted by id;
- a manifest (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.parquet``) with a path column
  (an image dataset; relative paths resolve against the manifest's folder) or a text column
  (a text dataset), an optional label column and an optional id column;
- a ``.txt`` file: one text per line, no labels;
- a table with the images inside (``.parquet``, ``.arrow``, ``.feather``), a Hugging Face
  ``save_to_disk`` folder or a ``datasets.Dataset``: image bytes or texts, a ``ClassLabel``
  gives the class names (see :mod:`featx.sources.tables`);
- WebDataset shards (``x.tar``, ``shards/{000000..000009}.tar``): the key is the id, the
  ``.cls`` / ``.txt`` / ``.json`` member the label (see :mod:`featx.sources.webdataset`);
- ``builtin:NAME[:SPLIT]``: ``digits``, ``fashion-mnist``, ``fine-foods`` (see :mod:`featx.sources.builtins`).

A missing label (no sub-folder, an empty, NaN or null cell) leaves the item unlabelled (label None),
never a class: it is listed, extracted and predicted, and left out of training and evaluation.

Ids are unique within a dataset (a :class:`Dataset` with a repeated id is refused) and valid Unicode
(the bytes of a file name that are not UTF-8 become ``\\xNN`` escapes in its id).

Ids without an id column: for image manifests the path as written; for texts the first
16 hex digits of ``sha1(text)``. Repeated ids get ``~2``, ``~3``, ... in order of appearance
(``"a"``, ``"a"``, ``"a"`` -> ``"a"``, ``"a~2"``, ``"a~3"``). An id column must be unique.

Examples
--------
>>> ds = open_dataset("builtin:digits:train")
>>> ds.name, ds.modality, len(ds), ds.classes[:3]
('builtin:digits:train', 'image', 1347, ('0', '1', '2'))
>>> small = subset(ds, 100, seed=0)
>>> len(small), small.items[0].id, small.items[0].ref.dtype.name
(100, 'digits/0001', 'uint8')
"""

from .builtins import fetch_builtin
from .folders import IMAGE_EXTENSIONS
from .items import (Dataset, Item, check_modality, clean_label, file_stamp, labelled_mask, make_dataset, text_id,
                    unique_ids, utf8_text)
from .kinds import open_dataset
from .subsets import subset

__all__ = ["Item", "Dataset", "make_dataset", "open_dataset", "subset", "fetch_builtin", "file_stamp", "text_id",
           "unique_ids", "utf8_text", "clean_label", "labelled_mask", "check_modality", "IMAGE_EXTENSIONS"]
