"""Predicted ratings: the rating head, plus the neighbourhood correction from the user's own
errors on similar items.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.features import EncodedInteractions
from mtrec.model import Histories
from mtrec.ranking.neighbours import by_user, correction, fit_weight
from mtrec.ranking.queries import Queries, user_queries
from mtrec.ranking.stage_one import StageOne


def predicted_ratings(
    stage: StageOne, queries: Queries, items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """(n, c) predicted scaled ratings of the queries' item rows: the rating head's, plus
    the weighted neighbourhood correction where the stage has one."""
    return corrected(
        stage, queries, items, head_ratings(stage, queries.embeddings, queries.user_rows, items)
    )


def corrected(
    stage: StageOne, queries: Queries, items: NDArray[np.int64], head: NDArray[np.float32]
) -> NDArray[np.float32]:
    """The rating head's (n, c) predictions ``head`` of the queries' item rows plus the
    stage's weighted correction (as they are where it has none, or the queries carry no
    ratings)."""
    if not stage.correction:
        return head
    found = corrections(stage, queries, items)
    return head if found is None else head + np.float32(stage.correction) * found


def corrections(
    stage: StageOne, queries: Queries, items: NDArray[np.int64]
) -> NDArray[np.float32] | None:
    """The unweighted neighbourhood corrections of the queries' (n, c) item rows, from
    the rating head's errors on their histories; None where the queries carry no ratings."""
    if queries.labels is None:
        return None
    errors = queries.errors
    if errors is None:
        errors = queries.labels - _history_predictions(stage, queries)
    return correction(stage.unit_items, items, queries.indptr, queries.items, errors)


def training_errors(stage: StageOne, seen: Histories) -> NDArray[np.float32]:
    """The rating head's error (scaled label minus prediction) on every entry of the
    known users' histories ``seen``, aligned with them: what the correction reads for a
    known user, computed once (a request would otherwise pay for its whole history)."""
    queries = user_queries(stage, np.arange(len(seen.indptr) - 1), seen)
    assert queries.labels is not None
    return (queries.labels - _history_predictions(stage, queries)).astype(np.float32)


def _history_predictions(stage: StageOne, queries: Queries) -> NDArray[np.float32]:
    """The rating head's prediction of every history entry of the queries (flat, as
    ``queries.items``), ``HISTORY_ENTRIES_PER_CHUNK`` at a time."""
    if len(queries) == 1:  # a request: the user's side of the head once, not per entry
        one: NDArray[np.float32] = head_ratings(
            stage, queries.embeddings, queries.user_rows, queries.items[None, :]
        )[0]
        return one
    owner = np.repeat(np.arange(len(queries)), np.diff(queries.indptr))
    out = np.empty(len(queries.items), dtype=np.float32)
    for lo in range(0, len(owner), HISTORY_ENTRIES_PER_CHUNK):
        who = owner[lo : lo + HISTORY_ENTRIES_PER_CHUNK]
        items = queries.items[lo : lo + HISTORY_ENTRIES_PER_CHUNK, None]
        out[lo : lo + len(who)] = head_ratings(
            stage, queries.embeddings[who], queries.user_rows[who], items
        )[:, 0]
    return out


HISTORY_ENTRIES_PER_CHUNK = 65536
"""History entries whose predictions are computed at a time (the head's hidden layer
holds 256 floats for each)."""


PAIRS_PER_CHUNK = 262_144
"""(user, item) cells, padding included, whose predictions are computed at once: the
head's hidden layer holds 256 floats for each (256 MB)."""


def head_ratings(
    stage: StageOne,
    users: NDArray[np.float32],
    user_rows: NDArray[np.int64],
    items: NDArray[np.int64],
) -> NDArray[np.float32]:
    """The rating head's (n, c) predictions for (n, d) user embeddings and (n, c) items,
    at most ``PAIRS_PER_CHUNK`` pairs at a time: 8,192 users' 50 candidates at once held
    a 420 MB hidden layer (one such chunk at 25M rows: 679 MB over its start, 444 after)."""
    n, c = items.shape
    step = max(1, PAIRS_PER_CHUNK // max(c, 1))
    if n <= step:
        return _head_block(stage, users, user_rows, items, slice(None))
    blocks = range(0, n, step)
    return np.concatenate(
        [_head_block(stage, users, user_rows, items, slice(lo, lo + step)) for lo in blocks]
    )


def _head_block(
    stage: StageOne,
    users: NDArray[np.float32],
    user_rows: NDArray[np.int64],
    items: NDArray[np.int64],
    rows: slice,
) -> NDArray[np.float32]:
    users, user_rows, items = users[rows], user_rows[rows], items[rows]
    if stage.head is not None:
        return stage.head.predict(users, user_rows, items)
    n, c = items.shape  # a head that reads the dot product: the whole head per pair
    flat = items.reshape(-1)
    embedded = torch.from_numpy(stage.item_embeddings[flat])
    with torch.inference_mode():
        predicted = stage.model.predict_rating(
            torch.from_numpy(np.repeat(users, c, axis=0)),
            embedded,
            torch.from_numpy(np.repeat(user_rows, c)),
            torch.from_numpy(flat),
        )
    return predicted.reshape(n, c).numpy()


def _pair_chunks(users: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """Positions of the pairs of ``users``, in chunks of whole users that fill at most
    ``PAIRS_PER_CHUNK`` cells once padded to their widest user (users of like row counts
    together; a wider user is a chunk alone). One chunk holds every position in order.

    Why: the pairs are laid out as an (users, widest) matrix, and at scale one user's many
    rows widened it for all: 20M planted rows asked for (196,688 x 453 x 256) floats,
    85 GB, when the ranking stage fitted its correction."""
    if not len(users):
        return []
    _, row, counts = np.unique(users, return_inverse=True, return_counts=True)
    order = np.argsort(counts, kind="stable")  # users by their rows, narrowest first
    widths = counts[order]
    chunk_of = np.empty(len(counts), dtype=np.int64)
    chunk, start = 0, 0
    while start < len(order):  # the widest user so far sets the chunk's width
        candidates = widths[start : start + max(PAIRS_PER_CHUNK // int(widths[start]), 1)]
        cells = candidates * np.arange(1, len(candidates) + 1)  # taking the first k users
        stop = start + max(int(np.searchsorted(cells, PAIRS_PER_CHUNK, side="right")), 1)
        chunk_of[order[start:stop]] = chunk
        chunk, start = chunk + 1, stop
    of_pair = chunk_of[row]
    positions = np.argsort(of_pair, kind="stable")
    return np.split(positions, np.cumsum(np.bincount(of_pair))[:-1])


def _pairs_by_user(
    stage: StageOne, seen: Histories, users: NDArray[np.int64], items: NDArray[np.int64]
) -> Iterator[
    tuple[
        NDArray[np.int64],
        Queries,
        NDArray[np.int64],
        NDArray[np.float32],
        tuple[NDArray[np.int64], NDArray[np.int64]],
    ]
]:
    """For each chunk of the (known user row, item row) pairs: its positions, its users'
    queries, their (n, c) item rows (pads at row 0), the rating head's predictions of
    them, and where each pair landed, (row, column)."""
    for part in _pair_chunks(users):
        distinct, matrix, landed = by_user(users[part], items[part])
        queries = user_queries(stage, distinct, seen)
        safe = np.maximum(matrix, 0)
        yield (
            part,
            queries,
            safe,
            head_ratings(stage, queries.embeddings, queries.user_rows, safe),
            landed,
        )


def predicted_for_pairs(
    stage: StageOne, seen: Histories, users: NDArray[np.int64], items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """The predicted scaled rating of each (known user row, item row) pair, as the
    served list shows it (the neighbourhood correction included)."""
    out = np.empty(len(users), dtype=np.float32)
    for part, queries, safe, head, (row, column) in _pairs_by_user(stage, seen, users, items):
        out[part] = corrected(stage, queries, safe, head)[row, column]
    return out


def fit_correction(stage: StageOne, seen: Histories, held: EncodedInteractions) -> float:
    """The correction's weight that best fits the ``held`` rows (carved out of training,
    never seen by ``stage``'s model), with the histories ``seen`` it trained on."""
    users, items, labels = held.user.numpy(), held.item.numpy(), held.label.numpy()
    found, residual = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for part, queries, safe, head, (row, column) in _pairs_by_user(stage, seen, users, items):
        spread = corrections(stage, queries, safe)
        assert spread is not None
        found.append(spread[row, column])
        residual.append(labels[part] - head[row, column])
    return fit_weight(np.concatenate(found), np.concatenate(residual))
