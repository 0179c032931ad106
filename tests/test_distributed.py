"""Data-parallel training with 2 CPU processes on 127.0.0.1 (gloo), through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import planted_ratings

from mtrec.distributed import Shard, World

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _planted_csv(path: Path, **sizes: int) -> Path:
    """A planted-structure log (tests/synthetic.py) as the CSV ``--interactions`` reads."""
    header = "user_id,item_id,rating,timestamp"
    np.savetxt(path, planted_ratings(**sizes), fmt="%d", delimiter=",", header=header, comments="")
    return path


def test_shards_cover_the_global_batch_in_rank_order() -> None:
    for count in (1, 2, 63, 64, 1000):
        shards = [Shard.of(count, World(rank, 3)) for rank in range(3)]
        rows = [r for s in shards for r in range(count)[s.rows()]]
        assert rows == list(range(count))
        assert all(s.count == count and s.sizes == shards[0].sizes for s in shards)
    assert Shard.of(63, World(1, 2)).sizes == (32, 31) and Shard.of(63, World(1, 2)).offset == 32


def _parallel_equals_single(tmp_path: Path, processes: int, device: str, grad_tol: float) -> None:
    out = tmp_path / "result.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}", str(HERE / "distributed_check.py"), str(out), device,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == processes and len(result["cases"]) == 4
    for case in result["cases"]:
        assert case["loss_parallel"] == pytest.approx(case["loss_single"], rel=1e-5), case
        assert case["max_grad_diff"] < grad_tol, case
    if processes == 2:
        assert result["cases"][1]["shard_sizes"] == [32, 31]


def test_two_process_loss_and_gradients_equal_one_process_on_the_whole_batch(
    tmp_path: Path,
) -> None:
    _parallel_equals_single(tmp_path, 2, "cpu", 1e-6)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more CUDA GPUs")
def test_one_process_per_gpu_over_nccl_equals_one_process_on_the_whole_batch(
    tmp_path: Path,
) -> None:
    _parallel_equals_single(tmp_path, torch.cuda.device_count(), "cuda", 1e-5)


def test_workers_2_trains_to_the_one_process_metrics_and_only_rank0_writes(
    tmp_path: Path,
) -> None:
    data = _planted_csv(tmp_path / "log.csv", n_users=120, n_items=80, per_user=25)
    metrics = {}
    for workers in (1, 2):
        out = tmp_path / f"model-{workers}"
        cmd = [
            sys.executable, "-m", "mtrec", "train", "--interactions", str(data), "--epochs", "3",
            "--batch-size", "200", "--precision", "fp32", "--shuffle", "-o", str(out), "-q",
            "--json", "--workers", str(workers), "--preset", "reference",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count('"model"') == 1  # one report, from rank 0
        metrics[workers] = json.loads((out / "metrics.json").read_text())
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    one, two = metrics[1], metrics[2]
    # (the reference preset: no dropout masks, which each process would draw for its rows)
    # the same objective on the same global batches: the same model up to float rounding
    assert two["rmse"] == pytest.approx(one["rmse"], abs=1e-4)
    assert two["top_k_accuracy"] == pytest.approx(one["top_k_accuracy"], abs=0.01)
    assert [e["loss"] for e in two["history"]] == pytest.approx(
        [e["loss"] for e in one["history"]], rel=1e-4
    )


def test_workers_2_resume_from_rank0_checkpoints_ends_identical(tmp_path: Path) -> None:
    data = _planted_csv(tmp_path / "log.csv", n_users=60, n_items=40, per_user=20)
    base = [sys.executable, "-m", "mtrec", "train", "--interactions", str(data),
            "--batch-size", "128", "--shuffle", "-q", "--workers", "2",
            "--preset", "reference"]  # fmt: skip
    checkpoints = tmp_path / "ckpt"
    runs = {
        "whole": ["--epochs", "3", "-o", str(tmp_path / "whole")],
        "first": ["--epochs", "2", "--checkpoint-dir", str(checkpoints), "-o", str(tmp_path / "a")],
        "resumed": ["--epochs", "3", "--checkpoint-dir", str(checkpoints), "--resume",
                    "-o", str(tmp_path / "resumed")],
    }  # fmt: skip
    for name, args in runs.items():
        done = subprocess.run(base + args, capture_output=True, text=True, timeout=120, env=ENV)
        assert done.returncode == 0, (name, done.stderr[-3000:])
        if name == "first":  # written once, by rank 0: at the start of epochs 2 and 3
            assert sorted(p.name for p in checkpoints.iterdir()) == [
                "ckpt-e0002-s000000.safetensors", "ckpt-e0003-s000000.safetensors"
            ]  # fmt: skip
        if name == "resumed":
            assert done.stderr.count("resuming from") == 1  # rank 0 speaks for both
    whole = (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == whole
