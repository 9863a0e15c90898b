"""featx bench: the harness end to end on tiny data, its pure parts, the committed reports, and the CLI."""

from __future__ import annotations

import ast
import json
import math
import mmap
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featx.bench import (
    SCHEMA,
    BenchConfig,
    BenchResult,
    Meter,
    conclude,
    load_splits,
    parse_sizes,
    preset,
    read_result,
    render_markdown,
    resolve_sizes,
    run_benchmark,
    slug,
    summarize,
    train_positions,
)
from featx.bench.rows import BaselineRow, FinetuneRow, HeadRow, Row, SelectedRow, Stat, Summary, row_from_dict
from featx.cli import main
from featx.errors import ParameterError

BASELINES = {"majority class", "raw pixels + logreg"}
FROZEN = {"frozen: logreg", "frozen: svm", "frozen: knn", "frozen: best by CV"}
LAYERS = {"frozen: logreg @ block1", "frozen: logreg @ block2", "frozen: best layer by CV"}
FINETUNED = {"fine-tune: head only", "fine-tune: partial", "fine-tune: full", "from scratch", "LP-FT"}
ROW_KEYS = {"strategy", "family", "size", "seed", "n_train", "accuracy", "balanced_accuracy", "macro_f1",
            "extract_s", "fit_s", "finetune_s", "total_s", "peak_rss_mb", "trainable_params",
            "predict_ms_per_item", "params", "confusion_matrix"}
TEST_SIZE = 40
REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p for p in (REPO / "benchmarks" / "results").glob("**/*.json")
                   if json.loads(p.read_text()).get("schema") == SCHEMA)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_cnn_backbone):
    """The whole harness on builtin:digits: 2 sizes x 2 seeds, fine-tuning at one size, 2 steps."""
    out = tmp_path_factory.mktemp("bench-out")
    config = BenchConfig(
        dataset="builtin:digits", backbone=tiny_cnn_backbone(), sizes=(1, 3), seeds=(0, 1), test_size=TEST_SIZE,
        cv=2, finetune_sizes=(3,), finetune_seeds=(0,), lr_select_per_class=3, epochs=2, min_steps=2, max_steps=2,
        lrs={"head": (3e-2, 1e-2), "partial": (1e-2,), "full": (1e-2,), "scratch": (1e-2,), "lp-ft": (1e-3,)},
        threads=1, cache=str(out / "cache"), layers=("block1", "block2"),
    )
    lines = []
    result = run_benchmark(config, out, command="featx bench (test)", progress=lines.append)
    return result, out, lines


def test_every_row_is_present_and_no_row_failed(tiny_run):
    result, _, _ = tiny_run
    assert result.errors == []
    got = {}
    for row in result.rows:
        got.setdefault((row.size, row.seed), set()).add(row.strategy)
    every = BASELINES | FROZEN | LAYERS
    assert got == {("1", 0): every, ("1", 1): every, ("3", 0): every | FINETUNED, ("3", 1): every}
    assert len(result.rows) == 9 * 4 + 5
    assert {r.n_train for r in result.rows if r.size == "1"} == {10}
    assert {r.n_train for r in result.rows if r.size == "3"} == {30}


def test_each_kind_of_row_is_its_own_type(tiny_run):
    result, _, _ = tiny_run
    kinds = {r.strategy: type(r) for r in result.rows}
    assert kinds == {"majority class": Row, "raw pixels + logreg": BaselineRow, "frozen: logreg": HeadRow,
                     "frozen: svm": HeadRow, "frozen: knn": HeadRow, "frozen: best by CV": SelectedRow,
                     "frozen: logreg @ block1": HeadRow, "frozen: logreg @ block2": HeadRow,
                     "frozen: best layer by CV": SelectedRow, **{s: FinetuneRow for s in FINETUNED}}
    for row in result.rows:  # each reads back as itself from its JSON
        assert row_from_dict(json.loads(json.dumps(row.to_dict()))) == row
    with pytest.raises(ParameterError, match="match no kind of row"):
        row_from_dict({**result.rows[0].to_dict(), "layer": "block3"})


def test_json_schema_and_file(tiny_run):
    result, out, _ = tiny_run
    on_disk = json.loads((out / "digits.json").read_text())
    assert on_disk["schema"] == SCHEMA == "featx-bench/1"
    for key in ("dataset", "modality", "backbone", "preprocess", "command", "config", "machine", "splits",
                "extraction", "parity", "lr_selection", "finetune", "rows", "summary", "conclusion", "headline",
                "errors", "plots", "best_probe", "memory_method", "latency_method", "total_seconds"):
        assert key in on_disk, key
    assert on_disk["rows"] == json.loads(json.dumps([r.to_dict() for r in result.rows]))
    assert BenchResult.from_dict(on_disk).to_dict() == on_disk
    for row in on_disk["rows"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["total_s"] == pytest.approx(row["extract_s"] + row["fit_s"] + row["finetune_s"])
        assert row["peak_rss_mb"] >= 0 and row["predict_ms_per_item"] > 0
    assert on_disk["machine"]["cpu"] and on_disk["machine"]["usable_cores"] >= 1
    assert "scikit-learn" in on_disk["machine"]["versions"]
    assert on_disk["extraction"]["embedded"] + on_disk["extraction"]["cached"] == on_disk["extraction"]["items"]
    assert on_disk["parity"]["max_abs_diff"] < 1e-4


def test_one_test_set_for_every_row(tiny_run):
    result, _, _ = tiny_run
    true_counts = {tuple(np.asarray(r.confusion_matrix).sum(1)) for r in result.rows}
    assert len(true_counts) == 1
    assert sum(next(iter(true_counts))) == TEST_SIZE == result.splits.test_items
    for row in result.rows:  # accuracy is the confusion matrix's trace
        cm = np.asarray(row.confusion_matrix)
        assert row.accuracy == pytest.approx(np.trace(cm) / TEST_SIZE)


def test_finetuned_rows_count_what_they_train(tiny_run):
    result, _, _ = tiny_run
    rows = {r.strategy: r for r in result.rows if r.family == "finetune"}
    stem, block = 3 * 8 * 9 + 8, 8 * 8 * 9 + 8 + 16
    backbone = stem + 4 * block
    head = 8 * 10 + 10
    assert rows["fine-tune: head only"].trainable_params == head
    assert rows["fine-tune: partial"].trainable_params == backbone - stem - 2 * block + head
    assert rows["fine-tune: full"].trainable_params == backbone + head
    assert rows["from scratch"].trainable_params == backbone + head
    assert rows["LP-FT"].trainable_params == backbone + head
    assert all(r.finetune_s > 0 and r.extract_s == 0 and r.params["steps"] == 2 for r in rows.values())
    for r in rows.values():  # the budget each row used: epochs chosen on validation, the cap, whether it hit it
        assert r.params["epochs_chosen"] == result.lr_selection.modes[r.params["mode"]].chosen_epochs
        assert r.params["max_steps"] == 2 and r.params["hit_cap"] is False and r.params["steps_wanted"] == 2
    assert all(r.total_params == backbone + head and r.seconds_per_step > 0 for r in rows.values())
    assert result.finetune.partial_frozen == "stem + first 2 of 4 blocks"


def test_learning_rate_chosen_on_validation(tiny_run):
    result, _, _ = tiny_run
    sel = result.lr_selection
    assert (sel.train_items, sel.val_items) == (20, 10)  # 3 per class: 2 train, 1 validation
    head = sel.modes["head"]
    assert head.grid == [3e-2, 1e-2]
    accs = head.val_accuracy
    assert accs[f"{head.chosen:g}"] == max(accs.values())
    row = next(r for r in result.rows if r.strategy == "fine-tune: head only")
    assert row.params["lr"] == head.chosen
    # epochs: validation accuracy after each of the 2 allowed epochs; the best one, the earliest on ties
    assert sel.max_epochs == 2 and sel.steps_per_epoch == 1
    for mode, choice in sel.modes.items():
        curve = choice.curves[f"{choice.chosen:g}"]
        assert len(curve) == 2 and choice.chosen_epochs == 1 + curve.index(max(curve)), mode
        assert choice.val_accuracy[f"{choice.chosen:g}"] == max(curve)
    lp_ft = next(r for r in result.rows if r.strategy == "LP-FT")
    assert lp_ft.params["probe_lr"] == head.chosen and lp_ft.params["lr"] == sel.modes["lp-ft"].chosen
    only_head = next(r for r in result.rows if r.strategy == "fine-tune: head only")
    assert lp_ft.finetune_s > only_head.finetune_s  # the probe phase, then the full fine-tuning


def test_frozen_rows_use_the_cache_and_selection(tiny_run):
    result, _, _ = tiny_run
    for row in result.rows:
        if row.family == "frozen":
            assert row.extract_s == pytest.approx(result.extraction.per_item_s * row.n_train)
    with_cv = [r for r in result.rows if r.strategy == "frozen: logreg" and r.size == "3"]
    assert all(r.cv_score is not None and r.cv_folds == 2 for r in with_cv)
    no_cv = [r for r in result.rows if r.strategy == "frozen: logreg" and r.size == "1"]
    assert all(r.cv_score is None for r in no_cv)  # one item per class: defaults, no selection
    best = [r for r in result.rows if r.strategy == "frozen: best by CV" and r.size == "3"]
    for r in best:
        heads = [h for h in result.rows if h.family == "frozen" and h.size == "3" and h.seed == r.seed
                 and h.strategy in FROZEN - {"frozen: best by CV"}]
        assert r.cv_score == max(h.cv_score for h in heads)
        assert r.fit_s == pytest.approx(sum(h.fit_s for h in heads))
        assert r.params["head"] == next(h for h in heads if h.cv_score == r.cv_score).strategy.split(": ")[1]


def test_layer_rows_and_the_layer_chosen_by_cv(tiny_run):
    result, _, _ = tiny_run
    assert result.layers == {"block1": 8, "block2": 8, "final": 8}
    for (size, seed) in {(r.size, r.seed) for r in result.rows}:
        rows = {r.strategy: r for r in result.rows if r.size == size and r.seed == seed}
        candidates = [rows["frozen: logreg"], rows["frozen: logreg @ block1"], rows["frozen: logreg @ block2"]]
        assert [r.params.get("layer", "final") for r in candidates] == ["final", "block1", "block2"]
        best = rows["frozen: best layer by CV"]
        assert best.fit_s == pytest.approx(sum(r.fit_s for r in candidates))
        if size == "1":  # no CV possible: the final layer, with the few-shot default
            assert best.cv_score is None and best.params["layer"] == "final"
            assert candidates[0].params == {"power": "none", "scale": "l2", "C": 10.0}
        else:
            top = max(r.cv_score for r in candidates)
            chosen = next(r for r in candidates if r.cv_score == top)  # ties: the first (final) layer
            assert best.cv_score == top and best.params["layer"] == chosen.params.get("layer", "final")
            assert best.accuracy == chosen.accuracy
    # each layer row's features are that layer's: the cache holds them side by side
    layer_rows = [r for r in result.rows if r.strategy == "frozen: logreg @ block1"]
    assert {r.trainable_params for r in layer_rows} == {8 * 10 + 10}


def test_conclusion_is_computed_from_the_summary(tiny_run):
    result, _, _ = tiny_run
    summary = result.summary
    for size in ("1", "3"):
        ranked = sorted((e for e in summary if e.size == size), key=lambda e: -e.accuracy.mean)
        assert any(line.startswith(f"At {size} samples/class the best is {ranked[0].strategy} ")
                   for line in result.conclusion)
    probe = next(e for e in summary if e.size == "3" and e.strategy == "frozen: best by CV")
    full = next(e for e in summary if e.size == "3" and e.strategy == "fine-tune: full")
    if full.accuracy.mean > 0:
        percent = round(100 * probe.accuracy.mean / full.accuracy.mean)
        assert result.headline.startswith(f"At 3 samples/class the probe (frozen: best by CV) reaches {percent}% "
                                          "of fine-tune: full accuracy")
        assert result.headline in result.conclusion


def test_report_and_plots_are_written(tiny_run):
    result, out, lines = tiny_run
    md = (out / "digits.md").read_text()
    assert md.startswith("# Frozen features vs fine-tuning: builtin:digits")
    assert "Command: `featx bench (test)`" in md and "Machine: " in md
    for strategy in BASELINES | FROZEN | FINETUNED:
        assert f"| {strategy} |" in md
    for line in result.conclusion:
        assert f"- {line}" in md
    for name in ("digits-learning-curves.png", "digits-accuracy-vs-cost.png", "digits-accuracy-vs-depth.png",
                 "digits-confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md
    assert result.plots == {"learning_curves": "digits-learning-curves.png",
                            "accuracy_vs_cost": "digits-accuracy-vs-cost.png",
                            "accuracy_vs_depth": "digits-accuracy-vs-depth.png",
                            "confusion_matrix": "digits-confusion.png"}
    for section in ("### Accuracy per layer", "### Selection noise", "### Fine-tuning budget per row",
                    "### Learning rate and epochs"):
        assert section in md
    assert "| 3 | LP-FT | " in md and "| 0 of 1 |" in md  # the budget of each row: no row hit its cap
    assert "No fine-tuned row hit its step cap" in " ".join(result.conclusion)
    assert str(REPO) not in md and str(Path.home()) not in md  # no absolute path of this machine
    assert md == render_markdown(read_result(out / "digits.json"))  # the JSON alone renders the report
    assert any("fine-tune: full" in line for line in lines)  # progress was reported


# ------------------------------------------------------------------ committed reports
@pytest.mark.parametrize("path", COMMITTED, ids=[p.relative_to(REPO / "benchmarks" / "results").as_posix()
                                                  for p in COMMITTED])
def test_committed_reports_read_back_and_render_unchanged(path):
    """The committed JSON reads back to the same document, and its numbers give the committed report."""
    result = read_result(path)
    assert result.to_json() == path.read_text()
    assert render_markdown(result) == path.with_suffix(".md").read_text()
    assert [e.to_dict() for e in summarize(result.rows)] == [e.to_dict() for e in result.summary]
    # a report written since the balanced-accuracy rule says so in its first sentence (and was ranked so)
    balanced = bool(result.conclusion) and "scored by balanced accuracy" in result.conclusion[0]
    lines, headline = conclude(result.summary, cores=result.machine.usable_cores, failures=len(result.errors),
                               rows=result.rows, selection=result.lr_selection,
                               test_counts=result.splits.test_class_counts if balanced else None)
    assert (lines, headline) == (result.conclusion, result.headline)
    assert "/work/" not in path.read_text() and "/home/" not in path.read_text()  # paths relative to $FEATX_HOME


def test_the_committed_reports_are_found():
    assert {p.stem for p in COMMITTED} >= {"fashion-mnist", "fine-foods"}


# ------------------------------------------------------------------ pure parts
def _entry(strategy, family, size, acc, std, total, seeds=3, latency=1.0):
    return Summary(strategy=strategy, family=family, size=size, n_seeds=seeds, n_train=10,
                   accuracy=Stat(acc, std), total_s=Stat(total, 0.0), predict_ms_per_item=Stat(latency, 0.0))


def test_conclude_names_winners_regimes_and_ratios():
    summary = [
        _entry("majority class", "baseline", "1", 0.10, 0.0, 0.0),
        _entry("frozen: best by CV", "frozen", "1", 0.60, 0.05, 2.0),
        _entry("fine-tune: full", "finetune", "1", 0.40, 0.05, 100.0),
        _entry("frozen: best by CV", "frozen", "100", 0.85, 0.01, 20.0),
        _entry("fine-tune: full", "finetune", "100", 0.90, 0.01, 400.0, latency=5.0),
    ]
    lines, headline = conclude(summary, cores=2)
    assert lines[0] == ("At 1 samples/class the best is frozen: best by CV (60.0% ± 5.0%), 20.0 points ahead of "
                        "the best of fine-tuning, fine-tune: full (40.0% ± 5.0%).")
    assert lines[1].startswith("At 100 samples/class the best is fine-tune: full (90.0% ± 1.0%), 5.0 points ahead "
                               "of the best of frozen-feature heads, frozen: best by CV (85.0% ± 1.0%)")
    assert lines[2] == "Regimes: frozen-feature heads at 1; fine-tuning at 100 samples/class."
    assert headline == ("At 100 samples/class the probe (frozen: best by CV) reaches 94% of fine-tune: full accuracy "
                        "(85.0% vs 90.0%) at 1/20 of its training cost (20.0 s extraction + head vs 400.0 s "
                        "fine-tuning on 2 cores).")
    assert "Prediction: 1.00 ms/item for the probe (extraction + head) vs 5.00 ms/item for the fine-tuned model." \
        in lines
    lines, _ = conclude(summary[:3], cores=2, failures=2)
    assert lines[-1] == "2 row(s) failed and are missing from the table (see 'Failures')."


def test_conclude_calls_a_tie_within_noise():
    summary = [_entry("frozen: best by CV", "frozen", "5", 0.80, 0.03, 1.0),
               _entry("fine-tune: full", "finetune", "5", 0.79, 0.02, 50.0)]
    lines, _ = conclude(summary, cores=2)
    assert lines[0] == ("At 5 samples/class the best is frozen: best by CV (80.0% ± 3.0%), 1.0 points ahead of the "
                        "best of fine-tuning, fine-tune: full (79.0% ± 2.0%) (within one std over seeds: a tie).")
    single = [_entry("frozen: best by CV", "frozen", "5", 0.80, 0.0, 1.0, seeds=1),
              _entry("fine-tune: full", "finetune", "5", 0.79, 0.0, 50.0, seeds=1)]
    lines, _ = conclude(single, cores=2)
    assert lines[0] == ("At 5 samples/class the best is frozen: best by CV (80.0%), 1.0 points ahead of the best of "
                        "fine-tuning, fine-tune: full (79.0%).")
    assert conclude([], cores=2) == (["No row produced a result."], None)


def test_conclude_on_few_shot_layers_lp_ft_setfit_and_caps():
    from featx.bench.result import LrChoice, LrSelection

    summary = [
        _entry("frozen: logreg", "frozen", "1", 0.53, 0.05, 0.1),
        _entry("frozen: logreg @ block14", "frozen", "1", 0.54, 0.04, 0.1),
        _entry("frozen: best layer by CV", "frozen", "1", 0.53, 0.05, 0.1),
        _entry("fine-tune: head only", "finetune", "1", 0.50, 0.055, 2.0),
        _entry("fine-tune: full", "finetune", "1", 0.38, 0.03, 6.0),
        _entry("LP-FT", "finetune", "1", 0.52, 0.03, 8.0),
        _entry("SetFit", "finetune", "1", 0.60, 0.01, 9.0),
        _entry("frozen: logreg", "frozen", "100", 0.80, 0.01, 10.0),
        _entry("frozen: logreg @ block14", "frozen", "100", 0.75, 0.01, 3.0),
        _entry("frozen: best layer by CV", "frozen", "100", 0.80, 0.01, 13.0),
    ]
    budget = dict(epochs_chosen=10, max_steps=150, steps_wanted=313)
    rows = [FinetuneRow(strategy="fine-tune: full", family="finetune", size="100", seed=seed, n_train=1000,
                        accuracy=0.8, balanced_accuracy=0.8, macro_f1=0.8, total_params=1, loss_first=1.0,
                        loss_last=0.5, seconds_per_step=0.6,
                        params={**budget, "steps": 150 if seed < 2 else 313, "hit_cap": seed < 2})
            for seed in range(3)]
    # LP-FT whose full stage fits its budget (32 of 32 steps) but whose linear-probe stage hit the cap
    rows.append(FinetuneRow(strategy="LP-FT", family="finetune", size="100", seed=0, n_train=1000, accuracy=0.8,
                            balanced_accuracy=0.8, macro_f1=0.8, total_params=1, loss_first=1.0, loss_last=0.5,
                            seconds_per_step=0.6, params={"epochs_chosen": 1, "max_steps": 150, "steps_wanted": 32,
                                                          "steps": 32, "probe_steps": 150, "hit_cap": True}))
    selection = LrSelection(seed=0, per_class=50, train_items=400, val_items=100, steps=130, rule="r", max_epochs=10,
                            modes={"full": LrChoice(grid=[1e-3], val_accuracy={"0.001": 0.8}, chosen=1e-3,
                                                    seconds=1.0, chosen_epochs=10),
                                   "head": LrChoice(grid=[1e-2], val_accuracy={"0.01": 0.8}, chosen=1e-2,
                                                    seconds=1.0, chosen_epochs=4)})
    lines, _ = conclude(summary, cores=2, rows=rows, selection=selection)
    assert ("At 1 samples/class the frozen logistic regression (53.0% ± 5.0%) against fine-tune: head only, the "
            "same model class (50.0% ± 5.5%): above it.") in lines
    assert "LP-FT vs fine-tune: full: +14.0 points at 1 samples/class." in lines
    assert "SetFit vs frozen: logreg: +7.0 points at 1 samples/class." in lines  # against the probe
    assert ("Layers (a logistic regression on each layer's pooled features): the final layer is best at 100 "
            "samples/class; an earlier layer at 1 (block14 54.0% ± 4.0% vs the final layer 53.0% ± 5.0%, within one "
            "std).") in lines
    assert ("Choosing the layer by CV (frozen: best layer by CV) against the final layer's logistic regression: "
            "+0.0 points at 1; +0.0 points at 100 samples/class.") in lines
    assert ("Hit the step cap (so trained fewer epochs than chosen on the validation split, or for SetFit fewer pairs "
            "than its recipe): fine-tune: full at 100 samples/class (2 of 3 seeds: 150 steps; it wanted 313); LP-FT at 100 "
            "samples/class (1 of 1 seeds: its linear-probe stage, 150 steps).") in lines
    assert ("fine-tune: full chose the cap of 10 epochs (validation accuracy was highest at the last epoch allowed): "
            "more epochs might have helped them.") in lines
    # without the new rows (a report of an earlier version), none of these sentences
    old, _ = conclude([e for e in summary if e.strategy in ("frozen: logreg", "fine-tune: full")], cores=2)
    assert not [line for line in old if "Layers" in line or "cap" in line or "LP-FT" in line]


def test_summarize_means_and_stds():
    rows = [Row(strategy="s", family="frozen", size="5", seed=seed, n_train=50, accuracy=a, balanced_accuracy=a,
                macro_f1=a, extract_s=1.0, fit_s=2.0, peak_rss_mb=10.0, predict_ms_per_item=0.5,
                trainable_params=100) for seed, a in enumerate((0.7, 0.9))]
    (entry,) = summarize(rows)
    assert entry.accuracy.mean == pytest.approx(0.8) and entry.accuracy.std == pytest.approx(0.1)
    assert entry.n_seeds == 2 and entry.total_s == Stat(3.0, 0.0) and entry.finetune_s == Stat(0.0, 0.0)
    assert entry.to_dict()["accuracy_mean"] == entry.accuracy.mean and Summary.from_dict(entry.to_dict()) == entry


def test_training_subsets_are_nested_and_the_test_set_fixed():
    config = BenchConfig(dataset="builtin:digits", seeds=(0, 1), test_size=50)
    splits = load_splits(config)
    small, large = set(train_positions(splits, 0, 2)), set(train_positions(splits, 0, 7))
    assert small < large and len(small) == 20 and len(large) == 70
    assert set(train_positions(splits, 1, 2)) != small
    assert len(train_positions(splits, 0, "all")) == len(splits.train) == 1347
    again = load_splits(BenchConfig(dataset="builtin:digits", seeds=(5,), test_size=50))
    assert again.test.ids() == splits.test.ids() and len(splits.test) == 50
    assert not set(splits.test.ids()) & set(splits.train.ids())
    # sizes beyond every class's count collapse into one
    assert resolve_sizes(splits, (1, 500, 1000, "all")) == [1, 500]


def test_holdout_when_the_dataset_has_no_test_split(tmp_path):
    manifest = tmp_path / "texts.csv"
    rows = ["text,label"] + [f"text number {i},{'a' if i % 2 else 'b'}" for i in range(40)]
    manifest.write_text("\n".join(rows) + "\n")
    splits = load_splits(BenchConfig(dataset=str(manifest), seeds=(0,), test_size=None))
    assert len(splits.test) == 10 and len(splits.train) == 30
    assert not set(splits.test.ids()) & set(splits.train.ids())
    assert "stratified 25% holdout" in splits.test_note


def test_parse_sizes_and_names():
    assert parse_sizes("1, 5,10,all") == (1, 5, 10, "all")
    with pytest.raises(ParameterError, match="sizes must be positive ints or 'all'"):
        parse_sizes("1,0")
    with pytest.raises(ParameterError, match="sizes must be positive ints or 'all'"):
        parse_sizes("ten")
    assert slug("builtin:fashion-mnist") == "fashion-mnist"
    assert slug("/data/my reviews.csv") == "my-reviews"
    cfg = preset("fine-foods", modality="text")
    assert (cfg.dataset, cfg.max_length, cfg.test_size, cfg.sizes[-1]) == ("builtin:fine-foods", 128, 500, "all")
    quick = preset("fashion-mnist", quick=True, modality="image", seeds=(0,))
    assert quick.quick and quick.seeds == (0,) and quick.image_size == 112
    assert BenchConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------ the memory meter
MIB = 2**20


def test_meter_sees_an_allocation_held_to_the_end():
    pytest.importorskip("psutil", reason="the sampling meter needs psutil (featx[dev]); the fallback is tested below")
    with Meter() as m:
        # 64 MiB of fresh pages, every one written: np.ones could be handed memory this process freed
        # earlier and still holds (after the torch rows above), which would not raise its RSS
        block = mmap.mmap(-1, 64 * MIB)
        np.frombuffer(block, np.uint8)[:] = 1
    del block
    assert m.seconds > 0
    assert m.peak_mb >= 0.8 * 64, m.peak_mb


def test_meter_without_psutil_samples_proc():
    """Without psutil the meter samples /proc/self/statm (Linux). A child process blocks psutil's import: its
    peak must still show most of an allocation (the process's ru_maxrss could not: a child inherits its parent's
    high-water mark across fork and exec, so the rise would read 0)."""
    if not Path("/proc/self/statm").is_file():
        pytest.skip("no /proc/self/statm here: without psutil the meter can only read ru_maxrss, which moves only "
                    "when a row sets a new high-water mark for the whole process")
    code = ("import sys; sys.modules['psutil'] = None\n"
            "import numpy as np\n"
            "from featx.bench.meter import Meter, memory_method\n"
            "assert memory_method().endswith('(/proc/self/statm)'), memory_method()\n"
            "with Meter() as m:\n"
            "    block = np.ones(64 * 2**20 // 8); block.sum()\n"
            "print(m.peak_mb)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) >= 0.8 * 64


# ------------------------------------------------------------------ CLI
def test_cli_frozen_only_with_an_onnx_path_and_a_preprocess_override(tmp_path, tiny_image_onnx, capsys, featx_home):
    out = tmp_path / "results"
    argv = ["bench", "--dataset", "digits", "--backbone", str(tiny_image_onnx), "--image-size", "16",
            "--sizes", "1,2", "--seeds", "1", "--modes", "none", "--heads", "logreg", "--test-size", "20",
            "--cv", "2", "--threads", "1", "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    printed = capsys.readouterr().out  # stderr is not a terminal: no progress lines, the summary on stdout
    assert "builtin:digits: 6 rows, 0 failed" in printed
    doc = json.loads((out / "digits.json").read_text())
    assert doc["command"] == ("featx bench --dataset digits --backbone " + str(tiny_image_onnx) + " --sizes 1,2 "
                              "--seeds 1 --test-size 20 --image-size 16 --heads logreg --modes none --cv 2 "
                              "--threads 1 --cache " + str(tmp_path / "cache") + " --out " + str(out))
    # the override is a copy of the ONNX with its own spec (so cached features never mix)
    assert doc["backbone"] == "tiny-image-16px"
    assert doc["preprocess"]["size"] == 16
    copied = featx_home / "bench-models" / "tiny-image-16px.json"
    assert json.loads(copied.read_text())["spec"]["preprocess"]["size"] == 16
    assert {r["strategy"] for r in doc["rows"]} == {"majority class", "raw pixels + logreg", "frozen: logreg"}
    assert "lr_selection" not in doc and doc["finetune"]["modes"] == []
    # a second run reuses the cache: nothing embedded again, the rate is timed on a sample
    assert main(argv) == 0
    again = json.loads((out / "digits.json").read_text())
    assert again["extraction"]["embedded"] == 0 and again["extraction"]["cached"] == again["extraction"]["items"]
    assert "the cache was warm" in again["extraction"]["per_item_method"]


def test_cli_refuses_bad_options(capsys):
    assert main(["bench", "--dataset", "digits", "--sizes", "0"]) == 2
    assert "sizes must be positive ints or 'all'" in capsys.readouterr().err
    assert main(["bench", "--dataset", "digits", "--test-size", "many"]) == 2
    assert "--test-size must be an int or 'all'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_lite0_end_to_end_at_32px(tmp_path, lite0_onnx):
    """The registered backbone through the CLI: every row, fine-tuning 1 step at 32 px."""
    out = tmp_path / "results"
    argv = ["bench", "--dataset", "digits", "--image-size", "32", "--sizes", "2", "--seeds", "1",
            "--finetune-sizes", "2", "--min-steps", "1", "--max-steps", "1", "--lr-select-per-class", "2",
            "--test-size", "20", "--cv", "2", "--threads", "1", "--out", str(out), "--cache", str(tmp_path / "cache"),
            "--layers", "block4", "--epochs", "1", "--quiet"]
    assert main(argv) == 0
    doc = json.loads((out / "digits.json").read_text())
    assert doc["errors"] == []
    assert {r["strategy"] for r in doc["rows"]} == (BASELINES | FROZEN | FINETUNED
                                                    | {"frozen: logreg @ block4", "frozen: best layer by CV"})
    # the frozen rows' own export: the same weights with block4's pooled output, parity-checked per output
    assert doc["backbone"] == "efficientnet-lite0-32px-layers" and doc["parity"]["max_abs_diff"] < 1e-4
    assert doc["layers"] == {"block4": 40, "final": 1280}
    rows = {r["strategy"]: r for r in doc["rows"]}
    assert rows["fine-tune: head only"]["trainable_params"] == 1280 * 10 + 10
    assert math.isfinite(rows["fine-tune: full"]["accuracy"])


def test_docstring_examples_run():
    import doctest
    import importlib
    import pkgutil

    import featx.bench

    names = ["featx.bench", *(f"featx.bench.{m.name}" for m in pkgutil.iter_modules(featx.bench.__path__)),
             "featx.machine", "featx.torchmodels.finetune"]
    attempted = 0
    for name in names:
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0, name
        attempted += result.attempted
    assert attempted >= 10  # the examples ran (a runner that finds none passes silently)


def test_the_package_keeps_its_shape():
    """Every module under 600 lines; no function takes more than 6 positional parameters (group them in a
    dataclass, or make them keyword-only)."""
    for path in sorted((REPO / "featx" / "bench").glob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) < 600, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                assert len(positional) <= 6, f"{path.name}: {node.name}({', '.join(positional)})"


def test_cli_onnx_file_needs_modes_none(tmp_path, tiny_image_onnx, capsys):
    argv = ["bench", "--dataset", "digits", "--backbone", str(tiny_image_onnx), "--sizes", "2", "--seeds", "1",
            "--test-size", "20", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 1  # a featx error: the configuration cannot run (2 is for usage errors)
    assert "is an ONNX file" in capsys.readouterr().err and not (tmp_path / "digits.json").exists()


# ------------------------------------------------------------------ texts: LP-FT and SetFit
@pytest.fixture(scope="module")
def tiny_text_run(tmp_path_factory, minilm_tokenizer_json):
    """The text table on builtin:fine-foods with a tiny random BERT (2 layers, 16-d): LP-FT and SetFit at 2/class.

    SetFit loads the same tiny encoder from a sentence-transformers folder written offline here."""
    transformers = pytest.importorskip("transformers")
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("setfit")
    import shutil

    from featx.torchmodels.export import _wrappers
    from featx.torchmodels.finetune import TorchBackbone
    from featx.specs.spec import BackboneSpec, TextPreprocess

    root = tmp_path_factory.mktemp("tiny-bert")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    bert = transformers.BertModel(config).eval()
    hf = root / "hf"
    bert.save_pretrained(hf)
    source = minilm_tokenizer_json.parent
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(source / name, hf / name)
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Normalize, Pooling, Transformer
    encoder = st.SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=32), Pooling(16, "mean"),
                                              Normalize()])
    encoder.save(str(root / "st"))
    _, MeanPooledText = _wrappers()
    spec = BackboneSpec(name="tiny-bert", modality="text", source={"kind": "python"}, dim=16, normalize=True,
                        preprocess=TextPreprocess(max_length=32))
    backbone = TorchBackbone(MeanPooledText(bert, normalize=True).eval(), spec, tokenizer_json=minilm_tokenizer_json)
    out = tmp_path_factory.mktemp("bench-text")
    config = BenchConfig(
        dataset="builtin:fine-foods", backbone=backbone, sizes=(2,), seeds=(0,), test_size=20, cv=2, heads=("logreg",),
        finetune_modes=("head", "lp-ft", "setfit"), lr_select_per_class=3, epochs=2, min_steps=2, max_steps=2,
        lrs={"head": (1e-2,), "lp-ft": (1e-3,)}, threads=1, cache=str(out / "cache"), layers=("layer1",),
        setfit_model=str(root / "st"), setfit_max_steps=1,
    )
    return run_benchmark(config, out, command="featx bench (text test)", progress=lambda line: None), out


def test_text_table_has_lp_ft_and_setfit_rows(tiny_text_run):
    result, out = tiny_text_run
    assert result.errors == []
    rows = {r.strategy: r for r in result.rows}
    assert set(rows) == {"majority class", "TF-IDF + logreg", "frozen: logreg", "frozen: logreg @ layer1",
                         "frozen: best layer by CV", "fine-tune: head only", "LP-FT", "SetFit"}
    setfit = rows["SetFit"]
    assert isinstance(setfit, FinetuneRow) and setfit.family == "finetune" and setfit.n_train == 4
    # its default recipe, cut at the cap of 1 step: the row says so, with the pairs its recipe would train on
    assert setfit.params["steps"] == 1 and setfit.params["max_steps"] == 1
    assert setfit.params["pairs"] >= 4 and setfit.params["hit_cap"] is (setfit.params["steps_wanted"] > 1)
    assert setfit.finetune_s > 0 and setfit.predict_ms_per_item > 0 and 0 <= setfit.accuracy <= 1
    assert setfit.trainable_params == setfit.total_params > 16 * 30522  # the whole encoder and the head
    assert "setfit" not in result.lr_selection.modes  # its own recipe: no rate chosen for it
    assert rows["LP-FT"].params["probe_lr"] == 1e-2
    md = (out / "fine-foods.md").read_text()
    assert "| 2 | SetFit |" in md and "SetFit: its default recipe" in md
    assert any(line.startswith("SetFit vs frozen: best") or line.startswith("SetFit vs frozen: logreg")
               for line in result.conclusion)
    assert any("hit the step cap" in line.lower() or "no fine-tuned row hit" in line.lower()
               for line in result.conclusion)
