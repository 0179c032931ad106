"""What every run needs before its first model: the split, vocabularies, encoded rows, seen
items, and a model built for them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.artifact import SavedModel
from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Dataset, Interactions, Split, no_holdout
from mtrec.data.split import GIVEN, make_split, split_fingerprint
from mtrec.errors import ConfigError, DataError
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    Recency,
    SeenItems,
    Unseen,
    Vocabs,
    available_features,
    choose_recency,
    encode,
    feature_codes,
    known_rows,
    seen_items,
)
from mtrec.features.recency import NO_RECENCY
from mtrec.model import MultiTaskModel
from mtrec.vocab import Vocab
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
    """The test rows of users or items without training rows, counted (None: no test)."""
    new_user_test: EncodedInteractions | None = None
    """Test rows of users without a training row (on known items), numbered after the
    model's users (row ``n_users + j``): every list of the report answers them with the
    fallback a deployment serves them (None: there are none)."""
    test_source: str = ""
    """With a given test set: where it came from."""
    recency: Recency = NO_RECENCY
    """How recent liked rows weigh in the fallback counts and the ranker's
    ``recent_popularity`` (chosen on the latest training rows on a split by time)."""

    @functools.cached_property
    def fallback_counts(self) -> NDArray[np.float64]:
        """Per item, what users the model does not know are served by: its liked training
        rows, weighted by ``recency`` (counted once: the ranking stage, the evaluation and
        the saved model each read it)."""
        return self.recency.counts(self.train, self.n_items)

    @property
    def held_out(self) -> bool:
        """Whether there are test rows to evaluate on (not with ``test_fraction=0``)."""
        return len(self.test) > 0 or self.new_user_test is not None

    def evaluated_rows(self) -> EncodedInteractions:
        """The test rows a report measures (``evaluated_rows``)."""
        return evaluated_rows(self.test, self.new_user_test)

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
    instead of a split: every row of ``dataset`` trains. The vocabularies come from the
    training rows (``Vocabs.from_training``): a test row of a user without one is
    evaluated on the fallback list (``Prepared.new_user_test``), one on an item the model
    never saw is left out; both counted (``Prepared.unseen``, see ``held_out_rows``).
    ``init_from`` (a warm start): the saved model's vocabularies with the new ids appended,
    its rating scale, and seen items that join its users' old ones with the new rows;
    ``replay``: that share of its own rows trains the rating head again beside the new
    ones (see ``warm.with_replay``).

    >>> prepared = prepare(load_movielens(), *preset("tuned"))
    >>> fitted = fit_and_evaluate(prepared)
    """
    model_config, train_config = _fitting_configs(dataset, model_config, train_config)
    if test is None:
        parts = make_split(dataset.interactions, split, test_fraction, train_config.seed)
    else:
        parts = _given_split(dataset, test, train_config.seed)
        split, test_fraction = GIVEN, 0.0
    vocabs = (
        Vocabs.from_training(dataset, parts.train)
        if init_from is None
        else extended_vocabs(init_from, dataset, parts.train)
    )
    scale = RatingScale.of(dataset, parts.train) if init_from is None else init_from.scale
    if init_from is not None:
        scale.check_fits(dataset, "the warm start's interactions")
    by_time = split == "temporal"  # the next weeks are tested: recency is worth choosing
    train_data = encode(parts.train, vocabs, scale, with_time=by_time)
    where = "the test data" if test is None else test.source or test.name
    test_data, new_users, unseen = held_out_rows(parts.test, vocabs, scale, where)
    if test is not None and not len(test_data) and new_users is None:
        raise DataError("no test row has a user and an item seen in training", path=where)
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
        unseen=_counted(unseen, test_data, new_users, seen, len(vocabs.items)),
        new_user_test=new_users,
        recency=choose_recency(train_data, len(vocabs.items)) if by_time else NO_RECENCY,
        test_source="" if test is None else test.source or test.name,
    )


def _counted(
    unseen: Unseen,
    test: EncodedInteractions,
    new_users: EncodedInteractions | None,
    seen: SeenItems,
    n_items: int,
) -> Unseen | None:
    """``unseen`` with the evaluated rows on cold items counted (None: nothing held out)."""
    if not len(test) and new_users is None:
        return None
    items = [test.item.numpy()] + ([] if new_users is None else [new_users.item.numpy()])
    return unseen.with_cold(np.concatenate(items), trained_items(seen, n_items))


def trained_items(seen: SeenItems, n_items: int) -> NDArray[np.bool_]:
    """Per item row, whether a training row holds it (the others are cold items)."""
    return np.bincount(seen.items, minlength=n_items) > 0


def _fitting_configs(
    dataset: Dataset, model_config: ModelConfig | None, train_config: TrainConfig | None
) -> tuple[ModelConfig, TrainConfig]:
    """The configs as ``dataset`` can train them: side features it has no metadata for
    dropped (said), the rating task off without ratings."""
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
    return model_config, train_config


def _given_split(dataset: Dataset, test: Dataset, seed: int) -> Split:
    """Every row of ``dataset`` trains; every row of ``test`` is held out."""
    if test.has_ratings != dataset.has_ratings:
        has = "has" if test.has_ratings else "has no"
        raise DataError(
            f"the test data {has} ratings and the training data "
            f"{'has' if dataset.has_ratings else 'has none'}: give both a rating column or neither",
            path=test.source or test.name,
        )
    RatingScale.of(dataset).check_fits(test, "the test data")
    return Split(no_holdout(dataset.interactions, seed=seed).train, test.interactions, seed)


def evaluated_rows(
    known: EncodedInteractions, new_users: EncodedInteractions | None
) -> EncodedInteractions:
    """The test rows a report measures: the known users' and, numbered after them, those
    of users without a training row (``held_out_rows``' two parts)."""
    return known if new_users is None else EncodedInteractions.cat([known, new_users])


def held_out_rows(
    test: Interactions, vocabs: Vocabs, scale: RatingScale, where: str
) -> tuple[EncodedInteractions, EncodedInteractions | None, Unseen]:
    """The test rows as evaluated: those of known users and items encoded; those of users
    without a training row (on known items) with the users numbered after the model's
    (``len(vocabs.users) + j``), answered by the fallback list; the rows on items the
    model never saw left out. All counted in the ``Unseen``, and said."""
    unseen = known_rows(test, vocabs)
    known = encode(test.take(np.flatnonzero(unseen.known)), vocabs, scale)
    new_rows = test.take(np.flatnonzero(unseen.new_user))
    new_users = None
    if len(new_rows):  # numbered among themselves, then after the model's users
        own = Vocabs(Vocab("user", new_rows.distinct_users()), vocabs.items)
        encoded = encode(new_rows, own, scale)
        new_users = dataclasses.replace(encoded, user=encoded.user + len(vocabs.users))
    if unseen.users or unseen.items:
        log.warning(
            "%s: %d test rows of %d users without a training row: evaluated on the fallback "
            "list; %d rows on %d items without one: not evaluated",
            where,
            len(new_rows),
            unseen.users,
            unseen.rows,
            unseen.items,
        )
    return known, new_users, unseen


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
    check_tables_fit(len(vocabs.users), len(vocabs.items), config)
    if not (config.user_features or config.item_features):
        model = MultiTaskModel(len(vocabs.users), len(vocabs.items), config, seed=seed)
    else:
        codes = feature_codes(dataset, vocabs, config.user_features, config.item_features)
        n_users, n_items = len(vocabs.users), len(vocabs.items)
        model = MultiTaskModel(n_users, n_items, codes.configure(config), seed=seed)
        codes.install(model)
    if history is not None:
        model.set_history(history)
        if config.item_features:
            _cold_items_from_features(model, history)
    return model


def check_tables_fit(
    n_users: int, n_items: int, config: ModelConfig, memory: int | None = None
) -> None:
    """A ``ConfigError`` naming ``embedding_dim`` where the embedding tables, with their
    optimizer's two moments, would not fit in ``memory`` bytes (default: this machine's):
    the allocation failed with a traceback instead."""
    if memory is None:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not a POSIX system: not checked
            return
    rows = n_users + n_items * (2 if config.history else 1)
    need = 3 * 4 * config.embedding_dim * rows
    if need > memory:
        raise ConfigError(
            f"ModelConfig.embedding_dim: {config.embedding_dim} for {n_users:,} users and "
            f"{n_items:,} items needs {need / 2**30:.1f} GiB of tables and optimizer state, "
            f"more than the {memory / 2**30:.1f} GiB here"
        )


def _cold_items_from_features(model: MultiTaskModel, history: SeenItems) -> None:
    """Items of the catalogue without a training row (cold items) start with a zero id row:
    it would never train (no batch holds the item), so its random start would stay in
    the item's embedding beside its side features. At zero it stays zero, and the item is
    embedded from its side features alone."""
    cold = ~trained_items(history, model.n_items)
    if cold.any():
        with torch.no_grad():
            model.item_embedding.weight[torch.from_numpy(cold)] = 0.0
