"""What ``mtrec compare`` reports: each model's metrics under both protocols, and the
comparison's record.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
from typing import Any

import numpy as np
import torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.evaluate import EvalReport, ListReport
from mtrec.io import json_safe
from mtrec.recommend import Recommendation
from mtrec.train import EpochStats


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


def model_result_of(
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
        """The ``results.json`` document (schema documented in docs/models.md); NaN becomes null."""
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
