"""`mtrec compare` end to end on generated data, and the CLI's error contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli as _run

ARGS = ["--epochs", "2", "--batch-size", "64", "--quiet"]


def test_compare_end_to_end_on_generated_data(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(["compare", "--data-dir", str(tiny_dir), "-o", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    for name in (
        "rating-specialised",
        "retrieval-specialised",
        "multi-task",
        "Retrieve, then rank",
    ):
        assert name.split("-")[0] in printed
    result = json.loads((out / "results.json").read_text())
    assert (
        result["dataset"] == "ml-100k"
        and result["protocol"] == "reference"
        and result["seed"] == 42
    )
    names = [m["name"] for m in result["models"]]
    assert names == ["rating-specialised", "retrieval-specialised", "multi-task"]
    weights = [(m["retrieval_weight"], m["rating_weight"]) for m in result["models"]]
    assert weights == [(0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    for m in result["models"]:
        for key in ("top_k_accuracy", "rmse", "rmse_stars", "train_seconds"):
            assert isinstance(m[key], float), key
        assert m["rmse_stars"] == pytest.approx(4 * m["rmse"])
    items = result["recommendations"]["items"]
    assert result["recommendations"]["user_id"] == 5 and len(items) == 10
    assert all(1 <= i["stars"] <= 5 for i in items)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| multi-task | 1 : 1 |" in report and "compare.png" in report


def test_compare_json_is_deterministic(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for n in range(2):
        assert (
            _run(
                [
                    "compare",
                    "--data-dir",
                    str(tiny_dir),
                    "-o",
                    str(tmp_path / str(n)),
                    "--json",
                    *ARGS,
                ]
            )
            == 0
        )
        runs.append(json.loads(capsys.readouterr().out))
    metrics = [[(m["top_k_accuracy"], m["rmse"]) for m in r["models"]] for r in runs]
    assert metrics[0] == metrics[1]
    assert runs[0]["recommendations"] == runs[1]["recommendations"]


def test_bad_data_gives_one_line_error_and_exit_code(tiny_dir: Path, tmp_path: Path) -> None:
    lines = (tiny_dir / "u.data").read_text().splitlines()
    lines[11] = "1\t2\t9\t880000000"
    (tiny_dir / "u.data").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtrec",
            "compare",
            "--data-dir",
            str(tiny_dir),
            "-o",
            str(tmp_path / "o"),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "u.data:12, field 'rating': expected a value in [1, 5], got 9" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_unknown_user_fails_before_training(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _run(["compare", "--data-dir", str(tiny_dir), "-o", str(tmp_path), "--user", "4242", *ARGS])
        == 4
    )
    assert "unknown user id 4242" in capsys.readouterr().err


def test_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["compare", "--epochs", "zero"]) == 2
    capsys.readouterr()
    assert _run(["compare", "--epochs", "0", "--data-dir", "/nonexistent"]) == 3
    assert "TrainConfig.epochs: expected >= 1, got 0" in capsys.readouterr().err


def test_train_recommend_similar_evaluate(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    train = [
        "train",
        "--data-dir",
        str(tiny_dir),
        "-o",
        str(model),
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--embedding-dim",
        "8",
        "--quiet",
        "--json",
    ]
    assert _run(train) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["metrics"]["index"]["kind"] == "exact"
    assert json.loads((model / "config.json").read_text())["model_config"]["embedding_dim"] == 8
    # issue 31: a report of the run beside the model, checksummed with it
    report = (model / "report.md").read_text()
    assert "| served |" in report and "| EASE |" in report and "| 3 |" in report
    assert (model / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    digests = json.loads((model / "manifest.json").read_text())["sha256"]
    assert {"report.md", "report.png"} <= set(digests)

    assert _run(["recommend", "-m", str(model), "-u", "3", "-k", "4", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert recs["user_id"] == 3 and not recs["fallback"] and len(recs["items"]) == 4
    assert {"item_id", "title", "genres", "retrieval_score", "predicted_rating", "stars"} <= set(
        recs["items"][0]
    )

    assert _run(["recommend", "-m", str(model), "-u", "nobody", "-k", "2", "--json"]) == 0
    cold = json.loads(capsys.readouterr().out)
    assert cold["fallback"] and cold["notice"] and cold["items"][0]["stars"] is None

    assert _run(["recommend", "-m", str(model), "-u", "3"]) == 0
    assert "retrieved, then ordered by the ranker's score" in capsys.readouterr().out

    assert _run(["similar", "-m", str(model), "-i", "1", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3

    assert (
        _run(["recommend", "-m", str(model), "--all-users", "-o", str(tmp_path / "r.parquet")]) == 0
    )
    assert "600 recommendations for 60 users" in capsys.readouterr().out

    assert _run(["evaluate", "-m", str(model), "--data-dir", str(tiny_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["rmse"] == pytest.approx(trained["metrics"]["rmse"])


def test_recommend_errors(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["recommend", "-m", str(tmp_path / "none"), "-u", "1"]) == 5
    assert "no such model directory" in capsys.readouterr().err
    assert _run(["recommend", "-m", str(tmp_path), "--all-users"]) == 3
    assert "--output" in capsys.readouterr().err
    assert _run(["recommend", "-m", str(tmp_path)]) == 3
    model = tmp_path / "m"
    train = ["train", "--data-dir", str(tiny_dir), "-o", str(model), "--epochs", "1", "--quiet"]
    assert _run(train) == 0
    capsys.readouterr()
    assert _run(["similar", "-m", str(model), "-i", "777"]) == 4
    assert "unknown item id 777" in capsys.readouterr().err
    assert _run(["train", "--data-dir", str(tiny_dir), "-o", str(model), "--index", "annoy"]) == 3
    assert _run(["train", "--data-dir", str(tiny_dir), "-o", str(model), "--preset", "fancy"]) == 3
    bad_option = ["train", "--data-dir", str(tiny_dir), "-o", str(model), "--index-option", "m=x"]
    assert _run(bad_option) == 3
    assert "expected KEY=INTEGER, got 'm=x'" in capsys.readouterr().err


def test_train_with_checkpoints_and_resume(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt"
    base = [
        "train",
        "--data-dir",
        str(tiny_dir),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--quiet",
        "--checkpoint-dir",
        str(ckpt),
        "--checkpoint-every",
        "5",
    ]
    assert _run([*base, "-o", str(tmp_path / "a")]) == 0
    # 15 batches an epoch: checkpoints after batches 5 and 10 and at each epoch end; 3 kept
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "ckpt-e0002-s000005.safetensors",
        "ckpt-e0002-s000010.safetensors",
        "ckpt-e0003-s000000.safetensors",
    ]
    capsys.readouterr()
    assert _run([*base, "-o", str(tmp_path / "b")]) == 6  # would mix two runs
    assert "pass --resume" in capsys.readouterr().err
    assert _run([*base, "-o", str(tmp_path / "b"), "--resume"]) == 0  # already complete: no steps
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert _run(["train", "--data-dir", str(tiny_dir), "--resume"]) == 3


def test_compare_with_baselines_reports_both_protocols(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "compare",
        "--data-dir",
        str(tiny_dir),
        "-o",
        str(tmp_path),
        "--baselines",
        "--json",
        *ARGS,
    ]
    assert _run(args) == 0
    result = json.loads(capsys.readouterr().out)
    names = [b["name"] for b in result["baselines"]]
    assert names == ["popularity", "EASE lambda=500", "biased MF", "global mean"]
    for row in [*result["models"], *result["baselines"][:2]]:
        assert set(row["honest"]) == {"top_k_accuracy", "recall", "ndcg", "mrr", "coverage"}
        # a test item is never a training item, so excluding those can only move it up
        assert row["honest"]["top_k_accuracy"] >= row["top_k_accuracy"] - 1e-9
    mean = result["baselines"][3]
    assert result["baselines"][2]["rmse"] < mean["rmse"]  # MF beats the mean on planted data
    assert mean["rmse"] > 0 and mean["top_k_accuracy"] is None  # not a retriever: null, not NaN
    assert "| popularity | - |" in (tmp_path / "report.md").read_text()


def test_sweep_marks_the_pareto_front(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "sweep",
        "--data-dir",
        str(tiny_dir),
        "-o",
        str(tmp_path),
        "--preset",
        "reference",
        "--weights",
        "0.5,2",
        "--json",
    ]
    assert _run(args) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert [p["name"] for p in points] == ["weight 0.5", "weight 2", "learned (uncertainty)"]
    assert points[2]["learned_weights"] is not None and points[0]["learned_weights"] is None
    for p in points:  # on the front exactly when no other point is at least as good on both
        dominated = any(
            q["honest_top_k_accuracy"] >= p["honest_top_k_accuracy"]
            and q["rmse"] <= p["rmse"]
            and (q["honest_top_k_accuracy"], q["rmse"]) != (p["honest_top_k_accuracy"], p["rmse"])
            for q in points
        )
        assert p["pareto"] == (not dominated)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| weight 2 |" in (tmp_path / "sweep.md").read_text()
    assert _run(["sweep", "--weights", "a,b"]) == 3


def test_recommend_from_a_history(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    train = ["train", "--data-dir", str(tiny_dir), "-o", str(model), *ARGS]  # default preset
    assert _run(train) == 0
    capsys.readouterr()
    assert (
        _run(["recommend", "-m", str(model), "--history", "1:5,2:4, 3", "-k", "4", "--json"]) == 0
    )
    recs = json.loads(capsys.readouterr().out)
    assert recs["user_id"] is None and not recs["fallback"] and len(recs["items"]) == 4
    assert not {1, 2, 3} & {r["item_id"] for r in recs["items"]}
    for bad, named in (("1:5,2:x", "entry 2 ('2:x')"), ("1:5,,3", "entry 2 ('')"),
                       ("7:", "entry 1 ('7:')"), ("1:9", "rating 9.0 is outside")):  # fmt: skip
        assert _run(["recommend", "-m", str(model), "--history", bad]) == 3, bad
        assert named in capsys.readouterr().err
    assert _run(["recommend", "-m", str(model), "--history", "1", "-u", "3"]) == 3
    assert "exactly one of" in capsys.readouterr().err


def test_the_program_keeps_its_exit_code_and_skips_the_last_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``console`` (the ``mtrec`` program) freezes the heap on the way out, whatever the
    command's exit, and leaves the exit code alone; as a process, an error still exits 3."""
    import gc

    from mtrec import cli

    def failing() -> None:
        raise SystemExit(4)

    monkeypatch.setattr(cli.program, "main", failing)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.console()
        assert exited.value.code == 4
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    done = subprocess.run(
        [sys.executable, "-m", "mtrec", "compare", "--device", "gpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "gpu" in done.stderr


def test_out_of_range_values_are_one_line_each_not_a_traceback(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 34's tracebacks: each of these printed a Python traceback (exit 1), several
    only after the training. Now one line naming the flag or field, exit 3, before work."""
    model = tmp_path / "model"
    data = ["--data-dir", str(tiny_dir)]
    assert _run(["train", *data, "-o", str(model), "--preset", "reference", "--epochs", "1"]) == 0
    capsys.readouterr()
    refused = [
        (["train", *data, "-o", str(tmp_path / "a"), "--seed", "-1"], "TrainConfig.seed"),
        (["train", *data, "-o", str(tmp_path / "b"), "--seed", "4294967296"], "TrainConfig.seed"),
        (["compare", *data, "-o", str(tmp_path / "c"), "-k", "0"], "-k: expected"),
        (["evaluate", "-m", str(model), *data, "-k", "-3"], "k: expected"),
        (["recommend", "-m", str(model), "-u", "1", "--candidates", "0"], "candidates: expected"),
        (["recommend", "-m", str(model), "-u", "1", "-k", "0"], "k: expected"),
        (["serve", "-m", str(model), "--port", "70000"], "--port: expected"),
        (["serve", "-m", str(model), "--log-level", "bogus"], "--log-level: expected"),
    ]
    for argv, named in refused:
        assert _run(argv) == 3, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (argv, err)
        assert "epoch" not in err, argv  # refused before any training
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_lax_values_are_refused_and_a_warm_start_takes_a_test_file(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 34: --replay took nan, -1 and 2; --history read "٥" as 5 and "nan" as no
    rating; and --init-from with --test-interactions was always refused, the saved split's
    holdout counting as a --holdout nobody gave."""
    model, data = tmp_path / "model", ["--data-dir", str(tiny_dir)]
    base = ["train", *data, "--epochs", "1", "-q"]
    assert _run([*base, "--preset", "reference", "-o", str(model)]) == 0
    # a warm start keeps the saved settings: a --preset beside it was ignored without a word
    refused = [*base, "--preset", "tuned", "--init-from", str(model), "-o", str(tmp_path / "p")]
    assert _run(refused) == 3
    assert "goes without --init-from" in capsys.readouterr().err
    for replay in ("nan", "-1", "2"):
        argv = [*base, "--init-from", str(model), "--replay", replay, "-o", str(tmp_path / "r")]
        assert _run(argv) == 3, replay
        assert "--replay: expected a share in [0, 1]" in capsys.readouterr().err
    for history in ("1:\u0665", "1:nan", "1:inf"):
        assert _run(["recommend", "-m", str(model), "--history", history]) == 3, history
        assert "is not a number" in capsys.readouterr().err
    test_file = tmp_path / "next.csv"
    test_file.write_text("user_id,item_id,rating\n1,1,4\n2,2,5\n3,3,3\n")
    warm = [*base, "--init-from", str(model), "--test-interactions", str(test_file)]
    assert _run([*warm, "-o", str(tmp_path / "warm")]) == 0, capsys.readouterr().err
    assert _run([*warm, "--holdout", "0.3", "-o", str(tmp_path / "both")]) == 3  # both as flags
    assert "--holdout goes without --test-interactions" in capsys.readouterr().err


def test_index_options_are_checked_before_training(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FAISS crashed the process after the whole training run on options out of its range
    (``m=1``: a segfault, ``m=0``: an abort, ``nprobe=0``: an error); ``[index] options``
    that were not a table were ignored. Each is now one line, before any work."""
    base = ["train", "--data-dir", str(tiny_dir), "--epochs", "1", "-o", str(tmp_path / "m")]
    for kind, option, named in (
        ("faiss-hnsw", "m=1", "m expected an integer in [2, 512], got 1"),
        ("faiss-hnsw", "m=0", "m expected an integer in [2, 512], got 0"),
        ("faiss-ivf", "nprobe=0", "nprobe expected an integer in [1, "),
        ("faiss-ivf", "m=8", "unknown option(s) ['m']"),
    ):
        assert _run([*base, "--index", kind, "--index-option", option]) == 3, option
        err = capsys.readouterr().err
        assert named in err and "epoch" not in err, (option, err)
    config = tmp_path / "run.toml"
    config.write_text('[index]\nkind = "faiss-hnsw"\noptions = [1, 2]\n')
    assert _run([*base, "--config", str(config)]) == 3
    assert "[index] options: expected a table" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_bad_configs_and_outputs_fail_in_one_line_before_training(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 34: each of these was a traceback, two of them after the whole training run
    (the held-out estimate of share 0, an output folder that cannot be made)."""
    base = ["train", "--data-dir", str(tiny_dir), "--preset", "reference", "--epochs", "1"]
    (tmp_path / "list.toml").write_text('preset = ["default"]\n')
    (tmp_path / "huge.json").write_text('{"train": {"learning_rate": ' + "9" * 400 + "}}")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "a-file").write_text("x")
    out = ["-o", str(tmp_path / "m")]
    refused = [
        ([*base, "--config", str(tmp_path / "list.toml"), *out], 3, "preset: expected one of"),
        ([*base, "--config", str(tmp_path / "huge.json"), *out], 3, "got a huge integer"),
        ([*base, "--config", str(tmp_path / "deep.json"), *out], 3, "nested too deeply"),
        ([*base, "--holdout", "none", "--holdout-estimate", "0", *out], 3, "expected a share"),
        ([*base, "-o", str(tmp_path / "a-file" / "m")], 5, "a model cannot be written there"),
    ]
    for argv, code, named in refused:
        assert _run([*argv, "-q"]) == code, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "m").exists()


def test_data_on_another_rating_scale_is_refused(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 34: a warm start with 2..10 ratings onto a 1..5 model trained on labels up to
    2.25 (and showed a 10 as 5 stars); a 2..10 test file reported an RMSE of 3.9 stars."""
    model = tmp_path / "model"
    base = ["--data-dir", str(tiny_dir), "--epochs", "1", "-q"]
    assert _run(["train", *base, "--preset", "reference", "-o", str(model)]) == 0
    tens = tmp_path / "tens.csv"
    tens.write_text("user_id,item_id,rating\n1,1,2\n2,2,10\n3,3,6\n")
    warm = ["train", *base, "--init-from", str(model), "--interactions", str(tens)]
    assert _run([*warm, "-o", str(tmp_path / "warm")]) == 2
    assert "ratings 2..10 are off the model's scale 1..5" in capsys.readouterr().err
    assert not (tmp_path / "warm").exists()
    assert _run(["evaluate", "-m", str(model), "--test-interactions", str(tens)]) == 2
    assert "the test data: ratings 2..10 are off the model's scale" in capsys.readouterr().err
    fives = tmp_path / "fives.csv"
    fives.write_text("user_id,item_id,rating\n1,1,2\n2,2,5\n3,3,4\n")
    assert _run(["evaluate", "-m", str(model), "--test-interactions", str(fives), "--json"]) == 0


def test_every_help_keeps_every_word_of_its_options_help() -> None:
    """Rich renders help as markup: a bracketed word such as "[model]" vanished from
    `mtrec train --help`. Every command's help shows every word of every option's help."""
    import re

    import typer
    from typer.testing import CliRunner

    from mtrec.cli.program import app

    def commands(group: Any, path: list[str]) -> list[tuple[list[str], Any]]:
        found = [(path, group)]
        for name, sub in getattr(group, "commands", {}).items():  # typer's own click
            found += commands(sub, [*path, name])
        return found

    runner = CliRunner()
    checked = 0
    for path, command in commands(typer.main.get_command(app), []):
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"}).output
        for param in command.params:
            for word in re.findall(r"[A-Za-z][A-Za-z_-]+", getattr(param, "help", None) or ""):
                assert word in shown, f"mtrec {' '.join(path)} --help lost {word!r}"
                checked += 1
    assert checked > 500  # every command's options were read


def test_other_libraries_info_logs_stay_out_of_the_output() -> None:
    """A first run printed matplotlib's 'generated new fontManager' (INFO): other
    libraries speak from WARNING up, mtrec's own notes from INFO, everyone with -v."""
    import logging

    from mtrec.cli.program import _root

    root, ours = logging.getLogger(), logging.getLogger("mtrec")
    saved = (root.level, list(root.handlers), ours.level)
    try:
        root.handlers = []  # basicConfig configures a root without handlers
        _root(verbose=False)
        assert not logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.INFO)
        assert logging.getLogger("mtrec.data").isEnabledFor(logging.INFO)
        root.handlers = []
        _root(verbose=True)
        assert logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.DEBUG)
    finally:
        root.level, root.handlers = saved[0], saved[1]
        ours.setLevel(saved[2])


def test_compare_says_one_line_per_model_and_draws_no_bars_without_a_terminal(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """Issue 31: without a terminal, ``mtrec compare`` interleaved the three models' epoch
    lines, then left three bars with a cut-off time column, and showed the reference's
    retrieval loss summed over a batch (6770) where ``train`` shows one per row (7.451)."""
    args = ["compare", "--data-dir", str(tiny_dir), "-o", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-m", "mtrec", *args, "--epochs", "2", "--batch-size", "64"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert sorted(line.split(":")[0] for line in lines) == [
        "multi-task", "rating-specialised", "retrieval-specialised"
    ], lines  # fmt: skip
    for line in lines:
        assert ": trained, 2 epochs in " in line and "epoch 2/2" not in line
    retrieval = [float(line.rsplit("retrieval loss ", 1)[1].split(",")[0])
                 for line in lines if "retrieval loss" in line]  # fmt: skip
    assert len(retrieval) == 2 and all(0 < loss < 10 for loss in retrieval)  # per row, ~log(64)
    assert "(reference): " not in done.stdout and "top-10 reference" in done.stdout
