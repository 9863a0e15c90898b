"""Run a deployed file: featx's preprocessing, one ONNX Runtime session, labels and probabilities.

A file written by :func:`featx.deploy.deploy_head` carries what it needs in its
``metadata_props`` (see :mod:`featx.deploy`); a text model's tokenizer sits beside it.
:class:`DeployedModel` reads them and predicts raw items (paths, bytes, arrays, texts)
exactly as ``featx predict`` does with the head and its backbone.

Examples
--------
>>> model = DeployedModel("model.onnx")                      # doctest: +SKIP
>>> model.classes                                             # doctest: +SKIP
['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']
>>> model.predict(["digit.png"])                              # doctest: +SKIP
array(['7'], dtype=object)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..decode import check_text, decode_image
from ..errors import DeployError, InputError, NonFiniteOutputError, ParameterError, SpecError
from ..files import sha256_file
from ..progress import progress_bar
from ..preprocess import TextTokenizer, image_batch
from ..registry import preprocess_from_dict
from ..runtime import Session
from .compose import read_metadata_props
from .head import LABEL, PROBABILITIES

__all__ = ["DeployedModel", "Predictions", "FORMAT"]

#: Version of the deployed-file layout (metadata keys, inputs, outputs); readers refuse newer ones.
FORMAT = 1
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class Predictions:
    """What a deployed model said about a list of items.

    ``kept`` holds the positions (in the input order) of the items predicted; with
    ``on_error="skip"`` the others failed and were reported through ``warn``.
    ``probabilities`` is None for a model without them (an uncalibrated SVM head).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    kept: np.ndarray


class DeployedModel:
    """A fused backbone + head file, ready to predict raw items.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file written by ``featx deploy``.
    providers, threads :
        As in :class:`featx.runtime.Session`.

    Raises
    ------
    DeployError
        Not a featx deployed file, a newer layout, or a tokenizer that is missing or changed.
    """

    def __init__(self, path, *, providers=None, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DeployError(f"no deployed model at {self.path}; write one with `featx deploy HEAD --out {self.path}`")
        self.session = Session(self.path, providers=providers, threads=threads)
        try:
            props = self.session.session.get_modelmeta().custom_metadata_map
        except SpecError:  # a raw-input variant needs onnxruntime-extensions' ops: say so, if that is it
            import onnx

            props = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
            if "featx.raw" not in props:
                raise
        self.metadata = read_metadata_props(props)
        fmt = self.metadata.get("format")
        if not isinstance(fmt, int):
            raise DeployError(f"{self.path} is not a model written by `featx deploy` (no featx.format in its "
                              "metadata_props); for a backbone, use featx.load_backbone, for a head, its .skops file")
        if fmt > FORMAT:
            raise DeployError(f"{self.path} has deploy format {fmt}; this featx reads up to {FORMAT}: upgrade featx")
        if "raw" in self.metadata:
            raise DeployError(f"{self.path} is a raw-input variant (encoded bytes or a string in); run it with "
                              f"featx.deploy.raw.raw_session, or use {self.metadata['raw'].get('from')} here")
        self.modality = self.metadata["modality"]
        self.preprocess = preprocess_from_dict(self.metadata["preprocess"], self.modality)
        self.classes = [str(c) for c in self.metadata["classes"]]
        self.has_probabilities = PROBABILITIES in [o.name for o in self.session.session.get_outputs()]
        self._tokenizer = None
        if self.modality == "text":
            record = self.metadata.get("tokenizer") or {}
            self.tokenizer_path = self.path.parent / str(record.get("file", f"{self.path.stem}.tokenizer.json"))
            if not self.tokenizer_path.is_file():
                raise DeployError(f"{self.path} is a text model; its tokenizer {self.tokenizer_path.name} must sit "
                                  "beside it (featx deploy writes both)")
            if record.get("sha256") and sha256_file(self.tokenizer_path) != record["sha256"]:
                raise DeployError(f"{self.tokenizer_path} is not the tokenizer {self.path.name} was deployed with "
                                  "(sha256 differs); copy the one featx deploy wrote")

    def __repr__(self):
        return f"DeployedModel({str(self.path)!r}, {self.modality}, {len(self.classes)} classes)"

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            self._tokenizer = TextTokenizer(self.tokenizer_path, self.preprocess.max_length)
        return self._tokenizer

    # -- the steps -------------------------------------------------------------
    def decode(self, item, item_id=None):
        """One raw item -> RGB uint8 array (images) or checked str (texts)."""
        if self.modality == "image":
            return decode_image(item, item_id=item_id, jpeg_min_side=self.preprocess.jpeg_min_side)
        return check_text(item, item_id=item_id)

    def prepare(self, decoded: Sequence) -> dict[str, np.ndarray]:
        """Decoded items -> the model's inputs (a batch)."""
        names = self.session.input_names
        if self.modality == "image":
            return {names[0]: image_batch(decoded, self.preprocess)}
        return self.tokenizer.encode(decoded).feeds(names)

    def run(self, feeds) -> tuple[np.ndarray, np.ndarray | None]:
        """Model inputs -> (labels as str objects, float32 probabilities or None)."""
        self.session.validate(feeds)
        wanted = [LABEL, PROBABILITIES] if self.has_probabilities else [LABEL]
        out = self.session.session.run(wanted, dict(feeds))
        labels = np.asarray([str(v) for v in out[0]], dtype=object)
        return labels, (out[1] if self.has_probabilities else None)

    # -- convenience -----------------------------------------------------------
    def predict_items(self, items: Sequence, *, ids: Sequence | None = None, batch_size: int = 16,
                      on_error: str = "raise", warn: Callable[[str], None] | None = None,
                      progress: bool | None = None) -> Predictions:
        """Predict raw items in batches, in input order.

        Parameters
        ----------
        items : sequence
            Images (paths, bytes, arrays, PIL images) or texts, as the model's modality wants.
        ids : sequence, optional
            Names for the items in messages (default: their position).
        batch_size : int
        on_error : {"raise", "skip"}
            A bad item (undecodable, or non-finite output) stops the run, or is left out and
            reported to ``warn(message)``.
        progress : bool, optional
            A progress bar on stderr (default: when stderr is a terminal; see :mod:`featx.progress`).

        Raises
        ------
        InputError, NonFiniteOutputError
            With ``on_error="raise"``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ParameterError(f"The 'batch_size' parameter must be an int in [1, inf). Got {batch_size!r} instead.")
        if on_error not in ON_ERROR:
            raise ParameterError(f"The 'on_error' parameter must be one of {ON_ERROR}. Got {on_error!r} instead.")
        if isinstance(items, str):
            raise InputError("predict takes a sequence of items; wrap a single item in a list: [item]")
        items = list(items)
        names = [f"#{i}" for i in range(len(items))] if ids is None else [str(i) for i in ids]
        if len(names) != len(items):
            raise InputError(f"got {len(items)} items but {len(names)} ids")
        labels, probabilities, kept = [], [], []
        for start in range(0, len(items), batch_size):
            decoded, positions = [], []
            for i in range(start, min(start + batch_size, len(items))):
                try:
                    decoded.append(self.decode(items[i], names[i]))
                    positions.append(i)
                except InputError as e:
                    if on_error == "raise":
                        raise
                    if warn is not None:
                        warn(f"skipped {names[i]}: {e}")
            if not decoded:
                continue
            batch_labels, batch_proba = self.run(self.prepare(decoded))
            good = np.ones(len(decoded), bool) if batch_proba is None else np.isfinite(batch_proba).all(axis=1)
            if not good.all():
                bad = [names[positions[j]] for j in np.flatnonzero(~good)]
                if on_error == "raise":
                    raise NonFiniteOutputError(f"the model produced NaN/inf probabilities for item(s) "
                                               f"{', '.join(bad[:5])}")
                if warn is not None:
                    for name in bad:
                        warn(f"skipped {name}: the model produced NaN/inf probabilities")
            labels.extend(batch_labels[good])
            kept.extend(np.asarray(positions)[good])
            if batch_proba is not None:
                probabilities.append(batch_proba[good])
        proba = None
        if self.has_probabilities:
            proba = np.concatenate(probabilities) if probabilities else np.empty((0, len(self.classes)), np.float32)
        return Predictions(np.asarray(labels, dtype=object), proba, np.asarray(kept, dtype=np.int64))

    def predict(self, items: Sequence, *, batch_size: int = 16) -> np.ndarray:
        """Labels (str objects) of raw items; any bad item raises."""
        return self.predict_items(items, batch_size=batch_size).labels

    def predict_proba(self, items: Sequence, *, batch_size: int = 16) -> np.ndarray:
        """Probabilities (n, len(classes)) of raw items, columns in :attr:`classes` order."""
        if not self.has_probabilities:
            raise DeployError(f"{self.path} has no probabilities output (its SVM head was too small to calibrate)")
        return self.predict_items(items, batch_size=batch_size).probabilities
