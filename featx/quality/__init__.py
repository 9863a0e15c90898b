"""Auditing a dataset from its cached embeddings: label issues, duplicates, leaks, outliers.

::

    audit(cache, test=None, ...) -> AuditResult        featx.quality.core
      label issues      a head's out-of-fold probabilities (featx's folds), ranked by cleanlab
      near-duplicates   cosine similarity of centred, normalised rows: exact or faiss (neighbours)
      exact duplicates  sha1 of each item's bytes, pixels or text (from the cache's listing)
      leaks             test items nearly copying a training item
      outliers          largest mean distance to the k nearest rows
    write_report(result, path)                            featx.quality.report: one self-contained HTML file
    AuditResult.to_csv / to_json; read_excluded(csv)      featx.quality.findings
"""

from .core import OUTLIER_FRACTION, THRESHOLD, audit
from .findings import ISSUES, AuditResult, Finding, read_excluded
from .report import write_report

__all__ = ["ISSUES", "OUTLIER_FRACTION", "THRESHOLD", "AuditResult", "Finding", "audit", "read_excluded",
           "write_report"]

