"""The SIGKILL fault-injection script, small: two kills on generated data, resumed to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "faults" / "kill_resume.py"


def test_sigkill_and_resume_gives_identical_weights(tiny_dir: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--data-dir",
            str(tiny_dir),
            "--kills",
            "2",
            "--epochs",
            "40",
            "--batch-size",
            "16",
            "--every",
            "5",
            "--max-delay-ms",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kills; final weights identical to the uninterrupted run: True" in done.stdout
