"""``hf:`` backbones through tiny real transformers models (``tests/tiny_hf.py``) in local folders.

Checks each family against transformers itself: featx's preprocessing against the image
processor's ``pixel_values`` (1e-5), the export parity gate (1e-4), embeddings against the
model's own outputs, CLIP/SigLIP towers against ``get_image_features`` / ``get_text_features``
and ``ZeroShotClassifier`` against the model's probabilities (1e-5).
"""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import featx  # noqa: E402
from featx.errors import ParameterError, SpecError  # noqa: E402
from featx.specs.hfspec import preprocess_from_processor, split_name, text_max_length  # noqa: E402
from featx.engine.inputs import InputChain  # noqa: E402
from featx.specs.registry import get_spec  # noqa: E402

IMAGE_FAMILIES = ("vit", "dinov2", "convnext", "clip", "siglip")
SENTENCES = ["a photo of a dog", "The package arrived damaged and half the chips were crushed.", "ok",
             "Best green tea I have had in years; smooth, not bitter at all."]


def image_name(folder, family: str) -> str:
    return f"hf:{folder}" + ("#image" if family in ("clip", "siglip") else "")


@pytest.fixture(scope="module")
def photos(sample_rgbs) -> list[np.ndarray]:
    """sklearn's two photos at full size and resized to 8 other sizes and aspect ratios each (18 images)."""
    from PIL import Image

    out = []
    for rgb in sample_rgbs:
        out.append(rgb)
        for size in [(300, 200), (200, 500), (97, 311), (641, 640), (1000, 260), (230, 224), (224, 224), (150, 120)]:
            out.append(np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS)))
    return out


def processor_pixels(folder, images) -> np.ndarray:
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    return processor(images=list(images), return_tensors="np")["pixel_values"]


# --------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_preprocessing_equals_the_image_processor(hf_models, photos, family):
    spec = get_spec(image_name(hf_models[family], family))
    assert spec.preprocess.resize_mode == "full"
    chain = InputChain(spec)
    for rgb in photos:
        ours = chain.prepare([chain.decode(rgb)])["pixel_values"]
        theirs = processor_pixels(hf_models[family], [rgb])
        assert ours.shape == theirs.shape == (1, 3, 224, 224)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_window_mode_is_not_the_processor(hf_models, photos):
    """The check above can fail: featx's own resize (rounded sides, crop window) differs from transformers'."""
    spec = get_spec(f"hf:{hf_models['dinov2']}")
    window = InputChain(spec.replace(preprocess=dataclasses.replace(spec.preprocess, resize_mode="window")))
    diffs = [np.abs(window.prepare([rgb])["pixel_values"] - processor_pixels(hf_models["dinov2"], [rgb])).max()
             for rgb in photos[:4]]
    assert max(diffs) > 1e-2


def test_specs_per_family(hf_models):
    vit = get_spec(f"hf:{hf_models['vit']}")
    assert (vit.modality, vit.pooling, vit.source["kind"]) == ("image", "cls", "hf-image")
    assert (vit.preprocess.size, vit.preprocess.resize, vit.preprocess.interpolation) == (224, None, "bilinear")
    dino = get_spec(f"hf:{hf_models['dinov2']}").preprocess
    assert (dino.size, dino.resize, dino.interpolation, dino.mean) == (224, 256, "bicubic", (0.485, 0.456, 0.406))
    convnext = get_spec(f"hf:{hf_models['convnext']}")
    assert convnext.pooling == "pooler" and (convnext.preprocess.size, convnext.preprocess.resize) == (224, 256)
    bert = get_spec(f"hf:{hf_models['bert']}")
    assert (bert.modality, bert.pooling, bert.normalize, bert.preprocess.max_length) == ("text", "mean", True, 128)
    siglip = get_spec(f"hf:{hf_models['siglip']}#text")
    assert (siglip.preprocess.max_length, siglip.preprocess.padding, siglip.source["probabilities"]) == \
        (64, "max_length", "sigmoid")
    clip = get_spec(f"hf:{hf_models['clip']}#text")
    assert (clip.preprocess.max_length, clip.preprocess.padding, clip.pooling) == (77, "longest", "projection")
    # a sentence-transformers folder: its pooling, Normalize and max_seq_length
    from tiny_hf import minilm_folder

    minilm = get_spec(f"hf:{minilm_folder()}")
    assert (minilm.pooling, minilm.normalize, minilm.preprocess.max_length) == ("mean", True, 256)


def test_processor_rules_and_refusals():
    base = {"image_processor_type": "ConvNextImageProcessor", "do_resize": True, "resample": 3,
            "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_rescale": True, "rescale_factor": 1 / 255}
    assert preprocess_from_processor(base | {"size": {"shortest_edge": 384}})["resize"] is None  # warped, no crop
    assert preprocess_from_processor(base | {"size": {"shortest_edge": 160}, "crop_pct": 0.95})["resize"] == 168
    with pytest.raises(SpecError, match="featx reproduces"):
        preprocess_from_processor(base | {"image_processor_type": "DetrImageProcessor"})
    clip = base | {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224}}
    with pytest.raises(SpecError, match="do_center_crop"):
        preprocess_from_processor(clip)
    with pytest.raises(SpecError, match="not a square"):
        preprocess_from_processor(clip | {"do_center_crop": True, "crop_size": {"height": 224, "width": 200}})
    with pytest.raises(SpecError, match="rescale_factor"):
        preprocess_from_processor(clip | {"do_center_crop": True, "crop_size": 224, "rescale_factor": 1.0})
    assert text_max_length(int(1e30), 514, "xlm-roberta") == 512
    assert split_name("hf:a/b#text") == ("a/b", "text")
    with pytest.raises(SpecError, match="after '#'"):
        split_name("hf:a/b#audio")


def test_name_errors(hf_models):
    with pytest.raises(SpecError, match="dual encoder: name one tower"):
        get_spec(f"hf:{hf_models['clip']}")
    with pytest.raises(SpecError, match="names a tower of a dual encoder"):
        get_spec(f"hf:{hf_models['vit']}#image")
    with pytest.raises(SpecError, match="not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        get_spec("hf:featx-tests/no-such-model")


# --------------------------------------------------------------------------- image encoders
@pytest.mark.parametrize("family,output", [("vit", "cls"), ("dinov2", "cls"), ("convnext", "pooler")])
def test_image_encoder_exports_and_embeds_like_transformers(hf_models, sample_rgbs, family, output):
    bb = featx.load_backbone(f"hf:{hf_models[family]}")  # exported on first use
    assert bb.record["parity"]["max_abs_diff"] <= 1e-4
    model = transformers.AutoModel.from_pretrained(str(hf_models[family])).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(processor_pixels(hf_models[family], sample_rgbs)))
    ref = out.last_hidden_state[:, 0] if output == "cls" else out.pooler_output.flatten(1)
    np.testing.assert_allclose(bb.embed(sample_rgbs), ref.numpy(), atol=1e-4)
    assert bb.dim == ref.shape[1]


# --------------------------------------------------------------------------- text encoders
def test_text_encoder_mean_pooled(hf_models):
    folder = hf_models["bert"]
    bb = featx.load_backbone(f"hf:{folder}")
    assert bb.record["parity"]["max_abs_diff"] <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(bb.embed(SENTENCES), ref, atol=1e-5)


# --------------------------------------------------------------------------- dual encoders
def _text_batch(family, folder, texts):
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    padding = {"padding": "max_length", "max_length": 64} if family == "siglip" else {"padding": True}
    return tok(texts, truncation=True, return_tensors="pt", **padding)


def _features(out):
    return out if torch.is_tensor(out) else out.pooler_output


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_towers_equal_get_features(hf_models, sample_rgbs, family):
    folder = hf_models[family]
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    image = featx.load_backbone(f"hf:{folder}#image")
    text = featx.load_backbone(f"hf:{folder}#text")
    assert max(image.record["parity"]["max_abs_diff"], text.record["parity"]["max_abs_diff"]) <= 1e-4
    with torch.no_grad():
        ref_image = _features(model.get_image_features(
            pixel_values=torch.from_numpy(processor_pixels(folder, sample_rgbs))))
        ref_text = _features(model.get_text_features(**_text_batch(family, folder, SENTENCES)))
    np.testing.assert_allclose(image.embed(sample_rgbs), torch.nn.functional.normalize(ref_image, dim=1).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(text.embed(SENTENCES), torch.nn.functional.normalize(ref_text, dim=1).numpy(),
                               atol=1e-5)
    assert text.spec.source["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
    # SigLIP's tokenizer gives input_ids only, and the export takes only what the model reads
    assert text.session.input_names == (["input_ids"] if family == "siglip" else ["input_ids", "attention_mask"])


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_zero_shot_probabilities_equal_the_model(hf_models, sample_rgbs, family):
    folder = hf_models[family]
    clf = featx.ZeroShotClassifier(f"hf:{folder}", classes=["cat", "dog", "bird"], template="a photo of a {}.")
    proba = clf.fit().predict_proba(sample_rgbs)
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(processor_pixels(folder, sample_rgbs)),
                    **_text_batch(family, folder, clf.prompts_))
    logits = out.logits_per_image
    ref = (logits.softmax(dim=1) if family == "clip" else torch.sigmoid(logits)).numpy()
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba, ref, atol=1e-5)
    np.testing.assert_allclose(clf.decision_function(sample_rgbs), logits.numpy(), atol=1e-4)
    assert list(clf.predict(sample_rgbs)) == list(np.array(["cat", "dog", "bird"])[logits.argmax(1).numpy()])
    if family == "clip":
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_zero_shot_estimator_contract(hf_models, sample_rgbs):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.utils.estimator_checks import (check_estimator_cloneable, check_get_params_invariance,
                                                check_no_attributes_set_in_init, check_set_params)

    from featx.estimators.zeroshot import ZeroShotClassifier

    model = f"hf:{hf_models['clip']}"
    est = ZeroShotClassifier(model, classes={0: "cat", 1: "dog"})
    for check in (check_no_attributes_set_in_init, check_estimator_cloneable, check_get_params_invariance,
                  check_set_params):
        check("ZeroShotClassifier", est)
    assert not hasattr(clone(est), "classes_")
    images = np.stack([rgb[:200, :200] for rgb in sample_rgbs] * 3)  # a uint8 batch (6, 200, 200, 3)
    y = np.array([0, 1, 0, 1, 0, 1])
    fitted = est.fit(images, y)
    assert fitted is est and list(est.classes_) == [0, 1] and est.prompts_ == ["a photo of a cat.", "a photo of a dog."]
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(restored.predict_proba(images), est.predict_proba(images), atol=1e-6)
    # classes from y when none are given; a label outside the classes is refused
    assert list(ZeroShotClassifier(model).fit(None, ["dog", "cat", "dog"]).classes_) == ["cat", "dog"]
    with pytest.raises(featx.errors.InputError, match="not among the classes"):
        ZeroShotClassifier(model, classes=["cat", "dog"]).fit(None, ["cat", "fish"])
    for bad, match in [({"template": "no slot"}, "'template' parameter"), ({"model": "hf:x#image"}, "'model'"),
                       ({"classes": []}, "'classes' parameter")]:
        with pytest.raises(ParameterError, match=match):
            ZeroShotClassifier(**({"model": model, "classes": ["a", "b"]} | bad)).fit()
    # GridSearchCV over the template
    search = GridSearchCV(ZeroShotClassifier(model, classes={0: "cat", 1: "dog"}),
                          {"template": ["a photo of a {}.", "a {} in the wild"]}, cv=2).fit(images, y)
    assert search.best_params_["template"] in ("a photo of a {}.", "a {} in the wild")
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.predict(images).shape == (6,)


# --------------------------------------------------------------------------- pooling chosen in a spec file
def test_spec_file_chooses_text_pooling(hf_models, tmp_path, monkeypatch):
    folder = hf_models["bert"]
    (tmp_path / "bert-cls.toml").write_text(
        f'name = "bert-cls"\nmodality = "text"\npooling = "cls"\nnormalize = false\n'
        f'[source]\nkind = "hf"\nmodel = "{folder}"\n[preprocess]\nmax_length = 16\n')
    monkeypatch.setenv("FEATX_MODELS", str(tmp_path))
    spec = get_spec("bert-cls")
    assert (spec.pooling, spec.normalize, spec.preprocess.max_length) == ("cls", False, 16)
    bb = featx.load_backbone("bert-cls")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ref = model(**tok(SENTENCES, padding=True, truncation=True, max_length=16,
                          return_tensors="pt")).last_hidden_state[:, 0]
    np.testing.assert_allclose(bb.embed(SENTENCES), ref.numpy(), atol=1e-5)
    record = json.loads(bb.onnx_path.with_suffix(".json").read_text())
    assert record["spec"]["pooling"] == "cls" and record["spec"]["preprocess"]["max_length"] == 16
    (tmp_path / "bad-pool.toml").write_text(
        f'name = "bad-pool"\nmodality = "text"\npooling = "max"\n[source]\nkind = "hf"\nmodel = "{folder}"\n')
    with pytest.raises(SpecError, match=r"bad-pool\.toml: pooling must be one of \('mean', 'cls', 'pooler'\)"):
        get_spec("bad-pool")


# --------------------------------------------------------------------------- a folder is its content
def test_new_weights_in_a_folder_are_exported_again_and_a_name_is_not_an_identity(tmp_path, sample_rgbs,
                                                                                  monkeypatch, caplog):
    from tiny_hf import build_vit

    def reference(folder):
        model = transformers.AutoModel.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            return model(pixel_values=torch.from_numpy(processor_pixels(folder, sample_rgbs))).last_hidden_state[:, 0]

    first, second = tmp_path / "a" / "my-vit", tmp_path / "b" / "my-vit"
    build_vit(first, seed=0)
    build_vit(second, seed=1)
    monkeypatch.chdir(first.parent)
    before = featx.load_backbone("hf:./my-vit")
    np.testing.assert_allclose(before.embed(sample_rgbs), reference(first).numpy(), atol=1e-4)
    build_vit(first, seed=2)  # new weights saved into the same folder
    with caplog.at_level("WARNING", logger="featx"):
        after = featx.load_backbone("hf:./my-vit")
    assert after.onnx_path != before.onnx_path and "changed since it was exported" in caplog.text
    np.testing.assert_allclose(after.embed(sample_rgbs), reference(first).numpy(), atol=1e-4)
    assert not np.allclose(after.embed(sample_rgbs), before.embed(sample_rgbs), atol=1e-3)
    monkeypatch.chdir(second.parent)  # the same name from another folder: another model
    other = featx.load_backbone("hf:./my-vit")
    assert other.onnx_path not in (before.onnx_path, after.onnx_path)
    np.testing.assert_allclose(other.embed(sample_rgbs), reference(second).numpy(), atol=1e-4)
    monkeypatch.chdir(first.parent)
    assert featx.load_backbone("hf:./my-vit").onnx_path == after.onnx_path  # unchanged: found, not exported


def test_a_layered_export_sits_beside_the_plain_one_whose_caches_stay_valid(tmp_path):
    from tiny_hf import build_vit

    from featx.torchmodels.provision import export_backbone

    name = f"hf:{build_vit(tmp_path / 'vit')}"
    plain = featx.load_backbone(name)
    plain_sha = plain.sha256
    first = featx.extract("builtin:digits:test", plain, tmp_path / "digits.cache", progress=False)
    assert first.embedded == len(featx.open_dataset("builtin:digits:test"))
    made = export_backbone(name, layers="block0")
    assert made.onnx_path != plain.onnx_path and made.onnx_path.name.endswith(".layers-block0.onnx")
    again = featx.load_backbone(name)
    assert again.onnx_path == plain.onnx_path and again.sha256 == plain_sha and not again.layers
    assert featx.extract("builtin:digits:test", name, tmp_path / "digits.cache", progress=False).embedded == 0
    layered = featx.load_backbone(f"{name}@block0")
    assert layered.onnx_path == made.onnx_path and list(layered.layers) == ["block0"]
    assert layered.name == f"{name}@block0" and layered.fingerprint_id != plain.fingerprint_id
    X, _, _ = featx.load_features(tmp_path / "digits.cache", model=plain.name)
    np.testing.assert_allclose(layered.embed(list(featx.open_dataset("builtin:digits:test").items[i].ref
                                                 for i in range(4))), X[:4], atol=1e-5)
