"""The ranking stage fitted on training rows alone, and assembled around a served model."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec import seeds
from mtrec.config import RankerConfig
from mtrec.evaluate import sample_users
from mtrec.evaluate.baselines import ease_weights
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    SeenItems,
    interaction_counts,
    seen_items,
)
from mtrec.index import ExactIndex, Index
from mtrec.model import MultiTaskModel
from mtrec.pipeline.epochs import EpochVerdicts, held_out_recall
from mtrec.pipeline.fit import _cpu_in_one_process
from mtrec.pipeline.prepare import Prepared, build_model
from mtrec.ranking import (
    Ranker,
    StageOne,
    TwoStage,
    candidates,
    fit_correction,
    fit_ranker,
    gains_of,
    histories_of,
    history_queries,
    stack_candidates,
    training_errors,
    user_queries,
)
from mtrec.runtime import side_by_side
from mtrec.train import Checks, Hooks, Progress, TrainingRecord, train

ITEM_ITEM_MAX_ITEMS = 10_000
"""The ranker's item-item source needs an (items x items) float32 matrix saved with the
model (400 MB at this size); larger catalogues rank with the two-tower signals alone."""


def carve(
    rows: EncodedInteractions, fraction: float, seed: int, latest: bool = False
) -> tuple[EncodedInteractions, EncodedInteractions]:
    """Split training rows into (stage one's rows, the ranker's held-aside rows), seeded;
    ``latest``: the held-aside rows are the last ``fraction`` of ``rows`` (in time order),
    as the test rows of a split by time are the latest."""
    if latest:
        held = torch.arange(len(rows)) >= len(rows) - round(len(rows) * fraction)
    else:
        draw = torch.Generator().manual_seed(seed + seeds.RANKER_CARVE)
        held = torch.rand(len(rows), generator=draw) < fraction
    return rows.subset(~held), rows.subset(held)


def two_stage(
    model: MultiTaskModel,
    seen: SeenItems,
    ranker: Ranker,
    index: Index | None = None,
    recent: NDArray[np.float64] | None = None,
) -> TwoStage:
    """The fitted ``ranker`` over a stage one built around ``model`` (see ``stage_one``),
    with the rating head's errors on ``seen`` where the ranker corrects ratings, and the
    recency-weighted counts ``recent`` where it reads them (``Ranker.half_life``)."""
    recent = recent if ranker.half_life is not None else None
    stage = stage_one(model, seen, ranker.config, index, ranker.correction, recent)
    if stage.correction:
        stage = stage.updated(errors=training_errors(stage, seen))
    return TwoStage.around(stage, seen, ranker)


def stage_one(
    model: MultiTaskModel,
    seen: SeenItems,
    config: RankerConfig,
    index: Index | None = None,
    correction: float = 0.0,
    recent: NDArray[np.float64] | None = None,
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
    counts = interaction_counts(seen, n_items)
    return StageOne(model, index, weights, counts, correction, recent=recent)


@dataclasses.dataclass(frozen=True)
class StageOneFit:
    """The ranking stage fitted on training rows alone: its stage one's model (trained on
    the training rows less the carved-out share, reading only their histories), the
    ranker, and their seconds."""

    ranker: Ranker
    model: MultiTaskModel
    history: TrainingRecord
    seconds: float
    """Stage one's training, its candidates and the ranker's fit."""

    def served(self, seen: SeenItems) -> MultiTaskModel:
        """Stage one as the served model: its user tower then reads every training row
        (``seen``), the carved-out share too. One model serves as the ranker learned it,
        at half the training of a second one on every row (``RankerConfig.refit``)."""
        self.model.set_history(seen)
        return self.model


def fit_stage_one(
    prepared: Prepared,
    config: RankerConfig,
    hooks: Hooks | None = None,
    verdicts: EpochVerdicts | None = None,
) -> StageOneFit:
    """The ranking stage, fitted without a test row: stage one trains on the training rows
    less a carved-out share; the neighbourhood correction's weight is fitted to that
    share's ratings, and the ranker learns to put that share first among its candidates
    (the share's rows of at most ``config.max_users`` users, a seeded sample). With
    ``verdicts``, stage one stops once its list of that share stops improving
    (``epochs``) and says so there. ``hooks``: stage one's progress and checkpoints."""
    started = time.perf_counter()
    tc, config = prepared.train_config, config.resolved(len(prepared.train))
    latest = prepared.split_kind == "temporal"  # its training rows are in time order
    fit_rows, held = carve(prepared.train, cast(float, config.holdout), tc.seed, latest)
    held, _ = sample_users(held, config.max_users, tc.seed + seeds.RANKER_USERS)
    seen = seen_items(fit_rows, prepared.n_users)
    model = build_model(prepared.dataset, prepared.vocabs, prepared.model_config, tc.seed, seen)
    hooks = hooks or Hooks()
    try:
        checks = None
        if verdicts is not None:
            recall = held_out_recall(model, seen, held, verdicts.k, tc.seed)
            checks = Checks(verdicts.judge_with(recall), verdicts.per_epoch)
        history = train(model, fit_rows, tc, hooks.progress, hooks.checkpoints, checks)
    finally:
        if verdicts is not None:
            verdicts.close()
    half_life = prepared.recency.half_life  # stage one's own rows, weighted alike
    recent = None if half_life is None else prepared.recency.counts(fit_rows, prepared.n_items)
    del fit_rows  # trained: its copy of the rows (300 MB at 16M) goes before the candidates
    stage = stage_one(model, seen, config, recent=recent)
    ranker = _fit_ranker(stage, seen, held, config, prepared.dataset.has_ratings, half_life)
    return StageOneFit(ranker, model, history, time.perf_counter() - started)


def _fit_ranker(
    stage: StageOne,
    seen: SeenItems,
    held: EncodedInteractions,
    config: RankerConfig,
    rated: bool,
    half_life: float | None,
) -> Ranker:
    """The correction's weight (where the log is ``rated``) and the ranker, fitted on the
    carved-out rows ``held`` (``seen``: stage one's own rows)."""
    if config.rating_correction and rated and len(held):
        stage = stage.updated(correction=fit_correction(stage, seen, held))
    users = np.unique(held.user.numpy())
    parts = [candidates(stage, user_queries(stage, users, seen), config.candidates)]
    if stage.model.config.history:  # the same users again, as new users known by their history
        queries = history_queries(stage.model, *histories_of(seen, users))
        parts.append(candidates(stage, queries, config.candidates))
    found = stack_candidates(parts)
    held_args = (held.user.numpy(), held.item.numpy(), held.label.numpy())
    gains = gains_of(found, np.tile(users, len(parts)), *held_args, config, RatingScale.liked)
    return fit_ranker(found, gains, config, stage.correction, half_life)


SIDE_BY_SIDE_MAX_ROWS = 20_000_000
"""``mtrec train`` fits the ranker (its stage one's training) and the served model side by
side on a CPU up to this many training rows; beyond, one after the other, to bound memory.
Both stop at stage one's verdicts (``epochs``), so neither trains long after the other.
Measured (default preset with a 128-64 head, 2-core AMD EPYC, seed 42): the planted ML-1M
shape (800k rows,
5 epochs), alternating, 79.6 / 75.5 s one after the other against 64.7 / 55.4 s side by
side, 1.10 -> 1.39 GB peak; the planted 25M log (16.2M rows, two thirds of an epoch),
946 s against 701 s, 3.07 -> 3.78 GB peak, the same list."""


def fit_ranker_beside(
    prepared: Prepared,
    config: RankerConfig,
    progress: Progress | None,
    fit_model: Callable[[], tuple[MultiTaskModel, TrainingRecord]],
    verdicts: EpochVerdicts | None = None,
) -> tuple[tuple[Ranker, float], tuple[MultiTaskModel, TrainingRecord]]:
    """The ranker fitted on ``prepared``'s training rows (and its seconds) and
    ``fit_model``'s model, side by side where that is cheap (``SIDE_BY_SIDE_MAX_ROWS``, a
    CPU, one process), else the ranker first: ``fit_model`` may wait for its stage one's
    ``verdicts`` on each epoch."""

    def fit_ranker() -> tuple[Ranker, float]:
        started = time.perf_counter()
        fitted = fit_stage_one(prepared, config, Hooks(progress), verdicts).ranker
        return fitted, time.perf_counter() - started

    at_once = len(prepared.train) <= SIDE_BY_SIDE_MAX_ROWS and _cpu_in_one_process(
        prepared.train_config
    )
    done, _ = side_by_side([fit_ranker, fit_model], at_once)
    ranker, model = done
    return cast(tuple[Ranker, float], ranker), cast(tuple[MultiTaskModel, TrainingRecord], model)
