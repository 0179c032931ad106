"""Data-parallel training on torch.distributed: who this process is, and its batch slice.

mtrec does not reimplement an engine: ``torchrun`` (or ``mtrec train --workers N``, which
calls it) starts the processes and sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``; this
module joins them (NCCL where the run trains on CUDA GPUs, one per process by
``LOCAL_RANK``; gloo on the CPU), and training wraps the model in
``DistributedDataParallel``. What is mtrec's own is the GLOBAL in-batch softmax: each
process embeds its slice of every batch, the item embeddings of all slices are
all-gathered with their gradients, and each process scores its users against the whole
batch, so N processes of B / N rows train exactly the objective of one process of B rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from mtrec.runtime import local_rank, resolve_device


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes outputs and reports."""
        return self.rank == 0


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def join_from_env(device: str = "auto", timeout_s: float = 300.0) -> World:
    """Join the process group that ``torchrun`` described in the environment, if any, with
    the backend for ``device`` (``TrainConfig.device``; see :func:`backend_for`).

    Without ``WORLD_SIZE`` > 1 this is a single process and nothing happens.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return World()
    if not dist.is_initialized():
        backend = os.environ.get("MTREC_DIST_BACKEND") or backend_for(resolve_device(device))
        if backend == "nccl":  # NCCL talks between GPUs: this process's own, by LOCAL_RANK
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return world()


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors (GPU to GPU), gloo for CPU ones; ``MTREC_DIST_BACKEND``
    overrides it."""
    return "nccl" if device.type == "cuda" else "gloo"


def leave() -> None:
    """Leave the process group together: a barrier first, so no process tears down its
    communication threads while another still talks to it."""
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()  # DistributedDataParallel wrappers hold communication state
        dist.barrier()
        dist.destroy_process_group()


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's contiguous slice of one global batch of ``sum(sizes)`` rows.

    Every process computes the same ``sizes`` from the batch position alone, so slicing
    needs no communication.
    """

    rank: int
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, count: int, where: World) -> Shard:
        per = -(-count // where.size)
        sizes = tuple(min((r + 1) * per, count) - min(r * per, count) for r in range(where.size))
        return cls(where.rank, sizes)

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def count(self) -> int:
        return sum(self.sizes)

    def rows(self) -> slice:
        """This process's rows within the global batch."""
        return slice(self.offset, self.offset + self.sizes[self.rank])

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every process's ``local`` rows, in rank order, as one (count, ...) tensor whose
        gradient flows back to each process's own rows (summed over the processes)."""
        widest = max(self.sizes)
        pad = widest - local.shape[0]
        if pad:
            local = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))])
        gathered: torch.Tensor = _Gather.apply(local, self.rank)  # type: ignore[no-untyped-call]
        parts = torch.split(gathered, widest)
        return torch.cat([part[:size] for part, size in zip(parts, self.sizes, strict=True)])

    @staticmethod
    def total(value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the processes (no gradient)."""
        out = value.detach().clone()
        dist.all_reduce(out)
        return out


class _Gather(torch.autograd.Function):
    """All-gather along rows whose backward sums every process's gradient for this
    process's rows (an all-reduce, which every backend has, then this rank's block)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, rank: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None
