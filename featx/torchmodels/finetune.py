"""Fine-tuned baselines in PyTorch: the same backbone and preprocessing as the frozen path.

This module is what the benchmark compares featx's frozen-feature heads against. It
trains a linear classification layer on the pooled output of a backbone built by
:func:`featx.torchmodels.export.build_torch_backbone` (the very module that was exported to ONNX),
in one of four modes:

``"head"``
    Only the linear layer trains; the backbone is frozen and in eval mode. Because a
    frozen eval-mode backbone without augmentation gives the same features at every
    epoch, its pooled features are computed once (no gradient) and the layer is trained
    on them: the same optimisation, a fraction of the cost.
``"partial"``
    The stem and the first ``frozen_blocks`` blocks are frozen (eval mode: batch-norm
    statistics fixed), the remaining blocks, the tail and the layer train. Default: the
    first half of the blocks (EfficientNet-Lite0: 8 of 16 MBConv blocks; MiniLM:
    embeddings and 3 of 6 layers).
``"full"``
    Everything trains.
``"scratch"``
    The same architecture, every layer re-initialised (``reset_parameters``, and
    ``normal(0, initializer_range)`` for the linear and embedding layers of Hugging Face
    models), then trained in full.

Preprocessing is the backbone's own :class:`featx.engine.inputs.InputChain` (the one
:class:`featx.engine.backbone.Backbone` runs, ``jpeg_draft`` included; images decoded and cropped
once, normalised per batch), so a fine-tuned model sees exactly what the ONNX backbone sees.
No augmentation.

Training: AdamW (weight decay 1e-4), cosine learning-rate decay to zero over ``steps``,
cross-entropy, batches drawn from a seeded stream of per-epoch permutations (every batch
holds ``min(batch_size, n)`` items). ``torch.set_num_threads(threads)`` for the duration
of a call. Same seed, same data -> the same model.

torch is imported only when a function here is called; without it they raise
:class:`~featx.errors.MissingDependencyError` (``pip install 'featx[finetune]'``).

Examples
--------
>>> from featx.torchmodels.finetune import finetune, predict          # doctest: +SKIP
>>> result = finetune("efficientnet-lite0", images, labels, mode="full", image_size=112,
...                   lr=1e-3, steps=100)                 # doctest: +SKIP
>>> predict(result, test_images)[:3]                      # doctest: +SKIP
array(['Bag', 'Coat', 'Sneaker'], dtype=object)
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import FeatxError, InputError, MissingDependencyError, ParameterError, SpecError
from .export import build_torch_backbone
from ..engine.inputs import InputChain, ItemBatches
from .layer_outputs import module_blocks
from ..specs.registry import get_spec
from ..specs.spec import BackboneSpec, TextPreprocess
from ..validation import check_choice, check_float, check_int

MODES = ("head", "partial", "full", "scratch")
DEFAULT_BATCH_SIZE = 32
DEFAULT_THREADS = 2
WEIGHT_DECAY = 1e-4
INSTALL_HINT = "pip install 'featx[finetune]' (install torch==2.13.0 first for the CPU build)"


def require_torch():
    """Import torch, or raise MissingDependencyError with the install command."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise MissingDependencyError(f"fine-tuning needs PyTorch: {INSTALL_HINT}") from None


# --------------------------------------------------------------------------- backbones

@dataclass
class TorchBackbone:
    """A pooled torch module and the spec saying how to preprocess its input.

    The generic path for any ``torch.nn.Module`` mapping a preprocessed batch to (n, d):
    an image module takes NCHW float32, a text module takes ``input_ids``,
    ``attention_mask``, ``token_type_ids``. ``blocks`` names its sequence of blocks for
    ``mode="partial"`` (found automatically for EfficientNet, BERT-like and timm models,
    and for modules with a ``blocks`` attribute).
    """

    module: Any
    spec: BackboneSpec
    tokenizer_json: Any = None
    blocks: Any = None


def override_preprocess(spec: BackboneSpec, *, image_size: int | None = None,
                        max_length: int | None = None) -> BackboneSpec:
    """The spec with a smaller (or larger) input: the image side or the token limit.

    Images keep the spec's resize-to-crop ratio (224 from 256 -> 112 from 128), its
    interpolation, mean and std.

    Examples
    --------
    >>> from featx.specs.registry import get_spec
    >>> override_preprocess(get_spec("efficientnet-lite0"), image_size=112).preprocess.resize
    128
    """
    pre = spec.preprocess
    if image_size is not None:
        if spec.modality != "image":
            raise SpecError(f"image_size={image_size} given for the {spec.modality} backbone {spec.name!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
            raise SpecError(f"The 'image_size' parameter must be an int in [8, inf). Got {image_size!r} instead.")
        resize = None if pre.resize is None else max(int(image_size), round(pre.resize * image_size / pre.size))
        pre = dataclasses.replace(pre, size=int(image_size), resize=resize)
    if max_length is not None:
        if spec.modality != "text":
            raise SpecError(f"max_length={max_length} given for the {spec.modality} backbone {spec.name!r}")
        pre = TextPreprocess(max_length=int(max_length))
    return spec if pre == spec.preprocess else spec.replace(preprocess=pre)


def load_torch_backbone(backbone) -> TorchBackbone:
    """A backbone name, a :class:`BackboneSpec` or a :class:`TorchBackbone` -> TorchBackbone."""
    if isinstance(backbone, TorchBackbone):
        return backbone
    require_torch()
    spec = backbone if isinstance(backbone, BackboneSpec) else get_spec(backbone)
    module, spec, tokenizer_json = build_torch_backbone(spec)
    return TorchBackbone(module, spec, tokenizer_json)


def split_blocks(backbone: TorchBackbone):
    """``(stem, blocks, unused)``: modules before the blocks, the blocks, and modules never run
    (:func:`featx.torchmodels.layer_outputs.module_blocks`; ``backbone.blocks`` when given)."""
    return module_blocks(backbone.module, backbone.blocks)


def frozen_prefix(backbone: TorchBackbone, frozen_blocks: int | None):
    """The modules that ``mode="partial"`` freezes, and how many blocks that is of how many."""
    stem, blocks, _ = split_blocks(backbone)
    if blocks is None:
        raise SpecError(
            f"mode='partial' needs the blocks of {type(backbone.module).__name__}: pass "
            "TorchBackbone(module, spec, blocks=[...]) or use mode='head'/'full'/'scratch'"
        )
    k = len(blocks) // 2 if frozen_blocks is None else int(frozen_blocks)
    if not 0 <= k <= len(blocks):
        raise SpecError(f"The 'frozen_blocks' parameter must be in [0, {len(blocks)}]. Got {frozen_blocks!r} instead.")
    return [m for m in stem if m is not None] + list(blocks[:k]), k, len(blocks)


def reinitialize(module) -> None:
    """Re-initialise every layer of ``module`` in place (the 'scratch' baseline)."""
    torch = require_torch()
    config = getattr(getattr(module, "model", module), "config", None)
    std = getattr(config, "initializer_range", None)
    with torch.no_grad():
        for m in module.modules():
            if std is not None and isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, torch.nn.Linear) and m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
                if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()


# --------------------------------------------------------------------------- data

def training_inputs(items: Sequence, spec: BackboneSpec, tokenizer_json=None, ids=None) -> ItemBatches:
    """Training or test items, decoded and cropped once by the spec's :class:`InputChain`."""
    return ItemBatches(InputChain(spec, tokenizer_json), items, ids)


def torch_batch(data: ItemBatches, index) -> tuple:
    """The torch tensors of the items at ``index``: what a pooled backbone module takes."""
    torch = require_torch()
    return tuple(torch.from_numpy(a) for a in data.arrays(index))


def _encode_labels(y, classes=None):
    y = np.asarray([str(v) for v in y], dtype=object)
    if classes is None:
        classes = tuple(sorted(set(y)))
    classes = tuple(str(c) for c in classes)
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(y) - set(lookup))
    if unknown:
        raise InputError(f"labels {unknown[:5]} are not among the classes {list(classes)[:10]}")
    return np.array([lookup[v] for v in y], np.int64), classes


# --------------------------------------------------------------------------- model

def _classifier_class():
    torch = require_torch()

    class FineTunedClassifier(torch.nn.Module):
        """A pooled backbone and a linear layer; frozen modules stay in eval mode."""

        def __init__(self, backbone, dim, n_classes, frozen=()):
            super().__init__()
            self.backbone = backbone
            self.head = torch.nn.Linear(dim, n_classes)
            self.frozen = list(frozen)

        def train(self, mode: bool = True):
            super().train(mode)
            for m in self.frozen:
                m.eval()
            return self

        def features(self, *inputs):
            return self.backbone(*inputs)

        def forward(self, *inputs):
            return self.head(self.backbone(*inputs))

    return FineTunedClassifier


@dataclass
class FineTuneResult:
    """A fine-tuned model and how it was trained.

    Attributes
    ----------
    model : torch.nn.Module
        ``FineTunedClassifier``: ``.backbone`` (pooled) and ``.head`` (linear); eval mode.
    history : list of dict
        One entry per logged step: ``step``, ``loss``, ``lr``, ``seconds`` (since start),
        plus ``val_accuracy`` at evaluation points.
    trainable_params, total_params : int
        Parameters that received gradients in this mode, and all parameters (head included).
    seconds : float
        Wall time of the call: data preparation, (for ``"head"``) feature computation, training.
    """

    model: Any
    history: list[dict]
    trainable_params: int
    total_params: int
    seconds: float
    mode: str
    lr: float
    steps: int
    batch_size: int
    seed: int
    classes: tuple[str, ...]
    spec: BackboneSpec
    tokenizer_json: Any = None
    val_accuracy: float | None = None
    frozen_blocks: int | None = None
    n_blocks: int | None = None
    info: dict = field(default_factory=dict)


def count_parameters(module, trainable_only: bool = False) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only))


def steps_for(n: int, batch_size: int, epochs: float, min_steps: int = 1, max_steps: int | None = None) -> int:
    """Steps for ``epochs`` passes over ``n`` items, clipped to ``[min_steps, max_steps]``.

    >>> steps_for(100, 32, 3), steps_for(10, 32, 3, min_steps=20), steps_for(5000, 32, 3, max_steps=150)
    (10, 20, 150)
    """
    steps = max(int(min_steps), math.ceil(epochs * n / max(1, min(batch_size, n))))
    return steps if max_steps is None else min(steps, int(max_steps))


def _check_params(mode, lr, steps, epochs, batch_size, seed):
    check_choice(mode, "mode", "finetune", MODES)
    check_float(lr, "lr", "finetune", low=0, low_open=True)
    check_int(steps, "steps", "finetune", low=1, optional=True)
    check_int(batch_size, "batch_size", "finetune", low=1)
    if steps is None and (epochs is None or not epochs > 0):
        raise ParameterError(f"finetune needs steps= or epochs= > 0. Got steps=None, epochs={epochs!r}.")
    check_int(seed, "seed", "finetune")


class torch_threads:
    """``torch.set_num_threads(n)`` for the duration of a block (``n`` None or 0: unchanged)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        torch = require_torch()
        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        require_torch().set_num_threads(self.before)


def finetune(backbone, X_items, y, *, mode: str = "full", image_size: int | None = None,
             max_length: int | None = None, lr: float = 1e-3, steps: int | None = None,
             epochs: float | None = None, min_steps: int = 1, max_steps: int | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, val=None, eval_every: int | None = None,
             frozen_blocks: int | None = None, classes=None, ids=None,
             threads: int | None = DEFAULT_THREADS, log_every: int = 1, init_head=None) -> FineTuneResult:
    """Fine-tune a backbone with a linear layer on labelled items.

    Parameters
    ----------
    backbone : str, BackboneSpec or TorchBackbone
        A registered name (``"efficientnet-lite0"``), a spec, or any pooled torch module
        with its spec (:class:`TorchBackbone`).
    X_items : sequence
        Raw items, as featx decodes them: images (paths, bytes, PIL images, uint8 arrays)
        or texts.
    y : sequence
        Labels (converted to str).
    mode : {"head", "partial", "full", "scratch"}
    image_size, max_length : int, optional
        Override the spec's image side / token limit (:func:`override_preprocess`).
    lr : float
        Peak learning rate of AdamW (cosine decay to 0).
    steps : int, optional
        Optimiser steps. Else ``epochs`` passes over the data, clipped to
        ``[min_steps, max_steps]`` (:func:`steps_for`).
    batch_size : int
        Items per step (``min(batch_size, n)``).
    seed : int
        Seeds the head's initialisation, re-initialisation (scratch), drop-connect and
        the batch order.
    val : (items, labels), optional
        Scored (accuracy) every ``eval_every`` steps and at the end.
    frozen_blocks : int, optional
        ``mode="partial"``: blocks frozen after the stem (default: half of them).
    classes : sequence of str, optional
        The label set, in the order of the output layer (default: sorted labels of ``y``).
    ids : sequence, optional
        Item names for error messages.
    threads : int, optional
        torch intra-op threads during the call (default 2; None leaves torch's setting).
    init_head : (weight, bias) or FineTuneResult, optional
        Start the linear layer from these values instead of a random initialisation: a fitted linear
        probe (the result of ``mode="head"``), for LP-FT (linear probe, then fine-tuning; Kumar et al.,
        2022) with ``mode="full"``. Weight (n_classes, dim), bias (n_classes,), in ``classes`` order.

    Returns
    -------
    FineTuneResult

    Raises
    ------
    MissingDependencyError
        torch (or the backbone's package) is not installed.
    ParameterError
        A bad parameter (named, in :mod:`featx.validation`'s words).
    InputError
        A bad item (named), fewer than 2 items, or labels outside ``classes``.
    """
    _check_params(mode, lr, steps, epochs, batch_size, seed)
    torch = require_torch()
    start = time.perf_counter()
    with torch_threads(threads):
        torch.manual_seed(int(seed))
        tb = load_torch_backbone(backbone)
        if isinstance(backbone, TorchBackbone):  # never train the caller's module in place
            tb = dataclasses.replace(backbone, module=copy.deepcopy(backbone.module), blocks=None)
            if backbone.blocks is not None:
                tb.blocks = _same_modules(backbone.module, tb.module, backbone.blocks)
        spec = override_preprocess(tb.spec, image_size=image_size, max_length=max_length)
        targets, classes = _encode_labels(y, classes)
        if len(targets) < 2:
            raise InputError(f"finetune needs at least 2 labelled items, got {len(targets)}")
        data = training_inputs(X_items, spec, tb.tokenizer_json, ids=ids)
        if len(data) != len(targets):
            raise InputError(f"got {len(data)} items but {len(targets)} labels")
        val_data = None
        if val is not None:
            val_items, val_y = val
            val_targets, _ = _encode_labels(val_y, classes)
            val_data = (training_inputs(val_items, spec, tb.tokenizer_json), val_targets)

        module = tb.module
        module.train()
        if mode == "scratch":
            reinitialize(module)
        for p in module.parameters():
            p.requires_grad_(mode != "head")
        frozen, k, n_blocks = [], None, None
        if mode == "head":
            frozen = [module]
        elif mode == "partial":
            frozen, k, n_blocks = frozen_prefix(tb, frozen_blocks)
        for unused in split_blocks(tb)[2]:
            if unused is not None:
                frozen.append(unused)
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)

        dim = spec.dim or _probe_dim(module, data)
        model = _classifier_class()(module, int(dim), len(classes), frozen)
        if init_head is not None:
            _set_head(model.head, init_head, classes)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        n = len(targets)
        bs = min(int(batch_size), n)
        total_steps = int(steps) if steps is not None else steps_for(n, bs, epochs, min_steps, max_steps)
        optimizer = torch.optim.AdamW(trainable, lr=float(lr), weight_decay=WEIGHT_DECAY)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
        targets_t = torch.from_numpy(targets)

        cached = val_cached = None
        if mode == "head":  # frozen eval-mode backbone: the same features every epoch (validation items' too)
            cached = _features(model, data, np.arange(n), 64)
            if val_data is not None:
                val_cached = _features(model, val_data[0], np.arange(len(val_data[1])), 64)
        rng = np.random.default_rng(int(seed))
        stream = _batch_stream(rng, n, bs)
        history = []
        for step in range(1, total_steps + 1):
            index = next(stream)
            if cached is not None:
                logits = model.head(cached[index])
            else:
                logits = model(*torch_batch(data, index))
            loss = torch.nn.functional.cross_entropy(logits, targets_t[index])
            if not torch.isfinite(loss):
                raise FeatxError(f"fine-tuning ({mode}, lr={lr:g}) diverged at step {step}: loss {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            entry = None
            if step % max(1, log_every) == 0 or step == total_steps:
                entry = {"step": step, "loss": float(loss.item()), "lr": float(optimizer.param_groups[0]["lr"]),
                         "seconds": time.perf_counter() - start}
            if val_data is not None and ((eval_every and step % eval_every == 0) or step == total_steps):
                entry = entry or {"step": step, "loss": float(loss.item()), "seconds": time.perf_counter() - start}
                entry["val_accuracy"] = _accuracy(model, *val_data) if val_cached is None else _head_accuracy(
                    model, val_cached, val_data[1])
                model.train()
            if entry is not None:
                history.append(entry)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    val_accuracy = history[-1].get("val_accuracy") if history else None
    return FineTuneResult(
        model=model, history=history, trainable_params=sum(p.numel() for p in trainable),
        total_params=count_parameters(model), seconds=time.perf_counter() - start, mode=mode, lr=float(lr),
        steps=total_steps, batch_size=bs, seed=int(seed), classes=classes, spec=spec,
        tokenizer_json=tb.tokenizer_json, val_accuracy=val_accuracy, frozen_blocks=k, n_blocks=n_blocks,
    )


def head_weights(result: FineTuneResult) -> tuple[np.ndarray, np.ndarray]:
    """The linear layer of a fine-tuned model: ``(weight (n_classes, dim), bias (n_classes,))``, float32."""
    return result.model.head.weight.detach().numpy().copy(), result.model.head.bias.detach().numpy().copy()


def _set_head(head, init, classes) -> None:
    torch = require_torch()
    if isinstance(init, FineTuneResult):
        if tuple(init.classes) != tuple(classes):
            raise ParameterError(f"init_head was fitted on the classes {list(init.classes)[:5]}, not "
                                 f"{list(classes)[:5]}: pass classes= in the same order to both calls")
        init = head_weights(init)
    weight, bias = (np.asarray(a, np.float32) for a in init)
    if weight.shape != tuple(head.weight.shape) or bias.shape != tuple(head.bias.shape):
        raise ParameterError(f"The 'init_head' parameter of finetune must be (weight {tuple(head.weight.shape)}, "
                             f"bias {tuple(head.bias.shape)}). Got shapes {weight.shape} and {bias.shape} instead.")
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))


def _same_modules(original, clone, modules):
    """The modules of ``clone`` at the places ``modules`` have in ``original``."""
    names = {id(m): name for name, m in original.named_modules()}
    missing = [m for m in modules if id(m) not in names]
    if missing:
        raise SpecError("TorchBackbone.blocks must be sub-modules of TorchBackbone.module")
    lookup = dict(clone.named_modules())
    return [lookup[names[id(m)]] for m in modules]


def _batch_stream(rng, n, bs):
    """Endless batches of ``bs`` distinct-within-epoch indices from per-epoch permutations."""
    buffer = np.empty(0, np.int64)
    while True:
        while len(buffer) < bs:
            buffer = np.concatenate([buffer, rng.permutation(n)])
        yield buffer[:bs]
        buffer = buffer[bs:]


def _probe_dim(module, data) -> int:
    torch = require_torch()
    module.eval()
    with torch.no_grad():
        out = module(*torch_batch(data, [0]))
    module.train()
    return int(out.shape[-1])


def _features(model, data, index, batch_size):
    torch = require_torch()
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for s in range(0, len(index), batch_size):
            parts.append(model.features(*torch_batch(data, index[s:s + batch_size])))
    model.train(was_training)
    return torch.cat(parts)


def _logits(model, data, batch_size=64) -> np.ndarray:
    torch = require_torch()
    model.eval()
    order = data.order_for_inference()
    out = np.empty((len(data), model.head.out_features), np.float32)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            index = order[s:s + batch_size]
            out[index] = model(*torch_batch(data, index)).numpy()
    return out


def _accuracy(model, data, targets) -> float:
    return float((_logits(model, data).argmax(1) == targets).mean())


def _head_accuracy(model, features, targets) -> float:
    """Accuracy of the linear layer on precomputed features (``mode="head"``: the backbone never changes)."""
    torch = require_torch()
    with torch.no_grad():
        return float((model.head(features).argmax(1).numpy() == targets).mean())


def predict_proba(result: FineTuneResult, X_items, *, batch_size: int = 64,
                  threads: int | None = DEFAULT_THREADS) -> np.ndarray:
    """Class probabilities (n, n_classes), columns in ``result.classes`` order."""
    torch = require_torch()
    with torch_threads(threads):
        data = training_inputs(X_items, result.spec, result.tokenizer_json)
        logits = torch.from_numpy(_logits(result.model, data, batch_size))
        return torch.softmax(logits, dim=1).numpy()


def predict(result: FineTuneResult, X_items, *, batch_size: int = 64,
            threads: int | None = DEFAULT_THREADS) -> np.ndarray:
    """Predicted labels (object array of str) of raw items, with the training preprocessing."""
    with torch_threads(threads):
        data = training_inputs(X_items, result.spec, result.tokenizer_json)
        logits = _logits(result.model, data, batch_size)
    return np.asarray(result.classes, dtype=object)[logits.argmax(1)]
