"""The GPU check (issue 15): run on any machine with a CUDA GPU, it checks that training on
the GPU gives the models the CPU gives, and measures how much faster it is.

    python benchmarks/gpu_check.py                  # ML-100K checks + the 1M synthetic log
    python benchmarks/gpu_check.py --sizes 1000000 25000000

1. The reference comparison (``mtrec compare``, seeds 42, 1, 2) trained on the GPU lands
   in the published bands (the same as ``tests/test_reference.py`` asserts on the CPU).
2. The tuned preset on the GPU meets its targets (honest top-10 >= 0.245, top-10 >= 0.08,
   RMSE <= 0.229; three-seed means).
3. Training throughput (``benchmarks/train_throughput.py``: one epoch of the synthetic
   log, reference/tuned/default presets) on ``cuda`` against ``cpu``, as examples/s.
4. With two or more GPUs: the NCCL data-parallel check (loss and gradients of a global
   batch against one process, to 1e-5) and a ``torchrun`` training run on NCCL, one process
   per GPU, ending with the plain run's metrics. With one GPU NCCL has no peer: skipped.

Prints one JSON line per step and a summary; exits 1 if any check failed, 0 otherwise
(also when there is no GPU: it says so and checks nothing).
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
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
SEEDS = [42, 1, 2]


def report(step: str, ok: bool, **figures: Any) -> bool:
    print(json.dumps({"step": step, "ok": ok, **figures}), flush=True)
    return ok


def _compare_on_gpu(preset_name: str) -> Any:
    """``mtrec compare`` of ``preset_name`` on ML-100K, seeds ``SEEDS``, trained on CUDA."""
    from mtrec.config import preset
    from mtrec.data import load_movielens
    from mtrec.experiments import compare_seeds

    model_config, train_config = preset(preset_name, device="cuda")
    data = load_movielens("ml-100k")
    return compare_seeds(data, SEEDS, model_config=model_config, train_config=train_config)


def reference_on_gpu() -> bool:
    started = time.perf_counter()
    result = _compare_on_gpu("reference")
    runs = [result, *result.other_seeds]
    multi = [next(m for m in run.models if m.name == "multi-task") for run in runs]
    top10 = statistics.mean(m.top_k_accuracy for m in multi)
    rmse = statistics.mean(m.rmse for m in multi)
    ok = 0.012 <= top10 <= 0.035 and 0.235 <= rmse <= 0.265
    ok &= all(m.device.startswith("cuda") for m in multi)
    return report(
        "reference comparison on cuda (bands: top-10 0.012-0.035, RMSE 0.235-0.265)",
        ok,
        top10=round(top10, 4),
        rmse=round(rmse, 4),
        devices=sorted({m.device for m in multi}),
        precision=sorted({m.precision for m in multi}),
        seconds=round(time.perf_counter() - started, 1),
    )


def tuned_on_gpu() -> bool:
    result = _compare_on_gpu("tuned")
    multi = {k: v["mean"] for k, v in result.summary()["multi-task"].items()}
    ok = (
        multi["honest_top_k_accuracy"] >= 0.245
        and multi["top_k_accuracy"] >= 0.08
        and multi["rmse"] <= 0.229
    )
    return report(
        "tuned preset on cuda (targets: honest top-10 >= 0.245, top-10 >= 0.08, RMSE <= 0.229)",
        ok,
        honest_top10=round(multi["honest_top_k_accuracy"], 4),
        top10=round(multi["top_k_accuracy"], 4),
        rmse=round(multi["rmse"], 4),
        train_seconds=round(multi["train_seconds"], 2),
    )


def throughput(sizes: list[int], presets: list[str], data_dir: Path) -> bool:
    rates: dict[tuple[int, str, str], int] = {}
    for device in ("cuda", "cpu"):
        cmd = [
            sys.executable, str(HERE / "train_throughput.py"), "--device", device,
            "--sizes", *map(str, sizes), "--presets", *presets, "--data-dir", str(data_dir),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rates[(row["rows"], row["preset"], device)] = row["examples_per_s"]
                report(f"throughput {device}", True, **row)
    ok = True
    for size in sizes:
        for name in presets:
            gpu, cpu = rates[(size, name, "cuda")], rates[(size, name, "cpu")]
            ok &= report(
                f"speed-up {name} at {size:,} rows",
                gpu >= cpu,
                cuda_examples_per_s=gpu,
                cpu_examples_per_s=cpu,
                ratio=round(gpu / cpu, 2),
            )
    return ok


def nccl(tmp: Path) -> bool:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return report("nccl data parallel", True, skipped=f"{gpus} GPU: NCCL needs two or more")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp / "equivalence.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={gpus}", str(HERE.parent / "tests" / "distributed_check.py"),
        str(out), "cuda",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    cases = json.loads(out.read_text())["cases"]
    same = all(
        abs(c["loss_parallel"] - c["loss_single"]) <= 1e-5 * abs(c["loss_single"])
        and c["max_grad_diff"] < 1e-5
        for c in cases
    )
    ok = report("nccl loss and gradients of a global batch", same, cases=cases)
    metrics = {}
    for processes in (1, gpus):
        model = tmp / f"model-{processes}"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", "-m", "mtrec", "train", "--preset", "reference",
            "--epochs", "3", "--device", "cuda", "--precision", "fp32", "-o", str(model), "-q",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        metrics[processes] = json.loads((model / "metrics.json").read_text())
    one, many = metrics[1], metrics[gpus]
    close = (
        abs(one["rmse"] - many["rmse"]) <= 1e-3
        and abs(one["top_k_accuracy"] - many["top_k_accuracy"]) <= 0.01
    )
    return ok & report(
        f"torchrun on nccl, {gpus} processes, against one process",
        close,
        rmse=[one["rmse"], many["rmse"]],
        top10=[one["top_k_accuracy"], many["top_k_accuracy"]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--presets", nargs="+", default=["reference", "tuned", "default"])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        report("cuda", True, skipped=f"no CUDA GPU here (torch {torch.__version__})")
        return
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report("cuda", True, torch=torch.__version__, cuda=torch.version.cuda, gpus=names)
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            reference_on_gpu(),
            tuned_on_gpu(),
            throughput(args.sizes, args.presets, args.data_dir),
            nccl(Path(tmp)),
        ]
    print(json.dumps({"all_ok": all(results)}), flush=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
