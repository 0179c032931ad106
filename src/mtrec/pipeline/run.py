"""What ``mtrec train`` does, in named steps: prepare, fit, index, assemble, measure, save."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.artifact import ItemInfo, SavedModel
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data import Dataset
from mtrec.errors import ConfigError
from mtrec.evaluate import EVAL_USERS
from mtrec.features import liked_counts
from mtrec.index import ExactIndex, FaissIndex, Index, build_index, recall_vs_exact
from mtrec.model import MultiTaskModel
from mtrec.pipeline.epochs import EpochVerdicts
from mtrec.pipeline.fit import fit_prepared
from mtrec.pipeline.metrics import _held_out_metrics
from mtrec.pipeline.prepare import Prepared, prepare
from mtrec.pipeline.stages import fit_ranker_beside, fit_stage_one, two_stage
from mtrec.ranking import Ranker, TwoStage
from mtrec.train import Checks, Hooks, Progress, TrainingRecord
from mtrec.train.checkpoint import Checkpointing
from mtrec.warm import REPLAY, check_shape, merged_items, replayed_share

PHASE_LOG = logging.getLogger("mtrec.pipeline.phases")
"""Where a run says what it has done and what it does next (silenced by ``-q``)."""


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
    training rows alone (``fit_stage_one``; ``ranker_progress`` shows its
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
    if estimate_fraction is not None and not 0 < estimate_fraction < 1:  # NaN too
        raise ConfigError(f"estimate_fraction: expected a share in (0, 1), got {estimate_fraction}")
    phases = Phases()
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
    phases.done("prepare", "training")
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
        phases.done("estimate")
    fits = _fit(prepared, ranker, init_from, progress, ranker_progress, checkpoints)
    phases.done("fit", "building the index and the ranking stage")
    built, index_info = _index(fits.model, index, index_params)
    two = _served_stages(prepared, fits, built)
    phases.done(
        "index and ranking stage", "evaluating on the held-out rows" if prepared.held_out else None
    )
    history = fits.history
    measured = _held_out_metrics(
        fits.model, two, prepared, k, estimate, estimate_fraction, history.device, eval_users
    )
    phases.done("evaluation")
    metrics = {**measured, **_run_record(fits, index_info), "phases": phases.seconds}
    return _saved_model(prepared, fits, built, two, metrics, init_from, replay)


class Phases:
    """Wall seconds of a run's phases, each from the end of the one before: what
    ``metrics.json`` records as ``phases`` and ``mtrec train`` prints."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, phase: str, then: str | None = None) -> None:
        """``phase`` ended now; its seconds are recorded, and logged with what comes
        ``then`` (``mtrec.pipeline.phases``, INFO: the CLI shows it unless ``-q``)."""
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now
        next_up = f"; {then}" if then else ""
        PHASE_LOG.info("%s: %.1f s%s", phase, self.seconds[phase], next_up)


@dataclasses.dataclass(frozen=True)
class _Fits:
    """The served model and the ranking stage's ranker, fitted, with their seconds."""

    model: MultiTaskModel
    history: TrainingRecord
    ranker: Ranker | None
    ranker_seconds: float
    """The ranking stage's own seconds: its candidates and ranker (with ``refit``, its
    stage one's training too, beside the served model's)."""
    seconds: float
    """Both fits' wall time (side by side, they overlap)."""
    epochs: dict[str, Any] | None = None
    """How many epochs ran and why, where stage one's verdicts decided (``epochs``)."""


def _fit(
    prepared: Prepared,
    ranker: RankerConfig | None,
    init_from: SavedModel | None,
    progress: Progress | None,
    ranker_progress: Progress | None,
    checkpoints: Checkpointing | None,
) -> _Fits:
    """The served model, and the ranker where one is asked for: stage one serves, or with
    ``refit`` a second model trained on every row (side by side where cheap); a warm
    start keeps the saved model's ranker."""
    old_model = None if init_from is None else init_from.model
    ranker = None if ranker is None else ranker.resolved(len(prepared.train))
    verdicts = None  # a validation slice of the config's own decides its epochs instead
    tc = prepared.train_config
    if init_from is None and ranker is not None and ranker.min_gain and not tc.validation_fraction:
        verdicts = EpochVerdicts.for_rows(
            len(prepared.train), ranker.min_gain, tc.epochs, ranker.candidates
        )

    def fit_model() -> tuple[MultiTaskModel, TrainingRecord]:
        checks = None if verdicts is None else Checks(verdicts.served_stops, verdicts.per_epoch)
        hooks = Hooks(progress, checkpoints, checks)
        return fit_prepared(prepared, hooks=hooks, init_from=old_model)

    started = time.perf_counter()
    if init_from is not None or ranker is None:
        fitted_ranker, ranker_seconds = None if init_from is None else init_from.ranker, 0.0
        model, history = fit_model()
    elif ranker.refit:
        (fitted_ranker, ranker_seconds), (model, history) = fit_ranker_beside(
            prepared, ranker, ranker_progress, fit_model, verdicts
        )
    else:  # stage one serves
        stage = fit_stage_one(prepared, ranker, Hooks(progress, checkpoints), verdicts)
        fitted_ranker, ranker_seconds = stage.ranker, stage.seconds - stage.history.seconds
        model, history = stage.served(prepared.seen), stage.history
    seconds = time.perf_counter() - started
    epochs = None if verdicts is None else verdicts.record()
    return _Fits(model, history, fitted_ranker, ranker_seconds, seconds, epochs)


def _served_stages(prepared: Prepared, fits: _Fits, index: Index) -> TwoStage | None:
    """The served model's ranking stage (None without a ranker)."""
    if fits.ranker is None:
        return None
    return two_stage(fits.model, prepared.seen, fits.ranker, index, prepared.fallback_counts)


def _run_record(fits: _Fits, index_info: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``'s record of the run: seconds, device, precision, epochs, index."""
    history = fits.history
    return {
        "train_seconds": round(history.seconds, 3),
        "ranker_seconds": round(fits.ranker_seconds, 3) if fits.ranker is not None else None,
        "fit_seconds": round(fits.seconds, 3),
        "device": history.device,
        "precision": history.precision,
        "precision_reason": history.precision_reason,
        "history": [dataclasses.asdict(e) for e in history.epochs],
        "index": index_info,
        **({"epochs": fits.epochs} if fits.epochs is not None else {}),
    }


def _saved_model(
    prepared: Prepared,
    fits: _Fits,
    index: Index,
    two: TwoStage | None,
    metrics: dict[str, Any],
    init_from: SavedModel | None,
    replay: float,
) -> SavedModel:
    """The model directory's contents, ready for ``artifact.save``."""
    share = replayed_share(replay, prepared.train_config)
    items, popularity, data = _what_it_knows(prepared, init_from, share)
    # the precision that ran, not "auto": the saved config then trains the same model;
    # the device is the machine's, not the model's (metrics.json says which ran): a
    # model trained on a GPU retrains or warm-starts anywhere
    train_config = dataclasses.replace(
        prepared.train_config,
        precision="bf16" if fits.history.precision == "bf16" else "fp32",
        device="auto",
    )
    return SavedModel(
        model=fits.model,
        model_config=fits.model.config,
        train_config=train_config,
        vocabs=prepared.vocabs,
        items=items,
        seen=prepared.seen,
        popularity=popularity,
        index=index,
        data=data,
        metrics=metrics,
        scale=prepared.scale,
        ranker=fits.ranker,
        item_item=None if two is None else two.stage.item_item,
        rating_errors=None if two is None else two.stage.errors,
    )


def _what_it_knows(
    prepared: Prepared, init_from: SavedModel | None, replay: float
) -> tuple[ItemInfo, NDArray[np.float64], dict[str, Any]]:
    """The saved model's item metadata, popularity (the unknown-user list) and data
    record; a warm start's join the saved model's with the new data's."""
    items = ItemInfo.from_items(prepared.vocabs.items, prepared.dataset.items)
    data = _data_record(prepared)
    if init_from is None:
        return items, prepared.fallback_counts, data
    data["warm_start"] = {
        "users": [len(init_from.vocabs.users), prepared.n_users],
        "items": [len(init_from.vocabs.items), prepared.n_items],
        "replay": replay,
        "from": init_from.data,
    }
    # popularity from every user's seen items, old and new (the rows hold replayed ones)
    popularity = liked_counts(prepared.seen.as_rows(), prepared.n_items).astype(np.float64)
    return merged_items(init_from.items, items), popularity, data


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
        **({"recency": prepared.recency.to_dict()} if prepared.recency.validation else {}),
    }
