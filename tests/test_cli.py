"""`mtrec compare` end to end on generated data, and the CLI's error contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtrec.cli import main

ARGS = ["--epochs", "2", "--batch-size", "64", "--quiet"]


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


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
    weights = [(m["retrieval_weight"], m["ranking_weight"]) for m in result["models"]]
    assert weights == [(0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    for m in result["models"]:
        for key in ("top10_accuracy", "rmse", "rmse_stars", "train_seconds"):
            assert isinstance(m[key], float), key
        assert m["rmse_stars"] == pytest.approx(4 * m["rmse"])
    items = result["recommendations"]["items"]
    assert result["recommendations"]["user_id"] == 5 and len(items) == 10
    assert all(1 <= i["stars"] <= 5 for i in items)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| multi-task | 1, 1 |" in report and "compare.png" in report


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
    metrics = [[(m["top10_accuracy"], m["rmse"]) for m in r["models"]] for r in runs]
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
