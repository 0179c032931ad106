"""The model's small parts: the rating head in NumPy for serving, dropout with its own
generator, the history pooling's bag sum, the loss's parts.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn


class Histories(typing.Protocol):
    """Users' rated items as CSR arrays (``features.SeenItems`` is one)."""

    @property
    def indptr(self) -> NDArray[np.int64]: ...
    @property
    def items(self) -> NDArray[np.int64]: ...
    @property
    def labels(self) -> NDArray[np.float32]: ...


@dataclasses.dataclass(frozen=True)
class SplitHead:
    """The rating head in NumPy for serving, equal to :meth:`MultiTaskModel.predict_rating`
    in inference: the first layer's item side is computed once per item and its user side
    once per user, not once per (user, candidate); NumPy because a request's candidates
    cost a few torch dispatches more than the arithmetic (measured 120 against
    240 microseconds per request on ML-100K)."""

    user_weight: NDArray[np.float32]
    """(d, h) the first layer's user columns."""
    item_part: NDArray[np.float32]
    """(n_items, h) each item's share of the first layer, its bias included."""
    layers: tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]
    """The following layers as (in, out) weights and biases; ReLU between them."""
    user_bias: NDArray[np.float32] | None
    item_bias: NDArray[np.float32] | None

    def predict(
        self, users: NDArray[np.float32], user_rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """(n, d) user embeddings, their (n,) rows (-1: known by a history alone, no bias)
        and (n, c) item rows -> (n, c) predicted scaled ratings."""
        n, c = items.shape
        hidden = np.take(self.item_part, items, axis=0)  # new: the arithmetic is in place
        hidden += (users @ self.user_weight)[:, None, :]
        out = relu_in_place(hidden).reshape(n * c, hidden.shape[-1])  # c may be 0
        for i, (weight, bias) in enumerate(self.layers):
            out = out @ weight
            out += bias
            if i < len(self.layers) - 1:
                relu_in_place(out)
        rating = out.reshape(n, c)
        if self.user_bias is not None and self.item_bias is not None:
            known = user_rows >= 0
            rating = rating + np.where(known, self.user_bias[np.maximum(user_rows, 0)], 0)[:, None]
            rating = rating + self.item_bias[items]
        return rating.astype(np.float32, copy=False)


class BagSum(torch.autograd.Function):
    """``F.embedding_bag(items, weight, offsets, mode="sum", per_sample_weights=...)`` whose
    gradient comes out sparse and coalesced: each distinct item's row once, summed over its
    entries in their order.

    embedding_bag's own sparse backward first copies the bag's gradient to every entry
    ((entries, d): ~220k x 64, 56 MB a batch of the history tower at 25M rows, too large
    to come from glibc's heap, so its pages fault in each step: 23 ms), and the optimizer
    then sums those copies per row (``row_sums``: another 10 ms). Here the sum per item is
    itself an embedding bag, over the entries grouped by item: (distinct items, d).
    """

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        items: torch.Tensor,
        offsets: torch.Tensor,
        per_entry: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(items, offsets, per_entry)
        ctx.rows = weight.shape[0]
        return F.embedding_bag(items, weight, offsets, mode="sum", per_sample_weights=per_entry)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        items, offsets, per_entry = ctx.saved_tensors
        lengths = torch.diff(offsets, append=offsets.new_tensor([len(items)]))
        bag = torch.repeat_interleave(lengths)  # each entry's bag
        order = torch.argsort(items, stable=True)  # entries grouped by item, in their order
        rows, counts = torch.unique_consecutive(items.index_select(0, order), return_counts=True)
        summed = F.embedding_bag(
            bag.index_select(0, order),
            grad.contiguous(),
            torch.cumsum(counts, 0) - counts,
            mode="sum",
            per_sample_weights=per_entry.index_select(0, order).to(grad.dtype),
        )
        shape = (ctx.rows, grad.shape[1])
        sparse = torch.sparse_coo_tensor(
            rows[None], summed, shape, is_coalesced=True, check_invariants=False
        )
        return sparse, None, None, None


def uniform_init(weight: torch.Tensor, limit: float, gen: torch.Generator) -> None:
    """Fill ``weight`` from U(-limit, limit) drawn on the CPU by ``gen``: one seed gives the
    same initial model on every device (a CPU generator cannot fill a GPU tensor)."""
    drawn = torch.empty(weight.shape, dtype=weight.dtype).uniform_(-limit, limit, generator=gen)
    weight.copy_(drawn)


def relu_in_place(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """``x`` with its negatives set to 0, in place. Against an array of zeros: NumPy's
    maximum against a scalar 0 took 7-9 us for a request's 67 x 256 (2.9 us this way)."""
    return np.maximum(x, np.zeros(x.shape, dtype=x.dtype), out=x)


class Dropout(nn.Module):
    """``nn.Dropout``'s arithmetic with a cheaper mask on the CPU.

    The CPU generator (a Mersenne twister, one thread) is what dropout costs there:
    ``bernoulli_`` (what ``nn.Dropout`` draws with) took 1.9 ms and ``torch.rand`` 0.72 ms
    for a 1000 x 256 batch. The mask takes 16 random bits per unit instead, four from each
    64-bit draw (0.31 ms with the comparison): a unit is dropped with probability
    ``rate`` = round(p * 65536) / 65536 (0.2 -> 0.1999969) and the kept ones scaled by
    1 / (1 - rate), so the layer stays unbiased. Elsewhere (GPU generators are fast) the
    mask is ``torch.rand``'s. The masks come from ``generator`` (the model's ``draws``),
    or from PyTorch's global one where none was given.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        if x.device.type == "cpu":
            threshold = min(round(self.p * 65536), 65535)  # p < 1 keeps a unit now and then
            n_words = (x.numel() + 3) // 4
            words = torch.randint(
                -(2**63), 2**63 - 1, (n_words,), dtype=torch.int64, generator=self.generator
            )
            lanes = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform, [-2^15, 2^15)
            keep, rate = lanes >= threshold - 32768, threshold / 65536
        else:
            draw = torch.rand(x.shape, device=x.device, generator=self.generator)
            keep, rate = draw >= self.p, self.p
        # one float mask, scaled once: its backward is a same-dtype multiply (with the
        # boolean mask it promoted and scaled again: 1.17 against 0.73 ms forward and
        # backward for 1000 x 256 here)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - rate))


@dataclasses.dataclass(frozen=True)
class LossParts:
    """The weighted total and each task's unweighted loss (None when its weight is 0)."""

    total: torch.Tensor
    retrieval: torch.Tensor | None
    rating: torch.Tensor | None
