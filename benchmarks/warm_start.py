"""A warm start against the old model and a full retrain, on MovieLens-100K split by time.

The log sorted by time: the first 60% is what the old model knew (trained on every row),
the next 20% arrives later (the warm start continues the old model on it, with
``--replay`` shares of the old model's own rows training its rating head again), the last
20% is the test. The full retrain sees the first 80% from scratch. Items and users come
from the log alone (no metadata: a user's own file), so the later parts bring new ids.
Every model is measured on the test rows the old model can score (its users and items),
under the honest protocol.

    python benchmarks/warm_start.py --preset default --seeds 42,1 --replay 0,0.25,0.5,1
    python benchmarks/warm_start.py --validation ...   # one window earlier: choose here
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import numpy as np

import mtrec
from mtrec.data import Dataset
from mtrec.features import known_rows


def parts(ds: Dataset, earlier: float = 0.0) -> dict[str, Dataset]:
    """old (first 60% by time), new (next 20%), both (first 80%), test (last 20%); each
    boundary ``earlier`` sooner (0.2: the validation window, which never reads the last
    20%)."""
    ev = ds.interactions
    order = np.argsort(ev.timestamp, kind="stable")
    n = len(order)
    a, b, c = 0.6 - earlier, 0.8 - earlier, 1.0 - earlier
    cut = {"old": (0, a), "new": (a, b), "both": (0, b), "test": (b, c)}
    return {
        name: Dataset(name, ev.take(np.sort(order[int(n * a) : int(n * b)])), has_ratings=True)
        for name, (a, b) in cut.items()
    }


def scorable(test: Dataset, model: mtrec.Model) -> Dataset:
    known = known_rows(test.interactions, model.vocabs).known
    return Dataset("test", test.interactions.take(np.flatnonzero(known)), has_ratings=True)


def row(name: str, model: mtrec.Model, test: Dataset, seconds: float) -> dict[str, Any]:
    measured = model.evaluate(test)
    return {
        "model": name,
        "recall@10": measured["served"]["recall"],
        "ndcg@10": measured["served"]["ndcg"],
        "rmse": measured["rmse"],
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="default")
    ap.add_argument("--seeds", default="42,1")
    ap.add_argument("--replay", default="0,0.25,0.5,1")
    ap.add_argument(
        "--validation",
        action="store_true",
        help="every part 20%% earlier (old 0-40%%, new 40-60%%, measured on 60-80%%): the "
        "window where a default (e.g. the replay share) is chosen without the test part",
    )
    ap.add_argument(
        "--warm-epochs",
        default="",
        help="comma-separated epoch counts for the warm starts (default: the saved config's)",
    )
    args = ap.parse_args()
    data = parts(mtrec.load_movielens(), 0.2 if args.validation else 0.0)
    print("| seed | model | recall@10 | NDCG@10 | RMSE | train s |")
    print("|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        old = mtrec.fit(data["old"], args.preset, holdout=None, seed=seed)
        rows = [row("old", old, test := scorable(data["test"], old), time.perf_counter() - started)]
        started = time.perf_counter()
        full = mtrec.fit(data["both"], args.preset, holdout=None, seed=seed)
        rows.append(row("full retrain", full, test, time.perf_counter() - started))
        epoch_counts = [int(e) for e in args.warm_epochs.split(",") if e] or [None]
        for share, epochs in itertools.product(map(float, args.replay.split(",")), epoch_counts):
            started = time.perf_counter()
            more = {} if epochs is None else {"epochs": epochs}
            warm = mtrec.fit(
                data["new"], init_from=old, holdout=None, replay=share, seed=seed, **more
            )
            name = f"warm, replay {share:g}" + ("" if epochs is None else f", {epochs} epochs")
            rows.append(row(name, warm, test, time.perf_counter() - started))
        for r in rows:
            print(
                f"| {seed} | {r['model']} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
                f"{r['rmse']:.4f} | {r['seconds']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
