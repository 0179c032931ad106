"""What every run needs before its first model: the split, vocabularies, encoded rows, seen
items, and a model built for them.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from mtrec.artifact import SavedModel
from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Dataset, Interactions, Split, no_holdout
from mtrec.data.split import GIVEN, make_split, split_fingerprint
from mtrec.errors import ConfigError, DataError
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    SeenItems,
    Unseen,
    Vocabs,
    available_features,
    encode,
    feature_codes,
    known_rows,
    seen_items,
)
from mtrec.model import MultiTaskModel
from mtrec.warm import REPLAY, extended_vocabs, merged_seen, replayed_share, with_replay

log = logging.getLogger("mtrec.pipeline")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A dataset made ready to train on: what every run shares before its first model."""

    dataset: Dataset
    model_config: ModelConfig
    """The asked-for config without side features the data has no metadata for."""
    train_config: TrainConfig
    """The asked-for config, with the rating task off where the data has no ratings."""
    split_rows: tuple[int, int]
    """The split's (training, test) rows; the rows themselves are ``train`` and ``test``
    encoded (keeping the raw parts too cost 560 MB on a 20M-row log)."""
    test_fingerprint: str
    """``split_fingerprint`` of the raw test rows, to rebuild the split later."""
    split_kind: str
    test_fraction: float
    vocabs: Vocabs
    scale: RatingScale
    train: EncodedInteractions
    test: EncodedInteractions
    seen: SeenItems
    """Each user's training items: excluded from honest lists and recommendations."""
    unseen: Unseen | None = None
    """With a given test set: its rows the model cannot score, counted (None otherwise)."""
    test_source: str = ""
    """With a given test set: where it came from."""

    @property
    def held_out(self) -> bool:
        """Whether there are test rows to evaluate on (not with ``test_fraction=0``)."""
        return len(self.test) > 0

    @property
    def n_users(self) -> int:
        return len(self.vocabs.users)

    @property
    def n_items(self) -> int:
        return len(self.vocabs.items)


def prepare(
    dataset: Dataset,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    split: str = "random",
    test_fraction: float = 0.2,
    test: Dataset | None = None,
    init_from: SavedModel | None = None,
    replay: float = REPLAY,
) -> Prepared:
    """Split ``dataset`` (seeded by ``train_config.seed``) and encode both parts.

    ``test_fraction=0`` holds nothing out (a model to deploy: every row trains, nothing
    is evaluated). A ``test`` dataset (e.g. a published test file) is the test part
    instead of a split: every row of ``dataset`` trains, and test rows whose user or
    item never appears in ``dataset`` are left out and counted (``Prepared.unseen``).
    ``init_from`` (a warm start): the saved model's vocabularies with the new ids appended,
    its rating scale, and seen items that join its users' old ones with the new rows;
    ``replay``: that share of its own rows trains the rating head again beside the new
    ones (see ``warm.with_replay``).

    >>> prepared = prepare(load_movielens(), *preset("tuned"))
    >>> fitted = fit_and_evaluate(prepared)
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    if not dataset.has_ratings and train_config.rating_weight:
        # implicit feedback: there is nothing for the rating head to learn
        train_config = dataclasses.replace(train_config, rating_weight=0.0)
        if not train_config.retrieval_weight:
            raise ConfigError(f"{dataset.name} has no ratings: the rating task alone cannot train")
    model_config, dropped = available_features(model_config, dataset)
    if dropped:
        log.warning("%s has no metadata for side features %s: left out", dataset.name, dropped)
    vocabs = (
        Vocabs.from_dataset(dataset) if init_from is None else extended_vocabs(init_from, dataset)
    )
    unseen = None
    if test is None:
        parts = make_split(dataset.interactions, split, test_fraction, train_config.seed)
    else:
        parts, unseen = _given_split(dataset, test, vocabs, train_config.seed)
        split, test_fraction = GIVEN, 0.0
    scale = RatingScale.of(dataset) if init_from is None else init_from.scale
    if init_from is not None:
        scale.check_fits(dataset, "the warm start's interactions")
    train_data, test_data = encode(parts.train, vocabs, scale), encode(parts.test, vocabs, scale)
    split_rows, fingerprint = (len(parts.train), len(parts.test)), split_fingerprint(parts.test)
    del parts  # the raw rows are encoded: 560 MB on a 20M-row log
    n_users = len(vocabs.users)
    seen = (
        seen_items(train_data, n_users)
        if init_from is None
        else merged_seen(init_from.seen, train_data, n_users)
    )
    if init_from is not None:
        share = replayed_share(replay, train_config)
        train_data = with_replay(init_from.seen, train_data, share, train_config.seed)
    return Prepared(
        dataset=dataset,
        model_config=model_config,
        train_config=train_config,
        split_rows=split_rows,
        test_fingerprint=fingerprint,
        split_kind=split,
        test_fraction=test_fraction,
        vocabs=vocabs,
        scale=scale,
        train=train_data,
        test=test_data,
        seen=seen,
        unseen=unseen,
        test_source="" if test is None else test.source or test.name,
    )


def _given_split(
    dataset: Dataset, test: Dataset, vocabs: Vocabs, seed: int
) -> tuple[Split, Unseen]:
    """Every row of ``dataset`` trains; ``test``'s rows with a known user and item test."""
    where = test.source or test.name
    if test.has_ratings != dataset.has_ratings:
        has = "has" if test.has_ratings else "has no"
        raise DataError(
            f"the test data {has} ratings and the training data "
            f"{'has' if dataset.has_ratings else 'has none'}: give both a rating column or neither",
            path=where,
        )
    RatingScale.of(dataset).check_fits(test, "the test data")
    kept, unseen = scorable_rows(test, vocabs)
    return Split(no_holdout(dataset.interactions, seed=seed).train, kept, seed), unseen


def scorable_rows(test: Dataset, vocabs: Vocabs) -> tuple[Interactions, Unseen]:
    """The rows of a test log whose user and item are in ``vocabs``; the others are
    counted (and said), never silently dropped."""
    where = test.source or test.name
    unseen = known_rows(test.interactions, vocabs)
    if not unseen.known.any():
        raise DataError("no test row has a user and an item seen in training", path=where)
    if unseen.rows:
        log.warning(
            "%s: %d test rows have a user or item unseen in training (%d users, %d items): "
            "not evaluated",
            where,
            unseen.rows,
            unseen.users,
            unseen.items,
        )
    return test.interactions.take(np.flatnonzero(unseen.known)), unseen


def build_model(
    dataset: Dataset,
    vocabs: Vocabs,
    config: ModelConfig,
    seed: int,
    history: SeenItems | None = None,
) -> MultiTaskModel:
    """A fresh model for ``config``, with its side features (if any) encoded from ``dataset``
    and, for a user tower that reads histories, the users' training items ``history``."""
    if config.history and history is None:
        raise ConfigError("build_model: a model with config.history needs the users' histories")
    if not (config.user_features or config.item_features):
        model = MultiTaskModel(len(vocabs.users), len(vocabs.items), config, seed=seed)
    else:
        codes = feature_codes(dataset, vocabs, config.user_features, config.item_features)
        n_users, n_items = len(vocabs.users), len(vocabs.items)
        model = MultiTaskModel(n_users, n_items, codes.configure(config), seed=seed)
        codes.install(model)
    if history is not None:
        model.set_history(history)
    return model
