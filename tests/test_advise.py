"""featx advise: learning-curve fits, the metric rule, the pilot within its budget, the advice and its reports."""

from __future__ import annotations

import importlib.util
import json
import time

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
    assert any("of the budget" in line and line.endswith("stopping here") for line in lines)
    assert any("0 embedded" in line for line in lines)  # features came from the cache


@pytest.mark.slow
def test_cli_advise_writes_reports(tmp_path, tiny_image_onnx, capsys, featx_home):
    argv = ["advise", "builtin:digits", "--model", str(tiny_image_onnx), "--per-class", "10", "--seeds", "2",
            "--heads", "logreg", "--test-size", "40", "--budget", "5m", "--finetune", "none", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Recommended:" in out
    doc = json.loads((tmp_path / "advice-digits.json").read_text())
    assert doc["pilot"]["sizes"] == ["2", "5", "10"] and doc["metric"] == "accuracy"
    with pytest.raises(SystemExit) as exit_:
        main(["advise", "builtin:digits", "--budget", "ten"])
    assert exit_.value.code == 2
    assert "a budget is a positive duration like 90s, 10m or 1h; got 'ten'" in capsys.readouterr().err
    assert main(["advise", "builtin:digits", "--model", str(tiny_image_onnx), "--finetune", "head,wide"]) != 0
    assert "unknown fine-tuning pilots ['wide']" in capsys.readouterr().err


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


# --------------------------------------------------------------------------- fine-tuning pilots
def committed_pilot(max_size: int = 100, finetuned: str = "LP-FT"):
    """A pilot made of the committed fine-foods benchmark's real rows: frozen probes and baselines up to
    ``max_size`` per class, and one fine-tuned strategy at ``max_size`` only."""
    from pathlib import Path

    from featx.bench.rows import row_from_dict
    from featx.strategy import Pilot

    doc = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "fine-foods.json").read_text())
    rows = [row_from_dict(r) for r in doc["rows"]]
    keep = [r for r in rows if r.size != "all" and int(r.size) <= max_size and (
        r.family != "finetune" or (r.strategy == finetuned and int(r.size) == max_size))]
    return Pilot(rows=keep, sizes=["1", "5", "10", "50", "100"], skipped=[], class_counts={"great": 100, "other": 100},
                 n_full=400, test_items=500, budget_s=600.0, seconds=500.0, metric="balanced_accuracy",
                 metric_reason="the test set's classes are imbalanced", backbone="all-minilm-l6-v2",
                 modality="text", finetune={"size": str(max_size), "modes": {"lp-ft": [0, 1, 2]}, "skipped": ["setfit"],
                                            "steps_cap": 60})


def test_a_finetuning_pilot_is_the_best_probes_curve_plus_the_gap_measured_at_its_size():
    from featx.strategy import decide
    from featx.strategy.curves import curve_value

    pilot = committed_pilot()
    advice = decide(pilot, "fine-foods (committed rows)", n_boot=40)
    lpft = advice.forecast("LP-FT")
    frozen = [f for f in advice.forecasts if f.family == "frozen" and f.curve]
    reference = max(frozen, key=lambda f: f.measured["100"]["mean"])
    assert lpft.curve["reference"] == reference.strategy and lpft.curve["at_size"] == "100"
    gap = lpft.measured["100"]["mean"] - reference.measured["100"]["mean"]
    assert lpft.curve["offset"] == pytest.approx(gap)
    for key in ("1x", "2x", "5x"):
        p, r = lpft.predicted[key], reference.predicted[key]
        assert p["score"] == pytest.approx(min(1.0, r["score"] + gap))
        assert p["low"] <= p["score"] <= p["high"]
        assert p["high"] - p["low"] >= r["high"] - r["low"]  # the gap's own noise widens the band
        assert float(curve_value(lpft.curve, p["n_train"])) == pytest.approx(p["score"])
    assert lpft.extrapolation == pytest.approx(400 / 200)
    from featx.strategy.report import from_dict

    assert to_dict(from_dict(to_dict(advice))) == to_dict(advice)  # a saved advice renders again
    assert summary_text(from_dict(to_dict(advice))) == summary_text(advice)
    text = " ".join(advice.sentences)
    assert "Fine-tuning pilots at 100/class (at most 60 steps" in text and "assume that gap holds" in text
    assert "Fine-tuning pilots the budget left out: setfit." in text
    wanted = max(r.params["steps_wanted"] for r in pilot.rows if r.strategy == "LP-FT")  # 3 of 3 seeds hit 60
    assert lpft.steps_wanted == wanted > 60
    assert (f"Cut at the pilot's step cap (LP-FT wanted {wanted} steps, the cap is 60): their scores are lower "
            "bounds") in text
    probe = max(frozen, key=lambda f: f.at())  # the best probe predicted at the full size
    more, tune = probe.at("2x") - probe.at(), lpft.at() - probe.at()
    verdict = next(s for s in advice.sentences if s.startswith("Labels or fine-tuning"))
    assert verdict.startswith(f"Labels or fine-tuning: 2x the labels gives {probe.strategy} {100 * more:+.1f} points; "
                              f"LP-FT gives {100 * tune:+.1f} points over it")
    assert verdict.endswith("more labels pay more." if more > tune else "fine-tuning pays more.")


def test_far_extrapolation_is_said():
    from featx.strategy import decide

    pilot = committed_pilot(max_size=10)
    pilot.n_full = 4000  # 200x the largest size measured
    advice = decide(pilot, "fine-foods (committed rows)", n_boot=20)
    assert advice.forecast(advice.recommended).extrapolation == pytest.approx(200)
    assert any(s.startswith("Far extrapolation: the full size is 200x") for s in advice.sentences)
    near = decide(committed_pilot(max_size=100), "fine-foods (committed rows)", n_boot=20)
    assert not any(s.startswith("Far extrapolation") for s in near.sentences)


def test_finetuning_pilots_are_chosen_and_checked():
    from featx.strategy.pilot import FINETUNE_MODES, finetune_modes

    torch_present = importlib.util.find_spec("torch") is not None
    assert finetune_modes("auto", "image") == (FINETUNE_MODES if torch_present else ())
    assert finetune_modes("auto", "text")[-1:] == (("setfit",) if torch_present else ())
    assert finetune_modes("auto", "image", "backbone.onnx") == ()  # an ONNX file has nothing to fine-tune
    assert finetune_modes(("lp-ft", "head"), "image") == ("head", "lp-ft")
    assert finetune_modes("full", "image") == ("full",)
    with pytest.raises(ParameterError, match=r"unknown fine-tuning pilots \['scratch', 'wide'\]"):
        finetune_modes(("scratch", "wide"), "image")


def test_a_spent_budget_starts_no_finetuning_pilot():
    from featx.bench import preset
    from featx.strategy.pilot import run_finetune_pilots

    lines = []
    config = preset("builtin:digits", modality="image", finetune_modes=())
    rows, ran = run_finetune_pilots(config, 10, ("head", "full"), 2, 5, deadline=time.perf_counter(),
                                    say=lines.append)
    assert rows == [] and ran["modes"] == {} and ran["skipped"] == ["head", "full"]
    assert lines == ["advise: fine-tuning pilot head (seed 0) would take ~0 s, 0 s of the budget left: not started",
                     "advise: fine-tuning pilot full (seed 0) would take ~0 s, 0 s of the budget left: not started"]


@pytest.mark.slow
def test_advise_runs_real_finetuning_pilots_on_a_tiny_torch_model(tiny_cnn_backbone, tmp_path):
    lines = []
    advice = advise("builtin:digits", model=tiny_cnn_backbone(), budget_s=300, per_class=10, seeds=2,
                    heads=("logreg",), finetune=("head", "partial", "lp-ft"), finetune_steps=3, test_size=40,
                    layers=("block1",), cache=str(tmp_path / "cache"), threads=1, n_boot=20, progress=lines.append)
    ft = advice.pilot["finetune"]
    assert ft["size"] == "10" and ft["modes"] == {"head": [0, 1], "partial": [0, 1], "lp-ft": [0, 1]}
    assert ft["skipped"] == [] and ft["steps_cap"] == 3
    tuned = {f.strategy: f for f in advice.forecasts if f.family == "finetune"}
    assert set(tuned) == {"fine-tune: head only", "fine-tune: partial", "LP-FT"}
    for f in tuned.values():
        assert list(f.measured) == ["10"] and f.measured["10"]["seeds"] == 2
        assert f.curve["offset"] == pytest.approx(f.measured["10"]["mean"] -
                                                  advice.forecast(f.curve["reference"]).measured["10"]["mean"])
        assert f.fit_s > 0 and f.predict_ms_per_item > 0
    assert any("fine-tuning pilot lp-ft at 10/class, seed 1" in line for line in lines)
    assert any("3 steps (hit the cap)" in line for line in lines)  # real torch steps, cut at the cap
    assert advice.recommended in {f.strategy for f in advice.forecasts}
    doc = to_dict(advice)
    assert doc["pilot"]["finetune"]["modes"]["lp-ft"] == [0, 1]
    assert "LP-FT" in summary_text(advice)


def test_proportional_subsets_keep_the_class_proportions_and_stay_nested(tmp_path):
    import collections
    import dataclasses

    from featx.bench import load_splits, preset, resolve_sizes, train_positions

    csv = tmp_path / "reviews.csv"
    lines = ["text,label"] + [f"good review number {i},great" for i in range(60)] + [
        f"poor review number {i},other" for i in range(20)]
    csv.write_text("\n".join(lines) + "\n")
    config = dataclasses.replace(preset(str(csv), modality="text", seeds=(0, 1)), proportional=True)
    splits = load_splits(config)  # a 25 % holdout: 45 great, 15 other for training
    assert splits.shares == {"great": 1.0, "other": pytest.approx(1 / 3)}
    for seed in (0, 1):
        previous = set()
        for size in (2, 6, 30, "all"):
            positions = train_positions(splits, seed, size)
            counts = collections.Counter(splits.train.items[p].label for p in positions)
            great = 45 if size == "all" else size
            assert counts == {"great": great, "other": 15 if size == "all" else max(1, -(-size // 3))}
            assert previous <= set(positions)  # nested
            previous = set(positions)
    assert resolve_sizes(splits, [2, 6, 45, 100, "all"]) == [2, 6, 45]  # 100 and all: the same subset as 45
    per_class = load_splits(dataclasses.replace(config, proportional=False))
    assert per_class.shares is None and len(train_positions(per_class, 0, 6)) == 12


def test_the_pilot_measures_imbalanced_data_in_its_own_proportions(tmp_path, tiny_text_onnx):
    from featx.strategy import run_pilot

    csv = tmp_path / "reviews.csv"
    csv.write_text("\n".join(["text,label"] + [f"good review number {i},great" for i in range(60)] +
                             [f"poor review number {i},other" for i in range(20)]) + "\n")
    pilot = run_pilot(str(csv), model=str(tiny_text_onnx), budget_s=300, seeds=1, heads=("logreg",), finetune=None,
                      layers=(), cache=str(tmp_path / "cache"), threads=1)
    assert pilot.metric == "balanced_accuracy" and pilot.class_counts == {"great": 45, "other": 15}
    assert pilot.sizes == ["2", "5", "10", "20", "all"] and pilot.finetune == {}
    n_train = {r.size: r.n_train for r in pilot.rows if r.strategy == "frozen: logreg"}
    assert n_train == {"2": 3, "5": 7, "10": 14, "20": 27, "all": 60}  # the largest class's n, a third of it


def test_two_datasets_of_the_same_name_get_their_own_default_caches(tmp_path, tiny_text_onnx, featx_home):
    from featx.bench import preset, run_benchmark

    lines = ["text,label"] + [f"good review number {i},great" for i in range(12)] + [
        f"poor review number {i},other" for i in range(12)]
    for folder in ("a", "b"):  # the same file name, other texts: the second run must not meet the first's cache
        csv = tmp_path / folder / "reviews.csv"
        csv.parent.mkdir()
        csv.write_text("\n".join(line.replace("review", f"{folder} review") for line in lines) + "\n")
        config = preset(str(csv), modality="text", backbone=str(tiny_text_onnx), sizes=(2,), seeds=(0,),
                        heads=("logreg",), finetune_modes=(), layers=(), baselines=False, threads=1)
        result = run_benchmark(config, write=False, progress=lambda line: None)
        assert [r.strategy for r in result.rows] == ["frozen: logreg"]
    caches = sorted(p.name for p in (featx_home / "bench-cache").iterdir() if p.name.startswith("reviews"))
    assert len(caches) == 2 and all(name.startswith("reviews-") for name in caches)


def test_a_finetuning_pilot_run_once_is_named_but_not_recommended():
    from featx.strategy import decide

    pilot = committed_pilot()
    three_seeds = decide(pilot, "fine-foods (committed rows)", n_boot=20)
    assert three_seeds.recommended == "LP-FT"  # at 100/class LP-FT leads the probes (committed table)
    pilot.rows = [r for r in pilot.rows if r.strategy != "LP-FT" or r.seed == 0]
    once = decide(pilot, "fine-foods (committed rows)", n_boot=20)
    lpft = once.forecast("LP-FT")
    assert lpft.measured["100"]["seeds"] == 1 and lpft.at() > once.expected  # still predicted the highest
    assert once.recommended != "LP-FT" and once.recommended == max(
        (f for f in once.forecasts if f.predicted and f.strategy != "LP-FT"), key=lambda f: f.at()).strategy
    assert any(s.startswith("Unconfirmed: LP-FT is predicted at") and "a second seed" in s for s in once.sentences)
