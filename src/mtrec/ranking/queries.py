"""Who a list is for: known users, or new users known by a history, as query embeddings and
exclusions.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.model import Histories, MultiTaskModel

if TYPE_CHECKING:  # stage one reads queries; a query reads the stage's embeddings
    from mtrec.ranking.stage_one import StageOne


@dataclasses.dataclass(frozen=True)
class Queries:
    """Users to rank for: query embeddings and histories (CSR over item rows).

    ``user_rows`` is -1 for a user known only by a history (no row of their own); the
    history's items are what the item-item source reads and what the list leaves out.
    """

    embeddings: NDArray[np.float32]
    user_rows: NDArray[np.int64]
    indptr: NDArray[np.int64]
    items: NDArray[np.int64]
    exclude_history: bool = True
    """Leave each user's history out of their candidates (False: rated items may return)."""
    blocked: NDArray[np.int64] | None = None
    """Item rows no query's list may hold (a request's filters)."""
    labels: NDArray[np.float32] | None = None
    """The history entries' scaled ratings (the neighbourhood correction reads the rating
    head's errors on them); None: predicted ratings go uncorrected."""
    errors: NDArray[np.float32] | None = None
    """The rating head's error on each history entry, where known in advance (a known
    user's, computed when the model was trained); None: computed from ``labels``."""

    def __len__(self) -> int:
        return len(self.user_rows)

    def history(self, i: int) -> NDArray[np.int64]:
        return self.items[self.indptr[i] : self.indptr[i + 1]]

    def take(self, lo: int, hi: int) -> Queries:
        """Queries ``lo..hi-1`` (their histories with them)."""
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return dataclasses.replace(
            self,
            embeddings=self.embeddings[lo:hi],
            user_rows=self.user_rows[lo:hi],
            indptr=self.indptr[lo : hi + 1] - a,
            items=self.items[a:b],
            labels=None if self.labels is None else self.labels[a:b],
            errors=None if self.errors is None else self.errors[a:b],
        )

    def exclusions(self) -> list[NDArray[np.int64]] | None:
        """Per query, the item rows its list leaves out: its history and the blocked rows."""
        own = [self.history(i) for i in range(len(self))] if self.exclude_history else None
        return exclusion_lists(own, self.blocked, len(self))


def exclusion_lists(
    own: list[NDArray[np.int64]] | None, blocked: NDArray[np.int64] | None, n: int
) -> list[NDArray[np.int64]] | None:
    """Each of ``n`` queries' exclusions: its ``own`` rows (None: none) and the ``blocked``
    rows every query leaves out (a request's filters); None where nothing is left out."""
    if blocked is None:
        return own
    if own is None:
        return [blocked] * n
    return [np.concatenate([rows, blocked]) for rows in own]


def user_queries(
    stage: StageOne,
    users: NDArray[np.int64],
    seen: Histories,
    exclude_history: bool = True,
    blocked: NDArray[np.int64] | None = None,
) -> Queries:
    """Queries for known user rows, each with their training items as history (and the
    rating head's errors on them, where the stage holds them); ``blocked``: item rows no
    list may hold."""
    indptr, entries = _entries(seen, users)
    rows = users.astype(np.int64)
    return Queries(
        stage.user_embeddings[rows],
        rows,
        indptr,
        seen.items[entries].astype(np.int64),
        exclude_history,
        blocked,
        labels=seen.labels[entries],
        errors=None if stage.errors is None else stage.errors[entries],
    )


def histories_of(
    seen: Histories, users: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """The histories of ``users`` as CSR (indptr, item rows, scaled labels), one per user."""
    indptr, entries = _entries(seen, users)
    return indptr, seen.items[entries].astype(np.int64), seen.labels[entries]


def _entries(
    seen: Histories, users: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The CSR indptr of ``users``' histories and where their entries sit in ``seen``."""
    starts, ends = seen.indptr[users], seen.indptr[users + 1]
    indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    entries = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1] - starts, ends - starts)
    return indptr, entries


def history_queries(
    model: MultiTaskModel,
    indptr: NDArray[np.int64],
    items: NDArray[np.int64],
    labels: NDArray[np.float32],
) -> Queries:
    """Users the model never saw, known by the items they rated (CSR over item rows, with
    scaled ``labels``): each embedded from their history alone."""
    n = len(indptr) - 1
    with torch.inference_mode():
        embeddings = [
            model.embed_history(
                torch.from_numpy(items[indptr[u] : indptr[u + 1]]),
                torch.from_numpy(labels[indptr[u] : indptr[u + 1]]),
            )
            for u in range(n)
        ]
    stacked = torch.cat(embeddings).numpy() if n else np.zeros((0, model.config.embedding_dim))
    rows = np.full(n, -1, dtype=np.int64)
    return Queries(
        stacked.astype(np.float32),
        rows,
        indptr.astype(np.int64),
        items.astype(np.int64),
        labels=labels.astype(np.float32),
    )


def history_query(
    model: MultiTaskModel, items: NDArray[np.int64], labels: NDArray[np.float32]
) -> Queries:
    """One user the model never saw, known by the items they rated (scaled ``labels``)."""
    indptr = np.array([0, len(items)], dtype=np.int64)
    return history_queries(model, indptr, items, labels)
