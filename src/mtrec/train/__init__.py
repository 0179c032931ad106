"""Training: the loop on one screen, and what it trains with.

``loop`` (``train``: the loop, validation, early stopping), ``setup`` (the optimizer,
sparse or dense updates, the in-batch softmax's options, set up once a run),
``precision`` (bf16 only where it is measured faster), ``batches``, ``records`` (each
epoch's losses and the run's record), ``checkpoint`` and ``resume`` (crash-safe
checkpoints), ``optim`` (Adagrad and Adam(W) with row-sparse steps).
"""

from mtrec.train.loop import Checks, Hooks, train, validation_loss
from mtrec.train.precision import choose_precision, native_bf16
from mtrec.train.records import (
    EpochLines,
    EpochStats,
    History,
    Progress,
    TrainingRecord,
    losses_text,
)
from mtrec.train.setup import (
    make_optimizer,
    retrieval_options,
    run_fingerprint,
    sparse_gradients_work,
    sparse_updates,
)

__all__ = [
    "Checks", "EpochLines", "EpochStats", "History", "Hooks", "Progress", "TrainingRecord",
    "choose_precision", "losses_text", "make_optimizer", "native_bf16", "retrieval_options",
    "run_fingerprint", "sparse_gradients_work", "sparse_updates", "train", "validation_loss",
]  # fmt: skip
