"""Time to a good list: the whole ``mtrec train`` (defaults) per data size (issue 32).

For each size it runs ``mtrec train`` in a process of its own and prints the wall time,
the peak resident memory (that process's ``ru_maxrss``), the epochs each model ran, the
run's phases (``metrics.json``'s ``phases``) and the served list's recall@10 and NDCG@10
against the planted oracle (planted logs) or against EASE and popularity (MovieLens-100K;
the same users, with the paired 95% interval of served minus EASE).

    python benchmarks/time_to_quality.py                       # ml-100k, seed 42
    python benchmarks/time_to_quality.py --seeds 42 1 2        # the three seeds of the bars
    python benchmarks/time_to_quality.py --sizes ml-100k 1m    # + a planted log of ML-1M's shape
    python benchmarks/time_to_quality.py --sizes 25m --train-args --epochs 1

Sizes: ``ml-100k`` (MovieLens-100K, the reference split); ``1m`` (a planted log of
MovieLens-1M's shape: 6,040 users, 3,706 items, 1,000,209 interactions); ``25m`` (the
planted log of ``mtrec data synth --planted``'s defaults). A planted log is written once
to ``--work`` and reused. The oracle's recall comes from the generator's own scores on
``mtrec train``'s split (a seeded sample of its test users: a close, not an exact,
reference). Run nothing else meanwhile: two busy processes on two cores slow each other
several-fold. The header names the CPU and its fp32 matmul rate, as every figure quoted
from here should.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from train_throughput import cpu_name, matmul_gflops

PLANTED = {
    "1m": {"interactions": 1_000_209, "users": 6_040, "items": 3_706},
    "25m": {"interactions": 25_000_000, "users": 200_000, "items": 80_000},
}


def planted_log(size: str, work: Path) -> tuple[Path, dict[str, float]]:
    """The planted log of ``size`` (written once) and its oracle's recall and NDCG@10."""
    from mtrec.data.synth import synthesize_planted, write_parquet
    from mtrec.evaluate.oracle import planted_lists

    path, oracle_file = work / f"planted-{size}.parquet", work / f"planted-{size}.oracle.json"
    if not (path.exists() and oracle_file.exists()):
        shape = PLANTED[size]
        log, truth = synthesize_planted(
            shape["interactions"], shape["users"], shape["items"], seed=0
        )
        write_parquet(log, path)
        report = planted_lists(log, truth)
        oracle_file.write_text(json.dumps(report.oracle))
    return path, json.loads(oracle_file.read_text())


def run_train(args: list[str], out: Path) -> tuple[float, float, dict[str, Any]]:
    """``mtrec train ARGS -o OUT -q``: wall seconds, peak resident GB, its metrics.json."""
    command = [sys.executable, "-m", "mtrec", "train", *args, "-o", str(out), "-q"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mtrec train {' '.join(args)} failed")
    metrics = json.loads((out / "metrics.json").read_text())
    return wall, usage.ru_maxrss / 1e6, metrics  # ru_maxrss: kB on Linux


def _list(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in metrics["lists"] if r["name"] == name)


def report(size: str, seed: int, wall: float, peak: float, metrics: dict[str, Any]) -> str:
    """One size's line: cost, epochs and phases, then the served list against its mark."""
    served = metrics["served"]
    epochs = len(metrics["history"])
    phases = ", ".join(f"{k} {v:.1f}" for k, v in metrics.get("phases", {}).items())
    line = (
        f"{size:8s} seed {seed:3d}: {wall:7.1f} s wall, {peak:5.2f} GB peak, {epochs} epochs "
        f"({phases}); served recall@10 {served['recall']:.4f} NDCG@10 {served['ndcg']:.4f}"
    )
    if metrics.get("rmse") is not None:
        line += f", RMSE {metrics['rmse']:.4f}"
    if "EASE" in {r["name"] for r in metrics["lists"]}:
        ease, popular = _list(metrics, "EASE"), _list(metrics, "popularity")
        low, high = _list(metrics, "served")["differences"]["EASE"]["ndcg"]
        line += (
            f"; EASE {ease['recall']:.4f} / {ease['ndcg']:.4f} (served - EASE NDCG "
            f"[{low:+.4f}, {high:+.4f}]); popularity {popular['recall']:.4f} / "
            f"{popular['ndcg']:.4f}"
        )
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["ml-100k"], choices=["ml-100k", *PLANTED])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mtrec-time-to-quality"))
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"# {cpu_name()}, {os.cpu_count()} cores; fp32 matmul {matmul_gflops():.0f} GFLOP/s "
        "(2048 x 2048); mtrec train with its defaults",
        flush=True,
    )
    for size in args.sizes:
        data: list[str] = []
        oracle = None
        if size in PLANTED:
            path, oracle = planted_log(size, args.work)
            data = ["--interactions", str(path)]
        runs = []
        for seed in args.seeds:
            out = args.work / f"model-{size}-{seed}"
            wall, peak, metrics = run_train([*data, "--seed", str(seed), *args.train_args], out)
            runs.append((wall, metrics))
            line = report(size, seed, wall, peak, metrics)
            if oracle is not None:
                share = metrics["served"]["recall"] / oracle["recall"]
                line += f"; oracle recall@10 {oracle['recall']:.4f} (served {share:.0%} of it)"
            print(line, flush=True)
        if len(runs) > 1:
            print(mean_line(size, runs), flush=True)


def mean_line(size: str, runs: list[tuple[float, dict[str, Any]]]) -> str:
    """The seeds' mean wall time, served list and RMSE (what issue 32's bars read)."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    line = (
        f"{size:8s} mean of {len(runs)} seeds: {mean([w for w, _ in runs]):7.1f} s wall; "
        f"served recall@10 {mean([m['served']['recall'] for _, m in runs]):.4f} "
        f"NDCG@10 {mean([m['served']['ndcg'] for _, m in runs]):.4f}"
    )
    rmse = [m["rmse"] for _, m in runs if m.get("rmse") is not None]
    return line + (f", RMSE {mean(rmse):.4f}" if len(rmse) == len(runs) else "")


if __name__ == "__main__":
    main()
