"""The notebook entry point: ``mtrec.fit(frame)`` gives a model to evaluate, query and save.

Built on the pipeline ``mtrec train`` runs (``train_model``): the same presets, split,
ranking stage and checks; a ``Model`` is a ``Recommender`` that also evaluates and saves.

>>> model = mtrec.fit(ratings_frame, "default")       # 0.2 held out and measured
>>> model.metrics["served"]
>>> model.recommend(5, k=10).to_frame()
>>> model.evaluate(next_week_frame)["served"]
>>> model.save("mtrec-out/model")
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtrec import artifact
from mtrec.config import ModelConfig, RunConfig, TrainConfig, refuse_preset_on_warm_start
from mtrec.data import ColumnMap, Dataset, load_interactions, load_movielens
from mtrec.data.movielens import MOVIELENS
from mtrec.pipeline import PHASE_LOG, evaluate_saved_on, served_summary, train_model
from mtrec.recommend import Recommender
from mtrec.recommend.records import FrameKind, frame_of
from mtrec.train import EpochLines
from mtrec.warm import REPLAY


class Model(Recommender):
    """A trained model in memory: everything a ``Recommender`` answers, plus ``evaluate``
    on other data and ``save`` to a model directory (``mtrec serve`` serves it)."""

    def __repr__(self) -> str:
        served = self.metrics.get("served")
        measured = (
            f", served recall@{served['k']} {served['recall']:.4f} NDCG {served['ndcg']:.4f}"
            if served
            else ""
        )
        return (
            f"<mtrec.Model: {len(self.saved.vocabs.users):,} users, "
            f"{len(self.saved.vocabs.items):,} items{measured}>"
        )

    @property
    def metrics(self) -> dict[str, Any]:
        """What training measured (``metrics.json``): held-out metrics and the lists."""
        return self.saved.metrics

    @property
    def model_config(self) -> ModelConfig:
        return self.saved.model_config

    @property
    def train_config(self) -> TrainConfig:
        return self.saved.train_config

    def evaluate(self, test: Any, columns: ColumnMap | None = None, *, k: int = 10) -> Evaluated:
        """Measure on other data (a DataFrame, Arrow table, file or Dataset): top-k
        accuracy and rating errors, the served list beside retrieval alone, popularity and
        EASE (``lists``; ``served`` in short), and the test rows it could not score. A
        dict; ``.to_frame()`` gives the lists as a table.

        >>> model.evaluate(next_week).to_frame()[["list", "recall", "recall_low"]]
        """
        evaluation = evaluate_saved_on(self.saved, as_dataset(test, columns), k=k)
        return Evaluated(
            **dataclasses.asdict(evaluation.report),
            served=served_summary(evaluation.lists),
            lists=[dataclasses.asdict(r) for r in evaluation.lists],
            unseen_test=evaluation.unseen.to_dict(),
        )

    def save(self, directory: str | Path) -> Path:
        """Write the model directory (atomically; see ``mtrec.artifact``)."""
        return artifact.save(self.saved, directory)


class Evaluated(dict[str, Any]):
    """What ``Model.evaluate`` measured: a dict (as before), and its lists as a table."""

    def to_frame(self, kind: FrameKind = "pandas") -> Any:
        """One row per list (served, each stage alone, popularity, EASE): recall and NDCG
        at k with their 95% intervals over users, the users measured and how many of them
        got the popularity fallback; a pandas or polars DataFrame or an Arrow table."""
        import pyarrow as pa

        lists = self["lists"]
        columns = {
            "list": [r["name"] for r in lists],
            "k": [r["k"] for r in lists],
            **{
                f"{metric}{part}": [_interval_part(r, metric, part) for r in lists]
                for metric in ("recall", "ndcg")
                for part in ("", "_low", "_high")
            },
            "users": [r["n_users"] for r in lists],
            "fell_back": [r["fell_back"] for r in lists],
        }
        return frame_of(pa.table(columns), kind)


def _interval_part(report: dict[str, Any], metric: str, part: str) -> float:
    """A list's ``metric`` (``part`` "") or one end of its interval ("_low", "_high")."""
    if not part:
        return float(report[metric])
    return float(report[f"{metric}_ci"][0 if part == "_low" else 1])


def fit(
    data: Any,
    preset: str | None = None,
    *,
    config: str | Path | RunConfig | None = None,
    columns: ColumnMap | None = None,
    items: Any = None,
    users: Any = None,
    holdout: float | None = 0.2,
    split: str = "random",
    test: Any = None,
    init_from: Recommender | str | Path | None = None,
    replay: float = REPLAY,
    progress: bool = True,
    **overrides: Any,
) -> Model:
    """Train a model on ``data``: a pandas or polars DataFrame, a pyarrow Table, a file,
    a ``Dataset``, or a MovieLens name ("ml-100k").

    ``preset`` is a named configuration (``default``: history-aware towers and a
    ranking stage); ``config`` a run config file (as ``mtrec train --config``: its
    preset, ``[model]``, ``[train]`` and ``[ranker]``); ``overrides`` set any
    ``ModelConfig`` or ``TrainConfig`` field over both (``epochs=3``, ``seed=1``).
    ``holdout`` is the share of rows held out and measured (``model.metrics``); None
    trains on every row, to deploy.
    ``test`` (same kinds as ``data``) is a test set of its own instead of a split.
    ``items``: a frame or file of item titles/genres/years for ``data`` from memory or a
    file; ``users`` one of user ages/genders/occupations (side features). ``init_from``
    (a model or its directory) continues that model on ``data``'s new interactions (a
    warm start; its config is the base, as ``mtrec train --init-from``), with ``replay``
    (a share) of its own rows training the rating head again beside them.
    ``progress`` writes a line per epoch of each model and one per phase after training
    (index, evaluation) to stderr (False: silent; the phases are also logged on
    ``mtrec.pipeline.phases`` at INFO, for a caller's own logging).

    >>> model = mtrec.fit(frame, "reference", epochs=3, columns=ColumnMap(user="uid"))
    """
    dataset = as_dataset(data, columns, items, users)
    refuse_preset_on_warm_start(preset, init_from is not None)
    warm = None
    if init_from is not None:
        warm = init_from.saved if isinstance(init_from, Recommender) else artifact.load(init_from)
    run = RunConfig.of(config, None if warm is None else artifact.config_document(warm))
    model_config, train_config, ranker = run.resolve(preset, **overrides)
    with _phase_lines(progress):
        saved = train_model(
            dataset,
            model_config,
            train_config,
            split=split,
            test_fraction=0.0 if holdout is None or test is not None else holdout,
            test=None if test is None else as_dataset(test, columns),
            ranker=ranker,
            init_from=warm,
            replay=replay,
            progress=EpochLines("served model") if progress else None,
            ranker_progress=EpochLines("ranking stage's stage one") if progress else None,
        )
    return Model(saved)


@contextlib.contextmanager
def _phase_lines(on: bool) -> Iterator[None]:
    """With ``progress``, the run's phase lines (``PHASE_LOG``) on stderr beside the epoch
    lines, and only there (not also through the caller's own logging handlers)."""
    if not on:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = PHASE_LOG.level, PHASE_LOG.propagate
    PHASE_LOG.addHandler(handler)
    PHASE_LOG.setLevel(logging.INFO)
    PHASE_LOG.propagate = False
    try:
        yield
    finally:
        PHASE_LOG.removeHandler(handler)
        PHASE_LOG.setLevel(level)
        PHASE_LOG.propagate = propagate


def load(directory: str | Path) -> Model:
    """A saved model directory as a ``Model``."""
    return Model(artifact.load(directory))


def as_dataset(
    data: Any, columns: ColumnMap | None = None, items: Any = None, users: Any = None
) -> Dataset:
    """``data`` as a Dataset: one already, a MovieLens name, a file or a frame in memory."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str) and data in MOVIELENS and not Path(data).exists():
        return load_movielens(data)
    return load_interactions(data, columns, items=items, users=users)
