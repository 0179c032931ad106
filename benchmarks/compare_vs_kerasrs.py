"""Wall time of `mtrec compare` against the Keras-RS (JAX) port of the same procedure.

Both run the reference protocol end to end as separate processes (process start to
exit, MovieLens-100K already cached), alternately A B A B ..., and the median of the
per-round ratios is reported, since timings on shared 2-core machines are noisy.

    bash ../shared/anchors/kerasrs/setup.sh /tmp/kerasrs-anchor   # once
    python benchmarks/compare_vs_kerasrs.py --rounds 5

Prints one line per run and a summary; ``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return wall, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--anchor-dir",
        type=Path,
        default=Path("/tmp/kerasrs-anchor"),
        help="what ../shared/anchors/kerasrs/setup.sh made (venv/, ml-100k.inter)",
    )
    ap.add_argument(
        "--anchor-script",
        type=Path,
        default=REPO.parent / "shared" / "anchors" / "kerasrs" / "anchor.py",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    anchor_python = args.anchor_dir / "venv" / "bin" / "python"
    for needed in (anchor_python, args.anchor_script, args.anchor_dir / "ml-100k.inter"):
        if not needed.exists():
            sys.exit(
                f"missing {needed}: run ../shared/anchors/kerasrs/setup.sh {args.anchor_dir} first"
            )
    out = Path(tempfile.mkdtemp(prefix="mtrec-bench-"))
    subprocess.run(
        [sys.executable, "-m", "mtrec", "data", "fetch"], check=True, capture_output=True
    )
    mtrec_cmd = [sys.executable, "-m", "mtrec", "compare", "--quiet", "--json", "-o", str(out)]
    anchor_cmd = [
        str(anchor_python),
        str(args.anchor_script),
        "--data",
        str(args.anchor_dir / "ml-100k.inter"),
    ]
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    rows = []
    for n in range(1, args.rounds + 1):
        mtrec_s, mtrec_out = timed(mtrec_cmd)
        anchor_s, anchor_out = timed(anchor_cmd)
        rows.append(
            {"round": n, "mtrec_s": mtrec_s, "kerasrs_s": anchor_s, "ratio": mtrec_s / anchor_s}
        )
        print(
            f"round {n}: mtrec {mtrec_s:6.2f} s   keras-rs {anchor_s:6.2f} s   "
            f"ratio {mtrec_s / anchor_s:.3f}"
        )
    multi = next(m for m in json.loads(mtrec_out)["models"] if m["name"] == "multi-task")
    anchor_multi = next(
        json.loads(line) for line in anchor_out.splitlines() if '"multi-task"' in line
    )
    summary = {
        "rounds": rows,
        "median_mtrec_s": statistics.median(r["mtrec_s"] for r in rows),
        "median_kerasrs_s": statistics.median(r["kerasrs_s"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "multi_task": {
            "mtrec": [multi["top_k_accuracy"], multi["rmse"]],
            "kerasrs": [anchor_multi["top10_accuracy"], anchor_multi["rmse"]],
        },
        "load_average_after": os.getloadavg(),
    }
    print(
        f"median: mtrec {summary['median_mtrec_s']:.2f} s, "
        f"keras-rs {summary['median_kerasrs_s']:.2f} s, "
        f"median ratio {summary['median_ratio']:.3f}"
    )
    print(
        f"multi-task (top-10 accuracy, RMSE): mtrec {summary['multi_task']['mtrec']}, "
        f"keras-rs {summary['multi_task']['kerasrs']}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
