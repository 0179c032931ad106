"""Warm starts: continue a saved model on new interactions without losing what it knows.

Known users and items keep their rows (and so their weights, their side-feature codes
and their seen items); ids the model never saw are appended after them with fresh rows.
The pipeline (``train_model(init_from=...)``) trains the extended model on the new rows
with a fresh optimizer.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from mtrec import seeds
from mtrec.artifact import ItemInfo, SavedModel
from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Dataset, Interactions
from mtrec.errors import ConfigError
from mtrec.features import EncodedInteractions, SeenItems, Vocabs, seen_items
from mtrec.model import MultiTaskModel

log = logging.getLogger("mtrec.warm")

PER_USER = ("user_embedding.", "user_bias.", "codes_user_")
PER_ITEM = ("item_embedding.", "item_bias.", "history_embedding.", "codes_item_")
"""Tensors with one row per user (item): old rows are kept, new ones start fresh."""
HISTORIES = ("history_",)
"""Buffers of the users' histories: rebuilt from the merged seen items, not copied."""

REPLAY = 1.0
"""The share of the saved model's own rows a warm start trains its rating head on again,
beside the new rows. Chosen among 0, 0.25, 0.5 and 1 on the validation window of
``benchmarks/warm_start.py --validation`` (ML-100K by time: old 0-40%, new 40-60%,
measured on 60-80%; the last 20% unread): 1 had the lowest mean RMSE and the highest
mean recall@10 of the four over seeds 42, 1 and 2."""


def extended_vocabs(saved: SavedModel, dataset: Dataset, train: Interactions) -> Vocabs:
    """The saved vocabularies with the new users and items of the training rows ``train``
    (and ``dataset``'s catalogue) appended (``Vocabs.from_training``)."""
    old, new = saved.vocabs, Vocabs.from_training(dataset, train)
    vocabs = Vocabs(old.users.extended(new.users.id_array), old.items.extended(new.items.id_array))
    log.info(
        "warm start: %d new users and %d new items appended to %d and %d",
        len(vocabs.users) - len(old.users),
        len(vocabs.items) - len(old.items),
        len(old.users),
        len(old.items),
    )
    return vocabs


def merged_seen(old: SeenItems, new_rows: EncodedInteractions, n_users: int) -> SeenItems:
    """Every user's seen items, old and new (a pair rated again keeps the new rating)."""
    return seen_items(EncodedInteractions.cat([old.as_rows(), new_rows]), n_users)


def inherit(model: MultiTaskModel, saved: MultiTaskModel) -> None:
    """Copy ``saved``'s weights into ``model`` (built for the extended vocabularies): per-user
    and per-item tables keep their old rows bit for bit, everything else is copied whole.
    A shape that differs elsewhere (a side feature whose vocabulary the new data changes)
    is an error naming the tensor."""
    state = model.state_dict()
    with torch.no_grad():
        for name, old in saved.state_dict().items():
            if name.startswith(HISTORIES):
                continue
            new = state[name]
            rows = name.startswith(PER_USER + PER_ITEM)
            if new.shape == old.shape:
                new.copy_(old)
            elif rows and new.shape[1:] == old.shape[1:] and new.shape[0] >= old.shape[0]:
                new[: old.shape[0]].copy_(old)
            else:
                raise ConfigError(
                    f"warm start: {name} has shape {tuple(old.shape)} in the saved model and "
                    f"{tuple(new.shape)} for the new data (its side features differ); "
                    "train from scratch instead"
                )


def merged_items(old: ItemInfo, new: ItemInfo) -> ItemInfo:
    """Display metadata per extended item row: the new data's where it has some, else the
    saved model's (a log without an items file keeps the titles the model had)."""
    n_old = len(old.titles)
    use_old = [r < n_old and title is None for r, title in enumerate(new.titles)]

    def pick(before: list[Any], now: list[Any]) -> list[Any]:
        return [before[r] if use_old[r] else value for r, value in enumerate(now)]

    return ItemInfo(pick(old.titles, new.titles), pick(old.genres, new.genres),
                    pick(old.years, new.years))  # fmt: skip


def check_shape(saved: ModelConfig, asked: ModelConfig) -> None:
    """A warm start keeps the saved model's shape: the configs may differ only in the
    feature sizes the data fills in."""

    def bare(config: ModelConfig) -> ModelConfig:
        return dataclasses.replace(config, feature_sizes=(), feature_widths=())

    if bare(saved) != bare(asked):
        differ = [
            f.name for f in dataclasses.fields(ModelConfig)
            if getattr(bare(saved), f.name) != getattr(bare(asked), f.name)
        ]  # fmt: skip
        raise ConfigError(
            f"warm start: the model config differs from the saved model's in {differ}; a warm "
            "start keeps the saved model's shape (leave the model settings out)"
        )


def replayed_share(replay: float, config: TrainConfig) -> float:
    """The share a warm start replays: none where the rating task is off (implicit
    feedback, or a retrieval-only config), since replayed rows train the rating head only."""
    return replay if config.rating_weight else 0.0


def with_replay(
    old: SeenItems, new_rows: EncodedInteractions, fraction: float, seed: int
) -> EncodedInteractions:
    """The new rows plus a seeded ``fraction`` of the saved model's own rows (its users'
    seen items and ratings), in one seeded shuffled order. The old rows train the rating
    head only: fine-tuning on new rows alone drifts the rating head away from what the old
    rows taught it, while the retrieval task's lists are best learned from the new rows
    alone (the newest interactions say most about what comes next)."""
    if fraction <= 0:
        return new_rows
    generator = torch.Generator().manual_seed(seed + seeds.REPLAY_SAMPLE)
    before = old.as_rows()
    keep = torch.rand(len(before), generator=generator) < fraction
    rows = EncodedInteractions.cat([before.subset(keep).only_for_rating(), new_rows])
    return rows.subset(torch.randperm(len(rows), generator=generator))
