"""featx advise: learning-curve fits, the metric rule, the pilot within its budget, the advice and its reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featx.strategy import advise, choose_metric, fit_curve
from featx.strategy.pilot import pilot_sizes
from featx.strategy.report import summary_text, to_dict, write_reports
from featx.cli import main
from featx.errors import ParameterError


def test_power_law_recovers_its_parameters_and_extrapolates():
    rng = np.random.default_rng(1)
    n = np.repeat([10, 20, 50, 100, 200], 4).astype(float)
    truth = lambda x: 0.85 - 0.6 * x ** -0.4  # noqa: E731
    y = truth(n) + rng.normal(0, 0.005, n.size)
    curve = fit_curve(n, y, n_boot=100)
    assert abs(curve.ceiling - 0.85) < 0.05
    for target in (400, 1000):
        low, high = curve.interval(target)
        assert low <= curve.predict(target) <= high and high - low < 0.03
        assert abs(curve.predict(target) - truth(target)) < 0.01
    # more noise, wider interval
    noisy = fit_curve(n, truth(n) + rng.normal(0, 0.03, n.size), n_boot=100)
    assert np.diff(noisy.interval(1000))[0] > np.diff(curve.interval(1000))[0]


def test_fit_curve_refuses_what_cannot_be_fitted():
    with pytest.raises(ParameterError, match="3 or more sizes"):
        fit_curve([1, 1, 2, 2], [0.5, 0.6, 0.7, 0.7])
    with pytest.raises(ParameterError, match="finite scores in"):
        fit_curve([1, 2, 3], [0.5, float("nan"), 0.7])
    with pytest.raises(ParameterError, match="as many sizes as scores"):
        fit_curve([1, 2, 3], [0.5, 0.6])


def test_metric_rule_and_sizes():
    assert choose_metric({"a": 15, "b": 10})[0] == "accuracy"  # 1.5: not above the ratio
    metric, why = choose_metric({"great": 329, "other": 171})
    assert metric == "balanced_accuracy" and "1.92" in why
    assert pilot_sizes(7) == [2, 5, "all"]
    assert pilot_sizes(500, cap=50) == [2, 5, 10, 20, 50]


@pytest.fixture(scope="module")
def digits_advice(tmp_path_factory, tiny_image_onnx):
    cache = tmp_path_factory.mktemp("advise-cache")
    lines = []
    advice = advise("builtin:digits", model=str(tiny_image_onnx), budget_s=600, per_class=10, seeds=2,
                    heads=("logreg", "knn"), test_size=60, layers=(), cache=str(cache), threads=1, n_boot=30,
                    progress=lines.append)
    return advice, lines, cache


@pytest.mark.slow
def test_advice_on_digits_is_computed_from_the_pilot(digits_advice, tmp_path):
    advice, lines, _ = digits_advice
    assert advice.pilot["sizes"] == ["2", "5", "10"] and advice.pilot["skipped"] == []
    assert advice.n_full == 100 and advice.metric == "accuracy"
    strategies = {f.strategy for f in advice.forecasts}
    assert strategies == {"raw pixels + logreg", "frozen: logreg", "frozen: knn"}
    best = advice.forecast(advice.recommended)
    assert advice.expected == max(f.predicted["1x"]["score"] for f in advice.forecasts)
    low, high = advice.interval
    assert low <= advice.expected <= high
    assert best.measured["10"]["seeds"] == 2 and 0 < best.measured["10"]["mean"] <= 1
    assert best.predicted["5x"]["n_train"] == 500
    assert any(s.startswith("Recommended: " + advice.recommended) for s in advice.sentences)
    assert any("advise: size 10 done" in line for line in lines)
    text = summary_text(advice)
    assert advice.recommended in text and "predicted 1x" in text
    paths = write_reports(advice, tmp_path, "advice-digits")
    doc = json.loads(paths["json"].read_text())
    assert doc["schema"] == "featx-advise/1" and doc["recommended"] == advice.recommended
    assert doc == to_dict(advice)
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert advice.recommended in paths["markdown"].read_text()


@pytest.mark.slow
def test_a_second_run_reuses_the_cache_and_a_tiny_budget_stops_early(digits_advice, tiny_image_onnx):
    _, _, cache = digits_advice
    lines = []
    with pytest.raises(Exception, match="larger --budget"):
        advise("builtin:digits", model=str(tiny_image_onnx), budget_s=0.001, per_class=10, seeds=2,
               heads=("logreg",), test_size=60, layers=(), cache=str(cache), threads=1, n_boot=10,
               progress=lines.append)
    assert any("past the budget" in line for line in lines)
    assert any("0 embedded" in line for line in lines)  # features came from the cache


@pytest.mark.slow
def test_cli_advise_writes_reports(tmp_path, tiny_image_onnx, capsys, featx_home):
    argv = ["advise", "builtin:digits", "--model", str(tiny_image_onnx), "--per-class", "10", "--seeds", "2",
            "--heads", "logreg", "--test-size", "40", "--budget", "5m", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Recommended:" in out
    doc = json.loads((tmp_path / "advice-digits.json").read_text())
    assert doc["pilot"]["sizes"] == ["2", "5", "10"] and doc["metric"] == "accuracy"
    with pytest.raises(SystemExit) as exit_:
        main(["advise", "builtin:digits", "--budget", "ten"])
    assert exit_.value.code == 2
    assert "a budget is a positive duration like 90s, 10m or 1h; got 'ten'" in capsys.readouterr().err


def test_bench_conclusions_read_balanced_accuracy_on_imbalanced_test_sets():
    from pathlib import Path

    from featx.bench import conclude, read_result

    result = read_result(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "fine-foods.json")
    counts = result.splits.test_class_counts  # 329 great / 171 other
    plain, _ = conclude(result.summary, cores=2, rows=result.rows)
    balanced, _ = conclude(result.summary, cores=2, rows=result.rows, test_counts=counts)
    assert plain[0].startswith("At 1 samples/class the best is majority class")  # what accuracy rewards
    assert "balanced accuracy" in balanced[0] and "329/171" in balanced[0]
    assert not balanced[1].startswith("At 1 samples/class the best is majority class")
    # balanced test set: the sentences are unchanged
    same, _ = conclude(result.summary, cores=2, rows=result.rows, test_counts={"a": 10, "b": 10})
    assert same == plain


def test_evaluate_report_names_the_score_to_read():
    from featx.heads.evaluate import evaluate_predictions, to_markdown

    imbalanced = to_markdown(evaluate_predictions(["a"] * 8 + ["b"] * 2, ["a"] * 10))
    assert "score to read**: classes are imbalanced (largest/smallest = 8/2 = 4.00 > 1.5)" in imbalanced
    balanced = to_markdown(evaluate_predictions(["a", "b", "a", "b"], ["a", "a", "a", "b"]))
    assert "score to read**: classes are balanced" in balanced
