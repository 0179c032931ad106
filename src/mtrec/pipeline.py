"""One pipeline for every run: prepare the data, build a model, fit it, evaluate it.

``prepare`` does what every run needs before training (split, vocabularies, rating
scale, encoded rows, each user's seen items, and the configs adjusted to the data:
side features it has no metadata for dropped, the rating task off without ratings);
``fit_and_evaluate`` trains one model and measures it under both protocols.
``train_model`` (``mtrec train``), ``compare`` and ``sweep`` are all built on these two.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.artifact import ItemInfo, SavedModel
from mtrec.baselines import ease_weights
from mtrec.checkpoint import Checkpointing
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data import (
    Dataset,
    Interactions,
    Split,
    no_holdout,
    random_split,
    temporal_split,
)
from mtrec.distributed import world
from mtrec.errors import ConfigError, DataError
from mtrec.evaluate import (
    EVAL_USERS,
    SERVED,
    EvalProtocol,
    EvalReport,
    ListReport,
    evaluate,
    list_reports,
    rating_report,
    sample_users,
    user_lists,
)
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    SeenItems,
    Unseen,
    Vocabs,
    available_features,
    encode,
    feature_codes,
    interaction_counts,
    known_rows,
    liked_counts,
    seen_items,
)
from mtrec.index import ExactIndex, FaissIndex, Index, build_index, recall_vs_exact
from mtrec.model import MultiTaskModel
from mtrec.ranker import (
    Ranker,
    StageOne,
    candidates,
    fit_correction,
    fit_ranker,
    gains_of,
    histories_of,
    history_queries,
    predicted_for_pairs,
    stack_candidates,
    training_errors,
    user_queries,
    with_known_item_item,
)
from mtrec.runtime import resolve_device, side_by_side
from mtrec.train import History, Progress, train
from mtrec.two_stage import TwoStage
from mtrec.warm import (
    REPLAY,
    check_shape,
    extended_vocabs,
    inherit,
    merged_items,
    merged_seen,
    replayed_share,
    with_replay,
)

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
    if not prepared.held_out:
        raise ConfigError("nothing is held out to evaluate on (test_fraction 0); use fit_prepared")
    model, history = fit_prepared(prepared, train_config, model_config, progress, checkpoints)
    test, scale, rated = prepared.test, prepared.scale, prepared.dataset.has_ratings
    on = history.device  # the all-users top-k runs where training ran
    reference = held_out_report(model, test, scale, rated, device=on)
    honest = held_out_report(
        model, test, scale, rated, protocol="honest", seen=prepared.seen, device=on
    )
    return Fitted(model, history, reference, honest)


def fit_side_by_side(
    prepared: Prepared, runs: Sequence[tuple[TrainConfig, ModelConfig | None, Progress | None]]
) -> tuple[list[Fitted], int]:
    """``fit_and_evaluate`` of each (train config, model config, progress) run on
    ``prepared``, and how many trained at once: side by side on a CPU, each on a share of
    its threads (``side_by_side``; the longest run should come first), in one process (a
    GPU or torchrun runs them one after the other). Each model draws from its own
    generator (``MultiTaskModel.seed_draws``), so the models are those of one after the
    other."""
    jobs = [
        functools.partial(fit_and_evaluate, prepared, tc, mc, progress=progress)
        for tc, mc, progress in runs
    ]
    return side_by_side(jobs, at_once=_cpu_in_one_process(*(tc for tc, _, _ in runs)))


def _cpu_in_one_process(*configs: TrainConfig) -> bool:
    """Whether runs of ``configs`` may train side by side: every one on the CPU, in one
    process (on a GPU or under torchrun they train one after the other)."""
    return all(resolve_device(tc.device).type == "cpu" for tc in configs) and world().size == 1


def fit_prepared(
    prepared: Prepared,
    train_config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
    init_from: MultiTaskModel | None = None,
) -> tuple[MultiTaskModel, History]:
    """Build and train one model on ``prepared``'s training rows (its own configs by
    default), from ``init_from``'s weights where given (a warm start: see ``warm``)."""
    tc = train_config or prepared.train_config
    mc = model_config or prepared.model_config
    model = build_model(prepared.dataset, prepared.vocabs, mc, tc.seed, prepared.seen)
    if init_from is not None:
        inherit(model, init_from)
    return model, train(model, prepared.train, tc, progress, checkpoints)


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


def two_stage(
    model: MultiTaskModel, seen: SeenItems, ranker: Ranker, index: Index | None = None
) -> TwoStage:
    """The fitted ``ranker`` over a stage one built around ``model`` (see ``stage_one``),
    with the rating head's errors on ``seen`` where the ranker corrects ratings."""
    stage = stage_one(model, seen, ranker.config, index, ranker.correction)
    if stage.correction:
        stage = stage.updated(errors=training_errors(stage, seen))
    return TwoStage(with_known_item_item(stage, seen, ranker.config.candidates), ranker)


def stage_one(
    model: MultiTaskModel,
    seen: SeenItems,
    config: RankerConfig,
    index: Index | None = None,
    correction: float = 0.0,
) -> StageOne:
    """Stage one over the training histories ``seen``: the model, an index of its items
    (exact unless given), EASE weights where the catalogue allows, item counts, and the
    neighbourhood correction's weight."""
    if index is None:
        with torch.inference_mode():
            index = ExactIndex(model.embed_items().numpy())
    n_items = model.n_items
    use_item_item = config.item_item and n_items <= ITEM_ITEM_MAX_ITEMS
    rows = seen.as_rows()
    weights = ease_weights(rows, n_items, config.item_item_lambda) if use_item_item else None
    return StageOne(model, index, weights, interaction_counts(seen, n_items), correction)


def fit_ranker_on_training_rows(
    prepared: Prepared, config: RankerConfig, progress: Progress | None = None
) -> Ranker:
    """The ranker, fitted without a test row: stage one trains on the training rows less a
    carved-out share; the neighbourhood correction's weight is fitted to that share's
    ratings, and the ranker learns to put that share first among its candidates (the
    share's rows of at most ``config.max_users`` users, a seeded sample)."""
    tc = prepared.train_config
    fit_rows, held = carve(prepared.train, config.holdout, tc.seed)
    held, _ = sample_users(held, config.max_users, tc.seed + 7_919)
    seen = seen_items(fit_rows, prepared.n_users)
    model = build_model(prepared.dataset, prepared.vocabs, prepared.model_config, tc.seed, seen)
    train(model, fit_rows, tc, progress)
    del fit_rows  # trained: its copy of the rows (300 MB at 16M) goes before the candidates
    stage = stage_one(model, seen, config)
    if config.rating_correction and prepared.dataset.has_ratings and len(held):
        stage = stage.updated(correction=fit_correction(stage, seen, held))
    users = np.unique(held.user.numpy())
    parts = [candidates(stage, user_queries(stage, users, seen), config.candidates)]
    if model.config.history:  # the same users again, as new users known by their history
        queries = history_queries(model, *histories_of(seen, users))
        parts.append(candidates(stage, queries, config.candidates))
    found = stack_candidates(parts)
    held_args = (held.user.numpy(), held.item.numpy(), held.label.numpy())
    gains = gains_of(found, np.tile(users, len(parts)), *held_args, config, RatingScale.liked)
    return fit_ranker(found, gains, config, stage.correction)


def held_out_report(
    model: MultiTaskModel,
    test: EncodedInteractions,
    scale: RatingScale,
    has_ratings: bool,
    *,
    protocol: EvalProtocol = "reference",
    seen: SeenItems | None = None,
    device: str = "cpu",
) -> EvalReport:
    """Top-k and rating errors in the data's own stars; without ratings (implicit
    feedback) the rating head never trained, so its errors are left out (NaN). The top-k
    search runs on ``device``."""
    range_ = scale.high - scale.low
    report = evaluate(
        model, test, k=10, rating_range=range_, protocol=protocol, seen=seen, device=device
    )
    if has_ratings:
        return report
    nan = float("nan")
    return dataclasses.replace(report, rmse=nan, rmse_stars=nan, mae=nan, mae_stars=nan)


def served_ratings(
    report: EvalReport,
    two: TwoStage | None,
    seen: SeenItems,
    test: EncodedInteractions,
    scale: RatingScale,
) -> EvalReport:
    """``report`` with the rating errors of the ratings the service shows: the rating
    head's plus the ranking stage's neighbourhood correction, where it has one."""
    if two is None or not two.stage.correction or math.isnan(report.rmse) or not len(test):
        return report
    predicted = predicted_for_pairs(two.stage, seen, test.user.numpy(), test.item.numpy())
    rated = rating_report(torch.from_numpy(predicted), test.label, scale.high - scale.low)
    return dataclasses.replace(report, **rated)  # type: ignore[arg-type]


def train_model(
    dataset: Dataset,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    test_fraction: float = 0.2,
    split: str = "random",
    test: Dataset | None = None,
    estimate_fraction: float | None = None,
    index: str = "exact",
    index_params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
    ranker: RankerConfig | None = None,
    ranker_progress: Progress | None = None,
    k: int = 10,
    init_from: SavedModel | None = None,
    replay: float = REPLAY,
    eval_users: int | None = EVAL_USERS,
) -> SavedModel:
    """What ``mtrec train`` does: prepare, fit and evaluate one model, index its items.

    With ``ranker`` the list is served through the ranking stage, fitted first on the
    training rows alone (``fit_ranker_on_training_rows``; ``ranker_progress`` shows its
    stage one's training). ``metrics["lists"]`` holds the served list beside retrieval
    alone, popularity and EASE at ``k`` (honest protocol, paired 95% intervals).

    The evaluation measures at most ``eval_users`` test users (a sample seeded by the
    run's seed, recorded in ``metrics["evaluated_users"]``; 0 or None: all of them).

    ``test_fraction=0`` trains on every row, to deploy: seen items and popularity come
    from the whole log, and nothing is evaluated; with ``estimate_fraction`` the same
    config is first trained with that share held out and its metrics are recorded as
    ``metrics["estimate"]``. ``test`` evaluates on a test set of its own (see ``prepare``).

    ``init_from`` continues a saved model on ``dataset``'s (new) interactions: known users
    and items keep their rows and weights, new ones are appended, the optimizer starts
    afresh; the model config must be the saved one, and its ranker is kept (stage one is
    rebuilt around the continued model). ``replay`` trains the rating head on that share
    of the saved model's own rows again beside the new ones (``warm.REPLAY`` by default).

    The result is ready for ``mtrec.artifact.save`` and for ``Recommender(...)``. The
    split is recorded (seed, fraction and a fingerprint of the test rows) so that
    ``evaluate_saved`` can rebuild and check it later.

    >>> saved = train_model(load_movielens(), train_config=TrainConfig(seed=42))
    >>> artifact.save(saved, "mtrec-out/model")
    """
    prepared = prepare(
        dataset,
        model_config,
        train_config,
        split=split,
        test_fraction=test_fraction,
        test=test,
        init_from=init_from,
        replay=replay,
    )
    if init_from is not None:
        check_shape(init_from.model_config, prepared.model_config)
    estimate = None
    if estimate_fraction is not None:
        if prepared.held_out:
            raise ConfigError("an estimate from a held-out run goes with test_fraction 0")
        estimate = train_model(
            dataset,
            prepared.model_config,
            prepared.train_config,
            test_fraction=estimate_fraction,
            split=split,
            progress=progress,
            ranker=ranker,
            ranker_progress=ranker_progress,
            k=k,
            init_from=init_from,
            replay=replay,
            eval_users=eval_users,
        ).metrics
    old_model = None if init_from is None else init_from.model

    def fit_model() -> tuple[MultiTaskModel, History]:
        return fit_prepared(
            prepared, progress=progress, checkpoints=checkpoints, init_from=old_model
        )

    started = time.perf_counter()
    if init_from is not None or ranker is None:
        fitted_ranker, ranker_seconds = None if init_from is None else init_from.ranker, 0.0
        model, history = fit_model()
    else:
        (fitted_ranker, ranker_seconds), (model, history) = fit_ranker_beside(
            prepared, ranker, ranker_progress, fit_model
        )
    fit_seconds = time.perf_counter() - started  # both fits: side by side, they overlap
    built, index_info = _index(model, index, index_params)
    two = None if fitted_ranker is None else two_stage(model, prepared.seen, fitted_ranker, built)
    metrics = {
        **_held_out_metrics(
            model, two, prepared, k, estimate, estimate_fraction, history.device, eval_users
        ),
        "train_seconds": round(history.seconds, 3),
        "ranker_seconds": round(ranker_seconds, 3) if fitted_ranker is not None else None,
        "fit_seconds": round(fit_seconds, 3),
        "device": history.device,
        "precision": history.precision,
        "precision_reason": history.precision_reason,
        "history": [dataclasses.asdict(e) for e in history.epochs],
        "index": index_info,
    }
    replay = replayed_share(replay, prepared.train_config)
    items, popularity, data = _what_it_knows(prepared, init_from, replay)
    return SavedModel(
        model,
        model.config,
        # the precision that ran, not "auto": the saved config then trains the same model;
        # the device is the machine's, not the model's (metrics.json says which ran): a
        # model trained on a GPU retrains or warm-starts anywhere
        dataclasses.replace(
            prepared.train_config,
            precision="bf16" if history.precision == "bf16" else "fp32",
            device="auto",
        ),
        prepared.vocabs,
        items,
        prepared.seen,
        popularity,
        built,
        data,
        metrics,
        prepared.scale,
        fitted_ranker,
        None if two is None else two.stage.item_item,
        None if two is None else two.stage.errors,
    )


SIDE_BY_SIDE_MAX_ROWS = 250_000
"""``mtrec train`` fits the ranker (its stage one's training) and the served model side by
side on a CPU up to this many training rows. Measured (default preset, 2-core AMD EPYC):
ML-100K's 80k rows, ``mtrec train`` 57.9 / 62.3 s -> 45.5 / 46.7 s; the 1M planted log
(one epoch), 141.5 -> 145.3 s and 1.39 -> 1.88 GB peak: there the ranker's candidates
and fit run long after the served model has ended, on the one thread they started with,
and the two runs' memory adds up."""


def fit_ranker_beside(
    prepared: Prepared,
    config: RankerConfig,
    progress: Progress | None,
    fit_model: Callable[[], tuple[MultiTaskModel, History]],
) -> tuple[tuple[Ranker, float], tuple[MultiTaskModel, History]]:
    """The ranker fitted on ``prepared``'s training rows (and its seconds) and
    ``fit_model``'s model, side by side where that is cheap (``SIDE_BY_SIDE_MAX_ROWS``, a
    CPU, one process): they are independent until the served list is put together."""

    def fit_ranker() -> tuple[Ranker, float]:
        started = time.perf_counter()
        fitted = fit_ranker_on_training_rows(prepared, config, progress)
        return fitted, time.perf_counter() - started

    at_once = len(prepared.train) <= SIDE_BY_SIDE_MAX_ROWS and _cpu_in_one_process(
        prepared.train_config
    )
    done, _ = side_by_side([fit_model, fit_ranker], at_once)
    model, ranker = done
    return cast(tuple[Ranker, float], ranker), cast(tuple[MultiTaskModel, History], model)


def _what_it_knows(
    prepared: Prepared, init_from: SavedModel | None, replay: float
) -> tuple[ItemInfo, NDArray[np.int64], dict[str, Any]]:
    """The saved model's item metadata, popularity (the unknown-user list) and data
    record; a warm start's join the saved model's with the new data's."""
    items = ItemInfo.from_items(prepared.vocabs.items, prepared.dataset.items)
    data = _data_record(prepared)
    if init_from is None:
        return items, liked_counts(prepared.train, prepared.n_items), data
    data["warm_start"] = {
        "users": [len(init_from.vocabs.users), prepared.n_users],
        "items": [len(init_from.vocabs.items), prepared.n_items],
        "replay": replay,
        "from": init_from.data,
    }
    # popularity from every user's seen items, old and new (the rows hold replayed ones)
    popularity = liked_counts(prepared.seen.as_rows(), prepared.n_items)
    return merged_items(init_from.items, items), popularity, data


NOT_EVALUATED = "none: every row trained (holdout none), nothing was held out to evaluate on"


def _held_out_metrics(
    model: MultiTaskModel,
    two: TwoStage | None,
    prepared: Prepared,
    k: int,
    estimate: dict[str, Any] | None,
    estimate_fraction: float | None,
    device: str = "cpu",
    eval_users: int | None = EVAL_USERS,
) -> dict[str, Any]:
    """Both protocols' metrics and the lists on the test rows (of at most ``eval_users``
    test users, a sample seeded by the run's seed), or, without test rows, a statement
    that nothing was evaluated (and the held-out estimate, where made); the top-k
    searches run on ``device``."""
    if not prepared.held_out:
        said: dict[str, Any] = {"evaluation": NOT_EVALUATED}
        if estimate is not None:
            keep = ("top_k_accuracy", "rmse", "rmse_stars", "served", "lists", "n_test")
            said["estimate"] = {
                "what": "the same config trained with a share of the rows held out",
                "test_fraction": estimate_fraction,
                **{key: estimate[key] for key in keep if key in estimate},
            }
        return said
    seed = prepared.train_config.seed
    test, evaluated = sample_users(prepared.test, eval_users, seed)
    scale, rated = prepared.scale, prepared.dataset.has_ratings
    head = held_out_report(model, test, scale, rated, device=device)
    reference = served_ratings(head, two, prepared.seen, test, scale)
    lists = _list_reports(model, two, prepared.seen, test, k, 500.0, device)
    said = {
        "evaluated_users": evaluated.to_dict(),
        **dataclasses.asdict(reference),
        "rating_head": {"rmse": head.rmse, "rmse_stars": head.rmse_stars, "mae": head.mae},
        "served": served_summary(lists),
        "lists": [dataclasses.asdict(r) for r in lists],
    }
    if prepared.unseen is not None:
        said["unseen_test"] = prepared.unseen.to_dict()
    return said


def served_lists(
    model: MultiTaskModel,
    two: TwoStage | None,
    prepared: Prepared,
    *,
    k: int = 10,
    ease_lambda: float = 500.0,
    device: str = "cpu",
) -> list[ListReport]:
    """The served list beside retrieval alone, popularity and EASE on the held-out rows."""
    return _list_reports(model, two, prepared.seen, prepared.test, k, ease_lambda, device)


def _list_reports(
    model: MultiTaskModel,
    two: TwoStage | None,
    seen: SeenItems,
    test: EncodedInteractions,
    k: int,
    ease_lambda: float,
    device: str = "cpu",
) -> list[ListReport]:
    users = np.unique(test.user.numpy())
    lists = user_lists(model, two, seen, users, k=k, ease_lambda=ease_lambda, device=device)
    return list_reports(lists, users, test)


def served_summary(reports: list[ListReport]) -> dict[str, Any]:
    """The served list's k, recall and NDCG: ``metrics.json``'s ``served``."""
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
    dataset, (n_train, n_test) = prepared.dataset, prepared.split_rows
    return {
        "dataset": dataset.name,
        "source": dataset.source,
        "has_ratings": dataset.has_ratings,
        "skipped_rows": dataset.skipped,
        "split": {
            "kind": prepared.split_kind,
            "seed": prepared.train_config.seed,
            "test_fraction": prepared.test_fraction,
            "n_train": n_train,
            "n_test": n_test,
            "test_fingerprint": prepared.test_fingerprint,
            **({"test_source": prepared.test_source} if prepared.test_source else {}),
        },
    }


GIVEN = "given"
"""The split kind of a run evaluated on a test set of its own (``prepare(test=...)``)."""


def make_split(interactions: Interactions, kind: str, test_fraction: float, seed: int) -> Split:
    """``random`` (the reference's), ``temporal`` (the latest rows overall) or
    ``temporal-user`` (each user's latest rows); ``test_fraction`` 0: no test part."""
    if kind not in SPLITS:
        raise ConfigError(f"split: expected one of {list(SPLITS)}, got {kind!r}")
    if test_fraction == 0:
        return no_holdout(interactions, seed=seed)
    if kind == "random":
        return random_split(interactions, test_fraction=test_fraction, seed=seed)
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
    return _saved_report(saved, test, saved.data.get("has_ratings", True), saved.two_stage())


def _same_users(saved: SavedModel, test: EncodedInteractions) -> EncodedInteractions:
    """The test users the model was measured on at training time (its seeded sample)."""
    said = saved.metrics.get("evaluated_users") or {}
    if said.get("seed") is None:
        return test
    return sample_users(test, said["users"], said["seed"])[0]


def evaluate_saved_with_lists(
    saved: SavedModel, dataset: Dataset, *, k: int = 10
) -> tuple[EvalReport, list[ListReport]]:
    """``evaluate_saved`` and the served list beside retrieval alone, popularity and EASE
    at ``k`` on the same rebuilt split (rebuilt once, the ranking stage built once)."""
    test = _rebuilt_test(saved, dataset)
    two = saved.two_stage()
    report = _saved_report(saved, test, saved.data.get("has_ratings", True), two)
    return report, _list_reports(saved.model, two, saved.seen, test, k, 500.0)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A saved model measured on a test set of its own: both protocols' errors, the lists,
    and the test rows it could not score (a user or item it never saw)."""

    report: EvalReport
    lists: list[ListReport]
    unseen: Unseen


def evaluate_saved_on(saved: SavedModel, test: Dataset, *, k: int = 10) -> Evaluation:
    """Evaluate a saved model on other data (next week's log, a published test file);
    its own training items stay excluded from the lists, as when it serves."""
    kept, unseen = scorable_rows(test, saved.vocabs)
    encoded = encode(kept, saved.vocabs, saved.scale)
    rated = saved.data.get("has_ratings", True) and test.has_ratings
    two = saved.two_stage()
    report = _saved_report(saved, encoded, rated, two)
    lists = _list_reports(saved.model, two, saved.seen, encoded, k, 500.0)
    return Evaluation(report, lists, unseen)


def _saved_report(
    saved: SavedModel, test: EncodedInteractions, rated: bool, two: TwoStage | None
) -> EvalReport:
    """A saved model's metrics on ``test``, its rating errors those of the ratings it shows."""
    report = held_out_report(saved.model, test, saved.scale, rated)
    return served_ratings(report, two, saved.seen, test, saved.scale)


def _rebuilt_test(saved: SavedModel, dataset: Dataset) -> EncodedInteractions:
    """The test rows the model was measured on at training time, rebuilt from ``dataset``."""
    split_info = saved.data.get("split", {})
    if split_info.get("kind") == GIVEN or split_info.get("test_fraction") == 0:
        source = split_info.get("test_source")
        what = f"on its own test set ({source})" if source else "on every row (holdout none)"
        raise ConfigError(
            f"this model was trained {what}: there is no split to rebuild; evaluate it on a "
            "test file of its own (--test-interactions FILE)"
        )
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
    return _same_users(saved, encode(split.test, saved.vocabs, saved.scale))
