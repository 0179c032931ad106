"""Maximal batch requests at once against one server: its memory before, at peak and after
(issue 34: eight 1,000-user x 1,000-candidate x k 100 batches reached 4.5 GB, 2 GB held).

Serves ``--model``, reads the server's resident memory from ``/proc`` (its processes
summed: the peak is the sum of each one's ``VmHWM``), sends
``--concurrent`` POST ``/v1/recommendations:batch`` requests at once (the model's first
1,000 users, ``candidates`` 1,000, ``k`` 100), and prints the resident size before, the
peak (``VmHWM``) and after, and each request's seconds. Linux only.

    python benchmarks/serve_batch_memory.py --model DIR [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from serve_load import free_port, memory_mb, wait_ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1, help="bursts one after another")
    args = ap.parse_args()
    users = json.loads((args.model / "vocab.json").read_text())["users"]["ids"][:1000]
    body = json.dumps({"user_ids": users, "k": 100, "candidates": 1000}).encode()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mtrec", "serve", "-m", str(args.model), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(base)
        before = settled_memory_mb(server.pid)
        seconds: list[float] = []

        def one() -> None:
            started = time.perf_counter()
            request = urllib.request.Request(
                f"{base}/v1/recommendations:batch",
                data=body,
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                assert response.status == 200
                response.read()
            seconds.append(time.perf_counter() - started)

        for _ in range(args.rounds):
            seconds.clear()
            threads = [threading.Thread(target=one) for _ in range(args.concurrent)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(1.0)
            peak, after = memory_mb(server.pid, "VmHWM"), memory_mb(server.pid)
            print(
                f"{args.concurrent} batches of {len(users)} users x 1,000 candidates x k 100 "
                f"at once: resident {before:.0f} MB before, peak {peak:.0f} MB "
                f"(+{peak - before:.0f}), {after:.0f} MB after (+{after - before:.0f}); "
                f"{len(seconds)} answered in {min(seconds):.1f}-{max(seconds):.1f} s"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


def settled_memory_mb(pid: int, seconds: float = 30.0) -> float:
    """The server's resident size once every worker has loaded: /readyz answers from the
    first worker up, and a second still loading read as 60 MB "held" after the rounds."""
    last, deadline = memory_mb(pid), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = memory_mb(pid)
        if abs(now - last) < 1.0:
            return now
        last = now
    return last


if __name__ == "__main__":
    main()
