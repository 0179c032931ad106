"""Latency of recommendations from a saved MovieLens-100K model.

1. ``mtrec recommend --model DIR --user 5`` as a whole process (start to exit), several
   runs, median and max;
2. ``Recommender.recommend`` in process, per call (p50, p99), with the default 100
   candidates and seen-item exclusion, over every user in turn.

    python benchmarks/recommend_latency.py         # trains mtrec-out/bench-model if needed
    python benchmarks/recommend_latency.py --model DIR
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mtrec.recommend import Recommender


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, default=Path("mtrec-out/bench-model"))
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    if not (args.model / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "mtrec", "train", "-q", "-o", str(args.model)], check=True
        )

    cmd = [
        sys.executable,
        "-m",
        "mtrec",
        "recommend",
        "--model",
        str(args.model),
        "--user",
        "5",
        "--json",
    ]
    walls = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    print(
        f"mtrec recommend (process): median {statistics.median(walls):.3f} s, "
        f"max {max(walls):.3f} s over {args.runs} runs"
    )

    start = time.perf_counter()
    rec = Recommender.load(args.model)
    load_s = time.perf_counter() - start
    users = rec.vocabs.users.id_array.tolist()
    for user in users[:50]:  # warm
        rec.recommend(user)
    times = []
    for user in users:
        t = time.perf_counter()
        rec.recommend(user, k=10, candidates=100)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    print(
        f"Recommender.load: {load_s * 1000:.0f} ms; Recommender.recommend over {len(users)} "
        f"users: p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
        f"max {ms.max():.2f} ms"
    )


if __name__ == "__main__":
    main()
