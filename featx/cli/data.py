"""``featx data fetch NAME`` and ``featx data show SOURCE``."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("data", help="fetch built-in datasets, or show what a data source holds")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fetch", help="download a built-in dataset (digits, fashion-mnist, fine-foods)")
    f.add_argument("name")
    f.set_defaults(func=cmd_fetch)
    s = dsub.add_parser("show", help="list a data source: modality, size, classes, first ids")
    s.add_argument("source")
    s.set_defaults(func=cmd_show)


def cmd_fetch(args) -> int:
    from ..sources import fetch_builtin

    name = args.name.removeprefix("builtin:")
    print(f"{name}: {fetch_builtin(name)}")
    return 0


def cmd_show(args) -> int:
    from collections import Counter

    from ..sources import open_dataset

    ds = open_dataset(args.source)
    print(f"{ds.name}: {len(ds)} {ds.modality} items")
    if ds.classes:
        counts = Counter(item.label for item in ds.items)
        print("classes: " + ", ".join(f"{c} ({counts[c]})" for c in ds.classes))
    for item in ds.items[:5]:
        print(f"  {item.id}  label={item.label}")
    return 0
