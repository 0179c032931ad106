"""Start `mtrec serve` as a real process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    model_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    stdout: int = subprocess.DEVNULL,
) -> tuple[subprocess.Popen[str], str]:
    """The running server and its base URL, once /healthz answers (or an error if it died).
    It logs warnings only, unless ``args`` give another ``--log-level``."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mtrec",
        "serve",
        "-m",
        str(model_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"mtrec serve exited with {proc.returncode}: {log}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                return proc, base
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mtrec serve did not answer on {base} within {timeout_s} s")
