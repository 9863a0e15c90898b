"""featx.validation: one wording per kind of check, and the places that use it."""

from __future__ import annotations

import numpy as np
import pytest

import featx
from featx.errors import FeatxError, ParameterError
from featx.validation import (check_bool, check_choice, check_float, check_fraction, check_int, check_path,
                              check_str)


def message(name, owner, expected, value):
    return f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."


@pytest.mark.parametrize("check, kwargs, value, expected", [
    (check_int, {"low": 1}, 0, "an int in [1, inf)"),
    (check_int, {"low": 1}, True, "an int in [1, inf)"),
    (check_int, {"low": 1}, np.bool_(True), "an int in [1, inf)"),
    (check_int, {"low": 1}, 2.0, "an int in [1, inf)"),
    (check_int, {"low": 1}, "3", "an int in [1, inf)"),
    (check_int, {"low": 0, "high": 10}, 11, "an int in [0, 10]"),
    (check_int, {"high": 5}, 6, "an int in (-inf, 5]"),
    (check_int, {}, 1.5, "an int"),
    (check_int, {"low": 1, "optional": True}, 0, "None or an int in [1, inf)"),
    (check_float, {"low": 0, "low_open": True}, 0, "a float in (0, inf)"),
    (check_float, {"low": -1, "high": 1}, 1.5, "a float in [-1, 1]"),
    (check_float, {"low": 0}, float("nan"), "a float in [0, inf)"),
    (check_float, {}, True, "a float"),
    (check_fraction, {}, 1.0, "a float in (0, 1)"),
    (check_fraction, {"optional": True}, 0, "None or a float in (0, 1)"),
    (check_choice, {"choices": ("raise", "skip")}, "ignore", "one of ('raise', 'skip')"),
    (check_choice, {"choices": (1, 2)}, True, "one of (1, 2)"),
    (check_choice, {"choices": ("a",)}, np.array(["a", "a"]), "one of ('a',)"),
    (check_bool, {}, 1, "a bool"),
    (check_bool, {}, "yes", "a bool"),
    (check_bool, {"optional": True}, "no", "None or a bool"),
    (check_str, {}, "  ", "a non-empty str"),
    (check_path, {}, 3, "a path (str or os.PathLike)"),
    (check_path, {"optional": True}, "", "None or a path (str or os.PathLike)"),
])
def test_one_wording_per_kind(check, kwargs, value, expected):
    with pytest.raises(ParameterError) as info:
        check(value, "p", "thing", **kwargs)
    assert str(info.value) == message("p", "thing", expected, value)
    assert isinstance(info.value, FeatxError) and isinstance(info.value, ValueError)


def test_good_values_come_back_normalised(tmp_path):
    assert check_int(np.int32(4), "p", "o", low=1) == 4 and type(check_int(np.int32(4), "p", "o")) is int
    assert check_int(None, "p", "o", optional=True) is None
    assert check_float(3, "p", "o") == 3.0 and check_fraction(np.float32(0.5), "p", "o") == 0.5
    assert check_choice(np.str_("skip"), "p", "o", ("raise", "skip")) == "skip"
    assert check_bool(np.bool_(False), "p", "o") is False
    assert check_path(tmp_path, "p", "o") == tmp_path and check_str("x", "p", "o") == "x"


@pytest.mark.parametrize("call, expected", [
    (lambda m: featx.extract("builtin:digits", m, "c", batch_size=True),
     ("batch_size", "extract", "None or an int in [1, inf)", True)),
    (lambda m: featx.extract("builtin:digits", m, "c", shard_size=0), ("shard_size", "extract", "an int in [1, inf)", 0)),
    (lambda m: featx.extract("builtin:digits", m, "c", dtype="float64"),
     ("dtype", "extract", "one of ('float32', 'float16')", "float64")),
    (lambda m: featx.extract("builtin:digits", m, "c", decode_workers=0),
     ("decode_workers", "extract", "None or an int in [1, inf)", 0)),
    (lambda m: featx.extract("builtin:digits", m, "c", durable="yes"), ("durable", "extract", "a bool", "yes")),
    (lambda m: featx.load_backbone(m).embed([], batch_size=0),
     ("batch_size", "Backbone.embed", "None or an int in [1, inf)", 0)),
    (lambda m: featx.load_backbone(m).embed([], decode_workers=0),
     ("decode_workers", "Backbone.embed", "None or an int in [1, inf)", 0)),
    (lambda m: featx.load_backbone(m, jpeg_draft=1), ("jpeg_draft", "Backbone", "a bool", 1)),
    (lambda m: featx.load_backbone(m, threads=0), ("threads", "Session", "None or an int in [1, inf)", 0)),
    (lambda m: featx.load_features("c", model=3), ("model", "load_features", "None or a non-empty str", 3)),
    (lambda m: featx.load_features("c", strict=None), ("strict", "load_features", "a bool", None)),
    (lambda m: featx.load_features(None), ("cache", "load_features", "a path (str or os.PathLike)", None)),
])
def test_library_functions_use_the_one_wording(tiny_image_onnx, tmp_path, monkeypatch, call, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterError) as info:
        call(tiny_image_onnx)
    assert str(info.value) == message(*expected)
    assert not (tmp_path / "c").exists()  # refused before anything was written
