"""Run under ``torchrun --nproc-per-node 2``: the data-parallel loss and gradients of a
fixed batch against the one-process loss and gradients of the same (concatenated) batch.

Rank 0 writes ``{"cases": [{"name", "loss_single", "loss_parallel", "max_grad_diff"}]}``
to the path given as the first argument; tests/test_distributed.py checks it. A second
argument ``cuda`` runs it on one GPU per process over NCCL (``gloo`` on the CPU otherwise).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from mtrec.config import ModelConfig
from mtrec.distributed import Shard, join_from_env, leave
from mtrec.model import MultiTaskModel, RetrievalOptions
from mtrec.runtime import resolve_device

CASES = {
    "reference": (64, RetrievalOptions()),
    "uneven batch": (63, RetrievalOptions()),
    "mean, log-Q, accidental hits, temperature": (
        64,
        RetrievalOptions(
            reduction="mean",
            temperature=0.5,
            log_q=torch.linspace(-6.0, -2.0, 40),
            remove_accidental_hits=True,
        ),
    ),
    "positives from 4 stars": (64, RetrievalOptions(reduction="mean", positive_min_label=0.75)),
}


def main(out_path: str, device_spec: str = "cpu") -> None:
    where = join_from_env(device_spec)
    device = resolve_device(device_spec)
    torch.set_num_threads(1)
    results = []
    for name, (batch, given) in CASES.items():
        gen = torch.Generator().manual_seed(7)
        user = torch.randint(0, 50, (batch,), generator=gen).to(device)
        item = torch.randint(0, 40, (batch,), generator=gen).to(device)  # accidental hits
        label = (torch.randint(0, 5, (batch,), generator=gen).float() / 4).to(device)
        log_q = None if given.log_q is None else given.log_q.to(device)
        options = dataclasses.replace(given, log_q=log_q)
        config = ModelConfig(head_layers=(16, 8))
        single = MultiTaskModel(50, 40, config, seed=3).to(device)
        parallel = DistributedDataParallel(copy.deepcopy(single))
        one = single.loss(user, item, label, 1.0, 1.0, None, options)
        one.total.backward()
        shard = Shard.of(batch, where)
        mine = shard.rows()
        total, _, _ = parallel(
            user[mine], item[mine], label[mine], 1.0, 1.0, None, dataclasses.replace(options), shard
        )
        (total * where.size).backward()
        summed = shard.total(total)
        diff = max(
            float((a.grad - b.grad).abs().max())  # type: ignore[operator]
            for a, b in zip(single.parameters(), parallel.module.parameters(), strict=True)
        )
        results.append(
            {
                "name": name,
                "loss_single": float(one.total.detach()),
                "loss_parallel": float(summed.detach()),
                "max_grad_diff": diff,
                "shard_sizes": list(shard.sizes),
            }
        )
        del parallel  # before leaving the group: it holds communication state
    if where.is_main:
        with open(out_path, "w", encoding="utf-8") as fh:
            json.dump({"world_size": where.size, "cases": results}, fh)
    leave()


if __name__ == "__main__":
    main(*sys.argv[1:3])
