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

from ..engine.backbone import ItemPreparation

from ..engine.defaults import ON_ERROR
from ..engine.embedding import embed
from ..errors import DeployError, InputError, SpecError
from ..files import sha256_file
from ..engine.inputs import InputChain
from ..progress import progress_bar
from ..specs.spec import BackboneSpec, preprocess_from_dict
from ..engine.runtime import Session
from ..validation import check_choice, check_int
from .compose import read_metadata_props
from .head import LABEL, PROBABILITIES
from .trust import check_metadata, graph_labels, tokenizer_path

__all__ = ["DeployedModel", "Predictions", "FORMAT"]

#: Version of the deployed-file layout (metadata keys, inputs, outputs); readers refuse newer ones.
FORMAT = 1


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


class DeployedModel(ItemPreparation):
    """A fused backbone + head file, ready to predict raw items.

    It prepares items as the backbone it holds does (its spec's :class:`featx.engine.inputs.InputChain`,
    through :class:`featx.engine.backbone.ItemPreparation`),
    and predicts through featx's embedding routine (:mod:`featx.engine.embedding`), whose error policy
    it shares: for that routine a "row" is the label's index followed by the probabilities.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file written by ``featx deploy``.
    providers, threads :
        As in :class:`featx.engine.runtime.Session`.

    Raises
    ------
    DeployError
        Not a featx deployed file, a newer layout, or a tokenizer that is missing or changed.
    """

    def __init__(self, path, *, providers=None, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DeployError(f"no deployed model at {self.path}; write one with `featx deploy HEAD --out {self.path}`")
        self.session = Session(self.path, providers=providers, threads=threads, io_binding=False)
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
        outputs = {o.name: o for o in self.session.session.get_outputs()}
        width = outputs[PROBABILITIES].shape[-1] if PROBABILITIES in outputs and outputs[PROBABILITIES].shape else None
        check_metadata(self.path, self.metadata, probabilities_width=width if isinstance(width, int) else None,
                       graph_labels=graph_labels(self.path))
        modality = self.metadata["modality"]
        self.classes = [str(c) for c in self.metadata["classes"]]
        self._index = {c: i for i, c in enumerate(self.classes)}
        self.has_probabilities = PROBABILITIES in outputs
        try:  # bounded (featx.specs.bounds) before anything is allocated from it
            preprocess = preprocess_from_dict(self.metadata["preprocess"], modality)
            backbone = self.metadata.get("backbone")
            name = backbone.get("name", self.path.stem) if isinstance(backbone, dict) else self.path.stem
            self.spec = BackboneSpec(name=str(name), modality=modality,
                                     source={"kind": "deployed", "file": self.path.name},
                                     preprocess=preprocess, dim=1 + len(self.classes) * self.has_probabilities)
        except (SpecError, TypeError) as e:
            raise DeployError(f"{self.path}: its featx.preprocess/backbone metadata is refused ({e}); deploy the "
                              "head again (featx deploy HEAD --out FILE)") from None
        self.tokenizer_path = None
        if modality == "text":
            record = self.metadata.get("tokenizer") or {}
            self.tokenizer_path = tokenizer_path(self.path, record)  # confined to the file's folder
            if not self.tokenizer_path.is_file():
                raise DeployError(f"{self.path} is a text model; its tokenizer {self.tokenizer_path.name} must sit "
                                  "beside it (featx deploy writes both)")
            if record.get("sha256") and sha256_file(self.tokenizer_path) != record["sha256"]:
                raise DeployError(f"{self.tokenizer_path} is not the tokenizer {self.path.name} was deployed with "
                                  "(sha256 differs); copy the one featx deploy wrote")
        self.inputs = InputChain(self.spec, self.tokenizer_path)

    def __repr__(self):
        return f"DeployedModel({str(self.path)!r}, {self.modality}, {len(self.classes)} classes)"

    @property
    def preprocess(self):
        """featx's preprocessing, as recorded in the file."""
        return self.spec.preprocess

    @property
    def dim(self) -> int:
        """Width of a row for :mod:`featx.engine.embedding`: the label's index, then the probabilities."""
        return int(self.spec.dim)

    # -- decode and prepare (ItemPreparation), run ------------------------------
    def predict_feeds(self, feeds) -> tuple[np.ndarray, np.ndarray | None]:
        """Model inputs -> (labels as str objects, float32 probabilities or None)."""
        self.session.validate(feeds)
        wanted = [LABEL, PROBABILITIES] if self.has_probabilities else [LABEL]
        out = self.session.session.run(wanted, dict(feeds))
        labels = np.asarray([str(v) for v in out[0]], dtype=object)
        return labels, (out[1] if self.has_probabilities else None)

    def run(self, feeds) -> np.ndarray:
        """Model inputs -> float32 rows: the label's index in :attr:`classes`, then the probabilities."""
        labels, probabilities = self.predict_feeds(feeds)
        unknown = sorted(set(labels) - set(self._index))
        if unknown:
            raise DeployError(f"{self.path}: its graph predicts {unknown[:3]}, not in its featx.classes; the file "
                              "was edited or damaged: deploy the head again")
        index = np.array([[self._index[label]] for label in labels], np.float32).reshape(len(labels), 1)
        return index if probabilities is None else np.hstack([index, probabilities.astype(np.float32)])

    # -- convenience -----------------------------------------------------------
    def predict_items(self, items: Sequence, *, ids: Sequence | None = None, batch_size: int | None = None,
                      on_error: str = "raise", warn: Callable[[str], None] | None = None,
                      progress: bool | None = None) -> Predictions:
        """Predict raw items in batches, in input order.

        Parameters
        ----------
        items : sequence
            Images (paths, bytes, arrays, PIL images) or texts, as the model's modality wants.
        ids : sequence, optional
            Names for the items in messages (default: their position).
        batch_size : int, optional
            Default: the device's (:func:`featx.engine.defaults.device_defaults`).
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
        check_int(batch_size, "batch_size", "DeployedModel.predict_items", low=1, optional=True)
        check_choice(on_error, "on_error", "DeployedModel.predict_items", ON_ERROR)
        if isinstance(items, str):
            raise InputError("predict takes a sequence of items; wrap a single item in a list: [item]")
        items = list(items)
        names = None if ids is None else [str(i) for i in ids]
        if names is not None and len(names) != len(items):
            raise InputError(f"got {len(items)} items but {len(names)} ids")
        with progress_bar(len(items), f"featx {self.path.name}", progress=progress) as bar:
            out = embed(self, items, names, batch_size=batch_size, on_error=on_error, on_batch=bar.update)
        if warn is not None:
            for failure in out.failures:
                warn(f"skipped {failure.id}: {failure.reason}")
        labels = np.array([self.classes[int(i)] for i in out.rows[:, 0]], dtype=object)
        proba = out.rows[:, 1:] if self.has_probabilities else None
        return Predictions(labels, proba, out.positions)

    def predict(self, items: Sequence, *, batch_size: int | None = None) -> np.ndarray:
        """Labels (str objects) of raw items; any bad item raises."""
        return self.predict_items(items, batch_size=batch_size).labels

    def predict_proba(self, items: Sequence, *, batch_size: int | None = None) -> np.ndarray:
        """Probabilities (n, len(classes)) of raw items, columns in :attr:`classes` order."""
        if not self.has_probabilities:
            raise DeployError(f"{self.path} has no probabilities output (its SVM head was too small to calibrate)")
        return self.predict_items(items, batch_size=batch_size).probabilities
