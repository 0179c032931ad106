"""Slow request bodies against a server with few descriptors: does ``/healthz`` still answer?

Issue 34: 1,100 connections that sent whole headers and then trickled a POST body a byte
at a time were held for good, took every descriptor of a 1,024-descriptor server, and it
then reset every new connection (health checks and reloads) until they stopped.

Serves ``--model`` with ``--descriptors`` as its soft and hard limit on open files (so it
cannot raise them), opens ``--connections`` connections that each send a POST's headers
and then one byte of its body every second, and meanwhile times ``/healthz`` five times a
second on a new connection each. Prints the health checks' latencies (median, p99, max)
and failures, and how many slow connections the server closed. Linux only.

    python benchmarks/serve_slow_bodies.py --model DIR
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from serve_load import free_port, wait_ready

HEAD = (
    b"POST /v1/recommendations HTTP/1.1\r\nHost: localhost\r\n"
    b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--connections", type=int, default=1100)
    ap.add_argument("--descriptors", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, args.connections + 256), hard))
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.descriptors, args.descriptors))

    command = [sys.executable, "-m", "mtrec", "serve", "-m", str(args.model), "--port", str(port)]
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit
    )
    try:
        wait_ready(base)
        stop = threading.Event()
        closed = [0]
        trickle = threading.Thread(target=_trickle, args=(port, args.connections, stop, closed))
        trickle.start()
        time.sleep(3)  # the connections are open
        latencies, failures = _health_checks(base, args.seconds)
        stop.set()
        trickle.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    print(
        f"{args.connections} slow-body connections, server limited to {args.descriptors} "
        f"descriptors: /healthz {len(latencies)} answered, {failures} failed; "
        f"median {1e3 * statistics.median(latencies):.1f} ms, p99 {1e3 * p99:.1f} ms, "
        f"max {1e3 * latencies[-1]:.1f} ms; {closed[0]} slow connections closed by the server"
    )


def _trickle(port: int, n: int, stop: threading.Event, closed: list[int]) -> None:
    """Open ``n`` connections, send each a POST's headers, then a body byte a second to
    each until ``stop``; reopen any the server closes (counted in ``closed``)."""
    conns: list[socket.socket | None] = [None] * n
    while not stop.is_set():
        for i in range(n):
            conn = conns[i]
            try:
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=1)
                    conn.sendall(HEAD)
                    conns[i] = conn
                else:
                    conn.sendall(b" ")
            except OSError:
                if conn is not None:
                    conn.close()
                    closed[0] += 1
                conns[i] = None
        stop.wait(1.0)
    for conn in conns:
        if conn is not None:
            conn.close()


def _health_checks(base: str, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                response.read()
            latencies.append(time.perf_counter() - started)
        except OSError:
            failures += 1
        time.sleep(0.2)
    return latencies, failures


if __name__ == "__main__":
    main()
