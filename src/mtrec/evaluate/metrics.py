"""Metrics as pure functions on tensors."""

from __future__ import annotations

import torch


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
