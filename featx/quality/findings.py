"""What an audit found: one :class:`Finding` per flagged item, gathered in an :class:`AuditResult`."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Issue types, in the order the report shows them.
ISSUES = ("leak", "exact_duplicate", "near_duplicate", "label", "outlier")
FIELDS = ("id", "issue", "score", "split", "given", "suggested", "neighbours", "signal")
#: What found a duplicate or leak: the content hash, the embeddings, the pixels' perceptual hash, or both of the last.
SIGNALS = ("bytes", "embedding", "pixels", "embedding+pixels")


@dataclass
class Finding:
    """One flagged item.

    Attributes
    ----------
    id : str
        The item's id in its cache.
    issue : {"label", "near_duplicate", "exact_duplicate", "leak", "outlier"}
    score : float
        How sure: label issues, 1 - cleanlab's label quality; duplicates and leaks, the cosine
        similarity (1.0 for byte copies; for a copy found by its pixels, the share of pHash bits that
        agree); outliers, the mean cosine distance to the k nearest rows.
    split : {"train", "test"}
        Which cache the item is in (a leak names the test item; its neighbours are training items).
    given, suggested : str or None
        The label in the cache and the head's out-of-fold prediction.
    neighbours : list of str
        Ids of the nearest rows (of the training cache), nearest first.
    signal : {"embedding", "bytes", "pixels", "embedding+pixels"}
        What found it (see :data:`SIGNALS`): the embeddings for every issue; a duplicate or leak may
        instead be found by the content hash (byte copies), by the pixels' perceptual hash
        (:mod:`featx.quality.pixels`), or by both the embeddings and the pixels.
    """

    id: str
    issue: str
    score: float
    split: str = "train"
    given: str | None = None
    suggested: str | None = None
    neighbours: list = field(default_factory=list)
    signal: str = "embedding"

    def row(self) -> dict:
        out = asdict(self)
        out["score"] = round(float(self.score), 6)
        return out


@dataclass
class AuditResult:
    """The outcome of :func:`featx.quality.audit`.

    Attributes
    ----------
    findings : list of Finding
        Every flagged item, grouped by issue (see :data:`ISSUES`) and sorted by score within one.
    n_train, n_test : int
    threshold : float
        Cosine similarity at or above which two rows are near-duplicates (or a leak).
    per_class : dict
        ``{class: {issue: count}}`` over the training cache.
    confused : list of dict
        ``{"given", "suggested", "count"}``: the class pairs of the label issues, most frequent first.
    settings : dict
        How the audit ran (head, folds, neighbour index, outlier fraction, seconds).
    train_refs, test_refs : dict
        ``{id: ref}`` (file path, pixel array or text) of the flagged items and their neighbours, for
        the report's thumbnails and texts; empty when the datasets could not be reopened. Not written
        to the CSV or JSON.
    """

    findings: list
    n_train: int
    n_test: int = 0
    threshold: float = 0.0
    per_class: dict = field(default_factory=dict)
    confused: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    train_refs: dict = field(default_factory=dict, repr=False)
    test_refs: dict = field(default_factory=dict, repr=False)

    def counts(self) -> dict:
        """``{issue: number of findings}`` for every issue type."""
        return {issue: sum(f.issue == issue for f in self.findings) for issue in ISSUES}

    def ids(self, issue: str | None = None) -> set:
        """Ids flagged (for one issue, or any)."""
        return {f.id for f in self.findings if issue is None or f.issue == issue}

    def summary(self) -> dict:
        """A JSON-ready summary (no findings)."""
        return {"n_train": self.n_train, "n_test": self.n_test, "threshold": self.threshold,
                "counts": self.counts(), "per_class": self.per_class, "confused": self.confused,
                "settings": self.settings}

    def to_csv(self, path) -> Path:
        """Write every finding as CSV (neighbours joined by ``;``); ``featx train --exclude`` reads it."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            for finding in self.findings:
                row = finding.row()
                row["neighbours"] = ";".join(row["neighbours"])
                writer.writerow(row)
        return path

    def to_json(self, path) -> Path:
        """Write the summary and every finding as JSON."""
        path = Path(path)
        path.write_text(json.dumps({**self.summary(), "findings": [f.row() for f in self.findings]}, indent=1),
                        encoding="utf-8")
        return path


def read_excluded(path) -> set:
    """The ids of a findings CSV (or of any CSV with an ``id`` column, or one id a line).

    Examples
    --------
    >>> from pathlib import Path
    >>> _ = Path("f.csv").write_text("id,issue\\na/1,label\\nb/2,outlier\\n")
    >>> sorted(read_excluded("f.csv"))
    ['a/1', 'b/2']
    """
    from ..errors import InputError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the exclusion list {path}: {e.strerror}; pass a findings.csv "
                         "written by `featx audit`") from None
    lines = text.splitlines()
    if lines and "id" in next(csv.reader([lines[0]])):
        return {row["id"] for row in csv.DictReader(lines) if row.get("id")}
    return {line.strip() for line in lines if line.strip()}
