"""The featx command as scripts see it: exit codes, --json, -q/-v, where text goes, help on every flag,
progress bars only on a terminal, warnings once. Real subprocesses (and a real pseudo-terminal) where
that is what users see."""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import featx
from featx.cache.verify import verify
from featx.cli import build_parser, main
from featx.sources import open_dataset, subset

FEATX = [sys.executable, "-m", "featx"]
N_TRAIN, N_TEST = 300, 100


def run(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*FEATX, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def terminal() -> tuple[int, int]:
    """A pseudo-terminal of 24 rows and 120 columns: (master fd, slave fd)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return master, slave


def run_on_terminal(*args, timeout=300) -> tuple[int, str, str]:
    """Run featx with stderr on a pseudo-terminal: (exit code, stdout, what the terminal received)."""
    master, slave = terminal()
    proc = subprocess.Popen([*FEATX, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    screen: list[str] = []
    reader = threading.Thread(target=lambda: screen.append(read_until_closed(master)), daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=timeout)
    reader.join(timeout=60)
    os.close(master)
    return proc.returncode, out, "".join(screen)


def read_until_closed(master: int) -> str:
    """Everything written to a pseudo-terminal, read until every writer has closed it."""
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_image_onnx):
    """Tiny-backbone caches of 300 training and 100 test digits."""
    root = tmp_path_factory.mktemp("cli-caches")
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        featx.extract(subset(open_dataset(f"builtin:digits:{split}"), n, seed=0), tiny_image_onnx, root / split,
                      progress=False)
    return root / "train", root / "test"


@pytest.fixture(scope="module")
def heads(caches, tiny_image_onnx, tmp_path_factory):
    """A logistic-regression head trained on the training cache (folder with logreg.skops)."""
    out = tmp_path_factory.mktemp("cli-heads")
    assert main(["train", str(caches[0]), "--model", str(tiny_image_onnx), "--head", "logreg", "--cv", "3",
                 "--jobs", "1", "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory):
    """A manifest of 20 real PNG digits with labels."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cli-pngs")
    rows = ["path,label"]
    for item in open_dataset("builtin:digits:test").items[:20]:
        path = root / f"{item.id.replace('/', '_')}.png"
        Image.fromarray(item.ref).save(path)
        rows.append(f"{path},{item.label}")
    (root / "few.csv").write_text("\n".join(rows) + "\n")
    return root / "few.csv"


# ------------------------------------------------------------------ the parser: help, -q/-v everywhere
def parsers(parser):
    """Every parser of the tree: the top one, every subcommand, every nested subcommand."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def without_help(parser) -> list[str]:
    """'prog: flag' of every flag, argument and subcommand of the tree that has no help text."""
    missing = []
    for p in parsers(parser):
        for action in p._actions:
            actions = action._choices_actions if isinstance(action, argparse._SubParsersAction) else [action]
            missing += [f"{p.prog}: {'/'.join(a.option_strings) or a.dest or a.metavar}" for a in actions
                        if not (a.help and a.help.strip()) or a.help == argparse.SUPPRESS]
    return missing


def test_every_flag_argument_and_subcommand_has_help():
    parser = build_parser()
    assert without_help(parser) == []
    progs = {p.prog for p in parsers(parser)}
    assert {"featx", "featx extract", "featx data", "featx data fetch", "featx bench", "featx demo"} <= progs
    # the walk sees a flag without help, however deep
    fetch = next(p for p in parsers(parser) if p.prog == "featx data fetch")
    fetch.add_argument("--undocumented")
    assert without_help(parser) == ["featx data fetch: --undocumented"]


def test_quiet_and_verbose_are_flags_of_every_subcommand():
    leaves = [p for p in parsers(build_parser()) if p.get_default("func") is not None]
    assert {p.prog for p in leaves} >= {"featx extract", "featx train", "featx predict", "featx bench",
                                         "featx data fetch", "featx data show", "featx demo", "featx doctor"}
    for p in leaves:
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, p.prog
    parser = build_parser()
    for argv in (["-q", "info", "c"], ["info", "c", "-q"], ["info", "-q", "c"]):
        args = parser.parse_args(argv)
        assert args.quiet is True and args.verbose is False, argv
    args = parser.parse_args(["-v", "data", "show", "x", "-q"])
    assert args.quiet is True and args.verbose is True  # given before the subcommand, not reset by it


def test_help_documents_the_exit_codes_and_where_text_goes():
    done = run("--help")
    assert done.returncode == 0
    codes = dict(re.findall(r"^  (\d+)\s+(.+)$", done.stdout.split("exit codes:")[1], re.M))
    assert set(codes) == {"0", "1", "2", "130"}
    assert "featx error" in codes["1"] and "usage" in codes["2"] and "Ctrl-C" in codes["130"]
    for text in ("stdout", "stderr", "--json", "-q", "-v", "progress bars (only when stderr is a terminal)"):
        assert text in done.stdout


# ------------------------------------------------------------------ --json: one document on stdout
def test_json_of_extract_is_one_document_on_stdout(tiny_image_onnx, tmp_path):
    args = ["extract", "builtin:digits", "--limit", "60", "--model", tiny_image_onnx, "--cache", tmp_path / "c",
            "--json"]
    first = run(*args)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)  # the whole of stdout is one document
    assert (doc["items"], doc["embedded"], doc["cached"], doc["failed"]) == (60, 60, 0, 0)
    assert doc["model"] == "tiny-image" and doc["shards"] == 1 and doc["items_per_s"] > 0
    assert "60 embedded, 0 cached already of 60 items" in first.stderr  # the human summary, on stderr
    again = json.loads(run(*args).stdout)
    assert (again["embedded"], again["cached"]) == (0, 60)


def test_json_of_info_verify_train_evaluate_predict_doctor(caches, heads, digits_csv, tiny_image_onnx, tmp_path,
                                                            capsys):
    train, test = caches

    def document(argv, code=0):
        assert main(argv) == code
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    doc, _ = document(["info", str(train), "--json"])
    assert doc["dataset"]["items"] == N_TRAIN and doc["models"]["tiny-image"]["embedded"] == N_TRAIN

    doc, _ = document(["verify", str(train), "--json"])
    assert doc["ok"] is True and doc["checked_shards"] == 1 and doc["problems"] == []

    doc, err = document(["train", str(train), "--model", str(tiny_image_onnx), "--head", "knn", "--cv", "3",
                         "--jobs", "1", "--out", str(tmp_path / "h"), "--json"])
    assert (doc["n"], doc["dim"], doc["classes"], doc["best"]) == (N_TRAIN, 8, 10, "knn")
    (row,) = doc["heads"]
    assert row["head"] == "knn" and row["n_splits"] == 3 and 0.3 < row["cv_mean"] <= 1
    assert Path(doc["best_file"]).is_file() and "| knn |" in err and "best by CV: knn" in err

    doc, err = document(["evaluate", str(heads / "logreg.skops"), "--cache", str(test), "--out",
                         str(tmp_path / "rep"), "--json"])
    assert doc["n"] == N_TEST and doc["head"] == "logreg" and len(doc["confusion_matrix"]) == 10
    assert doc == {**json.loads(Path(doc["files"]["json"]).read_text()), "files": doc["files"]}
    assert f"accuracy {doc['accuracy']:.4f}" in err

    out = tmp_path / "pred.csv"
    doc, err = document(["predict", str(heads / "logreg.skops"), str(digits_csv), "--out", str(out), "--json"])
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert (doc["items"], doc["predicted"], doc["skipped"]) == (20, 20, 0) and len(table) == 20
    assert doc["accuracy"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in table]))
    assert doc["out"] == str(out) and "predicted 20 of 20 items" in err

    code = main(["doctor", "--json"])  # 1 when it finds a problem on this machine
    doc = json.loads(capsys.readouterr().out)
    assert code == (0 if doc["ok"] else 1)
    assert doc["problems"] == [key for key, value in doc["report"].items() if value.startswith("PROBLEM")]
    assert doc["report"]["available providers"] == ", ".join(ort.get_available_providers())


def test_predict_json_needs_out_a_usage_error(heads, digits_csv, capsys):
    assert main(["predict", str(heads / "logreg.skops"), str(digits_csv), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "give --out for the predictions' CSV" in captured.err


# ------------------------------------------------------------------ -q prints nothing on success
def test_quiet_prints_nothing_on_success(caches, heads, digits_csv, tiny_image_onnx, tmp_path, capsys):
    train, test = caches
    runs = [
        ["-q", "extract", "builtin:digits", "--limit", "40", "--model", str(tiny_image_onnx), "--cache",
         str(tmp_path / "c")],
        ["info", str(train), "-q"],
        ["verify", str(train), "-q"],
        ["train", str(train), "--model", str(tiny_image_onnx), "--head", "logreg", "--cv", "3", "--jobs", "1",
         "--out", str(tmp_path / "h"), "-q"],
        ["evaluate", str(heads / "logreg.skops"), "--cache", str(test), "--out", str(tmp_path / "r"), "-q"],
        ["predict", str(heads / "logreg.skops"), str(digits_csv), "--out", str(tmp_path / "p.csv"), "-q"],
        ["data", "show", "builtin:digits", "-q"],
        ["models", "-q"],
    ]
    for argv in runs:
        assert main(argv) == 0, argv
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", ""), argv
    assert (tmp_path / "p.csv").is_file() and (tmp_path / "r" / "report.json").is_file()
    # what a script asked for is still written: the CSV on stdout, the JSON document
    assert main(["predict", str(heads / "logreg.skops"), str(digits_csv), "-q"]) == 0
    captured = capsys.readouterr()
    assert len(list(csv.DictReader(io.StringIO(captured.out)))) == 20 and captured.err == ""
    assert main(["info", str(train), "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"]["items"] == N_TRAIN
    # and without -q the same commands do print
    assert main(["info", str(train)]) == 0 and "300 image items, 10 classes" in capsys.readouterr().out


def test_quiet_in_a_real_process_even_on_a_terminal(tiny_image_onnx, tmp_path):
    code, out, screen = run_on_terminal("extract", "builtin:digits", "--limit", "40", "--model", tiny_image_onnx,
                                        "--cache", tmp_path / "c", "-q")
    assert (code, out, screen) == (0, "", "")
    assert len(featx.load_features(tmp_path / "c")[2]) == 40


# ------------------------------------------------------------------ exit codes, in real processes
def test_exit_codes_of_usage_errors_and_featx_errors(tiny_image_onnx, tmp_path):
    usage = [
        run("no-such-command"),
        run("extract", "builtin:digits", "--model", tiny_image_onnx, "--cache", tmp_path / "c", "--batch-size", "0"),
        run("extract", "builtin:digits", "--model", tiny_image_onnx, "--cache", tmp_path / "c", "--no-such-flag"),
        run("export", tiny_image_onnx),  # an ONNX file without --quantize/--precision
        run("bench", "--sizes", "0"),
    ]
    for done in usage:
        assert done.returncode == 2, done.args
        assert "error" in done.stderr and "Traceback" not in done.stderr
    assert "expected an int >= 1, got 0" in usage[1].stderr
    assert "give --quantize int8 or --precision fp16" in usage[3].stderr

    errors = [
        run("extract", tmp_path / "no-such-folder", "--model", tiny_image_onnx, "--cache", tmp_path / "c"),
        run("info", tmp_path / "no-such-cache"),
        run("run", tmp_path / "missing.toml"),
    ]
    for done in errors:
        assert done.returncode == 1, (done.args, done.stderr)
        assert done.stderr.startswith("featx: error: ") and "Traceback" not in done.stderr
        assert done.stdout == ""
    assert "no-such-folder" in errors[0].stderr


def test_an_os_error_is_a_message_and_verbose_shows_its_traceback(heads, digits_csv, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    argv = ["predict", str(heads / "logreg.skops"), str(digits_csv), "--out", str(tmp_path / "file" / "p.csv")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("featx: error: ") and str(tmp_path / "file") in err and "Traceback" not in err
    assert main([*argv, "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_during_train_exits_130(tmp_path, tiny_image_onnx):
    cache = tmp_path / "c"
    featx.extract("builtin:digits", tiny_image_onnx, cache, progress=False)  # 1797 items: a search of seconds
    proc = subprocess.Popen([*FEATX, "train", str(cache), "--model", str(tiny_image_onnx), "--head", "all",
                             "--jobs", "1", "--out", str(tmp_path / "h")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.readline()  # printed just before the grid searches start
    assert "selecting all by 5-fold CV" in first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "featx: interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert not (tmp_path / "h" / "knn.skops").exists()  # it stopped before the last head


def wait_for_shard(cache: Path, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if list(cache.glob("models/*/shards/shard-*.h5")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"extract ended early: {proc.returncode} {proc.stderr.read()}")
        time.sleep(0.002)
    raise AssertionError("no shard appeared")


def test_a_killed_worker_is_a_message_and_committed_work_is_kept(tiny_image_onnx, tmp_path):
    psutil = pytest.importorskip("psutil")
    cache = tmp_path / "cache"
    # the whole Fashion-MNIST test split (67 shards): far more work than the instant between the first shard
    # and the kill
    proc = subprocess.Popen([*FEATX, "extract", "builtin:fashion-mnist:test", "--model", str(tiny_image_onnx),
                             "--cache", str(cache), "--workers", "2", "--shard-size", "150", "--batch-size", "10",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_shard(cache, proc)
    workers = [p for p in psutil.Process(proc.pid).children()
               if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[0].kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "featx: error: a worker process died while computing shards" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    committed = len(featx.load_features(cache)[2])
    assert committed >= 150 and committed % 150 == 0 and verify(cache).ok


def test_demo_of_an_incomplete_install_is_a_message(tmp_path):
    # the featx package without the pipeline files it ships, first on the path
    shutil.copytree(Path(featx.__file__).parent, tmp_path / "featx",
                    ignore=shutil.ignore_patterns("__pycache__", "pipelines"))
    done = run("demo", "--out", tmp_path / "out", cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("featx: error: the demo pipeline digits.toml is missing")
    assert str(tmp_path / "featx" / "pipelines") in done.stderr and "reinstall" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ warnings once
def _no_driver() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return True
    return False


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers() or not _no_driver(),
                    reason="needs a CUDA-enabled onnxruntime on a machine without a driver (a real fallback)")
def test_the_cpu_fallback_is_warned_once(tiny_image_onnx, tmp_path):
    done = run("extract", "builtin:digits", "--limit", "30", "--model", tiny_image_onnx, "--cache", tmp_path / "c",
               "--providers", "cuda")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("fell back from CUDAExecutionProvider to CPUExecutionProvider") == 1
    assert "featx: warning: onnxruntime fell back" in done.stderr


def test_a_heads_warning_is_printed_once(image_files, tiny_image_onnx, tmp_path, capsys):
    featx.extract(image_files, tiny_image_onnx, tmp_path / "c", progress=False)  # 3 photos, 4 shapes
    assert main(["train", str(tmp_path / "c"), "--model", str(tiny_image_onnx), "--head", "logreg", "--cv", "5",
                 "--jobs", "1", "--out", str(tmp_path / "h")]) == 0
    err = capsys.readouterr().err
    assert err.count("logreg: the smallest class has 3 items, fewer than cv=5; using 3-fold") == 1, err
    assert "featx: warning: logreg: the smallest class" in err


# ------------------------------------------------------------------ progress: on a terminal only
def test_extract_shows_a_bar_on_a_terminal_and_one_summary_line(tiny_image_onnx, tmp_path):
    args = ["extract", "builtin:digits", "--limit", "200", "--model", tiny_image_onnx]
    code, out, screen = run_on_terminal(*args, "--cache", tmp_path / "a")
    assert code == 0
    assert "featx tiny-image: 100%" in screen and "200/200" in screen
    assert out.splitlines() == [line for line in out.splitlines() if line]  # no stray empty lines
    assert len(out.splitlines()) == 1 and "200 embedded, 0 cached already of 200 items" in out
    piped = run(*args, "--cache", tmp_path / "b")
    assert piped.returncode == 0 and piped.stderr == ""  # not a terminal: no bar
    assert piped.stdout.splitlines()[-1].startswith("tiny-image on ")


def test_train_and_predict_show_bars_on_a_terminal(caches, heads, digits_csv, tiny_image_onnx, tmp_path):
    code, out, screen = run_on_terminal("train", caches[0], "--model", tiny_image_onnx, "--head", "logreg",
                                        "--cv", "3", "--jobs", "1", "--out", tmp_path / "h")
    assert code == 0 and "best by CV: logreg" in out
    assert "featx logreg:" in screen and "48/48" in screen  # 16 candidates x 3 folds
    code, out, screen = run_on_terminal("predict", heads / "logreg.skops", digits_csv)
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 20
    assert "featx tiny-image: 100%" in screen and "20/20" in screen
    assert "predicted 20 of 20 items" in screen  # the summary line, on stderr: stdout is the CSV


def test_embed_bar_when_asked_and_silent_when_not_a_terminal(tiny_image_onnx, capsys):
    bb = featx.load_backbone(tiny_image_onnx)
    items = [item.ref for item in open_dataset("builtin:digits").items[:40]]
    quiet = bb.embed(items, batch_size=16)  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""
    shown = bb.embed(items, batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert "featx tiny-image: 100%" in err and "40/40" in err
    np.testing.assert_array_equal(quiet, shown)


def test_grid_search_bar_gives_the_same_selection(capsys):
    from sklearn.datasets import load_digits

    from featx.heads import grid_size, head_grid, select_head

    X, y = load_digits(return_X_y=True)
    plain = select_head("logreg", X[:300], y[:300], cv=3, n_jobs=1, progress=False)
    assert capsys.readouterr().err == ""
    barred = select_head("logreg", X[:300], y[:300], cv=3, n_jobs=1, progress=True)
    total = grid_size(head_grid("logreg")) * 3
    assert f"{total}/{total}" in capsys.readouterr().err
    assert barred.best_params == plain.best_params and barred.cv_mean == plain.cv_mean
    for key in ("params", "mean_test_score", "std_test_score", "rank_test_score"):
        assert barred.cv_results[key] == plain.cv_results[key], key


def test_bench_progress_lines_and_bar_on_a_terminal_nothing_elsewhere():
    from featx.bench import Progress

    master, slave = terminal()
    with os.fdopen(slave, "w") as screen_in:
        say = Progress(stream=screen_in)
        say.expect(2)
        say("first row")
        say.row_done()
        say.expect(1)
        say.row_done()
        say.row_done()
        say.close()
    screen = read_until_closed(master)  # the terminal is closed: one read could return part of it
    os.close(master)
    assert "first row" in screen and "featx bench: 100%" in screen and "3/3" in screen
    piped = io.StringIO()
    say = Progress(stream=piped)
    say.expect(1)
    say("a line")
    say.row_done()
    say.close()
    assert piped.getvalue() == ""  # not a terminal
    say = Progress(stream=piped, lines=True)  # featx -v bench: a log
    say("a line")
    assert re.fullmatch(r"\[\s*\d+\.\ds\] a line\n", piped.getvalue())
