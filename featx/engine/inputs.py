"""The one decode -> preprocess chain of a backbone spec: raw items -> model-ready arrays.

::

    raw item --decode--> RGB uint8 (H, W, 3) --crop--> uint8 (S, S, 3) --normalize--> float32 (n, 3, S, S)
    raw item --decode--> checked str ----------------------------------tokenize--> int64 ids, mask, types (n, L)
             <------------------ load (per item) ---------------> <---------- collate (per batch) ---------->

:class:`InputChain` is what :class:`featx.engine.backbone.Backbone` runs before its ONNX session, what
fine-tuning (:mod:`featx.torchmodels.finetune`) feeds its torch module and what int8 calibration
(:mod:`featx.torchmodels.quantize`) feeds ONNX Runtime's calibrator, so the three see the same tensors for the
same items, the spec's ``jpeg_draft`` included. :class:`ItemBatches` holds items decoded and
cropped once, for the many passes of training.

Extraction (:mod:`featx.engine.embedding`) runs the chain as :meth:`InputChain.load` per item (decode
and crop in one step, in decoding threads: the full-size pixels never outlive the item's
decoding) and :meth:`InputChain.collate` per batch; ``collate(load(x) for x in items)`` equals
``prepare(decode(x) for x in items)``.

Examples
--------
>>> import numpy as np
>>> from featx.specs.spec import BackboneSpec, ImagePreprocess
>>> spec = BackboneSpec("tiny", "image", {}, ImagePreprocess(size=8, resize=10))
>>> chain = InputChain(spec)
>>> feeds = chain.prepare([chain.decode(np.zeros((20, 30), np.uint8), "black")])
>>> {name: a.shape for name, a in feeds.items()}
{'pixel_values': (1, 3, 8, 8)}
>>> loaded = chain.load(np.zeros((20, 30), np.uint8), "black")      # the crop: uint8 (8, 8, 3)
>>> bool((chain.collate([loaded])["pixel_values"] == feeds["pixel_values"]).all())
True
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .decode import PixelBudget, check_text, decode_image
from ..errors import SpecError
from .preprocess import TextTokenizer, normalize_batch, resize_and_crop
from ..specs.spec import BackboneSpec

#: Input names of exported models, in the order torch modules take them.
IMAGE_INPUTS = ("pixel_values",)
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class InputChain:
    """Decode and preprocess items as the backbone ``spec`` says.

    Parameters
    ----------
    spec : BackboneSpec
        Its ``preprocess`` section drives every step (``jpeg_draft`` included).
    tokenizer_path : path, optional
        The ``tokenizer.json`` of a text backbone (required for texts).
    """

    def __init__(self, spec: BackboneSpec, tokenizer_path=None):
        if spec.modality == "text" and tokenizer_path is None:
            raise SpecError(f"text backbone {spec.name!r} has no tokenizer")
        self.spec = spec
        self.cfg = spec.preprocess
        self.modality = spec.modality
        self.tokenizer_path = tokenizer_path
        self._tokenizer = None

    def __getstate__(self):
        return self.__dict__ | {"_tokenizer": None}

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model inputs :meth:`prepare` fills by default, in the order torch modules take them."""
        return IMAGE_INPUTS if self.modality == "image" else TEXT_INPUTS

    @property
    def tokenizer(self) -> TextTokenizer:
        """Texts: the tokenizer, truncating at the spec's ``max_length`` (loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer = TextTokenizer(self.tokenizer_path, self.cfg.max_length, self.cfg.padding)
        return self._tokenizer

    def decode(self, item, item_id=None):
        """One raw item -> RGB uint8 array (images) or checked str (texts); :class:`InputError` names it."""
        if self.modality == "image":
            return decode_image(item, item_id=item_id, jpeg_min_side=self.cfg.jpeg_min_side)
        return check_text(item, item_id=item_id)

    def load(self, item, item_id=None, budget: PixelBudget | None = None):
        """One raw item -> what a batch is made of: the uint8 (size, size, 3) crop, or the checked str.

        Images are decoded and cropped in one step (:func:`featx.engine.decode.decode_image` with
        ``reduce``), holding their decoded pixels in ``budget`` meanwhile.
        """
        if self.modality == "image":
            return decode_image(item, item_id=item_id, jpeg_min_side=self.cfg.jpeg_min_side, budget=budget,
                                reduce=self.crop)
        return check_text(item, item_id=item_id)

    def collate(self, loaded: Sequence, input_names: Sequence[str] | None = None, out: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """Loaded items (:meth:`load`) -> model feeds (one batch), keyed by the model's ``input_names``.

        ``out``: images, a float32 (n, 3, size, size) array to normalise into (a reused buffer).
        """
        names = self.input_names if input_names is None else input_names
        if self.modality == "image":
            return {names[0]: normalize_batch(loaded, self.cfg, out=out)}
        return self.tokenizer.encode(loaded).feeds(names)

    def crop(self, rgb) -> np.ndarray:
        """Images: one decoded image -> uint8 (size, size, 3), resized and centre-cropped."""
        return resize_and_crop(rgb, self.cfg)

    def normalize(self, crops) -> np.ndarray:
        """Images: cropped uint8 images (:meth:`crop`) -> one float32 (n, 3, size, size) batch."""
        return normalize_batch(crops, self.cfg)

    def prepare(self, decoded: Sequence, input_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Decoded items -> model feeds (one batch), keyed by the model's ``input_names``."""
        if self.modality == "image":
            decoded = [self.crop(rgb) for rgb in decoded]
        return self.collate(decoded, input_names)


class ItemBatches:
    """Items decoded (and images cropped) once, turned into model arrays batch by batch.

    Images are kept as uint8 crops and normalised per batch; texts are kept checked and tokenised
    per batch. :meth:`arrays` equals ``chain.prepare`` of the same items, in the torch order.

    Parameters
    ----------
    chain : InputChain
    items : sequence
        Raw items.
    ids : sequence, optional
        Names for the items in error messages (default: their position).
    """

    def __init__(self, chain: InputChain, items: Sequence, ids: Sequence | None = None):
        items = list(items)
        names = [f"#{i}" for i in range(len(items))] if ids is None else [str(i) for i in ids]
        self.chain = chain
        if chain.modality == "image":
            s = chain.cfg.size
            self.pixels = np.empty((len(items), s, s, 3), np.uint8)
            for i, (item, name) in enumerate(zip(items, names)):
                self.pixels[i] = chain.crop(chain.decode(item, name))
        else:
            self.texts = [chain.decode(item, name) for item, name in zip(items, names)]

    def __len__(self) -> int:
        return len(self.pixels) if self.chain.modality == "image" else len(self.texts)

    def order_for_inference(self) -> np.ndarray:
        """Texts sorted by token count (less padding); images in order."""
        if self.chain.modality == "image":
            return np.arange(len(self))
        return np.argsort(self.chain.tokenizer.count_tokens(self.texts), kind="stable")

    def arrays(self, index) -> tuple[np.ndarray, ...]:
        """The model inputs of the items at ``index``, in :attr:`InputChain.input_names` order."""
        if self.chain.modality == "image":
            return (self.chain.normalize(self.pixels[np.asarray(index)]),)
        feeds = self.chain.prepare([self.texts[i] for i in index])
        return tuple(feeds[name] for name in self.chain.input_names)
