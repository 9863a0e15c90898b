"""featx audit: planted label flips, duplicates, leaks and outliers in real HDF5 caches; the CLI;
`featx train --exclude`; the HTML report in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.quality import ISSUES, audit, read_excluded, write_report
from featx.cache import CacheStore, ShardData
from featx.cli import main
from featx.errors import ParameterError


def write_cache(path: Path, X: np.ndarray, labels, ids, dtype: str = "float32", shard_rows: int = 500) -> Path:
    """A real cache of given rows (no backbone: what `featx extract` writes, minus the model run)."""
    store = CacheStore(path)
    store.create()
    store.register_model({"name": "rows", "dim": int(X.shape[1])}, "rows", dtype)
    store.write_listing(f"rows:{path.name}", "image", ids, labels, [""] * len(ids))
    for lo in range(0, len(ids), shard_rows):
        store.commit("rows", ShardData(list(ids[lo:lo + shard_rows]), [""] * len(ids[lo:lo + shard_rows]),
                                       X[lo:lo + shard_rows]), fingerprint_id="rows", dtype=dtype, durable=False)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4 Gaussian classes in 64-d (600 train, 200 test rows) with planted problems:
    30 flipped labels, 10 train rows copied (+ small noise) within train, 10 test rows copied into train,
    4 rows far from everything."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, size=(4, 64))
    n, n_test = 600, 200
    y = np.repeat(np.arange(4), (n + n_test) // 4)
    rng.shuffle(y)
    X = (centres[y] + rng.normal(0, 1, size=(len(y), 64))).astype(np.float32)
    X, Xt, y, yt = X[:n], X[n:], y[:n], y[n:]
    names = np.array(["ant", "bee", "cat", "dog"], dtype=object)
    labels = names[y].copy()
    flipped = rng.choice(n, 30, replace=False)
    labels[flipped] = names[(y[flipped] + rng.integers(1, 4, 30)) % 4]
    dup_src = rng.choice(np.setdiff1d(np.arange(n), flipped), 10, replace=False)
    leak_src = rng.choice(n_test, 10, replace=False)
    outliers = -2 * centres.astype(np.float32)  # opposite to a class each: near no row
    X_all = np.vstack([X, X[dup_src] + rng.normal(0, 0.05, (10, 64)), Xt[leak_src] + rng.normal(0, 0.05, (10, 64)),
                       outliers]).astype(np.float32)
    labels_all = np.concatenate([labels, labels[dup_src], names[yt[leak_src]], names[rng.integers(0, 4, 4)]])
    ids = np.array([f"train/{i:04d}" for i in range(len(X_all))], dtype=object)
    tids = np.array([f"test/{i:04d}" for i in range(n_test)], dtype=object)
    root = tmp_path_factory.mktemp("planted")
    train = write_cache(root / "train", X_all, labels_all, ids, dtype="float16")
    test = write_cache(root / "test", Xt, names[yt], tids)
    truth = {"flipped": set(ids[flipped]), "dups": set(ids[n:n + 10]), "leaks": set(tids[leak_src]),
             "outliers": set(ids[n + 20:])}
    return train, test, truth


@pytest.mark.parametrize("exact_max", [50_000, 100])  # exact neighbours, then the faiss index
def test_audit_finds_what_was_planted(planted, exact_max):
    train, test, truth = planted
    r = audit(train, test, params={"C": 1.0}, cv=5, exact_max=exact_max, outlier_fraction=4 / 624)
    assert r.settings["neighbours"] == ("exact" if exact_max > 1000 else "faiss-ivf")
    assert r.n_train == 624 and r.n_test == 200
    assert r.ids("near_duplicate") == truth["dups"]
    assert r.ids("leak") == truth["leaks"]
    assert r.ids("outlier") == truth["outliers"]
    found = r.ids("label")
    assert len(found & truth["flipped"]) >= 27 and len(found - truth["flipped"] - truth["outliers"]) <= 10
    for f in r.findings:
        if f.issue == "label" and f.id in truth["flipped"]:
            assert f.suggested != f.given
    assert sum(sum(c.values()) for c in r.per_class.values()) == sum(f.split == "train" for f in r.findings)
    assert r.confused and r.confused[0]["count"] >= r.confused[-1]["count"]
    leak = next(f for f in r.findings if f.issue == "leak")
    assert leak.split == "test" and leak.neighbours and leak.neighbours[0].startswith("train/06")


def test_findings_files_and_exclusion(planted, tmp_path):
    train, _, _ = planted
    r = audit(train, params={"C": 1.0})
    csv_path, json_path = r.to_csv(tmp_path / "f.csv"), r.to_json(tmp_path / "f.json")
    doc = json.loads(json_path.read_text())
    assert doc["counts"] == r.counts() and len(doc["findings"]) == len(r.findings)
    assert read_excluded(csv_path) == r.ids()
    X, y, ids = featx.load_features(train)
    keep = ~np.isin(ids, list(read_excluded(csv_path)))  # the documented load_features filter
    assert keep.sum() == len(ids) - len(r.ids())


def test_audit_rejects_bad_parameters(planted):
    with pytest.raises(ParameterError, match="threshold"):
        audit(planted[0], threshold=1.5)
    with pytest.raises(ParameterError, match="outlier_fraction"):
        audit(planted[0], outlier_fraction=-0.1)


def test_cli_audit_images_then_train_without_findings(tmp_path, image_files, tiny_image_onnx, capsys):
    shutil.copy(image_files / "photos" / "china.jpg", image_files / "shapes" / "china_copy.jpg")  # a byte copy
    cache = tmp_path / "cache"
    featx.extract(str(image_files), tiny_image_onnx, cache, progress=False)
    out = tmp_path / "audit"
    assert main(["audit", str(cache), "--out", str(out), "--cv", "2", "--outliers", "0.15"]) == 0
    printed = capsys.readouterr().out
    assert "exact duplicate" in printed and "report:" in printed
    rows = (out / "findings.csv").read_text().splitlines()
    assert rows[0] == "id,issue,score,split,given,suggested,neighbours,signal"
    assert any(",exact_duplicate,1.0," in row and "china" in row for row in rows)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "Exact duplicates (1)" in html
    excluded = read_excluded(out / "findings.csv")
    assert main(["train", str(cache), "--head", "knn", "--cv", "2", "--exclude", str(out / "findings.csv"),
                 "--out", str(tmp_path / "heads"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 8 - len(excluded)


def small_image_folders(root: Path, rng) -> tuple[Path, Path, set, set]:
    """28-px grayscale images (three random ellipses or boxes on black) in class folders, train and test; 4
    training and 3 test images copied into training as JPEGs (quality 75) resized to 32 px."""
    from PIL import Image, ImageDraw

    def image():
        img = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.integers(0, 20, 2)
            box = (int(x0), int(y0), int(x0 + rng.integers(6, 16)), int(y0 + rng.integers(6, 16)))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=int(rng.integers(80, 255)))
        return img

    def copy(img, path):
        img.resize((32, 32), Image.Resampling.BILINEAR).save(path, quality=75)

    pairs, leaks = set(), set()
    for split, n in (("train", 40), ("test", 12)):
        for i in range(n):
            label = "ab"[i % 2]
            (root / split / label).mkdir(parents=True, exist_ok=True)
            img = image()
            img.save(root / split / label / f"{i:02d}.png")
            if split == "train" and i < 4:
                copy(img, root / "train" / label / f"copy-{i:02d}.jpg")
                pairs.add((f"{label}/copy-{i:02d}.jpg", f"{label}/{i:02d}.png"))
            if split == "test" and i < 3:
                copy(img, root / "train" / label / f"leak-{i:02d}.jpg")
                leaks.add((f"{label}/{i:02d}.png", f"{label}/leak-{i:02d}.jpg"))
    return root / "train", root / "test", pairs, leaks


def test_pixel_hashes_find_the_resized_jpeg_copies_of_small_images(tmp_path, tiny_image_onnx):
    train, test, pairs, leaks = small_image_folders(tmp_path / "images", np.random.default_rng(0))
    caches = [featx.extract(str(folder), tiny_image_onnx, tmp_path / f"{folder.name}.cache", progress=False).cache
              for folder in (train, test)]
    # threshold=1.0: the embeddings flag only identical rows, so whatever is found here, the pixels found
    r = audit(caches[0], caches[1], params={"C": 1.0}, cv=2, threshold=1.0)
    assert r.settings["pixels"] == "pHash, at most 32 of 256 bits apart"
    found = {(f.id, f.neighbours[0]) for f in r.findings if f.issue == "near_duplicate"}
    assert found == pairs
    assert {(f.id, f.neighbours[0]) for f in r.findings if f.issue == "leak"} == leaks
    assert {f.signal for f in r.findings if f.issue in ("near_duplicate", "leak")} == {"pixels"}
    assert all(1 - 32 / 256 <= f.score < 1 for f in r.findings if f.signal == "pixels")
    off = audit(caches[0], caches[1], params={"C": 1.0}, cv=2, threshold=1.0, pixels=False)
    assert "pixels" not in off.settings and not off.ids("near_duplicate") and not off.ids("leak")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium: `make install` installs it (apt-get install chromium, as root)")


def test_report_renders_in_headless_chromium(planted, tmp_path, sample_rgbs):
    from playwright.sync_api import sync_playwright  # featx[dev]; drives Debian's Chromium, no browser download

    train, test, truth = planted
    r = audit(train, test, params={"C": 1.0})
    refs = {i: sample_rgbs[n % 2][::40, ::40] for n, i in enumerate(sorted(r.ids()))}  # real pixels, thumbnailed
    refs.update({"train/0000": "a shortened <b>text</b> " * 30})
    page_file = write_report(r, tmp_path / "report.html", train_refs=refs, test_refs=refs)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.resolve().as_uri())
        shown = page.eval_on_selector_all(".finding", "els => els.map(e => [e.dataset.issue, e.dataset.id])")
        loaded = page.eval_on_selector_all(".main img", "els => els.filter(e => e.naturalWidth > 0).length")
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        browser.close()
    assert errors == []
    assert {tuple(s) for s in shown} >= {("leak", i) for i in truth["leaks"]} | {("near_duplicate", i) for i in truth["dups"]}
    assert loaded >= 20
    assert len(headings) == len(ISSUES) and headings[0].startswith("Train/test leaks (10)")
