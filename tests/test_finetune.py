"""featx.finetune: the modes freeze what they claim, training is deterministic, real data is learned."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from featx.errors import InputError, MissingDependencyError, ParameterError, SpecError  # noqa: E402
from featx.torchmodels.finetune import (  # noqa: E402
    MODES,
    TorchBackbone,
    count_parameters,
    finetune,
    override_preprocess,
    predict,
    predict_proba,
    require_torch,
    steps_for,
)
from featx.specs.registry import get_spec  # noqa: E402
from featx.specs.spec import BackboneSpec, TextPreprocess
from featx.sources import open_dataset, subset  # noqa: E402

THREADS = 1  # the test machine's cores are shared: one torch thread is fastest there


class TinyText(torch.nn.Module):
    """Embedding (vocab 30522 x 8) + masked mean -> (n, 8); its `blocks` are two linear layers."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(30522, 8)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)])

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = torch.relu(block(x))
        mask = attention_mask.unsqueeze(-1).float()
        return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@pytest.fixture(scope="module")
def digits():
    train = subset(open_dataset("builtin:digits:train"), per_class=8, seed=0)
    test = subset(open_dataset("builtin:digits:test"), per_class=4, seed=0)
    return ([i.ref for i in train.items], train.labels(), [i.ref for i in test.items], test.labels())


def _params(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_modes_train_exactly_the_parameters_they_claim(digits, tiny_cnn_backbone):
    X, y, _, _ = digits
    tb = tiny_cnn_backbone()
    module = tb.module
    n_classes = 10
    stem = count_parameters(module.stem)
    block = count_parameters(module.blocks[0])
    total = count_parameters(module)
    expected = {
        "head": 8 * n_classes + n_classes,
        "partial": total - stem - 2 * block + 8 * n_classes + n_classes,  # stem + first half of the blocks frozen
        "full": total + 8 * n_classes + n_classes,
        "scratch": total + 8 * n_classes + n_classes,
    }
    before = _params(module)
    for mode in MODES:
        result = finetune(tb, X, y, mode=mode, lr=1e-2, steps=3, seed=0, threads=THREADS)
        assert result.trainable_params == expected[mode], mode
        assert result.total_params == total + 8 * n_classes + n_classes
        after = _params(result.model.backbone)
        changed = {name for name in after if not torch.equal(after[name], before[name])}
        if mode == "head":
            assert changed == set()
        elif mode == "partial":
            assert result.frozen_blocks == 2 and result.n_blocks == 4
            assert not any(n.startswith(("stem.", "blocks.0.", "blocks.1.")) for n in changed)
            assert any(n.startswith("blocks.3.") for n in changed)
            # frozen blocks stay in eval mode: their batch-norm statistics never move
            assert torch.equal(result.model.backbone.blocks[1][1].running_mean, module.blocks[1][1].running_mean)
        else:
            assert changed == set(after), mode  # every parameter moved (scratch: re-initialised, then trained)
    # the caller's module is never trained in place
    assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def test_scratch_reinitialises_the_weights(digits, tiny_cnn_backbone):
    X, y, _, _ = digits
    tb = tiny_cnn_backbone(seed=123)  # another seed than the fine-tuning's: a real re-draw
    result = finetune(tb, X, y, mode="scratch", lr=1e-9, steps=1, seed=0, threads=THREADS)
    w0 = tb.module.stem[0].weight
    w1 = result.model.backbone.stem[0].weight
    assert not torch.allclose(w0, w1, atol=1e-4)  # lr 1e-9: the difference is the re-initialisation


def test_same_seed_same_model_and_other_seed_differs(digits, tiny_cnn_backbone):
    X, y, X_test, _ = digits
    tb = tiny_cnn_backbone()
    a = finetune(tb, X, y, mode="full", lr=1e-2, steps=4, seed=3, threads=THREADS)
    b = finetune(tb, X, y, mode="full", lr=1e-2, steps=4, seed=3, threads=THREADS)
    c = finetune(tb, X, y, mode="full", lr=1e-2, steps=4, seed=4, threads=THREADS)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    np.testing.assert_array_equal(predict_proba(a, X_test, threads=THREADS), predict_proba(b, X_test, threads=THREADS))
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_learns_real_digits_and_predicts_labels(digits, tiny_cnn_backbone):
    X, y, X_test, y_test = digits
    tb = tiny_cnn_backbone()
    result = finetune(tb, X, y, mode="full", lr=3e-2, steps=60, batch_size=40, seed=0, val=(X_test, y_test),
                      eval_every=30, threads=THREADS)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert [h["step"] for h in result.history if "val_accuracy" in h] == [30, 60]
    pred = predict(result, X_test, threads=THREADS)
    assert pred.dtype == object and set(pred) <= set(result.classes)
    accuracy = float((pred == y_test).mean())
    assert accuracy == pytest.approx(result.val_accuracy)
    assert accuracy > 0.3  # chance is 0.1
    proba = predict_proba(result, X_test, threads=THREADS)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)


def test_head_mode_matches_training_on_the_frozen_features(digits, tiny_cnn_backbone, image_batch):
    """Head-only fine-tuning trains the linear layer on features equal to the backbone's eval output."""
    X, y, X_test, _ = digits
    tb = tiny_cnn_backbone()
    result = finetune(tb, X, y, mode="head", lr=1e-2, steps=5, seed=0, threads=THREADS)
    from featx.engine.decode import decode_image

    batch = torch.from_numpy(image_batch([decode_image(x) for x in X_test[:5]], tb.spec.preprocess))
    tb.module.eval()
    with torch.no_grad():
        expected = result.model.head(tb.module(batch)).argmax(1).numpy()
    got = predict(result, X_test[:5], threads=THREADS)
    assert list(got) == [result.classes[k] for k in expected]


def test_lp_ft_starts_the_full_fine_tuning_from_the_fitted_probe(digits, tiny_cnn_backbone):
    """init_head: the linear layer starts from a fitted probe (LP-FT), checked against the classes and shapes."""
    from featx.errors import ParameterError
    from featx.torchmodels.finetune import head_weights

    X, y, X_test, y_test = digits
    tb = tiny_cnn_backbone()
    probe = finetune(tb, X, y, mode="head", lr=3e-2, steps=30, seed=0, threads=THREADS)
    weight, bias = head_weights(probe)
    # a step of size ~0 keeps the head where it started: the probe's predictions
    same = finetune(tb, X, y, mode="full", lr=1e-12, steps=1, seed=1, threads=THREADS, init_head=probe)
    assert np.allclose(head_weights(same)[0], weight, atol=1e-6) and np.allclose(head_weights(same)[1], bias, atol=1e-6)
    assert list(predict(same, X_test, threads=THREADS)) == list(predict(probe, X_test, threads=THREADS))
    lp_ft = finetune(tb, X, y, mode="full", lr=1e-3, steps=3, seed=1, threads=THREADS, init_head=(weight, bias))
    assert lp_ft.trainable_params == count_parameters(lp_ft.model)
    with pytest.raises(ParameterError, match=r"The 'init_head' parameter of finetune must be \(weight \(10, 8\)"):
        finetune(tb, X, y, mode="full", lr=1e-3, steps=1, threads=THREADS, init_head=(weight[:, :4], bias))
    with pytest.raises(ParameterError, match="init_head was fitted on the classes"):
        finetune(tb, X, y, mode="full", lr=1e-3, steps=1, threads=THREADS, init_head=probe,
                 classes=list(reversed(probe.classes)))


def test_text_module_through_the_generic_path(minilm_tokenizer_json):
    texts = ["great cookies, would buy again", "stale and broken", "love this tea", "awful taste",
             "wonderful coffee", "terrible packaging", "best snack ever", "never again"]
    labels = ["great", "other"] * 4
    spec = BackboneSpec(name="tiny-text", modality="text", source={"kind": "python"}, dim=8,
                        preprocess=TextPreprocess(max_length=16))
    torch.manual_seed(0)
    tb = TorchBackbone(TinyText(), spec, tokenizer_json=minilm_tokenizer_json)
    for mode, expected in (("head", 8 * 2 + 2), ("partial", 8 * 8 + 8 + 8 * 2 + 2)):
        result = finetune(tb, texts, labels, mode=mode, lr=1e-2, steps=3, batch_size=4, seed=0,
                          frozen_blocks=1, threads=THREADS)
        assert result.trainable_params == expected
        assert set(predict(result, texts[:3], threads=THREADS)) <= {"great", "other"}


def test_override_preprocess_keeps_the_crop_ratio():
    lite = get_spec("efficientnet-lite0")
    small = override_preprocess(lite, image_size=112)
    assert (small.preprocess.size, small.preprocess.resize) == (112, 128)
    assert small.preprocess.mean == lite.preprocess.mean and small.preprocess.interpolation == "bicubic"
    assert override_preprocess(lite) is lite
    text = override_preprocess(get_spec("all-minilm-l6-v2"), max_length=128)
    assert text.preprocess.max_length == 128
    with pytest.raises(SpecError, match="image_size=112 given for the text backbone"):
        override_preprocess(get_spec("all-minilm-l6-v2"), image_size=112)
    with pytest.raises(SpecError, match="max_length=64 given for the image backbone"):
        override_preprocess(lite, max_length=64)


def test_steps_rule():
    assert steps_for(100, 32, 3) == 10
    assert steps_for(10, 32, 3, min_steps=20) == 20
    assert steps_for(5000, 32, 3, max_steps=150) == 150


def test_bad_parameters_are_named(digits, tiny_cnn_backbone):
    X, y, _, _ = digits
    tb = tiny_cnn_backbone()
    with pytest.raises(ParameterError, match=r"^The 'mode' parameter of finetune must be one of \('head', 'partial', "
                                             r"'full', 'scratch'\)\. Got 'last' instead\.$"):
        finetune(tb, X, y, mode="last", steps=1)
    with pytest.raises(ParameterError, match=r"^The 'lr' parameter of finetune must be a float in \(0, inf\)\. Got 0 "):
        finetune(tb, X, y, lr=0, steps=1)
    with pytest.raises(ParameterError, match=r"^The 'batch_size' parameter of finetune must be an int in \[1, inf\)\. "
                                             r"Got True instead\.$"):
        finetune(tb, X, y, batch_size=True, steps=1)
    with pytest.raises(ParameterError, match="needs steps= or epochs="):
        finetune(tb, X, y)
    with pytest.raises(InputError, match="at least 2 labelled items"):
        finetune(tb, X[:1], y[:1], steps=1, threads=THREADS)
    with pytest.raises(InputError, match=r"labels \['7'\] are not among the classes"):
        finetune(tb, X, y, steps=1, classes=[c for c in sorted(set(y)) if c != "7"], threads=THREADS)
    with pytest.raises(InputError, match="#1"):
        finetune(tb, [X[0], "no/such/file.png"], ["0", "1"], steps=1, threads=THREADS)

    class NoBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    plain = TorchBackbone(NoBlocks(), tb.spec.replace(dim=4))
    with pytest.raises(SpecError, match="mode='partial' needs the blocks of NoBlocks"):
        finetune(plain, X, y, mode="partial", steps=1, threads=THREADS)


def test_without_torch_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'featx\[finetune\]'"):
        require_torch()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_lite0_modes_count_their_parameters(mode):
    """The real EfficientNet-Lite0: head = linear layer; partial = blocks 8-15 + conv head; full = all used."""
    from featx.torchmodels.finetune import load_torch_backbone

    tb = load_torch_backbone("efficientnet-lite0")
    eff = tb.module.model
    train = subset(open_dataset("builtin:digits:train"), per_class=2, seed=0)
    result = finetune(tb, [i.ref for i in train.items], train.labels(), mode=mode, image_size=32, lr=1e-3, steps=1,
                      seed=0, threads=2)
    head = 1280 * 10 + 10
    used = count_parameters(eff) - count_parameters(eff._fc)  # the ImageNet classifier is never run
    partial = sum(count_parameters(b) for b in eff._blocks[8:]) + count_parameters(eff._conv_head) \
        + count_parameters(eff._bn1)
    assert result.trainable_params == {"head": head, "partial": partial + head, "full": used + head,
                                       "scratch": used + head}[mode]
    assert result.spec.preprocess.size == 32


@pytest.mark.slow
def test_minilm_partial_freezes_embeddings_and_first_layers():
    from featx.torchmodels.finetune import load_torch_backbone

    tb = load_torch_backbone("all-minilm-l6-v2")
    bert = tb.module.model
    texts = ["great tea", "stale cookies", "lovely", "awful"]
    result = finetune(tb, texts, ["great", "other"] * 2, mode="partial", max_length=16, lr=1e-4, steps=1,
                      batch_size=4, seed=0, threads=2)
    expected = sum(count_parameters(layer) for layer in bert.encoder.layer[3:]) + 384 * 2 + 2
    assert result.trainable_params == expected
    assert (result.frozen_blocks, result.n_blocks) == (3, 6)
