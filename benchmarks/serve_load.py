"""Load test of `mtrec serve` on 127.0.0.1 with wrk (Debian's package) in a separate process.

Serves the MovieLens-100K model, then for 1, 8, 32 and 128 connections runs wrk for
``--duration`` seconds against ``GET /v1/users/{random user}/recommendations?k=10`` and
reports throughput, p50/p95/p99 latency and every kind of failed request; then, for the
cost of the ranking stage in the same run, the same route with ``ranking=false`` (the
first stage alone) and as served, in turn at 32 connections (``--cost-rounds`` each,
medians compared). Last, the same at 32 connections while the
model directory is replaced (``artifact.save``: one atomic exchange) and reloaded
(``POST /v1/admin/reload``) every ``--swap-every`` seconds, with a checker that asks for
the lists of 50 users in turn: a swap must fail no request, and every answer must be the
list of one of the two models, never a mix. ``--open-loop RATE ...`` adds runs at fixed
offered rates (a Python asyncio client in its own process; latency from when each
request was due).

    apt-get install wrk                          # once
    python benchmarks/serve_load.py              # 30 s per run
    python benchmarks/serve_load.py --duration 10 --workers 2 --json out.json
    python benchmarks/serve_load.py --duration 10 --swap-every 0.2 --swap-duration 60
    python benchmarks/serve_load.py --duration 20 --workers 2 --connections 32 --open-loop 500 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from mtrec import artifact

LUA = r"""
math.randomseed(42)
request = function()
  return wrk.format("GET", "/v1/users/" .. math.random(1, 943) .. "/recommendations?k=10QUERY")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"non_2xx": %d, "timeouts": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in MB, summed over
    ``pid`` and its descendants (a service's workers run in processes of their own)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    own = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith(field + ":")
    )
    return own / 1024 + sum(memory_mb(int(child), field) for child in children)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settle(port: int, limit: float = 15.0) -> float:
    """Wait until the server holds no connection of an earlier run open (Linux's socket
    table: none with local port ``port`` established or closed by the client only); the
    seconds waited. wrk drops its connections mid-request when a run ends and the server
    took up to 1-2 s to close them, so each run starts from an idle server instead of
    inheriting that teardown (which alone did not remove the tail at 128 connections)."""
    started = time.perf_counter()
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    while time.perf_counter() - started < limit:
        held = 0
        for table in tables:
            if not table.exists():
                continue
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                local_port, state = int(fields[1].rsplit(":", 1)[1], 16), fields[3]
                held += local_port == port and state in ("01", "08")  # open, close-wait
        if not held:
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, Any]:
    settled = settle(int(url.rsplit(":", 1)[1]))
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    result["connections"] = connections
    result["settled_s"] = settled
    result["rps"] = result["requests"] / result["seconds"]
    result["failed"] = sum(
        result[k] for k in ("connect_errors", "read_errors", "write_errors", "non_2xx", "timeouts")
    )
    return result


def wait_ready(base: str, seconds: float = 60.0) -> None:
    """Return once the server at ``base`` answers ``/readyz``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{base}/readyz", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def fetch(base: str, user: int) -> list[int]:
    """The item ids the server recommends to ``user`` now."""
    url = f"{base}/v1/users/{user}/recommendations?k=10"
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    return [item["item_id"] for item in body["items"]]


def install(base: str, served: Path, model: Any) -> None:
    """Replace the served model (one atomic exchange), then reload the service."""
    artifact.save(model, served)
    request = urllib.request.Request(f"{base}/v1/admin/reload", method="POST")
    urllib.request.urlopen(request, timeout=30).read()


def lists_of(base: str, served: Path, model: Any, users: int = 50) -> list[list[int]]:
    """The lists of the first ``users`` users as the server answers them with ``model``,
    once every worker has it (the others reload on a signal, in the background)."""
    install(base, served, model)
    while True:
        time.sleep(3.0)
        first = [fetch(base, user) for user in range(1, users + 1)]
        if first == [fetch(base, user) for user in range(1, users + 1)]:
            return first


def open_loop(port: int, rate: float, duration: float, connections: int) -> dict[str, Any]:
    """Requests offered at a fixed ``rate`` (not as fast as answers come back, as wrk does),
    over ``connections`` keep-alive connections; each latency counts from when its request
    was due, so a stalled server is charged for the queue it builds (no coordinated
    omission). Runs in its own process, so the client's CPU never waits on this one's GIL."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(_open_loop_run, (port, rate, duration, connections))
    return result


def _open_loop_run(port: int, rate: float, duration: float, connections: int) -> dict[str, Any]:
    import asyncio
    import random

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        jobs: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
        latencies: list[float] = []
        failed = {"non_2xx": 0, "errors": 0}
        draw = random.Random(42)
        n = int(rate * duration)

        async def offer() -> None:
            start = loop.time() + 0.1
            for i in range(n):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                jobs.put_nowait((start + i / rate, draw.randint(1, 943)))
            for _ in range(connections):
                jobs.put_nowait(None)

        async def connection() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while (job := await jobs.get()) is not None:
                due, user = job
                path = f"/v1/users/{user}/recommendations?k=10"
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, StopIteration):
                    failed["errors"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(loop.time() - due)
                failed["non_2xx"] += not head.startswith(b"HTTP/1.1 2")
            writer.close()

        started = loop.time()
        await asyncio.gather(offer(), *(connection() for _ in range(connections)))
        seconds = loop.time() - started
        ordered = sorted(latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else 0.0

        return {
            "offered_rps": rate,
            "achieved_rps": len(latencies) / seconds,
            "connections": connections,
            "requests": n,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": ordered[-1] * 1e3 if ordered else 0.0,
            **failed,
        }

    return asyncio.run(run())


def show(r: dict[str, Any], label: str = "") -> None:
    print(
        f"{r['connections']:>4} conn{label}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
        f"p95 {r['p95_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:7.2f} ms  "
        f"failed {r['failed']} of {r['requests']}",
        flush=True,
    )


def ranking_cost(
    base: str, duration: int, rounds: int, served: Path, first_stage: Path
) -> dict[str, Any]:
    """The ranking stage's cost: at 32 connections, the first stage alone and the served
    list in turn (A B A B ...: the machine's speed drifts within a run), ``rounds`` each;
    the share of requests/s lost, from the medians."""
    runs: dict[str, list[dict[str, Any]]] = {"first_stage": [], "served": []}
    for _ in range(rounds):
        for name, script in (("first_stage", first_stage), ("served", served)):
            runs[name].append(wrk(base, 32, duration, script))
            show(
                runs[name][-1],
                " (first stage alone, ranking=false)"
                if name == "first_stage"
                else " (served list)",
            )
    first = statistics.median(r["rps"] for r in runs["first_stage"])
    ranked = statistics.median(r["rps"] for r in runs["served"])
    lost = 1 - ranked / first
    print(
        f"the ranking stage costs {lost:.0%} of the first stage's requests/s at 32 conn "
        f"(medians of {rounds} alternating runs each: {ranked:.0f} against {first:.0f})"
    )
    return runs | {"lost": lost}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--cost-rounds", type=int, default=3, help="alternating runs for the ranking cost"
    )
    ap.add_argument("--workers", type=int, default=None, help="mtrec serve --workers")
    ap.add_argument("--swap-every", type=float, default=2.0, help="seconds between swaps")
    ap.add_argument("--swap-duration", type=int, default=None, help="default: --duration")
    ap.add_argument(
        "--open-loop",
        type=float,
        nargs="*",
        default=[],
        help="also offer these fixed rates (req/s), open loop, for --duration each",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="mtrec-load-"))
    for name, seed in (("a", 42), ("b", 7)):  # two models to swap between
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mtrec",
                "train",
                "-q",
                "--seed",
                str(seed),
                "-o",
                str(work / name),
            ],
            check=True,
            capture_output=True,
        )
    served = work / "served"
    shutil.copytree(work / "a", served)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtrec",
            "serve",
            "-m",
            str(served),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *([] if args.workers is None else ["--workers", str(args.workers)]),
        ],
        env={**os.environ, "MTREC_API_KEY": ""},
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    script = work / "recs.lua"
    script.write_text(LUA.replace("QUERY", ""))
    first_stage = work / "first.lua"  # the same route, the first stage alone
    first_stage.write_text(LUA.replace("QUERY", "&ranking=false"))
    results = []
    try:
        wrk(base, 8, 3, script)  # warm up
        for connections in args.connections:
            results.append(wrk(base, connections, args.duration, script))
            show(results[-1])
        for rate in args.open_loop:
            fixed = open_loop(port, rate, args.duration, 32)
            results.append(fixed)
            print(
                f"open loop, {rate:.0f} req/s offered over 32 conn: {fixed['achieved_rps']:.0f} "
                f"answered/s  p50 {fixed['p50_ms']:.2f} ms  p99 {fixed['p99_ms']:.2f} ms  "
                f"max {fixed['max_ms']:.1f} ms  non-2xx {fixed['non_2xx']}  errors "
                f"{fixed['errors']} of {fixed['requests']}",
                flush=True,
            )
        cost = ranking_cost(base, args.duration, args.cost_rounds, script, first_stage)
        alone = cost["first_stage"][-1]
        swaps = {"ok": 0, "refused": 0}
        models = {name: artifact.load(work / name) for name in ("a", "b")}
        expected = {name: lists_of(base, served, models[name]) for name in ("b", "a")}
        stop = threading.Event()

        def swapper() -> None:
            flip = 0
            while not stop.wait(args.swap_every):
                flip ^= 1
                try:
                    install(base, served, models["b" if flip else "a"])
                    swaps["ok"] += 1
                except OSError:
                    swaps["refused"] += 1

        checked = {"answers": 0, "neither": 0, "failed": 0}

        def checker() -> None:  # every answer must be one model's list, never a mix
            while not stop.is_set():
                for user, both in enumerate(zip(*expected.values(), strict=True)):
                    try:
                        got = fetch(base, user + 1)
                    except OSError:
                        checked["failed"] += 1
                        continue
                    checked["answers"] += 1
                    checked["neither"] += got not in both

        threads = [threading.Thread(target=swapper), threading.Thread(target=checker)]
        for thread in threads:
            thread.start()
        during = wrk(base, 32, args.swap_duration or args.duration, script)
        stop.set()
        for thread in threads:
            thread.join()
        show(during, f" during {swaps['ok']} model swaps")
        print(
            f"checked answers: {checked['answers']}, matching neither model "
            f"{checked['neither']}, failed {checked['failed']}; refused reloads "
            f"{swaps['refused']}"
        )
        during |= {"swaps": swaps, "checked": checked}
    finally:
        server.terminate()
        server.communicate(timeout=20)
    if args.json:
        document = {
            "workers": args.workers,
            "runs": results,
            "first_stage_alone": alone,
            "ranking_cost": cost,
            "during_swaps": during,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
