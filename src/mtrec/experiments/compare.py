"""The runs behind ``mtrec compare``: the reference's three weightings on one split, with
baselines and the lists a user would get.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data import Dataset
from mtrec.errors import ConfigError
from mtrec.evaluate import EvalReport, ListReport, ranking_report, rating_report
from mtrec.evaluate.baselines import EASE_MAX_ITEMS, biased_mf, ease, global_mean, popularity
from mtrec.experiments.results import CompareResult, ModelResult, model_result_of
from mtrec.features import EncodedInteractions
from mtrec.pipeline import (
    Fitted,
    Prepared,
    fit_side_by_side,
    fit_stage_one,
    prepare,
    served_lists,
    two_stage,
)
from mtrec.recommend import recommend_reference
from mtrec.train import Hooks, Progress


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
            bar = progress("ranker's stage one") if progress else None
            fitted_ranker = fit_stage_one(prepared, ranker, Hooks(bar)).ranker
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
    result = model_result_of(
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
            model_result_of(
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
        model_result_of(
            "biased MF",
            (None, None),
            mf_report,
            mf_report,
            time.perf_counter() - start,
            kind="baseline",
        )
    )
    mean = _rating_only(torch.full_like(test.label, global_mean(train)), test, stars)
    out.append(model_result_of("global mean", (None, None), mean, mean, kind="baseline"))
    return out
