"""Intermediate layers: exported as extra outputs (parity per output), cached side by side and never mixed,
read by name, chosen by CV, and used by the transformer and the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import featx
from featx.cache import FeatureReader, iter_features, load_features
from featx.cache.verify import verify
from featx.cli import main
from featx.errors import CacheError, CacheMismatchError, ExportError, SpecError
from featx.torchmodels.export import export_module, with_layers
from featx.heads import select_head, select_layer
from featx.specs.layers import parse_layers
from featx.torchmodels.layer_outputs import available_layers
from featx.heads.persist import load_head, read_metadata
from featx.sources import open_dataset, subset

LAYERS = ("block1", "block3")


@pytest.fixture(scope="module")
def layered(tmp_path_factory, tiny_cnn_backbone):
    """The tiny torch CNN exported twice: plain, and with the pooled outputs of block1 and block3."""
    tb = tiny_cnn_backbone()
    spec = tb.spec
    out = tmp_path_factory.mktemp("layered")
    plain = export_module(tb.module, spec.replace(name="tiny-plain"), out / "plain")
    result = export_module(with_layers(tb.module, spec, LAYERS), spec, out / "layers")
    return tb, plain, result


def test_export_adds_one_output_per_layer_each_parity_checked(layered):
    tb, plain, result = layered
    record = json.loads(result.spec_path.read_text())
    assert record["spec"]["layers"] == {"block1": 8, "block3": 8}
    assert [o["name"] for o in record["onnx"]["outputs"]] == ["features", "features_block1", "features_block3"]
    per_layer = record["parity"]["layers"]
    assert set(per_layer) == {"final", "block1", "block3"}
    assert all(0 <= d < 1e-4 for d in per_layer.values()) and record["parity"]["max_abs_diff"] == max(per_layer.values())
    # a plain export's record is as it always was: no layers, one output
    plain_record = json.loads(plain.spec_path.read_text())
    assert "layers" not in plain_record["spec"] and "layers" not in plain_record["parity"]
    assert [o["name"] for o in plain_record["onnx"]["outputs"]] == ["features"]
    # ONNX Runtime's outputs are the torch module's pooled blocks, layer by layer
    torch = pytest.importorskip("torch")
    bb = featx.load_backbone(result.onnx_path)
    images = [np.full((20, 20), 40 * k, np.uint8) for k in range(3)]
    feeds = bb.prepare([bb.decode(im) for im in images])
    final, layers = bb.run_layers(feeds)
    caught = {}
    hooks = [tb.module.blocks[k].register_forward_hook(lambda _m, _i, o, k=k: caught.__setitem__(k, o))
             for k in (1, 3)]
    with torch.no_grad():
        reference = tb.module(torch.from_numpy(feeds["pixel_values"])).numpy()
    for hook in hooks:
        hook.remove()
    assert np.abs(final - reference).max() < 1e-5
    for k, name in ((1, "block1"), (3, "block3")):
        assert np.abs(layers[name] - caught[k].mean(dim=(2, 3)).numpy()).max() < 1e-5


def test_a_layer_that_differs_from_torch_fails_the_export_naming_its_output(tmp_path, tiny_cnn_backbone):
    torch = pytest.importorskip("torch")
    tb = tiny_cnn_backbone()
    counter = iter(range(1000))

    class Drifting(torch.nn.Module):  # adds a different constant at every call: traced as the export-time one
        def forward(self, x):
            return x + float(next(counter))

    tb.module.blocks[2] = torch.nn.Sequential(tb.module.blocks[2], Drifting())
    with pytest.raises(ExportError, match=r"in output 1 \(features_block2\)"):
        export_module(with_layers(tb.module, tb.spec, ["block2"]), tb.spec.replace(dim=None), tmp_path)
    assert not list(tmp_path.glob("*.onnx"))  # nothing published


def test_layer_names_are_checked(tiny_cnn_backbone):
    tb = tiny_cnn_backbone()
    assert list(available_layers(tb.module, "image")) == ["block0", "block1", "block2", "block3"]
    with pytest.raises(SpecError, match=r"has no layer\(s\) \['block9'\]; its layers: block0, block1"):
        with_layers(tb.module, tb.spec, "block9")
    for bad in ("final", "9lives", "a-b"):
        with pytest.raises(SpecError, match="a layer name is a letter"):
            parse_layers(bad)
    assert parse_layers("block1, block1,block3") == ("block1", "block3")


@pytest.fixture(scope="module")
def layered_cache(tmp_path_factory, layered):
    _, _, result = layered
    cache = tmp_path_factory.mktemp("layered-cache") / "c"
    data = subset(open_dataset("builtin:digits:train"), 90, seed=0)
    featx.extract(data, result.onnx_path, cache, shard_size=40, progress=False)
    return cache, data, result


def test_layers_are_cached_side_by_side_each_its_own_feature_set(layered_cache):
    cache, data, result = layered_cache
    bb = featx.load_backbone(result.onnx_path)
    refs = [item.ref for item in data.items]
    X = {}
    for layer in (None, "final", *LAYERS):
        X[layer], y, ids = load_features(cache, layer=layer)
        assert X[layer].shape == (90, 8) and list(ids) == data.ids()
        assert np.abs(X[layer] - bb.embed(refs, layer=layer)).max() < 1e-5  # the same rows as a direct embed
    assert np.array_equal(X[None], X["final"])
    assert not np.allclose(X["block1"], X["block3"]) and not np.allclose(X["block1"], X["final"])  # never mixed
    chunks = [c for c, _, _ in iter_features(cache, layer="block3", chunk=32)]
    assert [len(c) for c in chunks] == [32, 32, 26] and np.array_equal(np.concatenate(chunks), X["block3"])
    reader = FeatureReader(cache, layer="block1")
    assert reader.layers == {"block1": 8, "block3": 8} and reader.layer == "block1"
    assert np.array_equal(reader.read([89, 0]), X["block1"][[89, 0]])
    shards = sorted((cache / "models" / "tiny-cnn" / "shards").glob("shard-*.h5"))
    assert len(shards) >= 2
    with h5py.File(shards[0]) as f:
        n = f["embeddings"].shape[0]
        assert sorted(f["layers"]) == ["block1", "block3"] and f["layers/block1"].shape == (n, 8)
    with h5py.File(cache / "index.h5") as f:  # plain h5py: one view per layer
        rows = f["models/tiny-cnn/rows"][:]
        assert np.array_equal(f["models/tiny-cnn/layers/block3"][:][rows], X["block3"])
    assert featx.extract(data, result.onnx_path, cache, progress=False).cached == 90  # resumes as always
    assert verify(cache).ok


def test_a_layer_the_cache_lacks_is_refused_by_name(layered_cache):
    cache, _, _ = layered_cache
    with pytest.raises(CacheError, match=r"has no layer 'block2'; it has: final, block1, block3"):
        load_features(cache, layer="block2")


def test_a_layered_export_is_never_mixed_with_the_plain_one(tmp_path, layered):
    tb, plain, result = layered
    data = subset(open_dataset("builtin:digits:train"), 20, seed=0)
    # the plain export under the same name as the layered one: another model file for that name
    spec = json.loads(plain.spec_path.read_text())
    spec["spec"]["name"] = "tiny-cnn"
    plain.spec_path.write_text(json.dumps(spec))
    featx.extract(data, plain.onnx_path, tmp_path / "c", progress=False)
    with pytest.raises(CacheMismatchError, match=r"intermediate layers \(none -> block1, block3\) and model file"):
        featx.extract(data, result.onnx_path, tmp_path / "c", progress=False)


def test_an_edited_layer_is_found_by_verify(tmp_path, layered):
    _, _, result = layered
    cache = tmp_path / "c"
    featx.extract(subset(open_dataset("builtin:digits:train"), 20, seed=0), result.onnx_path, cache,
                  progress=False)
    (shard,) = (cache / "models" / "tiny-cnn" / "shards").glob("shard-*.h5")
    with h5py.File(shard, "r+") as f:
        f["layers/block3"][0, 0] += 1.0
    report = verify(cache)
    assert not report.ok and any("checksum mismatch" in p for p in report.problems)


def test_the_layer_is_chosen_by_cv_like_any_hyper_parameter():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 30)
    signal = np.eye(3)[np.searchsorted(["a", "b", "c"], y)] + rng.normal(0, 0.4, (90, 3))
    features = {"final": rng.normal(size=(90, 6)), "block1": np.c_[signal, rng.normal(size=(90, 3))],
                "block3": rng.normal(size=(90, 6))}
    chosen = select_layer("logreg", features, y, cv=3, n_jobs=1)
    assert chosen.layer == "block1" and list(chosen.scores) == ["final", "block1", "block3"]
    assert chosen.scores["block1"] == max(chosen.scores.values()) > 0.8 > chosen.scores["final"]
    assert chosen.result is chosen.results["block1"] and chosen.summary()["layer"] == "block1"
    # ties, and no CV possible, go to the first layer given (the final one)
    same = {"final": features["block1"], "block1": features["block1"]}
    assert select_layer("logreg", same, y, cv=3, n_jobs=1).layer == "final"
    one = np.array([0, 30, 60])
    with pytest.warns(UserWarning, match="single item"):
        assert select_layer("knn", {k: v[one] for k, v in features.items()}, y[one], n_jobs=1).layer == "final"


def test_train_layer_all_then_evaluate_and_predict_on_that_layer(tmp_path, layered_cache, capsys):
    cache, _, result = layered_cache
    heads = tmp_path / "heads"
    assert main(["train", str(cache), "--layer", "all", "--head", "logreg", "--cv", "3", "--jobs", "1",
                 "--model", str(result.onnx_path), "--out", str(heads), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["heads"]
    scores = {}
    for layer in ("final", *LAYERS):  # what each layer scores alone, on the same folds
        X, y, _ = load_features(cache, layer=layer)
        scores[layer] = select_head("logreg", X, y, cv=3, n_jobs=1).cv_mean
    assert row["layer"] == max(scores, key=scores.get) and row["cv_mean"] == pytest.approx(max(scores.values()))
    assert read_metadata(heads / "logreg.skops")["layer"] == row["layer"]
    # evaluate reads that layer from a test cache made with the same export
    assert main(["evaluate", str(heads / "logreg.skops"), "--cache", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    X, y, _ = load_features(cache, layer=row["layer"])
    assert report["accuracy"] == pytest.approx(float((load_head(heads / "logreg.skops").predict(X) == y).mean()))
    assert main(["train", str(cache), "--layer", "block2", "--head", "logreg", "--out", str(heads)]) == 1
    assert "has no layer 'block2'" in capsys.readouterr().err


def test_embedding_transformer_takes_a_layer(tmp_path, layered_cache):
    from sklearn.base import clone

    cache, data, result = layered_cache
    images = [item.ref for item in data.items[:12]]
    X, _, _ = load_features(cache, layer="block3")
    et = featx.EmbeddingTransformer(str(result.onnx_path), layer="block3")
    out = et.fit_transform(images)
    assert et.n_features_out_ == 8 and np.abs(out - X[:12]).max() < 1e-5
    assert list(et.get_feature_names_out()[:2]) == ["tiny-cnn_block3_0", "tiny-cnn_block3_1"]
    cached = clone(et).set_params(cache=str(tmp_path / "et-cache"))
    assert np.abs(cached.fit_transform(images) - out).max() < 1e-6
    assert np.abs(cached.transform(images) - out).max() < 1e-6  # read back from its cache, that layer
    with pytest.raises(SpecError, match="has no layer 'block2'"):
        featx.EmbeddingTransformer(str(result.onnx_path), layer="block2").fit()


@pytest.mark.slow
@pytest.mark.parametrize("name, layers, dims", [
    ("efficientnet-lite0", "block4,block10", {"block4": 40, "block10": 112}),
    ("all-minilm-l6-v2", "layer0,layer3", {"layer0": 384, "layer3": 384}),
])
def test_real_backbones_export_their_layers_parity_checked_per_output(tmp_path, name, layers, dims):
    from featx.torchmodels.export import export

    result = export(name, out_dir=tmp_path, layers=layers)
    record = json.loads(result.spec_path.read_text())
    assert record["spec"]["layers"] == dims
    assert set(record["parity"]["layers"]) == {"final", *dims}
    assert all(d < 1e-4 for d in record["parity"]["layers"].values())
    if name == "all-minilm-l6-v2":  # fused attention kept, with the extra outputs
        assert record["fusion"]["fused_ops"].get("Attention") == 6
    again = export(name, out_dir=tmp_path, layers=layers)  # an intact export with the same layers is reused
    assert again.sha256 == result.sha256


def test_a_head_on_a_layer_deploys_reading_that_layer_only(tmp_path, layered_cache):
    import onnx

    from featx.deploy import DeployedModel, deploy_head

    cache, data, result = layered_cache
    heads = tmp_path / "heads"
    assert main(["train", str(cache), "--layer", "block1", "--head", "logreg", "--cv", "3", "--jobs", "1",
                 "--model", str(result.onnx_path), "--out", str(heads), "-q"]) == 0
    deployed = deploy_head(heads / "logreg.skops", tmp_path / "block1.onnx")
    assert deployed.parity.passed and deployed.metadata["backbone"]["layer"] == "block1"
    # the fused file equals the head on the cached block1 features, item by item
    X, _, ids = load_features(cache, layer="block1")
    head = load_head(heads / "logreg.skops")
    refs = {item.id: item.ref for item in data.items}
    model = DeployedModel(deployed.path, providers="cpu")
    proba = model.predict_proba([refs[i] for i in ids[:24]])
    np.testing.assert_allclose(proba, head.predict_proba(X[:24]), atol=1e-4)
    # cut to what block1 needs: block3 and the final features are not computed
    fused, layered_graph = onnx.load(str(deployed.path)).graph, onnx.load(str(result.onnx_path)).graph
    assert [o.name for o in fused.output] == ["label", "probabilities"]
    backbone_nodes = [n for n in fused.node if not n.name.startswith("head/")]
    assert len(backbone_nodes) < len(layered_graph.node)
    assert not {"features", "features_block3"} & {out for n in fused.node for out in n.output}
