"""The deploy gate: the fused file must predict what ``featx predict`` predicts with the head.

Both paths see the same decoded items. The two-stage path runs the backbone's own file
and then the scikit-learn head (what ``featx predict HEAD.skops`` does); the fused path runs
the deployed file with its own preprocessing. The gate passes when the probabilities differ
by at most :data:`PARITY_TOLERANCE` and every label agrees.

Which items (:func:`gate_items`): those given (``--parity-data``); else a stratified sample
of the head's training data when it can be opened again (a built-in, or a folder or
manifest that still exists); else real items bundled with featx (digit scans and two
photos; sentences and, when fetched, fine-food reviews). A kNN head weighted by distance
is gated on held-out items instead: on its own training items scikit-learn's answer
hinges on a float32 rounding error (the item's distance to itself is 0 up to ~1e-7, and
its weight is the inverse), so neither side is more right there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import DeployError, InputError
from ..specs.layers import FINAL
from ..specs.samples import PARITY_SENTENCES, sample_photos
from ..sources import Item, open_dataset, subset

log = logging.getLogger("featx")

__all__ = ["PARITY_TOLERANCE", "DEFAULT_PARITY_ITEMS", "ParityReport", "gate_items", "measure_parity",
           "memorises_training_items"]

#: Largest difference in probabilities the gate accepts (labels must all agree).
PARITY_TOLERANCE = 1e-4
#: Items the gate runs by default.
DEFAULT_PARITY_ITEMS = 128
#: Source kinds whose dataset name is ``KIND:PATH`` (see :class:`featx.sources.Dataset`).
_PATH_KINDS = ("folder", "txt", "csv", "tsv", "jsonl", "parquet")


@dataclass(frozen=True)
class ParityReport:
    """How closely the fused file follows the two-stage path on real items.

    Attributes
    ----------
    n_items : int
        Items compared.
    max_abs_diff : float or None
        Largest difference of any probability (None when the head has no probabilities).
    labels_differ : int
        Items whose labels differ.
    items : str
        Where the items came from.
    tolerance : float
    differing : tuple of str
        Ids of the items worst off (up to 5), when the gate fails.
    n_skipped : int
        Items that could not be decoded (left out of both paths).
    """

    n_items: int
    max_abs_diff: float | None
    labels_differ: int
    items: str
    tolerance: float = PARITY_TOLERANCE
    differing: tuple[str, ...] = field(default=())
    n_skipped: int = 0

    @property
    def passed(self) -> bool:
        close = self.max_abs_diff is None or self.max_abs_diff <= self.tolerance
        return self.n_items > 0 and close and self.labels_differ == 0

    def summary(self) -> str:
        proba = ("no probabilities (labels only)" if self.max_abs_diff is None
                 else f"max |fused - two-stage| = {self.max_abs_diff:.2e} in probabilities")
        return (f"{proba}, {self.labels_differ} of {self.n_items} labels differ on {self.items} "
                f"(tolerance {self.tolerance:g})")

    def to_dict(self) -> dict:
        return {"n_items": self.n_items, "max_abs_diff": self.max_abs_diff, "labels_differ": self.labels_differ,
                "items": self.items, "tolerance": self.tolerance, "n_skipped": self.n_skipped,
                "reference": "featx predict with the head (backbone ONNX file, then the scikit-learn head)"}


def memorises_training_items(head) -> bool:
    """Whether the head's answer on its own training items is ill-conditioned (distance-weighted kNN)."""
    final = head.steps[-1][1] if hasattr(head, "steps") else head
    return getattr(final, "weights", None) == "distance" and hasattr(final, "kneighbors")


def _reopen(name: str):
    """The source a dataset name was made from: ``builtin:...`` as is, ``folder:/p`` -> ``/p``."""
    kind, _, rest = name.partition(":")
    return rest if kind in _PATH_KINDS and rest else name


def gate_items(head_meta: dict, modality: str, *, data=None, n: int = DEFAULT_PARITY_ITEMS, seed: int = 0,
                 held_out: bool = False) -> tuple[list[Item], str]:
    """Real items for the gate, and a description of where they came from.

    Parameters
    ----------
    head_meta : dict
        The head's saved metadata (``train`` names its training data).
    modality : {"image", "text"}
    data : str, path or Dataset, optional
        Use these items instead (a featx dataset source).
    n : int
        Items wanted (a stratified sample when the source is labelled).
    held_out : bool
        Avoid the training items (see the module docstring): a built-in's other split, else
        bundled items.

    Raises
    ------
    DeployError
        ``data`` holds the other modality.
    """
    if data is not None:
        dataset = open_dataset(data)
        if dataset.modality != modality:
            raise DeployError(f"parity data {dataset.name} holds {dataset.modality}s; the backbone takes {modality}s")
        return list(subset(dataset, n, seed=seed).items), f"{min(n, len(dataset))} items of {dataset.name}"
    train = head_meta.get("train")
    why = "its training data is not recorded"
    if isinstance(train, str):
        source = _reopen(train)
        if held_out:
            source = source[:-len(":train")] + ":test" if source.endswith(":train") else None
            why = f"a distance-weighted kNN head is gated on held-out items, and {train} has no test split"
        if source is not None:
            try:
                dataset = open_dataset(source)
                if dataset.modality == modality:
                    picked = subset(dataset, n, seed=seed)
                    return list(picked.items), f"{len(picked)} items of {dataset.name}"
                why = f"{train} holds {dataset.modality}s"
            except Exception as e:  # moved, deleted, not fetched: fall back to bundled items, and say why
                why = f"{train} cannot be opened ({str(e)[:120]})"
    items, what = bundled_items(modality, n, seed)
    return items, f"{what} ({why})"


def bundled_items(modality: str, n: int, seed: int = 0) -> tuple[list[Item], str]:
    """Real items that ship with featx: digit scans + sklearn's two photos; sentences + fine-food reviews."""
    if modality == "image":
        photos = [Item(f"sklearn-photo-{i}", rgb) for i, rgb in enumerate(sample_photos())]
        digits = subset(open_dataset("builtin:digits:test"), max(1, n - len(photos)), seed=seed)
        return list(digits.items) + photos, f"{len(digits)} builtin:digits:test images + {len(photos)} sklearn photos"
    items = [Item(f"sentence-{i}", text) for i, text in enumerate(PARITY_SENTENCES)]
    try:
        reviews = subset(open_dataset("builtin:fine-foods:test"), max(1, n - len(items)), seed=seed)
    except Exception as e:  # not fetched: the sentences only
        log.debug("fine-foods not available for the deploy gate: %s", e)
        return items, f"{len(items)} bundled sentences"
    what = f"{len(items)} bundled sentences + {len(reviews)} builtin:fine-foods:test reviews"
    return items + list(reviews.items), what


def measure_parity(fused, backbone, head, items: Sequence[Item], *, description: str, batch_size: int,
                   tolerance: float = PARITY_TOLERANCE, layer: str | None = None) -> ParityReport:
    """Run both paths on ``items`` and compare.

    Parameters
    ----------
    fused : featx.deploy.DeployedModel
    backbone : featx.Backbone
        The backbone the head was trained on.
    head : fitted estimator
    items : sequence of Item
    description : str
        Where the items came from (kept in the report).
    layer : str, optional
        The backbone layer the head was trained on (``featx train --layer``; None: the final features).
    """
    diffs, differ, worst = [], 0, []
    skipped = compared = 0
    for start in range(0, len(items), batch_size):
        decoded, ids = [], []
        for item in items[start:start + batch_size]:
            try:
                decoded.append(backbone.decode(item.ref, item.id))
                ids.append(item.id)
            except InputError as e:
                skipped += 1
                log.info("deploy gate: skipped %s: %s", item.id, e)
        if not decoded:
            continue
        feeds = backbone.prepare(decoded)
        features = backbone.run(feeds) if layer in (None, FINAL) else backbone.run_layers(feeds)[1][layer]
        labels, proba = fused.predict_feeds(fused.prepare(decoded))
        expected = np.asarray([str(v) for v in head.predict(features)], dtype=object)
        gap = np.zeros(len(ids))
        if proba is not None:
            gap = np.abs(proba.astype(np.float64) - head.predict_proba(features)).max(axis=1)
            diffs.append(float(gap.max()))
        wrong = labels != expected
        differ += int(wrong.sum())
        compared += len(ids)
        worst += [(float("inf") if w else g, i) for i, g, w in zip(ids, gap, wrong)]
    if compared == 0:
        raise DeployError(f"the deploy gate had no item to compare: none of the {len(items)} items of "
                          f"{description} could be decoded; give real items with --parity-data")
    worst.sort(key=lambda pair: -pair[0])
    return ParityReport(compared, max(diffs) if fused.has_probabilities else None, differ, description, tolerance,
                        n_skipped=skipped, differing=tuple(i for g, i in worst[:5] if g > tolerance))
