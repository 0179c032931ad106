"""Simple baselines, evaluated by the same code as the model, so a reader sees whether the
model earns its keep.

Retrieval baselines are expressed as user and item vectors whose inner products are the
scores, so that they go through the same exact index, exclusions and metrics:

- popularity: every user the vector [1], every item its training count;
- EASE (Steck 2019): the closed-form item-item model ``B = I - P / diag(P)`` with
  ``P = (X^T X + lambda I)^-1`` and zero diagonal; the user vector is the user's
  training row of ``X``, the item vector a column of ``B``.

The rating baseline is the global mean of the training ratings.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.errors import ConfigError
from mtrec.features import EncodedInteractions

EASE_MAX_ITEMS = 30_000
"""EASE inverts an (items x items) matrix: beyond this it would not fit in this machine's memory."""


@dataclasses.dataclass(frozen=True)
class RetrievalVectors:
    """Scores of a retrieval baseline as inner products: ``users[u] . items[i]``."""

    name: str
    users: NDArray[np.float32]
    items: NDArray[np.float32]


def popularity(train: EncodedInteractions, n_users: int, n_items: int) -> RetrievalVectors:
    """Recommend the items with the most training interactions, to everyone."""
    counts = np.bincount(train.item.numpy(), minlength=n_items).astype(np.float32)
    return RetrievalVectors("popularity", np.ones((n_users, 1), dtype=np.float32), counts[:, None])


def ease(
    train: EncodedInteractions, n_users: int, n_items: int, lam: float = 500.0
) -> RetrievalVectors:
    """EASE with L2 weight ``lam`` over binary interactions (every rating counts)."""
    if n_items > EASE_MAX_ITEMS:
        raise ConfigError(
            f"EASE: {n_items} items need an {n_items} x {n_items} matrix (at most {EASE_MAX_ITEMS})"
        )
    if lam <= 0:
        raise ConfigError(f"EASE: lambda must be > 0, got {lam}")
    x = np.zeros((n_users, n_items), dtype=np.float32)
    x[train.user.numpy(), train.item.numpy()] = 1.0
    gram = torch.from_numpy(x).double().T @ torch.from_numpy(x).double()
    gram.diagonal().add_(lam)
    p = torch.linalg.inv(gram)
    b = -p / p.diagonal()  # B_ij = -P_ij / P_jj
    b.diagonal().zero_()
    return RetrievalVectors(f"EASE lambda={lam:g}", x, b.T.float().contiguous().numpy())


def global_mean(train: EncodedInteractions) -> float:
    """The mean scaled training rating: predict it for everything."""
    return float(train.label.double().mean())
