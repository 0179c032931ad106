"""The history tower's pooling: each user's rated items, summed and scaled, in training
and in serving, with a row's own item taken out."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtrec.model.layers import BagSum


def pool_histories(
    table: nn.Embedding,
    histories: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n_items: int,
    rows: torch.Tensor,
    exclude: torch.Tensor | None,
) -> torch.Tensor:
    """(B,) user rows -> (B, d) sums of their history rows of ``table``, each entry weighed
    0.5 + its scaled rating, scaled by 1/sqrt(entries); ``exclude`` (B,) item rows are
    taken out of each row's own history (a training row's own item). ``histories``: every
    user's (indptr, items, labels) as CSR tensors."""
    indptr, entries_items, labels = histories
    unique, inverse = torch.unique(rows, return_inverse=True)
    starts = indptr[unique]
    lengths = indptr[unique + 1] - starts
    offsets = torch.cumsum(lengths, 0) - lengths
    shift = torch.repeat_interleave(offsets - starts, lengths)
    entries = torch.arange(int(lengths.sum()), device=rows.device) - shift
    # index_select: a plain gather of ~220k entries a batch at 25M rows, twice as fast
    # as advanced indexing (0.4 against 0.8 ms each here) and the same values
    items = entries_items.index_select(0, entries)
    weights = 0.5 + labels.index_select(0, entries)
    counts = lengths[inverse]
    own: torch.Tensor | None = None
    if exclude is not None and len(items):
        # each row's own item among its user's entries just gathered (grouped by user
        # in ``unique``'s order, sorted by item within a user): one search over the
        # batch's keys, where a key per history entry of the log cost 130 MB a model
        # at 16M rows (and a search over all of them)
        bag_of = torch.repeat_interleave(lengths)  # each entry's user, in ``unique``
        keys = bag_of * n_items + items
        key = inverse * n_items + exclude
        pos = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        present = keys[pos] == key
        counts = counts - present.long()
        own = torch.where(present, weights[pos], 0.0)
    ahead = 0  # bags of rows' own items ahead of the users' histories
    if table.sparse:  # training with sparse updates
        if own is not None and exclude is not None:
            # each row's own item as a bag of its own (weight 0 where it is not in
            # the history), so that the table's gradient is one coalesced BagSum's:
            # embedding the items apart made a second sparse gradient, and autograd's
            # sum of the two copied the ~170k history entries of a batch at 25M rows
            ahead = len(rows)
            items, weights = torch.cat([exclude, items]), torch.cat([own, weights])
            bags = torch.arange(ahead, device=rows.device)
            offsets = torch.cat([bags, offsets + ahead])
        pooled = BagSum.apply(table.weight, items, offsets, weights)  # type: ignore[no-untyped-call]
    else:  # a dense gradient: as it always was (ML-100K's models keep their bits)
        pooled = F.embedding_bag(
            items, table.weight, offsets, mode="sum", per_sample_weights=weights
        )
    # index_select, not pooled[inverse]: advanced indexing's backward accumulates in
    # a thread-dependent order, and one seed must give one model
    sums = torch.index_select(pooled[ahead:], 0, inverse)
    if own is not None:
        sums = sums - (pooled[:ahead] if ahead else own[:, None] * table(exclude))
    return sums * counts.clamp(min=1).float().rsqrt()[:, None]


WHOLE_LOG_MAX_ENTRIES_PER_ROW = 1_000
"""A dense-gradient training step pools every user's history at once (``pool_every``) where
the log has at most this many history entries per batch row: its two embedding bags read
each entry once, without the per-batch gather and the sort in embedding_bag's dense
backward that cost ~8x more per entry. ML-100K (80k entries, batches of 1,000 rows
touching ~60k): 0.9 against 5.5 ms a step for the history table's forward and backward,
one thread, 2-core AMD EPYC (Zen 4)."""


def pool_at_once(table: nn.Embedding, items: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether a training step of ``rows`` pools every history at once (``pool_every``):
    with a dense gradient, and at most ``WHOLE_LOG_MAX_ENTRIES_PER_ROW`` entries a row."""
    return not table.sparse and len(items) <= WHOLE_LOG_MAX_ENTRIES_PER_ROW * len(rows)


@dataclasses.dataclass(frozen=True)
class WholeLog:
    """Every user's history in both orders: by user (the pooling) and by item (its
    gradient), with each entry's weight (0.5 + its scaled rating) and its (user, item) key."""

    indptr: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor
    keys: torch.Tensor
    """user * n_items + item of each entry, ascending (items are sorted within a user)."""
    users_by_item: torch.Tensor
    weights_by_item: torch.Tensor
    item_offsets: torch.Tensor

    @classmethod
    def of(
        cls, histories: tuple[torch.Tensor, torch.Tensor, torch.Tensor], n_items: int
    ) -> WholeLog:
        indptr, items, labels = histories
        users = torch.repeat_interleave(torch.diff(indptr))
        order = torch.argsort(items, stable=True)
        counts = torch.bincount(items, minlength=n_items)
        weights = 0.5 + labels
        return cls(
            indptr=indptr,
            items=items,
            weights=weights,
            keys=users * n_items + items,
            users_by_item=users.index_select(0, order),
            weights_by_item=weights.index_select(0, order),
            item_offsets=torch.cumsum(counts, 0) - counts,
        )


class _PoolEvery(torch.autograd.Function):
    """Every user's weighted sum of history rows; the table's gradient is the transposed
    bag sum (each item's entries, weighted, over their users' gradients), dense."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, log: WholeLog) -> torch.Tensor:
        ctx.log = log
        return F.embedding_bag(
            log.items, weight, log.indptr[:-1], mode="sum", per_sample_weights=log.weights
        )

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        log = ctx.log
        dweight = F.embedding_bag(
            log.users_by_item,
            grad.contiguous(),
            log.item_offsets,
            mode="sum",
            per_sample_weights=log.weights_by_item.to(grad.dtype),
        )
        return dweight, None


def pool_every(
    table: nn.Embedding, log: WholeLog, rows: torch.Tensor, exclude: torch.Tensor | None
) -> torch.Tensor:
    """``pool_histories`` of (B,) user rows from every user's pooled history (see
    ``WHOLE_LOG_MAX_ENTRIES_PER_ROW``): the same sums, added in another order."""
    pooled: torch.Tensor = _PoolEvery.apply(table.weight, log)  # type: ignore[no-untyped-call]
    sums = pooled.index_select(0, rows)
    counts = (log.indptr[rows + 1] - log.indptr[rows]).float()
    if exclude is not None and len(log.keys):
        n_items = table.num_embeddings
        key = rows * n_items + exclude
        pos = torch.searchsorted(log.keys, key).clamp(max=len(log.keys) - 1)
        present = log.keys[pos] == key
        counts = counts - present.float()
        own = torch.where(present, log.weights[pos], 0.0)
        sums = sums - own[:, None] * table(exclude)
    return sums * counts.clamp(min=1).rsqrt()[:, None]
