"""The runs behind ``mtrec compare``: the reference's three weightings on one split, with
baselines and the lists a user would get."""

from __future__ import annotations

import dataclasses
import datetime
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mtrec.baselines import EASE_MAX_ITEMS, biased_mf, ease, global_mean, popularity
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data import Dataset
from mtrec.errors import ConfigError
from mtrec.evaluate import EvalReport, ListReport, ranking_report, rating_report
from mtrec.features import EncodedInteractions
from mtrec.io import json_safe
from mtrec.pipeline import (
    Fitted,
    Prepared,
    fit_ranker_on_training_rows,
    fit_side_by_side,
    prepare,
    served_lists,
    two_stage,
)
from mtrec.recommend import Recommendation, recommend_reference
from mtrec.train import EpochStats, Progress


def weightings(config: TrainConfig) -> tuple[tuple[str, float, float], ...]:
    """(name, retrieval weight, ranking weight) of the three compared models: each task
    alone, then both with the config's weights (1 : 1 in the reference)."""
    ret, rating = config.retrieval_weight, config.rating_weight
    specs = (
        ("rating-specialised", 0.0, rating),
        ("retrieval-specialised", ret, 0.0),
        ("multi-task", ret, rating),
    )
    return tuple(spec for spec in specs if spec[1] or spec[2])


@dataclasses.dataclass(frozen=True)
class ModelResult:
    """One trained model's (or baseline's) weights, metrics and cost.

    The flat metrics are the reference protocol's; ``honest`` holds the ranking metrics
    with each user's training items excluded (rating metrics do not depend on it).
    """

    name: str
    retrieval_weight: float | None
    rating_weight: float | None
    top_k_accuracy: float
    rmse: float
    rmse_stars: float
    train_seconds: float
    """Wall seconds of its training; they overlap where models trained side by side
    (``CompareResult.side_by_side``)."""
    precision: str
    """The matmul precision training ran in (``fp32`` or ``bf16``; ``-`` for a baseline)."""
    epochs: list[EpochStats]
    mae: float = float("nan")
    mae_stars: float = float("nan")
    recall: float = float("nan")
    ndcg: float = float("nan")
    mrr: float = float("nan")
    coverage: float = float("nan")
    honest: dict[str, float] = dataclasses.field(default_factory=dict)
    kind: str = "model"
    precision_reason: str = ""
    """Why that precision: configured, or what ``auto`` timed at the start of training."""
    device: str = "-"
    """The device training ran on (``cpu``, ``cuda:0``; ``-`` for a baseline)."""


RANKING_KEYS = ("top_k_accuracy", "recall", "ndcg", "mrr", "coverage")


def _result(
    name: str,
    weights: tuple[float | None, float | None],
    reference: EvalReport,
    honest: EvalReport,
    seconds: float = 0.0,
    precision: str = "-",
    epochs: list[EpochStats] | None = None,
    kind: str = "model",
) -> ModelResult:
    h = {
        ("top_k_accuracy" if key == "top_k_accuracy" else key): getattr(honest, key)
        for key in RANKING_KEYS
    }
    return ModelResult(
        name,
        weights[0],
        weights[1],
        reference.top_k_accuracy,
        reference.rmse,
        reference.rmse_stars,
        round(seconds, 3),
        precision,
        epochs or [],
        reference.mae,
        reference.mae_stars,
        reference.recall,
        reference.ndcg,
        reference.mrr,
        reference.coverage,
        h,
        kind,
    )


@dataclasses.dataclass(frozen=True)
class CompareResult:
    """The reference comparison: three models on one split, and one user's recommendations."""

    dataset: str
    seed: int
    model_config: ModelConfig
    train_config: TrainConfig
    n_train: int
    n_test: int
    models: list[ModelResult]
    user_id: int | str
    recommendations: list[Recommendation]
    data_source: str = ""
    protocol: str = "reference"
    baselines: list[ModelResult] = dataclasses.field(default_factory=list)
    lists: list[ListReport] = dataclasses.field(default_factory=list)
    """The multi-task model's lists (retrieval, retrieve-then-rank, popularity), honest."""
    other_seeds: list[CompareResult] = dataclasses.field(default_factory=list)
    """Runs of the same comparison on further seeds (``compare_seeds``)."""
    side_by_side: int = 1
    """How many of the models trained at once, each on a share of the CPU's threads (their
    ``train_seconds`` overlap); 1: one after the other."""

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Mean and standard deviation over this run and ``other_seeds``, per row and metric."""
        runs = [self, *self.other_seeds]
        out: dict[str, dict[str, dict[str, float]]] = {}
        for position, row in enumerate([*self.models, *self.baselines]):
            rows = [[*r.models, *r.baselines][position] for r in runs]
            metrics: dict[str, list[float]] = {}
            for r in rows:
                for key in (
                    "top_k_accuracy",
                    "rmse",
                    "rmse_stars",
                    "mae",
                    "recall",
                    "ndcg",
                    "train_seconds",
                ):
                    metrics.setdefault(key, []).append(getattr(r, key))
                for key, value in r.honest.items():
                    metrics.setdefault(f"honest_{key}", []).append(value)
            out[row.name] = {
                key: {"mean": float(np.mean(values)), "std": float(np.std(values))}
                for key, values in metrics.items()
            }
        return out

    def lists_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Mean and standard deviation over this run and ``other_seeds`` of each list's
        recall and NDCG, and how many seeds had the paired interval above zero against
        EASE and against retrieval alone."""
        runs = [self, *self.other_seeds]
        out: dict[str, dict[str, dict[str, float]]] = {}
        for position, first in enumerate(self.lists):
            rows = [r.lists[position] for r in runs if len(r.lists) > position]
            stats: dict[str, dict[str, float]] = {}
            for key in ("recall", "ndcg"):
                values = [getattr(row, key) for row in rows]
                stats[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
                for other in ("EASE", "retrieval"):
                    above = [
                        row.differences[other][key][0] > 0
                        for row in rows
                        if other in row.differences
                    ]
                    if above:
                        stats[f"{key}_above_{other}"] = {
                            "seeds": float(sum(above)),
                            "of": float(len(above)),
                        }
            out[first.name] = stats
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` document (schema documented in docs/guide.md); NaN becomes null."""
        document: dict[str, Any] = json_safe(
            {
                "dataset": self.dataset,
                "data_source": self.data_source,
                "protocol": self.protocol,
                "seed": self.seed,
                "k": 10,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "model_config": self.model_config.to_dict(),
                "train_config": {
                    k: v
                    for k, v in self.train_config.to_dict().items()
                    if k not in ("retrieval_weight", "rating_weight")
                },
                "seeds": [self.seed, *(r.seed for r in self.other_seeds)],
                "summary": self.summary(),
                "other_runs": [
                    {
                        "seed": r.seed,
                        "models": [dataclasses.asdict(m) for m in r.models],
                        "baselines": [dataclasses.asdict(m) for m in r.baselines],
                        "lists": [dataclasses.asdict(x) for x in r.lists],
                    }
                    for r in self.other_seeds
                ],
                "lists_summary": self.lists_summary(),
                "models": [dataclasses.asdict(m) for m in self.models],
                "baselines": [dataclasses.asdict(m) for m in self.baselines],
                "lists": [dataclasses.asdict(r) for r in self.lists],
                "recommendations": {
                    "model": "multi-task",
                    "user_id": self.user_id,
                    "items": [dataclasses.asdict(r) for r in self.recommendations],
                },
                "environment": {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "models_side_by_side": self.side_by_side,
                    "python": platform.python_version(),
                    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                },
            }
        )
        return document


def compare_seeds(dataset: Dataset, seeds: Sequence[int], **options: Any) -> CompareResult:
    """``compare`` on each seed; the first seed's result carries the others and their
    mean and standard deviation (``summary``)."""
    if not seeds:
        raise ConfigError("compare: give at least one seed")
    runs = [compare(dataset, seed=seed, **options) for seed in seeds]
    return dataclasses.replace(runs[0], other_seeds=runs[1:])


def compare(
    dataset: Dataset,
    *,
    seed: int = 42,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    user_id: int | str | None = None,
    progress: Callable[[str], Progress] | None = None,
    baselines: bool = False,
    ease_lambda: float = 500.0,
    split: str = "random",
    ranker: RankerConfig | None = None,
    k: int = 10,
) -> CompareResult:
    """Train and evaluate the reference's three weightings on one seeded split.

    ``seed`` drives the split, every model's initialisation and the batch order. The
    multi-task model then retrieves ten movies for ``user_id`` (default 5, the reference's)
    and ranks them. With ``baselines`` the lists a user gets are compared at ``k``: the
    served list (through the ranking stage, with ``ranker``), retrieval alone, popularity
    and EASE. On data
    without ratings the rating-specialised model is left out (it has nothing to learn).

    >>> result = compare(load_movielens(), seed=42)
    >>> [(m.name, m.top_k_accuracy, m.rmse) for m in result.models]
    """
    base = dataclasses.replace(train_config or TrainConfig(), seed=seed)
    prepared = prepare(dataset, model_config, base, split=split)
    users = prepared.vocabs.users
    if user_id is None:  # the reference shows user 5; a log without one shows its first user
        user_id = 5 if 5 in users else users.id_array[0].item()
    user_id = users.parse(user_id)
    users.row(user_id)  # fail before training, not after, on an unknown user
    results, together = _fit_weightings(prepared, progress)
    multi = next(fitted.model for result, fitted in results if result.name == "multi-task")
    recs = recommend_reference(
        multi, prepared.vocabs, user_id, k=10, items=dataset.items, scale=prepared.scale
    )
    lists: list[ListReport] = []
    if baselines:
        two = None
        if ranker is not None:
            fitted_ranker = fit_ranker_on_training_rows(
                prepared, ranker, progress("ranker's stage one") if progress else None
            )
            two = two_stage(multi, prepared.seen, fitted_ranker)
        on = next(r.device for r, _ in results if r.name == "multi-task")  # where it trained
        lists = served_lists(multi, two, prepared, k=k, ease_lambda=ease_lambda, device=on)
    return CompareResult(
        dataset.name,
        seed,
        prepared.model_config,
        prepared.train_config,
        *prepared.split_rows,
        [result for result, _ in results],
        user_id,
        recs,
        data_source=dataset.source,
        baselines=_baselines(prepared, ease_lambda) if baselines else [],
        lists=lists,
        side_by_side=together,
    )


def _fit_weightings(
    prepared: Prepared, progress: Callable[[str], Progress] | None
) -> tuple[list[tuple[ModelResult, Fitted]], int]:
    """The compared models' results and fits, and how many trained at once (on a CPU they
    train side by side: ``fit_side_by_side``). The multi-task model, which does both tasks'
    work, starts first."""
    specs = weightings(prepared.train_config)
    configs = [
        dataclasses.replace(prepared.train_config, retrieval_weight=w_ret, rating_weight=w_rating)
        for _, w_ret, w_rating in specs
    ]
    order = sorted(range(len(specs)), key=lambda n: -(bool(specs[n][1]) + bool(specs[n][2])))
    bars = [progress(name) if progress else None for name, _, _ in specs]
    fits, together = fit_side_by_side(prepared, [(configs[n], None, bars[n]) for n in order])
    by_spec = dict(zip(order, fits, strict=True))
    return [
        (_model_result(specs[n][0], configs[n], by_spec[n]), by_spec[n]) for n in range(len(specs))
    ], together


def _model_result(name: str, config: TrainConfig, fitted: Fitted) -> ModelResult:
    result = _result(
        name,
        (config.retrieval_weight, config.rating_weight),
        fitted.reference,
        fitted.honest,
        fitted.history.seconds,
        fitted.history.precision,
        fitted.history.epochs,
    )
    history = fitted.history
    return dataclasses.replace(
        result, precision_reason=history.precision_reason, device=history.device
    )


def _rating_only(
    predicted: torch.Tensor, test: EncodedInteractions, rating_range: float
) -> EvalReport:
    """The report of a rating-only predictor: ranking metrics do not apply (NaN)."""
    rated = rating_report(predicted, test.label, rating_range)
    return EvalReport(
        protocol="reference",
        k=10,
        top_k_accuracy=float("nan"),
        n_top_k_rows=0,
        n_test=len(test),
        rmse=rated["rmse"],
        rmse_stars=rated["rmse_stars"],
        mae=rated["mae"],
        mae_stars=rated["mae_stars"],
    )


def _baselines(prepared: Prepared, ease_lambda: float = 500.0) -> list[ModelResult]:
    """Popularity and EASE (retrieval), biased MF and the global mean (rating), through the
    same metrics."""
    train, test, seen = prepared.train, prepared.test, prepared.seen
    n_users, n_items = prepared.n_users, prepared.n_items
    out = []
    nan = float("nan")
    retrieval = [popularity(train, n_users, n_items)]
    if n_items <= EASE_MAX_ITEMS:  # beyond, its item-item matrix would not fit
        retrieval.append(ease(train, n_users, n_items, ease_lambda))
    for vectors in retrieval:
        start = time.perf_counter()
        reports = [
            EvalReport(
                protocol=p,
                k=10,
                rmse=nan,
                rmse_stars=nan,
                n_test=len(test),
                **ranking_report(vectors.users, vectors.items, test, k=10, protocol=p, seen=seen),
            )
            for p in ("reference", "honest")
        ]
        out.append(
            _result(
                vectors.name,
                (None, None),
                reports[0],
                reports[1],
                time.perf_counter() - start,
                kind="baseline",
            )
        )
    if not prepared.dataset.has_ratings:
        return out
    start = time.perf_counter()
    mf = biased_mf(train, n_users, n_items)
    stars = prepared.scale.high - prepared.scale.low
    mf_report = _rating_only(mf.predict(test.user, test.item), test, stars)
    out.append(
        _result(
            "biased MF",
            (None, None),
            mf_report,
            mf_report,
            time.perf_counter() - start,
            kind="baseline",
        )
    )
    mean = _rating_only(torch.full_like(test.label, global_mean(train)), test, stars)
    out.append(_result("global mean", (None, None), mean, mean, kind="baseline"))
    return out
