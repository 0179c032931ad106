"""The README's first steps, literally (issue 31): its quick-start commands as a shell
runs them, and its Python block with the two frames it names made from MovieLens-100K."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mtrec

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _commands(block: str) -> list[str]:
    """A shell block's commands, their trailing comments left out."""
    lines = (line.split("  #")[0].strip() for line in block.splitlines())
    return [line for line in lines if line]


def test_the_readmes_first_commands_run(tmp_path: Path) -> None:
    """Its second block: train the default preset, then a known user's and a new user's
    lists (the first block installs and runs the checks: what CI itself does)."""
    commands = _commands(_blocks("bash")[1])
    assert [c.split()[:2] for c in commands] == [["mtrec", "train"], *[["mtrec", "recommend"]] * 2]
    # the `mtrec` of the Python running the tests, as the README's install puts it there
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    outputs = []
    for command in commands:
        done = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            env={**os.environ, "PATH": path},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
        outputs.append(done.stdout)
    assert (tmp_path / "mtrec-out" / "model" / "model.safetensors").exists()
    for listed in outputs[1:]:  # ten ranked movies each, with their predicted stars
        assert re.findall(r"^│\s+(\d+)\s+│", listed, re.M) == [str(n) for n in range(1, 11)]


def test_the_readmes_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its Python block as written; ``ratings_frame`` is MovieLens-100K before its last
    tenth in time and ``next_week_frame`` that tenth, both pandas DataFrames."""
    pd = pytest.importorskip("pandas")
    log = mtrec.load_movielens().interactions
    frame = pd.DataFrame(
        {"user_id": log.user, "item_id": log.item, "rating": log.rating, "timestamp": log.timestamp}
    ).sort_values("timestamp", kind="stable")
    cut = round(len(frame) * 0.9)
    names = {"ratings_frame": frame.iloc[:cut], "next_week_frame": frame.iloc[cut:]}
    (block,) = _blocks("python")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), names)
    model = names["model"]
    assert model.metrics["served"]["recall"] > 0.2
    assert len(model.recommend(5, k=10).to_frame()) == 10
    later = model.evaluate(names["next_week_frame"]).to_frame()
    assert {"served", "EASE", "popularity"} <= set(later["list"])
    assert (tmp_path / "mtrec-out" / "model" / "model.safetensors").exists()
