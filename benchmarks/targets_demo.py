"""Writes the inputs of the README's "Multi-label and numeric targets" section into a folder:
a multi-label CSV of fine-foods review texts (tags: the products a review names), a numeric CSV of
the same texts (target: log2 of the review's length in words), and a multi-label manifest of
built-in digit images (tags: even, large (>= 5), round (0, 6, 8, 9)); 2/3 train, 1/3 test.

    python benchmarks/targets_demo.py OUT_DIR
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from featx.sources import open_dataset, subset

PRODUCTS = ("coffee", "tea", "chocolate", "dog", "cat", "sugar")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    reviews = subset(open_dataset("builtin:fine-foods:train"), 600, seed=0)
    rows = []
    for item in reviews.items:
        words = item.ref.lower().split()
        tags = [p for p in PRODUCTS if p in words or p + "s" in words]
        rows.append({"id": item.id, "text": item.ref, "tags": json.dumps(tags),
                     "log_length": round(math.log2(len(words)), 4)})
    frame = pd.DataFrame(rows)
    for name, column in (("tags", "tags"), ("length", "log_length")):
        part = frame[["id", "text", column]].rename(columns={column: "label"})
        part.iloc[:400].to_csv(out / f"{name}-train.csv", index=False)
        part.iloc[400:].to_csv(out / f"{name}-test.csv", index=False)
    digits = subset(open_dataset("builtin:digits:train"), 300, seed=0)
    (out / "digits").mkdir(exist_ok=True)
    rows = []
    for item in digits.items:
        d = int(item.label)
        name = item.id.replace("/", "-") + ".png"
        Image.fromarray(item.ref).save(out / "digits" / name)
        tags = [t for t, on in (("even", d % 2 == 0), ("large", d >= 5), ("round", d in (0, 6, 8, 9))) if on]
        rows.append({"path": f"digits/{name}", "label": json.dumps(tags)})
    frame = pd.DataFrame(rows)
    frame.iloc[:200].to_csv(out / "digits-train.csv", index=False)
    frame.iloc[200:].to_csv(out / "digits-test.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
