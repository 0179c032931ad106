"""The unique-path flood of issue 14: keyless requests to ever new paths, against a server
with an API key, while ``/metrics`` is scraped and ``/healthz`` is timed.

Serves ``--model`` (one worker, an API key), records the server's resident memory, runs
wrk for ``--duration`` seconds with a new path per request (all refused, 401), and
meanwhile scrapes ``/metrics`` every second and times ``/healthz`` ten times a second.
Reports the requests sent, the memory growth, the size of ``/metrics`` and the ``/healthz``
latencies. Linux only (memory from ``/proc``).

    apt-get install wrk                            # once
    python benchmarks/serve_flood.py --model DIR   # 60 s
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from serve_load import free_port, memory_mb, wait_ready

LUA = r"""
counter = 0
request = function()
  counter = counter + 1
  local user = counter .. "-" .. math.random(1, 1e9)
  return wrk.format("GET", "/v1/users/" .. user .. "/recommendations")
end
"""
KEY = "flood-benchmark-key"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--duration", type=int, default=60)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "mtrec", "serve", "-m", str(args.model)),
            *("--port", str(port), "--workers", "1", "--log-level", "warning"),
        ],
        env={**os.environ, "MTREC_API_KEY": KEY},
        stderr=subprocess.PIPE,
        text=True,
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        wait_ready(base)
        before = memory_mb(server.pid)
        script = Path(tempfile.mkdtemp()) / "flood.lua"
        script.write_text(LUA)
        stop = threading.Event()
        healthz: list[float] = []
        scrape_sizes: list[int] = []

        def probe() -> None:
            tick = 0
            while not stop.wait(0.1):
                start = time.perf_counter()
                urllib.request.urlopen(f"{base}/healthz", timeout=10).read()
                healthz.append((time.perf_counter() - start) * 1e3)
                tick += 1
                if tick % 10 == 0:  # a scrape a second
                    request = urllib.request.Request(f"{base}/metrics", headers=auth)
                    scrape_sizes.append(len(urllib.request.urlopen(request, timeout=30).read()))

        thread = threading.Thread(target=probe)
        thread.start()
        out = subprocess.run(
            ["wrk", "-t1", "-c32", f"-d{args.duration}s", "-s", str(script), base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        stop.set()
        thread.join()
        after = memory_mb(server.pid)
        sent = next(line for line in out.splitlines() if "requests in" in line).split()[0]
        healthz.sort()
        p99 = healthz[min(len(healthz) - 1, int(0.99 * len(healthz)))]
        print(f"refused requests sent: {sent} in {args.duration} s (wrk, 32 connections)")
        growth = after - before
        print(f"server memory: {before:.0f} MB before, {after:.0f} MB after ({growth:+.0f})")
        print(f"/metrics: {max(scrape_sizes, default=0):,} bytes at most over the flood")
        print(
            f"/healthz during the flood and scrapes: p50 {healthz[len(healthz) // 2]:.1f} ms, "
            f"p99 {p99:.1f} ms, max {healthz[-1]:.1f} ms ({len(healthz)} probes)"
        )
    finally:
        server.terminate()
        server.communicate(timeout=20)


if __name__ == "__main__":
    main()
