"""The two tasks as pure loss functions over tensors."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def retrieval_loss(
    query: torch.Tensor, candidate: torch.Tensor, reduction: Literal["sum", "mean"] = "sum"
) -> torch.Tensor:
    """In-batch softmax: row i's own candidate is the positive, the batch's others negatives.

    Args:
        query: (B, d) user embeddings.
        candidate: (B, d) item embeddings; ``candidate[i]`` is what ``query[i]`` rated.
        reduction: ``"sum"`` over the batch (the reference) or ``"mean"``.

    Returns:
        A scalar: the cross-entropy of logits ``query @ candidate.T`` (B, B) against the
        diagonal.
    """
    logits = query @ candidate.T  # (B, B)
    target = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def rating_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and true scaled ratings, both (B,)."""
    return F.mse_loss(predicted, target, reduction="mean")
