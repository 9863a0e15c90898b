"""A backbone ready to embed: an exported ONNX file, its spec, and an ONNX Runtime session.

Made from an exported file only: a name, ``hf:`` id or spec file becomes a file through the
factory (:func:`featx.load_backbone`, :mod:`featx.factory`), which exports on first use. Nothing
here reaches torch.

Examples
--------
>>> import featx, numpy as np
>>> bb = featx.load_backbone("efficientnet-lite0")  # the factory: exported on first use  # doctest: +SKIP
>>> bb = featx.Backbone(tiny_onnx)                  # an exported .onnx file (here an 8-d one)
>>> bb.name, bb.modality, bb.dim
('tiny-cnn', 'image', 8)
>>> bb.embed([np.zeros((28, 28), np.uint8), np.full((20, 30, 3), 200, np.uint8)]).shape
(2, 8)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Sequence

import numpy as np

from .defaults import DeviceDefaults, device_defaults
from .embedding import Embedded, Prepared, embed, raise_failures, run_batches
from ..errors import InputError, ParameterError
from ..files import sha256_file
from .inputs import InputChain
from ..specs.layers import check_layer
from ..specs.record import ModelFile
from .preprocess import TextTokenizer
from ..progress import progress_bar
from .runtime import Session
from ..validation import check_bool, check_int

#: With ``progress=None``, :meth:`Backbone.embed` shows its bar only once a call has run this many
#: seconds: short calls (a pipeline's transform of a few items) print nothing.
EMBED_BAR_DELAY_S = 1.0


class ItemPreparation:
    """``decode`` -> ``prepare`` through the model's :class:`~featx.engine.inputs.InputChain` (``inputs``), feeding
    ``session``'s inputs. What a :class:`Backbone` and a deployed file (:class:`featx.deploy.DeployedModel`)
    share, so that both prepare items alike.
    """

    inputs: InputChain
    session: Session

    @property
    def modality(self) -> str:
        return self.inputs.modality

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.inputs.tokenizer

    def decode(self, item, item_id=None):
        """One raw item -> RGB uint8 array (images) or checked str (texts) (:meth:`InputChain.decode`)."""
        return self.inputs.decode(item, item_id)

    def prepare(self, decoded: Sequence) -> dict[str, np.ndarray]:
        """Decoded items -> model feeds (a batch) (:meth:`InputChain.prepare`)."""
        return self.inputs.prepare(decoded, self.session.input_names)

    def load(self, item, item_id=None, budget=None):
        """One raw item -> its crop (images) or checked str (texts) (:meth:`InputChain.load`)."""
        return self.inputs.load(item, item_id, budget)

    def collate(self, loaded: Sequence, out=None) -> dict[str, np.ndarray]:
        """Loaded items -> model feeds (a batch) (:meth:`InputChain.collate`)."""
        return self.inputs.collate(loaded, self.session.input_names, out=out)


class Backbone(ItemPreparation):
    """An exported backbone: ``decode`` -> ``prepare`` -> ``run``, or all three with :meth:`embed`.

    The model file and its record (:class:`featx.specs.exported.ModelFile`), the spec's input chain
    (:class:`featx.engine.inputs.InputChain`: ``decode``, ``prepare``) and an ONNX Runtime session
    (:class:`featx.engine.runtime.Session`: ``run``).

    Parameters
    ----------
    onnx_path : path
        The exported ``.onnx`` file; its spec JSON must sit beside it (``model.json``).
    providers, threads :
        Passed to :class:`featx.engine.runtime.Session`.
    jpeg_draft : bool
        Images: decode JPEGs at a reduced scale (see :class:`featx.specs.spec.ImagePreprocess`).
    """

    def __init__(self, onnx_path, *, providers=None, threads: int | None = None, jpeg_draft: bool = False):
        check_bool(jpeg_draft, "jpeg_draft", "Backbone")
        model = ModelFile.read(onnx_path)
        self.onnx_path = model.onnx_path
        self.record = model.record
        self.spec = model.spec
        if jpeg_draft:
            if self.spec.modality != "image":
                raise ParameterError(f"jpeg_draft applies to image backbones; {self.spec.name!r} is a text backbone")
            self.spec = self.spec.replace(preprocess=dataclasses.replace(self.spec.preprocess, jpeg_draft=True))
        self.sha256 = sha256_file(self.onnx_path)
        self.session = Session(self.onnx_path, providers=providers, threads=threads)
        self.tokenizer_path = model.tokenizer_path
        self.inputs = InputChain(self.spec, self.tokenizer_path)

    def __repr__(self):
        return f"Backbone({self.spec.name!r}, {self.spec.modality}, dim={self.dim}, onnx={str(self.onnx_path)!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return int(self.spec.dim)

    @property
    def layers(self) -> dict[str, int]:
        """The intermediate layers this export carries beside its final output, ``{name: dim}``
        (``featx export NAME --layers ...``; see :mod:`featx.specs.layers`)."""
        return dict(self.spec.layers)

    @property
    def defaults(self) -> DeviceDefaults:
        """Batch size, decoding threads and precision for this session's device (:mod:`featx.engine.defaults`)."""
        return device_defaults(self.session)

    @property
    def default_batch_size(self) -> int:
        """Items per call when none is given: 16 on the CPU, 128 on a GPU (:attr:`defaults`)."""
        return self.defaults.batch_size

    @property
    def fingerprint(self) -> dict:
        """What the features depend on: the model file's bytes and the preprocessing (and the layers it carries)."""
        fp = {"name": self.spec.name, "onnx_sha256": self.sha256, "preprocess": self.spec.preprocess.to_dict(),
              "dim": self.dim}
        if self.spec.modality == "text":
            fp["tokenizer_sha256"] = sha256_file(self.tokenizer_path)
        if self.spec.layers:  # a plain export's fingerprint is unchanged
            fp["layers"] = dict(self.spec.layers)
        return fp

    @property
    def fingerprint_id(self) -> str:
        """A short hash of :attr:`fingerprint`."""
        blob = json.dumps(self.fingerprint, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # -- the three steps: decode and prepare (ItemPreparation), run --------------
    def run(self, feeds) -> np.ndarray:
        """Model feeds -> float32 (n, d)."""
        return self.session.run(feeds)

    def run_layers(self, feeds) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Model feeds -> the final features and ``{layer: (n, d_layer)}`` of every intermediate layer, one pass."""
        outputs = list(self.session.run_all(feeds).values())  # features, then the layers in spec order
        return outputs[0], dict(zip(self.spec.layers, outputs[1:]))

    # -- convenience -----------------------------------------------------------
    def embed(self, inputs, batch_size: int | None = None, ids: Sequence | None = None,
              progress: bool | None = None, layer: str | None = None,
              decode_workers: int | None = None) -> np.ndarray:
        """Embed items, in input order, as a float32 (n, d) array.

        Parameters
        ----------
        inputs : sequence or numpy.ndarray
            Images: paths, bytes, PIL images, uint8 arrays, a uint8 batch (n, H, W[, C]),
            or a model-ready float32 NCHW batch. Texts: a list of strings.
        batch_size : int, optional
            Items per ONNX Runtime call (default :attr:`default_batch_size`: 16 on the CPU, 128 on a GPU).
            Texts run longest first, so each batch pads to little more than its own texts; the rows
            come back in input order.
        ids : sequence, optional
            Names for the items in error messages (default: their position).
        progress : bool, optional
            A progress bar on stderr. Default: when stderr is a terminal, for calls longer than
            :data:`EMBED_BAR_DELAY_S`; True: always (see :mod:`featx.progress`).
        layer : str, optional
            An intermediate layer the export carries (:attr:`layers`) instead of the final output.
        decode_workers : int, optional
            Threads decoding and cropping items (default: :attr:`defaults`); the features do not depend on it.

        Raises
        ------
        ParameterError
            ``batch_size`` or ``decode_workers`` is not an int >= 1, ``progress`` not a bool or None.
        InputError, ModelInputError, NonFiniteOutputError
            A bad item (named), a batch the model refuses, NaN/inf features (the items named).
        """
        check_int(batch_size, "batch_size", "Backbone.embed", low=1, optional=True)
        check_int(decode_workers, "decode_workers", "Backbone.embed", low=1, optional=True)
        check_bool(progress, "progress", "Backbone.embed", optional=True)
        layer = check_layer(layer, self.layers, f"backbone {self.name!r}")
        batch_size = batch_size or self.default_batch_size
        if isinstance(inputs, str):
            raise InputError("embed() takes a sequence of items; wrap a single item in a list: embed([item])")
        if isinstance(inputs, np.ndarray) and self.modality == "image" and inputs.dtype != np.uint8:
            return self._embed_tensor(inputs, batch_size, progress).select(layer).rows
        items = list(inputs)
        names = None if ids is None else [str(i) for i in ids]
        if names is not None and len(names) != len(items):
            raise InputError(f"got {len(items)} inputs but {len(names)} ids")
        with self._bar(len(items), progress) as bar:
            return embed(self, items, names, batch_size=batch_size, on_error="raise", on_batch=bar.update,
                         workers=decode_workers).select(layer).rows

    def _bar(self, total: int, progress: bool | None):
        return progress_bar(total, f"featx {self.name}", progress=progress,
                            delay=EMBED_BAR_DELAY_S if progress is None else 0.0)

    def _embed_tensor(self, x: np.ndarray, batch_size: int, progress: bool | None = None) -> Embedded:
        if x.dtype != np.float32:
            raise InputError(
                f"a pre-made image batch must be float32 NCHW (n, 3, {self.spec.preprocess.size}, "
                f"{self.spec.preprocess.size}), got {x.dtype.name} {x.shape}; use x.astype(np.float32), "
                "or pass uint8 images to have featx preprocess them"
            )
        if x.ndim != 4 or x.shape[1] != 3:
            hint = " (this looks like NHWC: use x.transpose(0, 3, 1, 2))" if x.ndim == 4 and x.shape[-1] == 3 else ""
            raise InputError(f"a pre-made image batch must be float32 NCHW (n, 3, H, W), got shape {x.shape}{hint}")
        name = self.session.input_names[0]
        names = [f"#{j}" for j in range(len(x))]
        batches = (Prepared.from_feeds({name: x[i:i + batch_size]}, names[i:i + batch_size])
                   for i in range(0, len(x), batch_size))
        parts = []
        with self._bar(len(x), progress) as bar:
            for part in run_batches(self, batches):
                if part.failures:
                    raise_failures(part.failures)
                parts.append(part)
                bar.update(part.size)
        return Embedded.concat(parts, self.dim, self.layers)

