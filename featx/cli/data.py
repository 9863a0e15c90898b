"""``featx data fetch NAME`` and ``featx data show SOURCE``."""

from __future__ import annotations

from collections import Counter

from ..sources import fetch_builtin, open_dataset
from .flags import add_manifest_columns


def register(sub) -> None:
    p = sub.add_parser("data", help="fetch built-in datasets, or show what a data source holds")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fetch", help="download a built-in dataset (digits, fashion-mnist, fine-foods)")
    f.add_argument("name", help="built-in dataset name, with or without builtin: (e.g. fine-foods)")
    f.set_defaults(func=cmd_fetch)
    s = dsub.add_parser("show", help="list a data source: modality, size, classes, first ids")
    s.add_argument("source", help="folder of images, manifest (.csv, .tsv, .jsonl, .parquet), .txt file, table with "
                                  "image bytes (.parquet, .arrow, .feather), Hugging Face save_to_disk folder, "
                                  "WebDataset shards (x.tar, 'shards/{000000..000009}.tar') or builtin:NAME[:SPLIT]")
    add_manifest_columns(s, label=True)
    s.set_defaults(func=cmd_show)


def cmd_fetch(args) -> int:
    name = args.name.removeprefix("builtin:")
    args.console.result(f"{name}: {fetch_builtin(name)}")
    return 0


def cmd_show(args) -> int:
    ds = open_dataset(args.source, text_column=args.text_column, path_column=args.path_column,
                      label_column=args.label_column, id_column=args.id_column)
    lines = [f"{ds.name}: {len(ds)} {ds.modality} items"]
    if ds.classes:
        counts = Counter(item.label for item in ds.items)
        lines.append("classes: " + ", ".join(f"{c} ({counts[c]})" for c in ds.classes))
    lines += [f"  {item.id}  label={item.label}" for item in ds.items[:5]]
    args.console.result("\n".join(lines))
    return 0
