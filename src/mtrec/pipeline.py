"""One pipeline for every run: prepare the data, build a model, fit it, evaluate it.

``prepare`` does what every run needs before training (split, vocabularies, rating
scale, encoded rows, each user's seen items, and the configs adjusted to the data:
side features it has no metadata for dropped, the rating task off without ratings);
``fit_and_evaluate`` trains one model and measures it under both protocols.
``train_model`` (``mtrec train``), ``compare`` and ``sweep`` are all built on these two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any

import numpy as np
import torch

from mtrec.artifact import ItemInfo, SavedModel
from mtrec.baselines import ease_weights
from mtrec.checkpoint import Checkpointing
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data import Dataset, Interactions, Split, random_split, temporal_split
from mtrec.errors import ConfigError, DataError
from mtrec.evaluate import (
    SERVED,
    EvalProtocol,
    EvalReport,
    ListReport,
    evaluate,
    list_reports,
    user_lists,
)
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    SeenItems,
    Vocabs,
    available_features,
    encode,
    feature_codes,
    interaction_counts,
    liked_counts,
    seen_items,
)
from mtrec.index import ExactIndex, FaissIndex, Index, build_index, recall_vs_exact
from mtrec.model import MultiTaskModel
from mtrec.ranker import (
    Ranker,
    StageOne,
    candidates,
    fit_ranker,
    gains_of,
    histories_of,
    history_queries,
    stack_candidates,
    user_queries,
)
from mtrec.train import History, Progress, train
from mtrec.two_stage import TwoStage

log = logging.getLogger("mtrec.pipeline")

SPLITS = ("random", "temporal", "temporal-user")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A dataset made ready to train on: what every run shares before its first model."""

    dataset: Dataset
    model_config: ModelConfig
    """The asked-for config without side features the data has no metadata for."""
    train_config: TrainConfig
    """The asked-for config, with the rating task off where the data has no ratings."""
    split: Split
    split_kind: str
    test_fraction: float
    vocabs: Vocabs
    scale: RatingScale
    train: EncodedInteractions
    test: EncodedInteractions
    seen: SeenItems
    """Each user's training items: excluded from honest lists and recommendations."""

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
) -> Prepared:
    """Split ``dataset`` (seeded by ``train_config.seed``) and encode both parts.

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
    parts = make_split(dataset.interactions, split, test_fraction, train_config.seed)
    vocabs = Vocabs.from_dataset(dataset)
    scale = RatingScale.of(dataset)
    train_data = encode(parts.train, vocabs, scale)
    return Prepared(
        dataset=dataset,
        model_config=model_config,
        train_config=train_config,
        split=parts,
        split_kind=split,
        test_fraction=test_fraction,
        vocabs=vocabs,
        scale=scale,
        train=train_data,
        test=encode(parts.test, vocabs, scale),
        seen=seen_items(train_data, len(vocabs.users)),
    )


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


@dataclasses.dataclass(frozen=True)
class Fitted:
    """One trained model and its held-out metrics under both protocols."""

    model: MultiTaskModel
    history: History
    reference: EvalReport
    """The tutorial's protocol: training items stay candidates."""
    honest: EvalReport
    """Each user's training items excluded, as a deployed recommender does."""


def fit_and_evaluate(
    prepared: Prepared,
    train_config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    *,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
) -> Fitted:
    """Build, train and evaluate one model on ``prepared`` (its own configs by default)."""
    tc = train_config or prepared.train_config
    mc = model_config or prepared.model_config
    model = build_model(prepared.dataset, prepared.vocabs, mc, tc.seed, prepared.seen)
    history = train(model, prepared.train, tc, progress, checkpoints)
    test, scale, rated = prepared.test, prepared.scale, prepared.dataset.has_ratings
    reference = held_out_report(model, test, scale, rated)
    honest = held_out_report(model, test, scale, rated, protocol="honest", seen=prepared.seen)
    return Fitted(model, history, reference, honest)


ITEM_ITEM_MAX_ITEMS = 10_000
"""The ranker's item-item source needs an (items x items) float32 matrix saved with the
model (400 MB at this size); larger catalogues rank with the two-tower signals alone."""


def carve(
    rows: EncodedInteractions, fraction: float, seed: int
) -> tuple[EncodedInteractions, EncodedInteractions]:
    """Split training rows into (stage one's rows, the ranker's held-aside rows), seeded."""
    draw = torch.rand(len(rows), generator=torch.Generator().manual_seed(seed + 104_729))
    held = draw < fraction
    return rows.subset(~held), rows.subset(held)


def stage_one(
    model: MultiTaskModel,
    seen: SeenItems,
    config: RankerConfig,
    index: Index | None = None,
) -> StageOne:
    """Stage one over the training histories ``seen``: the model, an index of its items
    (exact unless given), EASE weights where the catalogue allows, item counts."""
    if index is None:
        with torch.inference_mode():
            index = ExactIndex(model.embed_items().numpy())
    n_items = model.n_items
    use_item_item = config.item_item and n_items <= ITEM_ITEM_MAX_ITEMS
    rows = seen.as_rows()
    weights = ease_weights(rows, n_items, config.item_item_lambda) if use_item_item else None
    return StageOne(model, index, weights, interaction_counts(seen, n_items))


def fit_ranker_on_training_rows(
    prepared: Prepared, config: RankerConfig, progress: Progress | None = None
) -> Ranker:
    """The ranker, fitted without a test row: stage one trains on the training rows less a
    carved-out share, and the ranker learns to put that share first among its candidates."""
    tc = prepared.train_config
    fit_rows, held = carve(prepared.train, config.holdout, tc.seed)
    seen = seen_items(fit_rows, prepared.n_users)
    model = build_model(prepared.dataset, prepared.vocabs, prepared.model_config, tc.seed, seen)
    train(model, fit_rows, tc, progress)
    stage = stage_one(model, seen, config)
    users = np.unique(held.user.numpy())
    parts = [candidates(stage, user_queries(stage, users, seen), config.candidates)]
    if model.config.history:  # the same users again, as new users known by their history
        queries = history_queries(model, *histories_of(seen, users))
        parts.append(candidates(stage, queries, config.candidates))
    found = stack_candidates(parts)
    held_args = (held.user.numpy(), held.item.numpy(), held.label.numpy())
    gains = gains_of(found, np.tile(users, len(parts)), *held_args, config, RatingScale.liked)
    return fit_ranker(found, gains, config)


def held_out_report(
    model: MultiTaskModel,
    test: EncodedInteractions,
    scale: RatingScale,
    has_ratings: bool,
    *,
    protocol: EvalProtocol = "reference",
    seen: SeenItems | None = None,
) -> EvalReport:
    """Top-k and rating errors in the data's own stars; without ratings (implicit
    feedback) the rating head never trained, so its errors are left out (NaN)."""
    report = evaluate(
        model, test, k=10, rating_range=scale.high - scale.low, protocol=protocol, seen=seen
    )
    if has_ratings:
        return report
    nan = float("nan")
    return dataclasses.replace(report, rmse=nan, rmse_stars=nan, mae=nan, mae_stars=nan)


def train_model(
    dataset: Dataset,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    test_fraction: float = 0.2,
    split: str = "random",
    index: str = "exact",
    index_params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
    ranker: RankerConfig | None = None,
    ranker_progress: Progress | None = None,
    k: int = 10,
) -> SavedModel:
    """What ``mtrec train`` does: prepare, fit and evaluate one model, index its items.

    With ``ranker`` the list is served through the ranking stage, fitted first on the
    training rows alone (``fit_ranker_on_training_rows``; ``ranker_progress`` shows its
    stage one's training). ``metrics["lists"]`` holds the served list beside retrieval
    alone, popularity and EASE at ``k`` (honest protocol, paired 95% intervals).

    The result is ready for ``mtrec.artifact.save`` and for ``Recommender(...)``. The
    split is recorded (seed, fraction and a fingerprint of the test rows) so that
    ``evaluate_saved`` can rebuild and check it later.

    >>> saved = train_model(load_movielens(), train_config=TrainConfig(seed=42))
    >>> artifact.save(saved, "mtrec-out/model")
    """
    prepared = prepare(
        dataset, model_config, train_config, split=split, test_fraction=test_fraction
    )
    started = time.perf_counter()
    fitted_ranker = (
        None if ranker is None else fit_ranker_on_training_rows(prepared, ranker, ranker_progress)
    )
    ranker_seconds = time.perf_counter() - started
    fitted = fit_and_evaluate(prepared, progress=progress, checkpoints=checkpoints)
    model = fitted.model
    built, index_info = _index(model, index, index_params)
    two = None
    if fitted_ranker is not None:
        stage = stage_one(model, prepared.seen, fitted_ranker.config, built)
        two = TwoStage(stage, fitted_ranker)
    lists = served_lists(model, two, prepared, k=k)
    metrics = {
        **dataclasses.asdict(fitted.reference),
        "train_seconds": round(fitted.history.seconds, 3),
        "ranker_seconds": round(ranker_seconds, 3) if fitted_ranker is not None else None,
        "precision": fitted.history.precision,
        "history": [dataclasses.asdict(e) for e in fitted.history.epochs],
        "index": index_info,
        "served": _served_summary(lists),
        "lists": [dataclasses.asdict(r) for r in lists],
    }
    return SavedModel(
        model,
        model.config,
        prepared.train_config,
        prepared.vocabs,
        ItemInfo.from_items(prepared.vocabs.items, dataset.items),
        prepared.seen,
        liked_counts(prepared.train, prepared.n_items),
        built,
        _data_record(prepared),
        metrics,
        prepared.scale,
        fitted_ranker,
        None if two is None else two.stage.item_item,
    )


def served_lists(
    model: MultiTaskModel,
    two: TwoStage | None,
    prepared: Prepared,
    *,
    k: int = 10,
    ease_lambda: float = 500.0,
) -> list[ListReport]:
    """The served list beside retrieval alone, popularity and EASE on the held-out rows."""
    return _list_reports(model, two, prepared.seen, prepared.test, k, ease_lambda)


def _list_reports(
    model: MultiTaskModel,
    two: TwoStage | None,
    seen: SeenItems,
    test: EncodedInteractions,
    k: int,
    ease_lambda: float,
) -> list[ListReport]:
    users = np.unique(test.user.numpy())
    lists = user_lists(model, two, seen, users, k=k, ease_lambda=ease_lambda)
    return list_reports(lists, users, test)


def _served_summary(reports: list[ListReport]) -> dict[str, Any]:
    served = next(r for r in reports if r.name == SERVED)
    return {"k": served.k, "recall": served.recall, "ndcg": served.ndcg}


def _index(
    model: MultiTaskModel, kind: str, params: dict[str, Any] | None
) -> tuple[Index, dict[str, Any]]:
    """The retrieval index over the item embeddings; an approximate one is measured
    against the exact oracle on every user and carries that recall."""
    with torch.inference_mode():
        item_emb = model.embed_items().numpy().copy()
        user_emb = model.embed_users().numpy()
    built = build_index(kind, item_emb, **(params or {}))
    info: dict[str, Any] = {"kind": built.kind, "is_exact": built.is_exact}
    if not built.is_exact:
        recall = recall_vs_exact(built, ExactIndex(item_emb), user_emb, k=10)
        info["recall_at_10_vs_exact"] = recall
        if isinstance(built, FaissIndex):
            built.recall["recall_at_10"] = recall
    return built, info


def _data_record(prepared: Prepared) -> dict[str, Any]:
    """What the model was trained on, and the split to rebuild for ``evaluate_saved``."""
    dataset, parts = prepared.dataset, prepared.split
    return {
        "dataset": dataset.name,
        "source": dataset.source,
        "has_ratings": dataset.has_ratings,
        "skipped_rows": dataset.skipped,
        "split": {
            "kind": prepared.split_kind,
            "seed": prepared.train_config.seed,
            "test_fraction": prepared.test_fraction,
            "n_train": len(parts.train),
            "n_test": len(parts.test),
            "test_fingerprint": split_fingerprint(parts.test),
        },
    }


SPLITS = ("random", "temporal", "temporal-user")


def make_split(interactions: Interactions, kind: str, test_fraction: float, seed: int) -> Split:
    """``random`` (the reference's), ``temporal`` (the latest rows overall) or
    ``temporal-user`` (each user's latest rows)."""
    if kind == "random":
        return random_split(interactions, test_fraction=test_fraction, seed=seed)
    if kind not in SPLITS:
        raise ConfigError(f"split: expected one of {list(SPLITS)}, got {kind!r}")
    if not interactions.timestamp.any():
        raise ConfigError(f"a {kind} split needs timestamps; this data has none")
    per_user = kind == "temporal-user"
    return temporal_split(interactions, test_fraction=test_fraction, per_user=per_user, seed=seed)


def split_fingerprint(test: Interactions) -> str:
    """SHA-256 of the test rows (user, item, rating), to tell whether a split is the same."""
    digest = hashlib.sha256()
    for column in (test.user, test.item, test.rating):
        digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()


def evaluate_saved(saved: SavedModel, dataset: Dataset) -> EvalReport:
    """Re-evaluate a saved model on its own split, rebuilt from ``dataset``.

    Raises ``DataError`` when the rebuilt test rows differ from those the model was
    evaluated on at training time (other data, or another version of it).
    """
    test = _rebuilt_test(saved, dataset)
    return held_out_report(saved.model, test, saved.scale, saved.data.get("has_ratings", True))


def evaluate_saved_lists(saved: SavedModel, dataset: Dataset, *, k: int = 10) -> list[ListReport]:
    """The saved model's served list beside retrieval alone, popularity and EASE at ``k``,
    on its own rebuilt split (see ``evaluate_saved``)."""
    test = _rebuilt_test(saved, dataset)
    return _list_reports(saved.model, saved.two_stage(), saved.seen, test, k, 500.0)


def _rebuilt_test(saved: SavedModel, dataset: Dataset) -> EncodedInteractions:
    split_info = saved.data.get("split", {})
    split = make_split(
        dataset.interactions,
        split_info.get("kind", "random"),
        split_info.get("test_fraction", 0.2),
        split_info.get("seed", 42),
    )
    if split_fingerprint(split.test) != split_info.get("test_fingerprint"):
        raise DataError(
            f"the test split rebuilt from {dataset.source or dataset.name} differs from the one "
            "this model was evaluated on; evaluate it on the data it was trained with",
            field="split",
        )
    return encode(split.test, saved.vocabs, saved.scale)
