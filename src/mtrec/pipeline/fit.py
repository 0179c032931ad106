"""Fitting models on prepared data: one model, or several side by side on a CPU."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from mtrec.config import ModelConfig, TrainConfig
from mtrec.distributed import world
from mtrec.errors import ConfigError
from mtrec.evaluate import EvalReport
from mtrec.model import MultiTaskModel
from mtrec.pipeline.metrics import held_out_report
from mtrec.pipeline.prepare import Prepared, build_model
from mtrec.runtime import resolve_device, side_by_side
from mtrec.train import Hooks, Progress, TrainingRecord, train
from mtrec.train.checkpoint import Checkpointing
from mtrec.warm import inherit


@dataclasses.dataclass(frozen=True)
class Fitted:
    """One trained model and its held-out metrics under both protocols."""

    model: MultiTaskModel
    history: TrainingRecord
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
    hooks = Hooks(progress, checkpoints)
    model, history = fit_prepared(prepared, train_config, model_config, hooks)
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
    hooks: Hooks | None = None,
    init_from: MultiTaskModel | None = None,
) -> tuple[MultiTaskModel, TrainingRecord]:
    """Build and train one model on ``prepared``'s training rows (its own configs by
    default), from ``init_from``'s weights where given (a warm start: see ``warm``);
    ``hooks``: ``train``'s progress, checkpoints and checks."""
    tc = train_config or prepared.train_config
    mc = model_config or prepared.model_config
    model = build_model(prepared.dataset, prepared.vocabs, mc, tc.seed, prepared.seen)
    if init_from is not None:
        inherit(model, init_from)
    hooks = hooks or Hooks()
    return model, train(model, prepared.train, tc, hooks.progress, hooks.checkpoints, hooks.checks)
