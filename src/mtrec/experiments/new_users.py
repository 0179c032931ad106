"""New users: how good is the list for someone the model never saw, given a history?

The protocol (seeded): hold out a share of the users entirely; train stage one and the
ranker on everyone else's rows; give each held-out user the first half (by time; by row
order without timestamps) of their ratings as a history and score the list against the
rest, relevant = rated four stars or more. Compared with EASE folded in the same way (its
user vector is the history row) and with popularity.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec import seeds
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data import Dataset
from mtrec.errors import ConfigError
from mtrec.evaluate import SERVED, ListReport, list_reports
from mtrec.evaluate.baselines import EASE_MAX_ITEMS, ease_list, popularity_list
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    SeenItems,
    Vocabs,
    available_features,
    encode,
    seen_items,
)
from mtrec.model import MultiTaskModel
from mtrec.pipeline import (
    Prepared,
    build_model,
    fit_ranker_beside,
    fit_stage_one,
    two_stage,
)
from mtrec.ranking import history_queries
from mtrec.train import Hooks, Progress, TrainingRecord, train


@dataclasses.dataclass(frozen=True)
class NewUserSplit:
    """Everyone else's rows to train on; each held-out user's history and later rows."""

    train: EncodedInteractions
    history: SeenItems
    """Held-out user i's history is ``history.of(i)``: positions, not user rows."""
    targets: EncodedInteractions
    """The held-out users' later rows, ``user`` = the user's position in ``history``."""


def split_new_users(
    dataset: Dataset, vocabs: Vocabs, scale: RatingScale, fraction: float, seed: int
) -> NewUserSplit:
    """Hold out ``fraction`` of the users (seeded); split each one's rows in time."""
    if not 0 < fraction < 1:
        raise ConfigError(f"new users: fraction must be in (0, 1), got {fraction}")
    log = encode(dataset.interactions, vocabs, scale)
    users = np.unique(log.user.numpy())
    rng = np.random.default_rng(seed + seeds.NEW_USERS)
    held = np.sort(rng.choice(users, size=max(1, round(fraction * len(users))), replace=False))
    is_held = np.isin(log.user.numpy(), held)
    position = np.searchsorted(held, log.user.numpy()[is_held])
    when = np.asarray(dataset.interactions.timestamp)[is_held]
    rows = np.flatnonzero(is_held)
    order = np.lexsort((rows, when, position))  # per user, by time, then by row
    position, rows = position[order], rows[order]
    counts = np.bincount(position, minlength=len(held))
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    early = rank < np.repeat(counts // 2, counts)
    pick = torch.from_numpy(rows)
    held_rows = EncodedInteractions(torch.from_numpy(position), log.item[pick], log.label[pick])
    mask = torch.from_numpy(early)
    return NewUserSplit(
        train=log.subset(torch.from_numpy(~is_held)),
        history=seen_items(held_rows.subset(mask), len(held)),
        targets=held_rows.subset(~mask),
    )


def evaluate_new_users(
    dataset: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    ranker: RankerConfig,
    *,
    fraction: float = 0.1,
    k: int = 10,
    ease_lambda: float = 500.0,
    progress: Progress | None = None,
    ranker_progress: Progress | None = None,
) -> list[ListReport]:
    """The served list for held-out users from their histories, beside EASE folded in
    and popularity (recall@k and NDCG@k, 95% intervals, paired differences to EASE)."""
    if not model_config.history:
        raise ConfigError("new users: the model's user tower must read histories (history)")
    model_config, _ = available_features(model_config, dataset)
    vocabs, scale = Vocabs.from_dataset(dataset), RatingScale.of(dataset)
    parts = split_new_users(dataset, vocabs, scale, fraction, train_config.seed)
    seen = seen_items(parts.train, len(vocabs.users))
    prepared = Prepared(
        dataset=dataset,
        model_config=model_config,
        train_config=train_config,
        split_rows=(len(parts.train), len(parts.targets)),
        test_fingerprint="",  # unread: nothing is saved
        split_kind="new-users",
        test_fraction=fraction,
        vocabs=vocabs,
        scale=scale,
        train=parts.train,
        test=parts.targets,
        seen=seen,
    )

    def fit_model() -> tuple[MultiTaskModel, TrainingRecord]:
        model = build_model(dataset, vocabs, model_config, train_config.seed, seen)
        return model, train(model, parts.train, train_config, progress)

    if ranker.resolved(len(parts.train)).refit:
        (fitted_ranker, _), (model, _) = fit_ranker_beside(
            prepared, ranker, ranker_progress, fit_model
        )
    else:  # stage one serves, as under mtrec train
        stage = fit_stage_one(prepared, ranker, Hooks(progress))
        fitted_ranker, model = stage.ranker, stage.served(seen)
    two = two_stage(model, seen, fitted_ranker)
    history = parts.history
    queries = history_queries(model, history.indptr, history.items, history.labels)
    lists = {SERVED: two.lists(queries, k).rows}
    lists.update(_baseline_lists(parts.train, seen, history, len(vocabs.items), k, ease_lambda))
    users = np.arange(len(history.indptr) - 1)
    return list_reports(lists, users, parts.targets, against=("EASE",))


def _baseline_lists(
    train: EncodedInteractions,
    seen: SeenItems,
    history: SeenItems,
    n_items: int,
    k: int,
    ease_lambda: float,
) -> dict[str, NDArray[np.int64]]:
    histories = [history.of(u)[0] for u in range(len(history.indptr) - 1)]
    lists = {"popularity": popularity_list(seen, histories, n_items, k)}
    if n_items <= EASE_MAX_ITEMS:  # folded in: the history row times EASE's weights
        lists["EASE"] = ease_list(train, histories, n_items, k, ease_lambda)
    return lists
