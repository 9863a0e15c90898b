"""Real inputs that ship inside featx's dependencies, for parity checks and default calibration.

Exports compare ONNX Runtime with PyTorch on them (:mod:`featx.torchmodels.export`), variants compare
themselves with fp32 on them (:mod:`featx.torchmodels.quantize`): real photos and sentences, never noise,
available offline on every install.

Examples
--------
>>> from featx.specs.samples import PARITY_SENTENCES, sample_photos
>>> [p.shape for p in sample_photos()]
[(427, 640, 3), (427, 640, 3)]
>>> len(PARITY_SENTENCES)
4
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("featx")

#: Real sentences for the text parity check (short, long, punctuation, non-ASCII).
PARITY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "These cookies arrived stale and crumbled, I would not order them again.",
    "Café au lait, crème brûlée and naïve façades: diacritics should tokenize too!",
    "A",
)
#: What :func:`sample_photos` are, as recorded in an export's parity section.
SAMPLE_PHOTOS = "sklearn load_sample_images (china.jpg, flower.jpg)"


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two bundled photos (china.jpg, flower.jpg) as RGB uint8."""
    from sklearn.datasets import load_sample_images  # deferred: scikit-learn takes ~2 s to import

    return list(load_sample_images().images)


def held_out_photos() -> list[tuple[str, object]]:
    """``(id, image)`` pairs of real photos for a variant's parity: sklearn's two (whole) and
    matplotlib's ``grace_hopper.jpg`` (its path) when matplotlib's sample data are installed."""
    china, flower = sample_photos()
    photos: list[tuple[str, object]] = [("sklearn/china.jpg", china), ("sklearn/flower.jpg", flower)]
    try:
        from matplotlib import cbook  # deferred: matplotlib is slow to import and used only here

        photos.append(("matplotlib/grace_hopper.jpg", str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))))
    except Exception as e:  # matplotlib is a dependency, but its sample data may be stripped
        log.debug("grace_hopper.jpg not available for parity: %s", e)
    return photos
