"""EmbeddingTransformer: the scikit-learn estimator contract, input forms, errors, and the cache."""

from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_array
from sklearn.utils import estimator_checks as checks

import featx
from featx.errors import CacheError, InputError, ItemFailedError, ParameterError
from featx.sources import open_dataset, subset
from featx.estimators.transformer import EmbeddingTransformer


@pytest.fixture(scope="module")
def digits():
    """160 real digit images (uint8 8x8) and their labels."""
    ds = subset(open_dataset("builtin:digits"), 160, seed=0)
    return [item.ref for item in ds.items], np.array([item.label for item in ds.items], dtype=object)


def image_paths(root):
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- scikit-learn's data-free checks
DATA_FREE_CHECKS = [
    "check_no_attributes_set_in_init", "check_estimator_cloneable", "check_get_params_invariance",
    "check_set_params", "check_parameters_default_constructible", "check_estimator_repr",
    "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_tags_renamed", "check_valid_tag_types",
    "check_mixin_order", "check_get_feature_names_out_error", "check_transformers_unfitted",
]


@pytest.mark.parametrize("check", DATA_FREE_CHECKS)
def test_sklearn_data_free_checks(check, tiny_image_onnx):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. set_params must not validate (and warn)
        getattr(checks, check)("EmbeddingTransformer", EmbeddingTransformer(str(tiny_image_onnx), batch_size=4))


def test_sklearn_skips_its_checks_for_item_input(tiny_image_onnx):
    """Why the checks are run by hand: for non-array input, check_estimator runs one check and skips the rest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = checks.check_estimator(EmbeddingTransformer(str(tiny_image_onnx)), on_fail=None)
    assert [(r["check_name"], r["status"]) for r in results] == [("check_estimator_cloneable", "passed")]
    assert any("Can't test estimator EmbeddingTransformer" in str(w.message) for w in caught)


class GreyRows(EmbeddingTransformer):
    """EmbeddingTransformer reading each row of a numeric matrix as a 1 x n grey image (test adapter).

    Only the input changes (sklearn's ``check_array``, then rows as uint8 images): fitting,
    transforming, cloning, pickling and parameters are EmbeddingTransformer's own, so
    scikit-learn's data checks exercise them for real.
    """

    def _to_items(self, X):
        X = check_array(X)  # sklearn's own errors for sparse, NaN/inf, complex, empty and 1-D input
        return list(np.clip(X * 32 + 128, 0, 255).astype(np.uint8)[:, None, :])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array, tags.input_tags.one_d_array, tags.input_tags.string = True, False, False
        return tags


#: EmbeddingTransformer takes items, not feature columns: an item's size (here a row's length, an
#: image's width) may differ between fit and transform, so it has no n_features_in_ to check.
ITEMS_NOT_COLUMNS = "items, not feature columns: no n_features_in_"


def test_sklearn_data_checks_through_an_array_adapter(tiny_image_onnx):
    expected = {name: ITEMS_NOT_COLUMNS for name in
                ("check_n_features_in", "check_n_features_in_after_fitting", "check_transformer_general")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = checks.check_estimator(GreyRows(str(tiny_image_onnx), batch_size=4), on_fail=None,
                                         expected_failed_checks=expected)
    status = {}
    for r in results:
        status.setdefault(r["check_name"], set()).add(r["status"])
    failed = {name: [str(r["exception"]) for r in results if r["check_name"] == name]
              for name, s in status.items() if "failed" in s}
    assert failed == {}
    assert {name for name, s in status.items() if s == {"xfail"}} == set(expected)
    for name in ("check_estimators_pickle", "check_fit_idempotent", "check_methods_subset_invariance",
                 "check_methods_sample_order_invariance", "check_dict_unchanged", "check_dont_overwrite_parameters",
                 "check_estimators_overwrite_params", "check_transformers_unfitted", "check_readonly_memmap_input",
                 "check_transformer_data_not_an_array", "check_fit_check_is_fitted"):
        assert status.get(name) == {"passed"}, name
    assert sum(s == {"passed"} for s in status.values()) >= 35


def test_init_only_stores_and_unfitted_transform_raises(tiny_image_onnx):
    et = EmbeddingTransformer(model="no-such-backbone", batch_size=0)  # nothing validated or loaded yet
    assert et.get_params() == {"model": "no-such-backbone", "cache": None, "batch_size": 0, "providers": None,
                               "threads": None, "on_error": "raise", "jpeg_draft": False, "layer": None,
                               "decode_workers": None}
    assert not [k for k in vars(et) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        EmbeddingTransformer(str(tiny_image_onnx)).transform([np.zeros((8, 8), np.uint8)])


@pytest.mark.parametrize("param, value, expected", [
    ("batch_size", 0, "None or an int in [1, inf)"),
    ("batch_size", 2.5, "None or an int in [1, inf)"),
    ("batch_size", True, "None or an int in [1, inf)"),
    ("threads", 0, "None or an int in [1, inf)"),
    ("decode_workers", 0, "None or an int in [1, inf)"),
    ("on_error", "skip", "one of ('raise', 'nan')"),
    ("model", "", "a backbone name or the path of an exported .onnx file"),
    ("model", 3, "a backbone name or the path of an exported .onnx file"),
    ("cache", 7, "None or a path (str or os.PathLike)"),
    ("jpeg_draft", 1, "a bool"),
    ("providers", 5, "None, a str such as 'cpu' or 'cuda,cpu', or a list of str"),
])
def test_bad_parameters_name_parameter_and_value(param, value, expected, tiny_image_onnx):
    et = EmbeddingTransformer(str(tiny_image_onnx)).set_params(**{param: value})
    message = f"The '{param}' parameter of EmbeddingTransformer must be {expected}. Got {value!r} instead."
    with pytest.raises(ParameterError) as info:
        et.fit([np.zeros((8, 8), np.uint8)])
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_exact_batch_size_message(tiny_image_onnx):
    with pytest.raises(ParameterError, match=r"^The 'batch_size' parameter of EmbeddingTransformer must be None or an int "
                                             r"in \[1, inf\)\. Got 0 instead\.$"):
        EmbeddingTransformer(str(tiny_image_onnx), batch_size=0).fit()


def test_unknown_backbone_is_a_featx_error():
    with pytest.raises(featx.FeatxError, match="unknown backbone 'no-such-backbone'"):
        EmbeddingTransformer("no-such-backbone").fit()


# --------------------------------------------------------------------------- fit / transform
def test_fit_transform_equals_the_backbone(tiny_image_onnx, digits):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx), batch_size=16)
    assert et.fit(images) is et
    assert et.n_features_out_ == 8 and et.backbone_.name == "tiny-image"
    assert not hasattr(et, "n_features_in_")  # not tabular input
    out = et.transform(images)
    assert out.dtype == np.float32 and out.shape == (160, 8)
    np.testing.assert_array_equal(out, featx.load_backbone(tiny_image_onnx).embed(images, batch_size=16))
    np.testing.assert_allclose(EmbeddingTransformer(str(tiny_image_onnx), batch_size=5).fit_transform(images), out,
                               atol=1e-5)


def test_input_forms(tiny_image_onnx, image_files, digits):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx)).fit()
    ref = et.transform(images[:6])
    np.testing.assert_array_equal(et.transform(np.stack(images[:6])), ref)  # uint8 batch (n, H, W)
    np.testing.assert_array_equal(et.transform(tuple(images[:6])), ref)
    np.testing.assert_array_equal(et.transform(Image.fromarray(a) for a in images[:6]), ref)  # PIL, generator
    paths = image_paths(image_files)
    by_path = et.transform(paths)
    np.testing.assert_array_equal(et.transform(pd.Series(paths)), by_path)
    np.testing.assert_array_equal(et.transform(np.array(paths, dtype=object)), by_path)
    np.testing.assert_array_equal(et.transform([open(p, "rb").read() for p in paths]), by_path)  # encoded bytes
    model_ready = featx.load_backbone(tiny_image_onnx).prepare([np.stack([a] * 3, -1) for a in images[:3]])
    np.testing.assert_allclose(et.transform(next(iter(model_ready.values()))), ref[:3], atol=1e-6)
    assert et.transform([]).shape == (0, 8)


def test_one_column_dataframe(tiny_image_onnx, image_files):
    df = pd.DataFrame({"path": image_paths(image_files)})
    et = EmbeddingTransformer(str(tiny_image_onnx)).fit(df)
    assert et.n_features_in_ == 1 and list(et.feature_names_in_) == ["path"]
    np.testing.assert_array_equal(et.transform(df), et.transform(df["path"].tolist()))
    with pytest.raises(InputError, match=r"X has column \['file'\] but EmbeddingTransformer was fitted on \['path'\]"):
        et.transform(df.rename(columns={"path": "file"}))
    with pytest.raises(InputError, match="one column of items; got a DataFrame with 2 columns"):
        et.transform(df.assign(label="x"))


def test_bad_inputs_are_named(tiny_image_onnx, image_files, digits):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx)).fit()
    with pytest.raises(InputError, match="got a single str; wrap it in a list"):
        et.transform(str(image_files / "shapes" / "circle.png"))
    with pytest.raises(InputError, match="must be a batch"):
        et.transform(images[0])
    with pytest.raises(InputError, match="cannot embed a float64 array of shape"):
        et.transform(np.zeros((3, 5)))
    with pytest.raises(InputError, match="'#1'"):
        et.transform([images[0], str(image_files / "missing.png"), images[2]])


def test_on_error_nan_keeps_rows_aligned(tiny_image_onnx, image_files, digits, nan_image_onnx):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx), on_error="nan", batch_size=2).fit()
    with pytest.warns(UserWarning, match=r"1 item\(s\) failed and got NaN rows: #1"):
        out = et.transform([images[0], str(image_files / "missing.png"), images[2]])
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    np.testing.assert_array_equal(out[[0, 2]], et.transform([images[0], images[2]]))
    # a model emitting NaN for an all-black image
    nan_et = EmbeddingTransformer(str(nan_image_onnx), on_error="nan").fit()
    with pytest.warns(UserWarning, match="#0"):
        out = nan_et.transform([np.zeros((8, 8), np.uint8), images[1]])
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_texts(tiny_text_onnx):
    et = EmbeddingTransformer(str(tiny_text_onnx), batch_size=2).fit()
    texts = ["a great coffee", "stale and bland", "ok", "would buy again"]
    out = et.transform(texts)
    assert out.shape == (4, 16)
    np.testing.assert_allclose(out, featx.load_backbone(tiny_text_onnx).embed(texts), atol=1e-6)
    with pytest.raises(InputError, match="'#1' is empty or blank"):
        et.transform(["fine", "   "])
    assert list(et.get_feature_names_out()[:2]) == ["tiny-text_0", "tiny-text_1"]


# --------------------------------------------------------------------------- clone, pickle, sklearn composition
def test_clone_copies_parameters_not_state(tiny_image_onnx, digits):
    et = EmbeddingTransformer(str(tiny_image_onnx), batch_size=7, on_error="nan").fit(digits[0])
    twin = clone(et)
    assert twin.get_params() == et.get_params()
    assert not hasattr(twin, "backbone_")


def test_pickle_and_joblib_round_trips_give_identical_transforms(tiny_image_onnx, digits, tmp_path):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx)).fit()
    before = et.transform(images)
    assert et.backbone_.session._session is not None  # a live ONNX Runtime session...
    blob = pickle.dumps(et)
    restored = pickle.loads(blob)
    assert restored.backbone_.session._session is None  # ...is not pickled, and is recreated lazily
    np.testing.assert_array_equal(restored.transform(images), before)
    joblib.dump(et, tmp_path / "et.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "et.joblib").transform(images), before)
    unfitted = pickle.loads(pickle.dumps(EmbeddingTransformer(str(tiny_image_onnx), batch_size=3)))
    assert unfitted.batch_size == 3 and not hasattr(unfitted, "backbone_")


def test_pipeline_fit_predict_and_cross_val_score(tiny_image_onnx, digits):
    images, labels = digits
    pipe = make_pipeline(EmbeddingTransformer(str(tiny_image_onnx)), LogisticRegression(max_iter=2000))
    pipe.fit(images[:120], labels[:120])
    pred = pipe.predict(images[120:])
    assert pred.shape == (40,) and set(pred) <= set(labels)
    scores = cross_val_score(pipe, images, labels, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.12  # 10 classes: chance is 0.1
    scaled = make_pipeline(EmbeddingTransformer(str(tiny_image_onnx)), StandardScaler(), LogisticRegression())
    assert cross_val_score(scaled, images, labels, cv=3).mean() > 0.3  # tiny random-conv backbone, 8-d


def test_grid_search_over_transformer_and_head_parameters(tiny_image_onnx, digits):
    images, labels = digits
    pipe = make_pipeline(EmbeddingTransformer(str(tiny_image_onnx)), LogisticRegression(max_iter=2000))
    grid = {"embeddingtransformer__batch_size": [4, 32], "logisticregression__C": [0.1, 10.0]}
    search = GridSearchCV(pipe, grid, cv=3).fit(images, labels)
    assert len(search.cv_results_["params"]) == 4
    assert set(search.best_params_) == set(grid)
    # the batch size does not change the features beyond float noise, so the scores pair up
    scores = dict(zip(map(lambda p: (p["embeddingtransformer__batch_size"], p["logisticregression__C"]),
                          search.cv_results_["params"]), search.cv_results_["mean_test_score"]))
    for C in (0.1, 10.0):
        assert scores[(4, C)] == pytest.approx(scores[(32, C)], abs=0.02)
    assert search.predict(images[:5]).shape == (5,)


def test_pandas_output_and_feature_names(tiny_image_onnx, digits):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx)).fit()
    names = et.get_feature_names_out()
    assert list(names) == [f"tiny-image_{i}" for i in range(8)] and names.dtype == object
    et.set_output(transform="pandas")
    series = pd.Series(images[:5], index=[10, 11, 12, 13, 14])
    df = et.transform(series)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(names)
    assert list(df.index) == [10, 11, 12, 13, 14]
    np.testing.assert_array_equal(df.to_numpy(), EmbeddingTransformer(str(tiny_image_onnx)).fit().transform(images[:5]))
    pipe = make_pipeline(EmbeddingTransformer(str(tiny_image_onnx)), LogisticRegression())
    pipe.set_output(transform="pandas")
    pipe.fit(images[:60], digits[1][:60])
    assert list(pipe[:-1].transform(images[:3]).columns) == list(names)


# --------------------------------------------------------------------------- the cache
def test_cache_reuses_embeddings(tiny_image_onnx, image_files, digits, tmp_path):
    images, _ = digits
    cache = tmp_path / "cache"
    et = EmbeddingTransformer(str(tiny_image_onnx), cache=str(cache), batch_size=8).fit()
    plain = EmbeddingTransformer(str(tiny_image_onnx)).fit()
    first = et.transform(images[:50])
    np.testing.assert_allclose(first, plain.transform(images[:50]), atol=1e-6)
    shards = lambda: sorted(cache.rglob("shard-*.h5"))  # noqa: E731
    n = len(shards())
    assert n >= 1
    # same items again, in another order and with a repeat: nothing new is computed
    again = et.transform(images[:50][::-1] + [images[3]])
    assert len(shards()) == n
    np.testing.assert_array_equal(again[:50], first[::-1])
    np.testing.assert_array_equal(again[50], first[3])
    # new items only are embedded (one new shard), and a fresh transformer (or a pickled one) reuses all
    both = pickle.loads(pickle.dumps(et)).transform(images[:80])
    assert len(shards()) == n + 1
    np.testing.assert_array_equal(both[:50], first)
    # files are keyed by path and stamp: a changed file is re-embedded
    paths = image_paths(image_files)
    by_path = et.transform(paths)
    target = image_files / "shapes" / "circle.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(target)
    changed = et.transform(paths)
    k = paths.index(str(target))
    assert not np.allclose(changed[k], by_path[k])
    np.testing.assert_allclose(changed[k], plain.transform([str(target)])[0], atol=1e-6)
    np.testing.assert_array_equal(np.delete(changed, k, 0), np.delete(by_path, k, 0))


def test_cache_with_bad_items(tiny_image_onnx, image_files, digits, tmp_path):
    images, _ = digits
    et = EmbeddingTransformer(str(tiny_image_onnx), cache=str(tmp_path / "c")).fit()
    with pytest.raises(ItemFailedError, match="item '#1' failed"):
        et.transform([images[0], str(image_files / "missing.png")])
    et.set_params(on_error="nan")
    with pytest.warns(UserWarning, match=r"#1"):
        out = et.transform([images[0], str(image_files / "missing.png"), images[1]])
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_cache_of_a_dataset_is_refused(tiny_image_onnx, digits, tmp_path):
    featx.extract(subset(open_dataset("builtin:digits"), 20, seed=0), tiny_image_onnx, tmp_path / "c",
                  progress=False)
    et = EmbeddingTransformer(str(tiny_image_onnx), cache=str(tmp_path / "c")).fit()
    with pytest.raises(CacheError, match="needs a cache directory of its own"):
        et.transform(digits[0][:3])


@pytest.mark.slow
def test_real_lite0_in_a_pipeline(lite0_onnx, digits):
    images, labels = digits
    pipe = make_pipeline(EmbeddingTransformer("efficientnet-lite0"), LogisticRegression(max_iter=2000))
    assert cross_val_score(pipe, images, labels, cv=3).mean() > 0.8
