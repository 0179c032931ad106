"""A fitted model measured on held-out rows: both protocols' errors, the served list beside
retrieval alone, popularity and EASE.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.errors import ConfigError
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
    fallback_order,
)
from mtrec.model import MultiTaskModel
from mtrec.pipeline.prepare import Prepared
from mtrec.ranking import TwoStage, predicted_for_pairs


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
    test, evaluated = sample_users(prepared.evaluated_rows(), eval_users, seed)
    known = test.subset(test.user < prepared.n_users)
    scale, rated = prepared.scale, prepared.dataset.has_ratings
    head = held_out_report(model, known, scale, rated, device=device)
    reference = served_ratings(head, two, prepared.seen, known, scale)
    counts, recent = prepared.fallback_counts, prepared.recency.half_life is not None
    lists = _list_reports(model, two, prepared.seen, test, k, 500.0, device, counts, recent)
    new_users = int(np.unique(test.user[test.user >= prepared.n_users].numpy()).size)
    said = {
        "evaluated_users": {**evaluated.to_dict(), "without_training_rows": new_users},
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
    """The served list beside retrieval alone, popularity and EASE on the held-out rows
    (users without a training row answered by the fallback list in each)."""
    counts, recent = prepared.fallback_counts, prepared.recency.half_life is not None
    rows, seen = prepared.evaluated_rows(), prepared.seen
    return _list_reports(model, two, seen, rows, k, ease_lambda, device, counts, recent)


def _list_reports(
    model: MultiTaskModel,
    two: TwoStage | None,
    seen: SeenItems,
    test: EncodedInteractions,
    k: int,
    ease_lambda: float,
    device: str = "cpu",
    fallback: NDArray[np.float64] | None = None,
    recent: bool = False,
) -> list[ListReport]:
    """Each list's report on ``test``. Its rows of users numbered from ``model.n_users``
    on (no training row) get the top ``k`` of the ``fallback`` counts in every list, as a
    deployment serves them: the lists differ only where the models know the user. With
    ``recent`` (the counts are weighted by recency) their list is reported too."""
    if k < 1:
        raise ConfigError(f"k: expected a list length >= 1, got {k}")
    rows = test.user.numpy()
    new = rows >= model.n_users
    users = np.unique(rows[~new])
    lists = user_lists(
        model, two, seen, users, k=k, ease_lambda=ease_lambda, device=device,
        recent=fallback if recent else None,
    )  # fmt: skip
    if not new.any():
        return list_reports(lists, users, test)
    if fallback is None:
        raise ValueError("_list_reports: users without training rows need the fallback list")
    newcomers = np.unique(rows[new])
    answer = fallback_order(fallback)[:k]
    answer = np.broadcast_to(answer, (len(newcomers), len(answer)))
    lists = {  # no known user: the model's lists are (0, 0)
        name: np.concatenate([top if len(top) else top.reshape(0, answer.shape[1]), answer])
        for name, top in lists.items()
    }
    reports = list_reports(lists, np.concatenate([users, newcomers]), test)
    liked = test.label.numpy() >= RatingScale.liked
    fell_back = int(np.unique(rows[new & liked]).size)
    return [dataclasses.replace(report, fell_back=fell_back) for report in reports]


def served_summary(reports: list[ListReport]) -> dict[str, Any]:
    """The served list's k, recall and NDCG: ``metrics.json``'s ``served``."""
    served = next(r for r in reports if r.name == SERVED)
    return {"k": served.k, "recall": served.recall, "ndcg": served.ndcg}
