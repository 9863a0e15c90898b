"""The audit's HTML report: one self-contained file, thumbnails inlined as base64 PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from .findings import ISSUES

TITLES = {"leak": "Train/test leaks", "exact_duplicate": "Exact duplicates", "near_duplicate": "Near-duplicates",
          "label": "Label issues", "outlier": "Outliers"}
EXPLAIN = {"leak": "test items that (nearly) copy a training item: scores on them are inflated",
           "exact_duplicate": "byte-identical items within the training set",
           "near_duplicate": "pairs of training items whose embeddings are nearly the same",
           "label": "items whose given label the head's out-of-fold prediction contradicts (cleanlab)",
           "outlier": "items far from every other item"}
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h2{border-bottom:2px solid #ccc;padding-bottom:.2em}.card{display:inline-block;vertical-align:top;margin:.4em;
padding:.5em;background:#fff;border:1px solid #ddd;border-radius:6px;width:260px}.main img{width:96px;height:96px;
image-rendering:pixelated}.nb img{width:40px;height:40px;image-rendering:pixelated;margin-right:2px}
.given{color:#b00}.sugg{color:#070}.txt{font-size:.85em;background:#f3f3f3;padding:.3em}.id{font-size:.75em;color:#666;
word-break:break-all}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}.muted{color:#777}"""
SHOW = 60  # cards shown per issue type (every finding is in the CSV/JSON)


def _thumb(ref, size: int) -> str | None:
    """A PNG data URL of an image ref, decoded by featx's one decode chain; None for texts and unreadable items."""
    from PIL import Image

    from ..engine.decode import decode_image
    from ..errors import InputError

    if ref is None or (isinstance(ref, str) and not ref.startswith("/")):  # a text, not a file
        return None

    def png(image):
        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    try:
        data = decode_image(ref, reduce=png)
    except InputError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _item(ref, item_id: str, size: int, text_len: int) -> str:
    thumb = _thumb(ref, size)
    if thumb is not None:
        return f'<img src="{thumb}" alt="{html.escape(item_id)}" title="{html.escape(item_id)}">'
    if ref is not None and not isinstance(ref, np.ndarray):
        text = str(ref)
        short = text if len(text) <= text_len else text[:text_len] + "…"
        return f'<div class="txt" title="{html.escape(item_id)}">{html.escape(short)}</div>'
    return f'<div class="id">{html.escape(item_id)}</div>'


def write_report(result, path, *, train_refs=None, test_refs=None, show: int = SHOW) -> Path:
    """Write the findings of an :class:`~featx.quality.AuditResult` as one HTML file.

    Parameters
    ----------
    result : AuditResult
    path : path
        The ``.html`` file.
    train_refs, test_refs : dict, optional
        ``{id: ref}`` (file path, pixel array or text) of the items, for thumbnails and texts; default
        the result's own (:attr:`AuditResult.train_refs`); without any the report shows ids.
    show : int
        Cards per issue type (the CSV/JSON hold every finding).

    Examples
    --------
    >>> from featx.quality import AuditResult, Finding
    >>> r = AuditResult([Finding("a", "label", 0.9, given="cat", suggested="dog", neighbours=["b"])], n_train=2)
    >>> p = write_report(r, "report.html", train_refs={"a": "a text", "b": "another"})
    >>> text = p.read_text()
    >>> "Label issues" in text and "a text" in text
    True
    """
    train_refs = result.train_refs if train_refs is None else train_refs
    test_refs = result.test_refs if test_refs is None else test_refs
    counts = result.counts()
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>featx audit</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>featx audit: {html.escape(str(result.settings.get('train', '')))}</h1>",
             f"<p>{result.n_train} training items" + (f", {result.n_test} test items" if result.n_test else "")
             + f"; near-duplicate threshold: cosine ≥ {result.threshold:g}; neighbours: "
             + html.escape(str(result.settings.get("neighbours", ""))) + "</p><ul>"]
    parts += [f"<li><a href='#{i}'>{TITLES[i]}</a>: {counts[i]}</li>" for i in ISSUES]
    parts.append("</ul>")
    if result.confused:
        parts.append("<h3>Most confused class pairs (given → suggested)</h3><table><tr><th>given</th>"
                     "<th>suggested</th><th>items</th></tr>")
        parts += [f"<tr><td>{html.escape(c['given'])}</td><td>{html.escape(c['suggested'])}</td><td>{c['count']}</td></tr>"
                  for c in result.confused[:10]]
        parts.append("</table>")
    for issue in ISSUES:
        group = [f for f in result.findings if f.issue == issue]
        parts.append(f"<section id='{issue}'><h2>{TITLES[issue]} ({len(group)})</h2>"
                     f"<p class='muted'>{EXPLAIN[issue]}</p>")
        for f in group[:show]:
            refs = test_refs if f.split == "test" else train_refs
            labels = ""
            if f.given is not None:
                labels += f"<div>given: <b class='given'>{html.escape(f.given)}</b></div>"
            if f.suggested is not None:
                word = "copy's label" if issue == "leak" else "suggested"
                labels += f"<div>{word}: <b class='sugg'>{html.escape(f.suggested)}</b></div>"
            nbs = "".join(_item(train_refs.get(n), n, 40, 60) for n in f.neighbours[:5])
            parts.append(f"<div class='card finding' data-issue='{issue}' data-id='{html.escape(f.id)}'>"
                         f"<div class='main'>{_item(refs.get(f.id), f.id, 96, 200)}</div>"
                         f"<div class='id'>{html.escape(f.id)} ({f.split})</div>{labels}"
                         f"<div>score {f.score:.3f}</div><div class='nb'>neighbours: {nbs}</div></div>")
        if len(group) > show:
            parts.append(f"<p class='muted'>… and {len(group) - show} more in findings.csv</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
