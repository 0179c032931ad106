"""Index benchmark: exact vs FAISS HNSW/IVF on a synthetic 1M x 64 catalogue.

Reports, for each index: build time, memory it added (resident set, MB), queries/s
one query at a time and in batches of 1,000, and recall@10 against the exact index.
The catalogue is clustered (2,000 Gaussian clusters, like learned item embeddings,
which are far from uniform); queries come from the same clusters.

    python benchmarks/index_bench.py                     # 1,000,000 items, dim 64
    python benchmarks/index_bench.py --items 100000      # quicker
    python benchmarks/index_bench.py --json out.json

Needs the ``ann`` extra (faiss-cpu) for the FAISS rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mtrec.index import ExactIndex, FaissIndex, Index
from mtrec.index.base import recall_at_k


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def catalogue(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(2000, dim)).astype(np.float32)
    items = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in blocks: no n x dim float64 temporaries
        hi = min(lo + 100_000, n)
        items[lo:hi] = centers[rng.integers(0, 2000, hi - lo)] + 1.0 * rng.normal(
            size=(hi - lo, dim)
        )
    queries = centers[rng.integers(0, 2000, n_queries)] + 1.0 * rng.normal(size=(n_queries, dim))
    return items, queries.astype(np.float32)


def qps_single(index: Index, queries: np.ndarray, n: int) -> float:
    index.search(queries[:1], 10)  # warm
    start = time.perf_counter()
    for i in range(n):
        index.search(queries[i : i + 1], 10)
    return n / (time.perf_counter() - start)


def qps_batch(index: Index, queries: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    _, rows = index.search(queries, 10)
    return len(queries) / (time.perf_counter() - start), rows


def measure(
    name: str, build: Any, queries: np.ndarray, truth: np.ndarray | None, singles: int
) -> dict[str, Any]:
    """Build an index, then time its searches (see :func:`searches`)."""
    before = rss_mb()
    start = time.perf_counter()
    index = build()
    build_s = time.perf_counter() - start
    return searches(
        name, index, round(build_s, 2), round(rss_mb() - before, 1), queries, truth, singles
    )


def searches(
    name: str,
    index: Index,
    build_s: float,
    memory_mb: float,
    queries: np.ndarray,
    truth: np.ndarray | None,
    singles: int,
) -> dict[str, Any]:
    """One result row: queries/s single and batched, recall@10 against ``truth``; printed."""
    single = qps_single(index, queries, singles)
    batch, rows = qps_batch(index, queries)
    recall = 1.0 if truth is None else recall_at_k(rows, truth)
    row = {
        "index": name,
        "build_s": build_s,
        "memory_mb": memory_mb,
        "qps_single": round(single, 1),
        "qps_batch_1000": round(batch, 1),
        "recall_at_10": round(recall, 4),
    }
    print(json.dumps(row), flush=True)
    return {**row, "rows": rows, "index_obj": index}


def widen(
    built: dict[str, Any],
    param: str,
    values: list[int],
    label: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    singles: int,
) -> list[dict[str, Any]]:
    """The same built index searched more widely (``ef_search``/``nprobe`` = each value)."""
    out = []
    index = built["index_obj"]
    for value in values:
        index.params[param] = value
        out.append(
            searches(
                label(value), index, built["build_s"], built["memory_mb"], queries, truth, singles
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--singles", type=int, default=200, help="single queries timed per index")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    items, queries = catalogue(args.items, args.dim, args.queries)
    print(
        f"catalogue {items.shape}, {items.nbytes / 2**20:.0f} MB; {len(queries)} queries",
        flush=True,
    )
    exact = measure("exact", lambda: ExactIndex.build(items), queries, None, min(args.singles, 50))
    truth = exact["rows"]
    rows = [exact]
    hnsw = measure(
        f"faiss-hnsw m={args.hnsw_m} efC={args.ef_construction} ef={args.ef_search[0]}",
        lambda: FaissIndex.build(
            items,
            "hnsw",
            m=args.hnsw_m,
            ef_construction=args.ef_construction,
            ef_search=args.ef_search[0],
        ),
        queries,
        truth,
        args.singles,
    )
    rows.append(hnsw)
    rows += widen(
        hnsw,
        "ef_search",
        args.ef_search[1:],
        lambda ef: f"faiss-hnsw m={args.hnsw_m} efC={args.ef_construction} ef={ef}",
        queries,
        truth,
        args.singles,
    )
    del hnsw["index_obj"]
    ivf = measure(
        f"faiss-ivf nprobe={args.nprobe[0]}",
        lambda: FaissIndex.build(items, "ivf", nprobe=args.nprobe[0]),
        queries,
        truth,
        args.singles,
    )
    rows.append(ivf)
    nlist = ivf["index_obj"].params["nlist"]
    rows += widen(
        ivf,
        "nprobe",
        args.nprobe[1:],
        lambda p: f"faiss-ivf nlist={nlist} nprobe={p}",
        queries,
        truth,
        args.singles,
    )
    clean = [{k: v for k, v in r.items() if k not in ("rows", "index_obj")} for r in rows]
    exact_single = clean[0]["qps_single"]
    good = [
        r for r in clean[1:] if r["index"].startswith("faiss-hnsw") and r["recall_at_10"] >= 0.95
    ]
    if good:
        best = max(good, key=lambda r: r["qps_single"])
        print(
            f"HNSW at recall@10 >= 0.95: {best['index']}: recall {best['recall_at_10']}, "
            f"{best['qps_single']:.0f} q/s single vs exact {exact_single:.0f} q/s "
            f"= {best['qps_single'] / exact_single:.1f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"items": args.items, "dim": args.dim, "results": clean}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
