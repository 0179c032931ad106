"""Metrics as pure functions on tensors."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray


def rmse(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error of two (n,) tensors."""
    if predicted.shape != target.shape or predicted.numel() == 0:
        raise ValueError(
            f"rmse: expected two equal non-empty shapes, got {predicted.shape}, {target.shape}"
        )
    return float(torch.sqrt(torch.mean((predicted.double() - target.double()) ** 2)))


def top_k_hits(top_rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(n, k) retrieved rows, (n,) held-out rows -> (n,) bool: is the target in the top k."""
    return (top_rows == target.unsqueeze(1)).any(dim=1)


def mae(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error of two (n,) tensors."""
    if predicted.shape != target.shape or predicted.numel() == 0:
        shapes = f"{predicted.shape}, {target.shape}"
        raise ValueError(f"mae: expected two equal non-empty shapes, got {shapes}")
    return float(torch.mean(torch.abs(predicted.double() - target.double())))


def ranking_metrics(
    top: NDArray[np.int64], relevant_user: NDArray[np.int64], relevant_item: NDArray[np.int64]
) -> dict[str, float]:
    """Recall@k, NDCG@k and MRR@k of top-k lists, averaged over users with a relevant item.

    Args:
        top: (n_users, k) item rows per user, best first; -1 pads a short list.
        relevant_user: positions (0..n_users-1) of the users of each relevant (user, item).
        relevant_item: the item rows of those pairs.

    Recall@k is hits / (the user's relevant items); NDCG@k uses binary gains with
    ideal DCG over min(k, relevant) positions; MRR@k is 1 / rank of the first hit (0
    if none in the top k). Users with no relevant item are left out of every mean.
    """
    per_user = ranking_metrics_per_user(top, relevant_user, relevant_item)
    if per_user["recall"].size == 0:
        return {"recall": float("nan"), "ndcg": float("nan"), "mrr": float("nan"), "n_users": 0.0}
    means = {key: float(values.mean()) for key, values in per_user.items()}
    return {**means, "n_users": float(per_user["recall"].size)}


def ranking_metrics_per_user(
    top: NDArray[np.int64], relevant_user: NDArray[np.int64], relevant_item: NDArray[np.int64]
) -> dict[str, NDArray[np.float64]]:
    """:func:`ranking_metrics` before averaging: one value per user with a relevant item."""
    n_users, k = top.shape
    width = int(max(top.max(initial=-1), relevant_item.max(initial=-1))) + 2
    keys = np.arange(n_users, dtype=np.int64)[:, None] * width + (top + 1)  # +1: -1 pads
    hits = np.isin(keys, relevant_user * width + relevant_item + 1) & (top >= 0)
    n_rel = np.bincount(relevant_user, minlength=n_users)
    judged = n_rel > 0
    hits, n_rel = hits[judged], n_rel[judged]
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = (hits * discount).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    first = np.where(hits.any(axis=1), 1.0 / (hits.argmax(axis=1) + 1.0), 0.0)
    return {"recall": hits.sum(axis=1) / n_rel, "ndcg": dcg / idcg, "mrr": first}
