"""What one run trains with, set up once: optimizer, sparse or dense updates, loss options,
precision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from mtrec.config import TrainConfig
from mtrec.distributed import world
from mtrec.errors import ConfigError
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel, RetrievalOptions
from mtrec.train.checkpoint import (
    Checkpointing,
)
from mtrec.train.optim import Adagrad, Adam
from mtrec.train.precision import choose_precision


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> Adagrad | Adam:
    """The configured optimizer. Adagrad takes Keras' constants (accumulator starts at 0.1,
    epsilon 1e-7), as the reference; its weight decay is an L2 term in the gradient."""
    if config.optimizer == "adagrad":
        return Adagrad(
            model.parameters(),
            lr=config.learning_rate,
            initial_accumulator_value=0.1,
            eps=1e-7,
            weight_decay=config.weight_decay,
        )
    return Adam(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        decoupled=config.optimizer == "adamw",
    )


@dataclasses.dataclass
class Run:
    """What one call of :func:`_fit` trains with, set up once (see :func:`setup_run`)."""

    model: MultiTaskModel
    forward: torch.nn.Module
    """The model, or its ``DistributedDataParallel`` wrapper in a data-parallel run."""
    data: EncodedInteractions
    config: TrainConfig
    optimizer: Adagrad | Adam
    generator: torch.Generator
    """Draws each epoch's order with ``shuffle``; its state is part of a checkpoint."""
    options: RetrievalOptions
    dtype: torch.dtype | None
    precision_reason: str
    fingerprint: str
    checkpoints: Checkpointing | None
    device: torch.device
    last_checkpoint: Path | None = None

    @property
    def n_batches(self) -> int:
        return -(-len(self.data) // self.config.batch_size)

    @property
    def retrieval_rows(self) -> float:
        """The rows a batch's retrieval loss sums over (the mean batch; 1 for a mean)."""
        if self.config.retrieval_reduction == "mean":
            return 1.0
        return len(self.data) / max(self.n_batches, 1)

    @property
    def writes_checkpoints(self) -> bool:
        """Whether this process writes the run's checkpoints: one process writes for all."""
        return self.checkpoints is not None and world().is_main

    @property
    def read_every(self) -> int:
        """Batches between reads of the losses: every one on the CPU, where reading costs
        nothing and lets a divergence be caught before its step; ``READ_EVERY`` elsewhere."""
        return 1 if self.device.type == "cpu" else READ_EVERY


def setup_run(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    checkpoints: Checkpointing | None,
) -> Run:
    """Seed, build the optimizer (its state where the model is) and the loss options, put
    the model in training mode."""
    device = model.user_embedding.weight.device
    generator = torch.Generator().manual_seed(config.seed)
    model.seed_draws(config.seed)  # dropout masks and new-user rows
    optimizer = make_optimizer(model, config)
    model.train()
    # Row-sparse table gradients: exact for Adagrad without weight decay (untouched rows
    # would not move), and the step then costs O(batch) instead of O(users + items).
    # Data-parallel runs all-reduce the sparse gradients too (gloo's sparse all-reduce:
    # 1M rows, 2 processes, one epoch: 11.3 s, against 36.0 s with dense gradients).
    sparse = sparse_updates(config, model.n_users + model.n_items)
    model.sparse_gradients(sparse and sparse_gradients_work(device))
    parallel = world().size > 1
    options = retrieval_options(config, data, model.n_items, device)
    dtype, reason = choose_precision(model, data, config, options)  # before any DDP hooks
    return Run(
        model=model,
        forward=_data_parallel(model, config) if parallel else model,
        data=data,
        config=config,
        optimizer=optimizer,
        generator=generator,
        options=options,
        dtype=dtype,
        precision_reason=reason,
        fingerprint=run_fingerprint(model, config, len(data)),
        checkpoints=checkpoints,
        device=device,
    )


READ_EVERY = 50
"""Batches between reads of the losses on an accelerator: reading a value from a GPU
waits for all its queued work, so a read every step would stall it once per batch."""


def sparse_gradients_work(device: torch.device) -> bool:
    """Whether row-sparse gradients can train here: not on MPS (no sparse tensors) and not
    under NCCL, which all-reduces dense tensors only (dense steps are cheap on a GPU)."""
    if device.type not in ("cpu", "cuda"):
        return False
    return world().size == 1 or torch.distributed.get_backend() != "nccl"


def _data_parallel(model: MultiTaskModel, config: TrainConfig) -> torch.nn.Module:
    """The model under ``DistributedDataParallel`` (gradients all-reduced during backward);
    a task with weight 0 leaves its parameters without gradients, which DDP must expect."""
    from torch.nn.parallel import DistributedDataParallel

    both = config.retrieval_weight and config.rating_weight
    return DistributedDataParallel(model, find_unused_parameters=not both)


LAZY_MIN_ROWS = 100_000
"""Users plus items from which ``sparse_updates="auto"`` trains Adam(W) lazily: below,
the dense step is cheap and keeps the arithmetic the presets were tuned with (ML-100K has
2,625 rows); above, its O(table) cost a step dominates training (the tuned preset ran at
12.8k examples/s on a 1M-row log with 280k rows, against 212k for Adagrad's sparse step)."""


def sparse_updates(config: TrainConfig, table_rows: int) -> bool:
    """Whether the embedding tables train with row-sparse gradients (see
    ``TrainConfig.sparse_updates``); ``table_rows`` is users plus items."""
    if config.sparse_updates == "off":
        return False
    if config.optimizer == "adagrad":  # exact without weight decay; impossible with it
        if config.weight_decay and config.sparse_updates == "on":
            raise ConfigError(
                "TrainConfig.sparse_updates: Adagrad with weight decay has no sparse update "
                "(the decay moves every row); use Adam(W) or no weight decay"
            )
        return not config.weight_decay
    return config.sparse_updates == "on" or table_rows >= LAZY_MIN_ROWS


def retrieval_options(
    config: TrainConfig,
    data: EncodedInteractions,
    n_items: int,
    device: torch.device | None = None,
) -> RetrievalOptions:
    """The in-batch softmax's options; log-Q from each item's share of the training rows."""
    log_q = None
    if config.logq_correction:
        counts = torch.bincount(data.item, minlength=n_items).double().clamp_min(1.0)
        log_q = (counts / len(data)).log().float()
        if device is not None:
            log_q = log_q.to(device)
    return RetrievalOptions(
        reduction=config.retrieval_reduction,
        temperature=config.temperature,
        log_q=log_q,
        remove_accidental_hits=config.remove_accidental_hits,
        positive_min_label=config.positive_min_rating,
    )


def run_fingerprint(model: MultiTaskModel, config: TrainConfig, n_rows: int) -> str:
    """Identifies a run for its checkpoints: model shape, hyperparameters except the epoch
    count (a run may be extended) and the device (it may resume on another), and the
    training data's size."""
    described = {
        "model": model.config.to_dict(),
        "tables": [model.user_embedding.num_embeddings, model.n_items],
        "train": {k: v for k, v in config.to_dict().items() if k not in ("epochs", "device")},
        "rows": n_rows,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
