"""Heads at scale: the streaming reader, the size switch, chunked = in-memory training, a memory budget."""

from __future__ import annotations

import json
import tracemalloc

import h5py
import numpy as np
import pytest

import featx
from featx.cache import CacheStore, FeatureReader, ShardData, iter_features, load_features
from featx.cli import main
from featx.errors import HeadError, ParameterError
from featx.heads import IVFKNeighborsClassifier, plan_head, select_head, stratified_sample
from featx.heads.plan import expected_seconds, predicted_seconds
from featx.heads.stream import WINDOW_ROWS, epoch_order
from featx.heads.persist import file_types, load_head, save_head


def write_cache(root, X, y, *, dtype="float32", shard_rows=1000, order=None, failed=()):
    """A real cache (listing, model record, committed HDF5 shards) of ``X``; shards follow ``order``."""
    ids = [f"item-{i:06d}" for i in range(len(X))]
    store = CacheStore(root)
    store.create()
    fingerprint = {"name": "synthetic", "dim": int(X.shape[1])}
    store.register_model(fingerprint, "fp-synthetic", dtype)
    store.write_listing("synthetic", "image", ids, [str(v) for v in y], [""] * len(X))
    order = np.arange(len(X)) if order is None else np.asarray(order)
    order = np.array([i for i in order if i not in set(failed)])
    for lo in range(0, len(order), shard_rows):
        part = order[lo:lo + shard_rows]
        data = ShardData([ids[i] for i in part], [""] * len(part), X[part])
        store.commit("synthetic", data, fingerprint_id="fp-synthetic", dtype=dtype, durable=False)
    if failed:
        data = ShardData([], [], np.empty((0, X.shape[1]), np.float32), [ids[i] for i in failed], [""] * len(failed),
                         ["broken"] * len(failed))
        store.commit("synthetic", data, fingerprint_id="fp-synthetic", dtype=dtype, durable=False)
    return root


def blobs(n, d, classes=5, seed=0, spread=1.0):
    """Gaussian classes: labels as strings, features float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 2
    y = rng.integers(0, classes, n)
    X = (centres[y] + rng.normal(scale=spread, size=(n, d))).astype(np.float32)
    return X, np.array([f"c{v}" for v in y], dtype=object)


# --------------------------------------------------------------------------- the reader
def test_reader_chunks_and_any_rows_match_load_features(tmp_path):
    X, y = blobs(2500, 12)
    shuffled = np.random.default_rng(1).permutation(len(X))  # shards hold rows out of dataset order
    cache = write_cache(tmp_path / "c", X, y, dtype="float16", shard_rows=300, order=shuffled, failed=[7, 2000])
    with h5py.File(sorted((cache / "models" / "synthetic" / "shards").glob("*.h5"))[0]) as f:
        assert f["embeddings"].dtype == np.float16  # stays float16 on disk
    Xa, ya, ids = load_features(cache)
    keep = np.setdiff1d(np.arange(len(X)), [7, 2000])
    assert Xa.dtype == np.float32 and Xa.shape == (2498, 12)
    np.testing.assert_array_equal(Xa, X[keep].astype(np.float16).astype(np.float32))
    assert list(ya) == list(y[keep]) and ids[7] == "item-000008"
    parts = list(iter_features(cache, chunk=999))
    assert [len(p[0]) for p in parts] == [999, 999, 500]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), Xa)
    assert list(np.concatenate([p[1] for p in parts])) == list(ya)
    reader = FeatureReader(cache)
    pick = np.array([2497, 0, 5, 5, 1200])
    np.testing.assert_array_equal(reader.read(pick), Xa[pick])
    assert reader.shape == (2498, 12) and reader.dtype == np.float16
    with pytest.raises(ParameterError, match=r"The 'positions' parameter must hold ints in \[0, 2498\)"):
        reader.read([2498])
    with pytest.raises(ParameterError, match=r"The 'chunk' parameter of iter_features must be an int in \[1, inf\)\. Got 0 instead\."):
        next(iter_features(cache, chunk=0))


def test_epoch_order_is_a_permutation_mixing_the_whole_dataset():
    order = epoch_order(50_000, seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(50_000))
    first_batch = order[:1024]
    assert np.ptp(first_batch) > 25_000  # rows from all over the dataset, not one contiguous run
    assert not np.array_equal(order, epoch_order(50_000, seed=0, epoch=1))
    np.testing.assert_array_equal(order, epoch_order(50_000, seed=0, epoch=0))


def test_stratified_sample_keeps_every_class():
    y = np.array(["a"] * 980 + ["b"] * 18 + ["c"] * 2)
    s = stratified_sample(y, 100, seed=0)
    assert len(s) == 100 and np.all(np.diff(s) > 0)
    assert {k: int((y[s] == k).sum()) for k in "abc"} == {"a": 96, "b": 2, "c": 2}  # "c" keeps 2 rows


# --------------------------------------------------------------------------- the size switch
def test_plan_switches_by_size_both_ways():
    gib = 1 << 30
    assert plan_head("svm", 2000, 1280, memory_budget=8 * gib).strategy == "exact"
    cheaper = plan_head("svm", 10_000, 1280, memory_budget=8 * gib)  # measured: 116 s approximate, 266 s exact
    assert cheaper.strategy == "approximate" and "predicted" in cheaper.reason
    assert plan_head("svm", 10_001, 1280, memory_budget=8 * gib).strategy == "approximate"
    assert plan_head("knn", 2000, 1280, memory_budget=8 * gib).strategy == "exact"  # cheaper there
    assert plan_head("knn", 20_001, 1280, memory_budget=8 * gib).strategy == "approximate"


def test_plan_never_picks_an_approximation_predicted_slower(monkeypatch):
    gib = 1 << 30
    for kind in ("logreg", "svm", "knn"):
        for n in (500, 2000, 5000, 10_000, 20_000, 60_000):
            plan = plan_head(kind, n, 1280, memory_budget=8 * gib)
            limit = featx.heads.plan.EXACT_ROWS[kind]
            if plan.strategy == "approximate" and (limit is None or n <= limit):
                assert predicted_seconds(kind, "approximate", n) < predicted_seconds(kind, "exact", n)
                assert "predicted" in plan.reason
            if plan.strategy == "exact":
                assert predicted_seconds(kind, "exact", n) <= predicted_seconds(kind, "approximate", n)
    # the model decides: make the approximate knn dearer and the plan goes back to exact
    monkeypatch.setitem(featx.heads.plan.COSTS, ("knn", "approximate"), {2000: 80.0, 10_000: 800.0})
    assert plan_head("knn", 10_000, 1280, memory_budget=8 * gib).strategy == "exact"
    eta = expected_seconds(["logreg", "knn"], 10_000, 1280, memory_budget=8 * gib, layers=2)
    assert eta["knn"] == pytest.approx(2 * predicted_seconds("knn", "exact", 10_000))
    big = plan_head("logreg", 60_000, 1280, memory_budget=8 * gib)
    assert (big.strategy, big.streamed, big.n_select) == ("exact", False, 10_000)
    over = plan_head("logreg", 1_000_000, 1280, memory_budget=gib)
    assert (over.strategy, over.streamed) == ("approximate", True)
    assert "over the memory budget" in over.describe() and "streamed in chunks of 24,576 rows" in over.describe()
    assert not plan_head("logreg", 1_000_000, 1280, memory_budget=gib, in_memory=True).streamed
    assert plan_head("logreg", 10**6, 1280, memory_budget=gib, chunk=1000).chunk == WINDOW_ROWS  # the floor
    assert plan_head("svm", 500, 8, strategy="approximate").strategy == "approximate"
    assert plan_head("svm", 50_000, 8, strategy="exact").strategy == "exact"
    with pytest.raises(ParameterError, match="strategy='exact' needs the whole 1,000,000 x 1280 matrix in memory"):
        plan_head("logreg", 1_000_000, 1280, strategy="exact", memory_budget=gib)
    with pytest.raises(ParameterError, match=r"The 'strategy' parameter of select_head must be one of \('auto', 'exact', "
                                             r"'approximate'\)\. Got 'fast' instead\."):
        plan_head("logreg", 10, 8, strategy="fast")


def test_auto_picks_approximate_heads_past_the_size(monkeypatch):
    X, y = blobs(600, 10, classes=4)
    exact = select_head("svm", X, y, cv=3, n_jobs=1, grid={"kernel": ["rbf"], "C": [1.0], "scale": ["l2"]})
    assert exact.plan.strategy == "exact" and type(exact.best_estimator[-1].estimator).__name__ == "SVC"
    monkeypatch.setitem(featx.heads.plan.EXACT_ROWS, "svm", 500)  # the switch moves; 600 rows are past it
    monkeypatch.setitem(featx.heads.plan.EXACT_ROWS, "knn", 500)
    approx = select_head("svm", X, y, cv=3, n_jobs=1, grid={"kernel": ["rbf"], "C": [1.0], "scale": ["l2"],
                                                            "gamma": ["scale"], "n_components": [200]})
    assert approx.plan.strategy == "approximate" and "600 rows > 500" in approx.plan.reason
    names = [name for name, _ in approx.best_estimator.steps]
    assert names == ["power", "scale", "kernel", "clf"]
    assert type(approx.best_estimator.named_steps["kernel"]).__name__ == "Nystroem"
    assert approx.best_params["gamma"] > 0 and approx.summary()["strategy"] == "approximate"
    test_X, test_y = blobs(300, 10, classes=4, seed=0)
    assert np.mean(approx.best_estimator.predict(test_X) == test_y) > 0.9
    knn = select_head("knn", X, y, cv=3, n_jobs=1)
    assert isinstance(knn.best_estimator[-1], IVFKNeighborsClassifier)
    assert knn.best_estimator.named_steps["reduce"].n_components_ == 10


# --------------------------------------------------------------------------- chunked == in memory
@pytest.fixture(scope="module")
def big_cache(tmp_path_factory):
    """20,000 rows x 16 (float32 on disk, so the cache and the array hold the same numbers)."""
    X, y = blobs(20_000, 16, classes=6, spread=3.0)
    return write_cache(tmp_path_factory.mktemp("big") / "c", X, y, shard_rows=1500), X, y


def test_streamed_training_equals_in_memory_training(big_cache):
    cache, X, y = big_cache
    reader = FeatureReader(cache)
    common = dict(cv=3, n_jobs=1, seed=2, select_rows=3000)
    grid = {"C": [0.1], "scale": ["standard"], "power": ["none", "sqrt"]}
    in_memory = select_head("logreg", X, y, strategy="approximate", grid=grid, **common)
    assert not in_memory.plan.streamed and len(X) > 2 * WINDOW_ROWS
    for chunk in (8192, 16_384):
        streamed = select_head("logreg", reader, strategy="auto", memory_budget=100_000, chunk=chunk, grid=grid,
                               **common)
        assert streamed.plan.streamed and streamed.plan.strategy == "approximate" and streamed.plan.chunk == chunk
        assert streamed.best_params == in_memory.best_params
        assert streamed.cv_results["mean_test_score"] == in_memory.cv_results["mean_test_score"]
        a, b = in_memory.best_estimator[-1], streamed.best_estimator[-1]
        np.testing.assert_array_equal(a.coef_, b.coef_)  # same batches, same order: the same model
        np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert np.mean(in_memory.best_estimator.predict(X) == y) > 0.8

    svm = [select_head("svm", reader, memory_budget=100_000, chunk=chunk, strategy="approximate",
                       grid={"kernel": ["linear"], "C": [1.0], "scale": ["standard"]}, **common) for chunk in (8192, 16_384)]
    assert svm[0].plan.streamed and "no predict_proba" in " ".join(svm[0].notes)
    np.testing.assert_array_equal(svm[0].best_estimator[-1].coef_, svm[1].best_estimator[-1].coef_)

    knn_grid = {"n_neighbors": [5], "scale": ["standard"], "n_components": [8]}
    knn_mem = select_head("knn", X, y, strategy="approximate", grid=knn_grid, **common)
    knn_stream = select_head("knn", reader, memory_budget=100_000, chunk=8192, grid=knn_grid, **common)
    assert knn_stream.plan.streamed
    # PCA is a matrix product: BLAS rounds a chunk of rows and the whole matrix differently (~1e-7)
    np.testing.assert_allclose(knn_mem.best_estimator[-1].vectors_, knn_stream.best_estimator[-1].vectors_,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(knn_mem.best_estimator.predict(X[:500]), knn_stream.best_estimator.predict(X[:500]))


def test_exact_head_from_a_reader_equals_the_array(big_cache):
    cache, X, y = big_cache
    grid = {"C": [0.1], "scale": ["standard"]}
    a = select_head("logreg", FeatureReader(cache), cv=3, n_jobs=1, grid=grid, select_rows=2000)
    b = select_head("logreg", X, y, cv=3, n_jobs=1, grid=grid, select_rows=2000)
    assert a.plan.strategy == b.plan.strategy == "exact" and a.plan.n_select == 2000
    np.testing.assert_allclose(a.best_estimator[-1].coef_, b.best_estimator[-1].coef_, rtol=1e-5, atol=1e-6)
    assert any("stratified 2,000 of 20,000 rows" in note for note in a.notes)


# --------------------------------------------------------------------------- memory budget
def test_a_cache_larger_than_the_memory_budget_trains_within_it(tmp_path):
    X, y = blobs(60_000, 512, classes=2, spread=6.0)
    cache = write_cache(tmp_path / "c", X, y, dtype="float16", shard_rows=2048)
    matrix = 60_000 * 512 * 4  # 123 MB as float32 (61 MB on disk as float16)
    del X
    budget = 56 << 20  # ids, labels, row map (~8 MB), a chunk of 8192 rows (16 MB), its checks, the CV sample
    tracemalloc.start()
    try:
        result = select_head("logreg", FeatureReader(cache), cv=3, n_jobs=1, memory_budget=budget, chunk=8192,
                             grid={"C": [0.1], "scale": ["standard"]}, select_rows=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.plan.streamed and result.plan.strategy == "approximate"
    assert budget < matrix / 2 and peak < budget, f"peak {peak / 2**20:.1f} MiB"
    Xt, yt = blobs(2000, 512, classes=2, spread=6.0)  # same centres (same seed), fresh noise
    assert np.mean(result.best_estimator.predict(Xt) == yt) > 0.9


# --------------------------------------------------------------------------- the kNN index
def test_ivf_knn_saves_plain_arrays_and_refuses_edited_ones(tmp_path):
    X, y = blobs(3000, 16, classes=5)
    knn = IVFKNeighborsClassifier(n_neighbors=5).fit(X, y)
    assert (knn.n_lists_, knn.n_probe_) == (76, 9)
    exact = knn.to_exact()
    agree = np.mean(knn.predict(X[:400]) == exact.predict(X[:400]))
    assert agree > 0.97
    D, I = knn.kneighbors(X[:3])
    assert I[:, 0].tolist() == [0, 1, 2] and np.allclose(D[:, 0], 0, atol=1e-3)
    path = save_head(knn, tmp_path / "knn.skops")
    assert not [t for t in file_types(path) if "faiss" in t]  # the index is never saved
    loaded = load_head(path)
    np.testing.assert_array_equal(loaded.predict(X[:200]), knn.predict(X[:200]))
    edited = load_head(path)  # checked, and its index built, on load (edited files: tests/test_head_trust.py)
    edited.labels_ = edited.labels_.copy()
    edited.labels_[5] = 99  # out of range: refused before faiss or numpy reads it
    with pytest.raises(HeadError, match="stored vectors, labels or centroids do not fit together"):
        edited.check_state()
    edited = load_head(path)
    edited.centroids_ = edited.centroids_[:, :8].copy()
    with pytest.raises(HeadError, match="the file was edited or damaged"):
        edited.check_state()


def test_ivf_knn_follows_the_estimator_contract():
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_get_params_invariance, check_no_attributes_set_in_init

    check_no_attributes_set_in_init("IVFKNeighborsClassifier", IVFKNeighborsClassifier())
    check_get_params_invariance("IVFKNeighborsClassifier", IVFKNeighborsClassifier())
    assert clone(IVFKNeighborsClassifier(n_neighbors=3)).get_params()["n_neighbors"] == 3
    with pytest.raises(ParameterError, match=r"The 'metric' parameter of IVFKNeighborsClassifier must be one of"):
        IVFKNeighborsClassifier(metric="manhattan").fit(np.zeros((4, 2)), [0, 1, 0, 1])


# --------------------------------------------------------------------------- the CLI
def test_cli_train_says_what_it_did_per_head(tmp_path, capsys):
    X, y = blobs(3000, 16, classes=4, spread=2.0)
    cache = write_cache(tmp_path / "c", X, y, dtype="float16")
    assert main(["train", str(cache), "--head", "all", "--cv", "3", "--jobs", "1", "--out", str(tmp_path / "h"),
                 "--select-rows", "600", "--memory-budget", "100K", "--chunk", "8192"]) == 0
    out = capsys.readouterr().out
    assert "3000 x 16 (float16 on disk)" in out
    assert ("logreg: approximate (averaged SGD logistic regression), selected on a stratified 600 of 3,000 rows, "
            "refitted on all 3,000 streamed in chunks of 8,192 rows (auto: the matrix needs ~0.0 GiB, over the "
            "memory budget of 0.0 GiB)") in out
    assert "svm: approximate (Nystroem RBF map / linear + SGD hinge)" in out
    assert "knn: approximate (PCA + inverted-file kNN index)" in out
    meta = json.loads((tmp_path / "h" / "knn.json").read_text())
    assert meta["strategy"] == "approximate" and meta["n_select"] == 600 and meta["streamed"] is True
    for kind in ("logreg", "svm", "knn"):
        head = load_head(tmp_path / "h" / f"{kind}.skops")
        assert np.mean(head.predict(X[:300]) == y[:300]) > 0.8
    assert main(["train", str(cache), "--head", "logreg", "--cv", "3", "--jobs", "1", "--out", str(tmp_path / "e"),
                 "--strategy", "exact"]) == 0
    assert "logreg: exact (L-BFGS logistic regression), selected on all 3,000 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", str(cache), "--head", "svm", "--memory-budget", "lots"])
    assert "not a size: 'lots' (examples: 4G, 512M, 1.5GiB, 100000)" in capsys.readouterr().err



# --------------------------------------------------------------------------- successive halving
def test_successive_halving_selects_on_growing_rows_and_says_so():
    X, y = blobs(900, 10, classes=3)
    grid = {"scale": ["standard", "l2"], "C": [0.001, 0.1, 10.0]}
    halved = select_head("logreg", X, y, cv=3, n_jobs=1, grid=grid, search="halving")
    full = select_head("logreg", X, y, cv=3, n_jobs=1, grid=grid, search="grid")
    assert (halved.search, full.search) == ("halving", "grid")
    assert halved.summary()["search"] == "halving" and 0 < halved.search_seconds <= halved.fit_seconds
    note = next(n for n in halved.notes if "successive halving" in n)
    assert "6 candidates on" in note and "of the rows of the full grid's 18 fits on 900 rows" in note
    res = halved.cv_results
    assert len(res["params"]) == 6 and len(res["n_resources"]) == 6 and sorted(res["rank_test_score"]) == list(range(1, 7))
    best = res["params"][res["rank_test_score"].index(1)]
    assert best == halved.best_params and res["n_resources"][res["rank_test_score"].index(1)] == max(res["n_resources"])
    test_X, test_y = blobs(300, 10, classes=3, seed=0)
    assert np.mean(halved.best_estimator.predict(test_X) == test_y) > 0.9
    # auto: a first round of 900 / 9 = 100 rows holds 30 a class (3 classes): halving; of 450 / 9, not: the grid
    assert select_head("logreg", X, y, cv=3, n_jobs=1, grid=grid).search == "halving"
    assert select_head("logreg", X[:450], y[:450], cv=3, n_jobs=1, grid=grid).search == "grid"
    with pytest.raises(ParameterError, match="search"):
        select_head("logreg", X, y, cv=3, n_jobs=1, grid=grid, search="fast")
