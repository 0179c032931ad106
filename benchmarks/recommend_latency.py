"""Latency of recommendations from a saved MovieLens-100K model.

1. ``mtrec recommend --model DIR --user 5`` as a whole process (start to exit), several
   runs, median and max;
2. ``Recommender.recommend`` in process, per call (p50, p99) over every user in turn: the
   served list (the ranking stage, default candidates, seen items excluded) and, in the
   same run, the first stage alone (``ranking=False``);
3. ``Recommender.recommend_for_history`` per call, each user's training items (with their
   ratings) given as a new user's history; and the mean overlap@10 of that list with the
   user's own ``recommend`` list (reported, not asserted: how close a history alone gets).

    python benchmarks/recommend_latency.py         # trains mtrec-out/bench-model if needed
    python benchmarks/recommend_latency.py --model DIR
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

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

    def timed(call: Callable[[Any], Any]) -> tuple[NDArray[np.float64], list[Any]]:
        times, results = [], []
        for user in users:
            t = time.perf_counter()
            results.append(call(user))
            times.append(time.perf_counter() - t)
        return np.array(times) * 1000, results

    def line(name: str, ms: NDArray[np.float64]) -> str:
        return (
            f"{name} over {len(users)} users: p50 {np.percentile(ms, 50):.2f} ms, "
            f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms"
        )

    print(f"Recommender.load: {load_s * 1000:.0f} ms")
    served_ms, served = timed(lambda u: rec.recommend(u, k=10))
    print(line("recommend (served list)", served_ms))
    first_ms, _ = timed(lambda u: rec.recommend(u, k=10, ranking=False))
    print(line("recommend (first stage alone)", first_ms))
    if not rec.model.config.history:
        return
    scale = rec.saved.scale

    def history_of(user: Any) -> list[tuple[Any, float]]:
        items, labels = rec.saved.seen.of(rec.vocabs.users.row(user))
        ids = rec.vocabs.items.ids(items).tolist()
        return list(zip(ids, scale.stars(labels).tolist(), strict=True))

    histories = {u: history_of(u) for u in users}
    history_ms, from_history = timed(lambda u: rec.recommend_for_history(histories[u], k=10))
    print(line("recommend_for_history (training items as history)", history_ms))
    overlap = [
        len({r.item_id for r in a.items} & {r.item_id for r in b.items}) / 10
        for a, b in zip(served, from_history, strict=True)
    ]
    print(f"mean overlap@10, recommend(user) vs recommend_for_history: {np.mean(overlap):.3f}")


if __name__ == "__main__":
    main()
