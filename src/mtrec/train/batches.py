"""A batch's rows on the training device, and its loss options."""

from __future__ import annotations

import dataclasses

import torch

from mtrec.features import EncodedInteractions
from mtrec.model import RetrievalOptions
from mtrec.runtime import move


def wait_for(device: torch.device) -> None:
    """Block until ``device`` has done its queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_batch(
    data: EncodedInteractions, rows: torch.Tensor | slice, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``rows`` of ``data`` (gathered on the host) as (user, item, label) on ``device``."""
    return tuple(move(column[rows], device) for column in (data.user, data.item, data.label))  # type: ignore[return-value]


def batch_options(
    options: RetrievalOptions,
    data: EncodedInteractions,
    rows: torch.Tensor | slice,
    device: torch.device,
) -> RetrievalOptions:
    """``options`` for the batch of ``rows``: which of them train the rating head only."""
    if data.rating_only is None:
        return options
    return dataclasses.replace(options, rating_only=move(data.rating_only[rows], device))
