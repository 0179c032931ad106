"""The lists a user would get, side by side: what mtrec serves, each stage alone, baselines."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.evaluate.baselines import EASE_MAX_ITEMS, ease_scores_list, ease_weights, popularity_list
from mtrec.features import SeenItems
from mtrec.index import ExactIndex
from mtrec.model import MultiTaskModel
from mtrec.ranking import TwoStage, rank_by_rating, user_queries

SERVED = "served"
"""The name of the list ``mtrec recommend`` serves (the ranker's, or rating-sorted)."""


USERS_PER_CHUNK = 4096
"""Users whose lists are made at a time: the rating head over every candidate of every
user at once took 24 GB on a 1M-row log with 96k test users (and was killed)."""


def user_lists(
    model: MultiTaskModel,
    two_stage: TwoStage | None,
    seen: SeenItems,
    users: NDArray[np.int64],
    *,
    k: int = 10,
    candidates: int = 100,
    ease_lambda: float = 500.0,
    device: str | torch.device = "cpu",
    recent: NDArray[np.float64] | None = None,
) -> dict[str, NDArray[np.int64]]:
    """(n_users, k) item rows per list for ``users``, each user's training items excluded.

    ``served``: the ranker over both sources (``two_stage``), or without one the top
    ``candidates`` by retrieval re-sorted by predicted rating (the reference's list);
    ``retrieval``: the two-tower top k; ``retrieve C, then rank by rating`` (with a
    ranker, for the record); ``popularity``: most training interactions; ``recent
    popularity`` (with ``recent``, liked rows weighted by recency); ``EASE``
    (catalogues of at most ``EASE_MAX_ITEMS``). Made ``USERS_PER_CHUNK`` users at a time;
    the two-tower searches run on ``device``.
    """
    n_items = model.n_items
    with torch.inference_mode():
        index = ExactIndex(model.embed_items().numpy(), device=device)
    weights = None
    if _same_ease(two_stage, ease_lambda):  # the ranking stage's own, over the same rows
        weights = two_stage.stage.item_item  # type: ignore[union-attr]
    elif n_items <= EASE_MAX_ITEMS:
        weights = ease_weights(seen.as_rows(), n_items, ease_lambda)
    parts = [
        _lists(
            model,
            two_stage,
            seen,
            users[lo : lo + USERS_PER_CHUNK],
            index,
            weights,
            k,
            candidates,
            recent,
        )
        for lo in range(0, len(users), USERS_PER_CHUNK)
    ]
    if not parts:
        parts = [_lists(model, two_stage, seen, users, index, weights, k, candidates, recent)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _same_ease(two_stage: TwoStage | None, ease_lambda: float) -> bool:
    """Whether the ranking stage holds EASE weights of ``ease_lambda`` (over the training
    histories the lists exclude: a stage is always built over them)."""
    return (
        two_stage is not None
        and two_stage.stage.item_item is not None
        and two_stage.ranker.config.item_item_lambda == ease_lambda
    )


def _lists(
    model: MultiTaskModel,
    two_stage: TwoStage | None,
    seen: SeenItems,
    users: NDArray[np.int64],
    index: ExactIndex,
    ease: NDArray[np.float32] | None,
    k: int,
    candidates: int,
    recent: NDArray[np.float64] | None,
) -> dict[str, NDArray[np.int64]]:
    """``user_lists`` for one chunk of users."""
    exclude = [seen.of(int(u))[0] for u in users]
    with torch.inference_mode():
        queries = model.embed_users(torch.from_numpy(users)).numpy()
    # one search serves both lists: retrieval's top k leads its top ``candidates`` (a second
    # search took 10 s of a 25M-row log's evaluation)
    _, retrieved = index.search(queries, max(k, candidates), exclude=exclude)
    rated = rank_by_rating(model, users, retrieved, k, queries)
    lists: dict[str, NDArray[np.int64]] = {}
    if two_stage is not None:
        lists[SERVED] = two_stage.lists(user_queries(two_stage.stage, users, seen), k).rows
        lists[f"retrieve {candidates}, then rank by rating"] = rated.rows
    else:
        lists[SERVED] = rated.rows
    lists["retrieval"] = retrieved[:, :k]
    lists["popularity"] = popularity_list(seen, exclude, model.n_items, k)
    if recent is not None:
        lists["recent popularity"] = popularity_list(seen, exclude, model.n_items, k, recent)
    if ease is not None:
        lists["EASE"] = ease_scores_list(ease, exclude, k)
    return lists
