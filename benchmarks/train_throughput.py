"""Training throughput and peak memory at 1M, 5M and 25M interactions (issue 6).

For each size, a fresh process loads the synthetic log from Parquet (written once with
``mtrec data synth``'s generator: 200k users, 80k items), builds the vocabularies, encodes
the rows, and trains the reference multi-task model (embedding 32, head 256-64-1, Adagrad
0.1, both weights 1) for one epoch at batch 1,000. It prints load, encode and training
figures and the process's peak resident memory (ru_maxrss).

    python benchmarks/train_throughput.py                    # 1M, 5M, 25M
    python benchmarks/train_throughput.py --sizes 1000000 --dense   # the pre-sparse step
    python benchmarks/train_throughput.py --sizes 1000000 --presets reference tuned default
    python benchmarks/train_throughput.py --sizes 25000000 --sample 100000 --presets default

``--dense`` trains with dense embedding gradients (the step before row-sparse updates),
for a before/after comparison on the same machine. ``--sample N`` trains on N rows drawn
from the log while the history tower reads the whole log's histories: the step rate of
that size without a whole epoch. Run nothing else meanwhile: on a shared 2-core machine
another busy process slows PyTorch several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(
    path: str, batch: int, dense: bool, epochs: int, preset_name: str, device: str, sample: int
) -> None:
    import dataclasses
    import importlib

    import torch

    from mtrec.config import ModelConfig, TrainConfig, preset
    from mtrec.data.files import load_interactions
    from mtrec.features import RatingScale, Vocabs, encode, seen_items
    from mtrec.model import MultiTaskModel
    from mtrec.runtime import tune_allocator
    from mtrec.train import train

    training = importlib.import_module("mtrec.train.setup")  # sparse_updates is read there
    tune_allocator()  # as `mtrec train` does: large blocks stay in the heap, not re-faulted
    if dense:
        training.sparse_updates = lambda config, rows: False
    start = time.perf_counter()
    dataset = load_interactions(path)
    loaded = time.perf_counter()
    vocabs = Vocabs.from_dataset(dataset)
    data = encode(dataset.interactions, vocabs, RatingScale.of(dataset))
    encoded = time.perf_counter()
    seen = seen_items(data, len(vocabs.users))  # every row's: the histories of the full log
    if sample:  # a seeded sample of the rows: the steps of this size's epoch, fewer of them
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        data = data.subset(order[:sample])
    model_config, train_config = ModelConfig(), TrainConfig(seed=0, shuffle=True)
    if preset_name != "throughput":  # a preset's model, less the side features (no metadata)
        model_config, train_config = preset(preset_name, seed=0)
        model_config = dataclasses.replace(model_config, user_features=(), item_features=())
    train_config = dataclasses.replace(train_config, epochs=epochs, batch_size=batch, device=device)
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), model_config, seed=0)
    model.set_history(seen)  # a no-op without history
    history = train(model, data, train_config)
    rows = len(data) * epochs
    print(
        json.dumps(
            {
                "rows": len(data),
                "users": len(vocabs.users),
                "items": len(vocabs.items),
                "load_s": round(loaded - start, 2),
                "encode_s": round(encoded - loaded, 2),
                "train_s": round(history.seconds, 2),
                "examples_per_s": round(rows / history.seconds),
                "precision": history.precision,
                "device": history.device,
                "threads": torch.get_num_threads(),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "sparse": training.sparse_updates(train_config, model.n_users + model.n_items)
                and not dense,
                "preset": preset_name,
            }
        )
    )


def matmul_gflops(n: int = 2048, rounds: int = 5) -> float:
    """This machine's fp32 matmul rate (n x n, best of ``rounds``, all threads): issue 15
    asks for it beside a throughput figure measured on a machine slower than its target's."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(rounds + 1):  # the first warms the thread pool and caches
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 25_000_000])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=80_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dense", action="store_true", help="Dense gradients (before).")
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["throughput"],
        help="throughput (the model above) and/or named presets (reference, tuned, default: "
        "their model and optimizer without side features; the ranking stage is not trained)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
    parser.add_argument(
        "--sample",
        type=int,
        default=0,
        help="Train on this many rows drawn from the log (seeded), the history tower still "
        "reading the whole log's histories: a size's step rate without a whole epoch.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch_size, args.dense, args.epochs, args.presets[0], args.device,
              args.sample)  # fmt: skip
        return
    from mtrec.data import synthesize
    from mtrec.data.synth import write_parquet

    print(
        f"cpu: {cpu_name()}, {os.cpu_count()} threads, fp32 matmul {matmul_gflops():.0f} "
        f"GFLOP/s (2048 x 2048); batch {args.batch_size}",
        flush=True,
    )
    for size in args.sizes:
        path = args.data_dir / f"mtrec-synth-{size}-{args.users}-{args.items}.parquet"
        if not path.exists():
            start = time.perf_counter()
            write_parquet(synthesize(size, args.users, args.items, seed=0), path)
            print(f"wrote {path} in {time.perf_counter() - start:.1f} s", flush=True)
        for name in args.presets:
            cmd = [sys.executable, __file__, "--child", str(path), "--presets", name,
                   "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                   "--device", args.device, "--sample", str(args.sample)]  # fmt: skip
            if args.dense:
                cmd.append("--dense")
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
