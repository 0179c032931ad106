"""``mtrec sweep``: the multi-task model over a grid of retrieval weights, and its Pareto front."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Dataset
from mtrec.errors import ConfigError
from mtrec.pipeline import fit_side_by_side, prepare


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One multi-task model of a sweep over the retrieval weight (ranking weight 1)."""

    name: str
    retrieval_weight: float | None
    top_k_accuracy: float
    honest_top_k_accuracy: float
    rmse: float
    train_seconds: float
    """Wall seconds of its training; on a CPU the sweep's models train side by side
    (``fit_side_by_side``), so these overlap."""
    pareto: bool = False
    learned_weights: tuple[float, float] | None = None


def sweep(
    dataset: Dataset,
    weights: Sequence[float],
    *,
    seed: int = 42,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    learned: bool = True,
    split: str = "random",
) -> list[SweepPoint]:
    """Train the multi-task model at each retrieval weight (ranking weight 1) and, with
    ``learned``, once with learned uncertainty weights; mark the Pareto front of honest
    top-10 accuracy (higher) against RMSE (lower)."""
    base = dataclasses.replace(train_config or TrainConfig(), seed=seed, rating_weight=1.0)
    prepared = prepare(dataset, model_config, base, split=split)
    if not prepared.train_config.rating_weight:
        raise ConfigError(
            f"sweep: {dataset.name} has no ratings, so there is no trade-off to sweep"
        )
    model_config = prepared.model_config
    runs: list[tuple[str, float | None, ModelConfig, TrainConfig]] = [
        (f"weight {w:g}", w, model_config, dataclasses.replace(base, retrieval_weight=w))
        for w in weights
    ]
    if learned:
        runs.append(
            (
                "learned (uncertainty)",
                None,
                dataclasses.replace(model_config, learned_task_weights=True),
                dataclasses.replace(base, retrieval_weight=1.0),
            )
        )
    fits, _ = fit_side_by_side(prepared, [(tc, mc, None) for _, _, mc, tc in runs])
    points = [
        SweepPoint(
            name,
            weight,
            fitted.reference.top_k_accuracy,
            fitted.honest.top_k_accuracy,
            fitted.reference.rmse,
            round(fitted.history.seconds, 3),
            learned_weights=fitted.model.task_weights(),
        )
        for (name, weight, _, _), fitted in zip(runs, fits, strict=True)
    ]
    return [
        dataclasses.replace(
            p,
            pareto=not any(
                q.honest_top_k_accuracy >= p.honest_top_k_accuracy
                and q.rmse <= p.rmse
                and (q.honest_top_k_accuracy > p.honest_top_k_accuracy or q.rmse < p.rmse)
                for q in points
            ),
        )
        for p in points
    ]
