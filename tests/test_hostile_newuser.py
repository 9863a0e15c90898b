"""What a new user found (#24): each a clear featx error, or sklearn's contract, instead of a surprise."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_dict_unchanged, check_estimators_unfitted

import featx
from featx.cli import main
from featx.errors import FeatxError, InputError
from featx.heads.knn import IVFKNeighborsClassifier


def test_predict_names_the_missing_head_file(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    assert main(["predict", str(tmp_path / "heads" / "nope.skops"), str(tmp_path / "imgs")]) == 1
    err = capsys.readouterr().err
    assert f"no saved head at {tmp_path / 'heads' / 'nope.skops'}" in err and "nope.json" not in err


def test_verify_on_a_missing_path_is_an_error_not_damage(tmp_path):
    out = subprocess.run([sys.executable, "-m", "featx", "verify", str(tmp_path / "nowhere")],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert f"no cache at {tmp_path / 'nowhere'}" in out.stderr and "DAMAGED" not in out.stderr + out.stdout


def test_ivf_knn_unfitted_and_predict_leaves_it_unchanged():
    with pytest.raises(NotFittedError):
        IVFKNeighborsClassifier().predict(np.zeros((2, 3), np.float32))
    check_estimators_unfitted("IVFKNeighborsClassifier", IVFKNeighborsClassifier())
    check_dict_unchanged("IVFKNeighborsClassifier", IVFKNeighborsClassifier())


def test_embedding_transformer_refuses_sparse_in_fit_as_in_transform(tiny_image_onnx):
    X = sp.csr_matrix(np.ones((2, 3), np.float32))
    with pytest.raises(InputError, match="cannot embed a sparse matrix"):
        featx.EmbeddingTransformer(str(tiny_image_onnx)).fit(X)
    fitted = featx.EmbeddingTransformer(str(tiny_image_onnx)).fit()
    with pytest.raises(InputError, match="cannot embed a sparse matrix"):
        fitted.transform(X)


@pytest.mark.parametrize("X", [np.zeros((2, 4, 32, 32), np.float32), np.zeros((2, 3, 32), np.float32),
                               np.zeros((2, 3, 32, 32), np.float64), np.zeros((2, 8), np.float32)])
def test_raw_arrays_given_to_transform_are_featx_errors(tiny_image_onnx, X):
    fitted = featx.EmbeddingTransformer(str(tiny_image_onnx)).fit()
    try:
        out = fitted.transform(X)
    except FeatxError:
        return
    assert out.shape == (2, 8) and np.isfinite(out).all()


def test_a_hub_id_without_the_internet_fails_with_a_message(monkeypatch):
    pytest.importorskip("transformers")
    from featx.errors import SpecError
    from featx.specs.registry import get_spec

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(SpecError, match=r"not in the Hugging Face cache, and the hub \(https://127.0.0.1:9\) "
                                        r"cannot be reached"):
        get_spec("hf:featx-tests/no-such-model-anywhere")


def test_train_layer_all_on_a_cache_without_layers_says_so(tiny_image_onnx, tmp_path, capsys):
    from featx.sources import open_dataset, subset

    cache = tmp_path / "cache"
    featx.extract(subset(open_dataset("builtin:digits:train"), 60, seed=0), tiny_image_onnx, cache, progress=False)
    assert main(["train", str(cache), "--layer", "all", "--head", "logreg", "--cv", "3", "--jobs", "1",
                 "--out", str(tmp_path / "heads"), "--model", str(tiny_image_onnx)]) == 0
    out = capsys.readouterr()
    assert "holds no intermediate layers, so only its final features are used" in out.out + out.err
