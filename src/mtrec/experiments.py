"""The runs behind ``mtrec compare``: several weightings -> train -> evaluate -> report."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import platform
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrec.artifact import ItemInfo, SavedModel
from mtrec.baselines import biased_mf, ease, global_mean, popularity
from mtrec.checkpoint import Checkpointing
from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Dataset, Interactions, Split, random_split, temporal_split
from mtrec.errors import ConfigError, DataError
from mtrec.evaluate import (
    EvalReport,
    ListReport,
    evaluate,
    list_reports,
    ranking_report,
    rating_report,
)
from mtrec.features import (
    EncodedInteractions,
    RatingScale,
    SeenItems,
    Vocabs,
    available_features,
    encode,
    feature_codes,
    seen_items,
)
from mtrec.features import popularity as item_popularity
from mtrec.index import ExactIndex, FaissIndex, build_index, recall_vs_exact
from mtrec.io import atomic_path, json_safe, write_json
from mtrec.model import MultiTaskModel
from mtrec.recommend import Recommendation, retrieve_then_rank
from mtrec.train import EpochStats, Progress, train

log = logging.getLogger("mtrec.experiments")


def weightings(config: TrainConfig) -> tuple[tuple[str, float, float], ...]:
    """(name, retrieval weight, ranking weight) of the three compared models: each task
    alone, then both with the config's weights (1 : 1 in the reference)."""
    ret, rank = config.retrieval_weight, config.rating_weight
    return (
        ("rating-specialised", 0.0, rank),
        ("retrieval-specialised", ret, 0.0),
        ("multi-task", ret, rank),
    )


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

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` document (schema documented in the README); NaN becomes null."""
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
                    }
                    for r in self.other_seeds
                ],
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


def build_model(dataset: Dataset, vocabs: Vocabs, config: ModelConfig, seed: int) -> MultiTaskModel:
    """A fresh model for ``config``, with its side features (if any) encoded from ``dataset``."""
    if not (config.user_features or config.item_features):
        return MultiTaskModel(len(vocabs.users), len(vocabs.items), config, seed=seed)
    codes = feature_codes(dataset, vocabs, config.user_features, config.item_features)
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), codes.configure(config), seed=seed)
    codes.install(model)
    return model


def compare(
    dataset: Dataset,
    *,
    seed: int = 42,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    user_id: int | str = 5,
    progress: Callable[[str], Progress] | None = None,
    baselines: bool = False,
    ease_lambda: float = 500.0,
) -> CompareResult:
    """Train and evaluate the reference's three weightings on one seeded split.

    ``seed`` drives the split, every model's initialisation and the batch order. The
    multi-task model then retrieves ten movies for ``user_id`` and ranks them.

    >>> result = compare(load_movielens(), seed=42)
    >>> [(m.name, m.top_k_accuracy, m.rmse) for m in result.models]
    """
    model_config = model_config or ModelConfig()
    base = dataclasses.replace(train_config or TrainConfig(), seed=seed)
    split = random_split(dataset.interactions, seed=seed)
    vocabs = Vocabs.from_dataset(dataset)
    vocabs.users.row(user_id)  # fail before training, not after, on an unknown user
    train_data, test_data = encode(split.train, vocabs), encode(split.test, vocabs)

    def fit(spec: tuple[str, float, float]) -> tuple[ModelResult, MultiTaskModel]:
        name, w_ret, w_rating = spec
        config = dataclasses.replace(base, retrieval_weight=w_ret, rating_weight=w_rating)
        model = build_model(dataset, vocabs, model_config, seed)
        history = train(model, train_data, config, progress(name) if progress else None)
        reference = evaluate(model, test_data, k=10)
        honest = evaluate(model, test_data, k=10, protocol="honest", seen=seen)
        result = _result(
            name,
            (w_ret, w_rating),
            reference,
            honest,
            history.seconds,
            history.precision,
            history.epochs,
        )
        return result, model

    seen = seen_items(train_data, len(vocabs.users))
    fitted = [fit(spec) for spec in weightings(base)]
    results = [result for result, _ in fitted]
    extra = (
        _baselines(train_data, test_data, seen, len(vocabs.users), len(vocabs.items), ease_lambda)
        if baselines
        else []
    )
    models = {result.name: model for result, model in fitted}
    recs = retrieve_then_rank(
        models["multi-task"], vocabs, user_id, k=10, items=dataset.items, scale=RatingScale()
    )
    return CompareResult(
        dataset.name,
        seed,
        model_config,
        base,
        len(split.train),
        len(split.test),
        results,
        user_id,
        recs,
        data_source=dataset.source,
        baselines=extra,
        lists=list_reports(models["multi-task"], test_data, seen, k=10) if baselines else [],
    )


def _rating_only(predicted: torch.Tensor, test: EncodedInteractions) -> EvalReport:
    """The report of a rating-only predictor: ranking metrics do not apply (NaN)."""
    rated = rating_report(predicted, test.label)
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


def _baselines(
    train: EncodedInteractions,
    test: EncodedInteractions,
    seen: SeenItems,
    n_users: int,
    n_items: int,
    ease_lambda: float = 500.0,
) -> list[ModelResult]:
    """Popularity and EASE (retrieval), biased MF and the global mean (rating), through the
    same metrics."""
    out = []
    nan = float("nan")
    for vectors in (
        popularity(train, n_users, n_items),
        ease(train, n_users, n_items, ease_lambda),
    ):
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
    start = time.perf_counter()
    mf = biased_mf(train, n_users, n_items)
    mf_report = _rating_only(mf.predict(test.user, test.item), test)
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
    mean = _rating_only(torch.full_like(test.label, global_mean(train)), test)
    out.append(_result("global mean", (None, None), mean, mean, kind="baseline"))
    return out


def train_model(
    dataset: Dataset,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    test_fraction: float = 0.2,
    split: str = "random",
    index: str = "exact",
    index_params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
) -> SavedModel:
    """What ``mtrec train`` does: split, train one model, evaluate it, index its items.

    The result is ready for ``mtrec.artifact.save`` and for ``Recommender(...)``. The
    split is recorded (seed, fraction and a fingerprint of the test rows) so that
    ``evaluate_saved`` can rebuild and check it later.

    >>> saved = train_model(load_movielens(), train_config=TrainConfig(seed=42))
    >>> artifact.save(saved, "mtrec-out/model")
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    if not dataset.has_ratings and train_config.rating_weight:
        # implicit feedback: there is nothing for the rating head to learn
        train_config = dataclasses.replace(train_config, rating_weight=0.0)
    model_config, dropped = available_features(model_config, dataset)
    if dropped:
        log.warning("%s has no metadata for side features %s: left out", dataset.name, dropped)
    parts = make_split(dataset.interactions, split, test_fraction, train_config.seed)
    vocabs = Vocabs.from_dataset(dataset)
    scale = RatingScale.of(dataset)
    train_data = encode(parts.train, vocabs, scale)
    test_data = encode(parts.test, vocabs, scale)
    model = build_model(dataset, vocabs, model_config, train_config.seed)
    model_config = model.config
    history = train(model, train_data, train_config, progress, checkpoints)
    report = _evaluate_held_out(model, test_data, scale, dataset.has_ratings)
    with torch.inference_mode():
        item_emb = model.embed_items().numpy().copy()
        user_emb = model.user_embedding.weight.numpy()
    built = build_index(index, item_emb, **(index_params or {}))
    index_info: dict[str, Any] = {"kind": built.kind, "is_exact": built.is_exact}
    if not built.is_exact:  # measured against the oracle on every user, stored with it
        recall = recall_vs_exact(built, ExactIndex(item_emb), user_emb, k=10)
        index_info["recall_at_10_vs_exact"] = recall
        if isinstance(built, FaissIndex):
            built.recall["recall_at_10"] = recall
    seen = seen_items(train_data, len(vocabs.users))
    metrics = {
        **dataclasses.asdict(report),
        "train_seconds": round(history.seconds, 3),
        "precision": history.precision,
        "history": [dataclasses.asdict(e) for e in history.epochs],
        "index": index_info,
    }
    data = {
        "dataset": dataset.name,
        "source": dataset.source,
        "has_ratings": dataset.has_ratings,
        "skipped_rows": dataset.skipped,
        "split": {
            "kind": split,
            "seed": train_config.seed,
            "test_fraction": test_fraction,
            "n_train": len(parts.train),
            "n_test": len(parts.test),
            "test_fingerprint": split_fingerprint(parts.test),
        },
    }
    return SavedModel(
        model,
        model_config,
        train_config,
        vocabs,
        ItemInfo.from_items(vocabs.items, dataset.items),
        seen,
        item_popularity(train_data, len(vocabs.items)),
        built,
        data,
        metrics,
        scale,
    )


SPLITS = ("random", "temporal", "temporal-user")


def make_split(interactions: Interactions, kind: str, test_fraction: float, seed: int) -> Split:
    """``random`` (the reference's), ``temporal`` (the latest rows overall) or
    ``temporal-user`` (each user's latest rows)."""
    if kind == "random":
        return random_split(interactions, test_fraction=test_fraction, seed=seed)
    if kind not in SPLITS:
        raise ConfigError(f"split: expected one of {list(SPLITS)}, got {kind!r}")
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
    split_info = saved.data.get("split", {})
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
    test = encode(split.test, saved.vocabs, saved.scale)
    return _evaluate_held_out(saved.model, test, saved.scale, saved.data.get("has_ratings", True))


def _evaluate_held_out(
    model: MultiTaskModel, test: EncodedInteractions, scale: RatingScale, has_ratings: bool
) -> EvalReport:
    """Top-10 and rating errors in the data's own stars; without ratings (implicit
    feedback) the rating head never trained, so its errors are left out (NaN)."""
    report = evaluate(model, test, k=10, rating_range=scale.high - scale.low)
    if has_ratings:
        return report
    nan = float("nan")
    return dataclasses.replace(report, rmse=nan, rmse_stars=nan, mae=nan, mae_stars=nan)


def write_outputs(result: CompareResult, output_dir: str | Path) -> list[Path]:
    """Write ``results.json``, ``report.md`` and ``compare.png`` (each atomically)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result.to_dict())
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_markdown(result), encoding="utf-8")
    plot_comparison(result, out / "compare.png")
    return [out / "results.json", out / "report.md", out / "compare.png"]


def table_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The comparison table (models, then baselines) as text cells, for any renderer."""

    def num(value: float | None, digits: int) -> str:
        return "-" if value is None or value != value else f"{value:.{digits}f}"

    headers = [
        "model",
        "weights (ret, rank)",
        "top-10 ref",
        "top-10 honest",
        "recall@10",
        "NDCG@10",
        "RMSE",
        "RMSE stars",
        "train s",
    ]
    rows = []
    for m in [*result.models, *result.baselines]:
        weights = (
            "-" if m.retrieval_weight is None else f"{m.retrieval_weight:g}, {m.rating_weight:g}"
        )
        rows.append(
            [
                m.name,
                weights,
                num(m.top_k_accuracy, 4),
                num(m.honest.get("top_k_accuracy"), 4),
                num(m.honest.get("recall"), 4),
                num(m.honest.get("ndcg"), 4),
                num(m.rmse, 4),
                num(m.rmse_stars, 3),
                num(m.train_seconds, 2),
            ]
        )
    return headers, rows


def _ci(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"


def _with_ci(value: float, interval: tuple[float, float]) -> str:
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def _mean_std(stat: dict[str, float]) -> str:
    mean, std = stat["mean"], stat["std"]
    return "-" if mean != mean else f"{mean:.4f} ± {std:.4f}"


def list_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The lists table (retrieval, retrieve-then-rank, popularity) as text cells."""
    headers = [
        "list (multi-task, honest)",
        "recall@10 [95% CI]",
        "NDCG@10 [95% CI]",
        "recall vs retrieval",
        "NDCG vs retrieval",
    ]
    rows = [
        [
            r.name,
            _with_ci(r.recall, r.recall_ci),
            _with_ci(r.ndcg, r.ndcg_ci),
            _ci(r.recall_vs_retrieval_ci),
            _ci(r.ndcg_vs_retrieval_ci),
        ]
        for r in result.lists
    ]
    return headers, rows


def render_markdown(result: CompareResult) -> str:
    """A self-contained report: setup, the table, per-epoch losses, one user's list."""
    tc, mc = result.train_config, result.model_config
    lines = [
        f"# mtrec compare: {result.dataset}, seed {result.seed}, reference and honest protocols",
        "",
        f"Data: {result.dataset} from {result.data_source or 'memory'}.",
        "",
        f"Split: {result.n_train:,} train / {result.n_test:,} test rows (one seeded shuffle). "
        f"Model: {mc.embedding_dim}-d towers, rating head {list(mc.head_layers)} -> 1. "
        f"Training: {tc.optimizer} lr {tc.learning_rate}, {tc.epochs} epochs, "
        f"batch {tc.batch_size}, {result.models[0].precision} matmuls. "
        "Retrieval loss summed over the batch, rating loss averaged (as the reference).",
        "",
        "Top-10 accuracy: share of 5-star test rows whose movie is in the user's top 10 over "
        "the whole catalogue; under the reference protocol the movies the user rated in "
        "training are not excluded, under the honest one they are. Recall@10 and NDCG@10 "
        "(honest): per user, relevant = test ratings of 4+ stars. RMSE on the scaled rating "
        "(0.25 = one star).",
        "",
    ]
    if result.other_seeds:
        seeds = ", ".join(str(s) for s in [result.seed, *(r.seed for r in result.other_seeds)])
        lines += [
            f"## Mean and standard deviation over seeds {seeds}",
            "",
            "| model | top-10 ref | top-10 honest | recall@10 | NDCG@10 | RMSE | train s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        keys = ("top_k_accuracy", "honest_top_k_accuracy", "honest_recall", "honest_ndcg", "rmse")
        for name, stats in result.summary().items():
            cells = [_mean_std(stats[key]) for key in keys]
            seconds = stats["train_seconds"]["mean"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.1f} |")
        lines += ["", f"## Seed {result.seed}", ""]
    headers, rows = table_rows(result)
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|---|---|" + "---:|" * (len(headers) - 2))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if result.lists:
        lines += [
            "",
            "## The lists a user gets (multi-task model, honest protocol)",
            "",
            "Retrieve C, then rank: the top C by retrieval score re-sorted by predicted "
            "rating (`mtrec recommend` serves C = 100). 95% bootstrap intervals over users; "
            "the last two columns are paired differences to retrieval alone.",
            "",
        ]
        list_headers, list_cells = list_rows(result)
        lines.append("| " + " | ".join(list_headers) + " |")
        lines.append("|---|---:|---:|---:|---:|")
        lines += ["| " + " | ".join(row) + " |" for row in list_cells]
    lines += [
        "",
        "## Loss per epoch (mean over batches)",
        "",
        "| model | " + " | ".join(f"epoch {e.epoch}" for e in result.models[0].epochs) + " |",
        "|---|" + "---:|" * len(result.models[0].epochs),
    ]
    for m in result.models:
        lines.append(f"| {m.name} | " + " | ".join(f"{e.loss:.4g}" for e in m.epochs) + " |")
    lines += [
        "",
        f"## Retrieve, then rank: user {result.user_id} (multi-task model)",
        "",
        "| # | title | retrieval score | predicted stars |",
        "|---:|---|---:|---:|",
    ]
    for n, r in enumerate(result.recommendations, start=1):
        lines.append(f"| {n} | {r.title or r.item_id} | {r.retrieval_score:.3f} | {r.stars:.2f} |")
    lines += ["", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def preload_plotting() -> threading.Thread:
    """Import matplotlib in a background thread while the models train.

    The import takes about half a second and is mostly Python, which runs while the
    training thread waits in PyTorch kernels (they release the GIL).
    """

    def load() -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.backends.backend_agg
        import matplotlib.figure

    thread = threading.Thread(target=load, name="mtrec-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def plot_comparison(result: CompareResult, path: str | Path) -> None:
    """Two bar charts side by side: top-10 accuracy and RMSE of each model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state, faster import

    names = [m.name for m in result.models]
    fig = Figure(figsize=(9, 3.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.8, wspace=0.25)
    colors = ["#4C72B0", "#DD8452", "#55A868"][: len(names)]
    for ax, key, title in zip(
        fig.subplots(1, 2),
        ("top_k_accuracy", "rmse"),
        ("Top-10 accuracy (higher is better)", "RMSE, scaled (lower is better)"),
        strict=True,
    ):
        values = [getattr(m, key) for m in result.models]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, fmt="%.4f", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle(f"{result.dataset}, {result.protocol} protocol, seed {result.seed}", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One multi-task model of a sweep over the retrieval weight (ranking weight 1)."""

    name: str
    retrieval_weight: float | None
    top_k_accuracy: float
    honest_top_k_accuracy: float
    rmse: float
    train_seconds: float
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
) -> list[SweepPoint]:
    """Train the multi-task model at each retrieval weight (ranking weight 1) and, with
    ``learned``, once with learned uncertainty weights; mark the Pareto front of honest
    top-10 accuracy (higher) against RMSE (lower)."""
    model_config = model_config or ModelConfig()
    base = dataclasses.replace(train_config or TrainConfig(), seed=seed, rating_weight=1.0)
    split = random_split(dataset.interactions, seed=seed)
    vocabs = Vocabs.from_dataset(dataset)
    train_data, test_data = encode(split.train, vocabs), encode(split.test, vocabs)
    seen = seen_items(train_data, len(vocabs.users))
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
    points = []
    for name, weight, mc, tc in runs:
        model = build_model(dataset, vocabs, mc, seed)
        history = train(model, train_data, tc)
        reference = evaluate(model, test_data, k=10)
        honest = evaluate(model, test_data, k=10, protocol="honest", seen=seen)
        points.append(
            SweepPoint(
                name,
                weight,
                reference.top_k_accuracy,
                honest.top_k_accuracy,
                reference.rmse,
                round(history.seconds, 3),
                learned_weights=model.task_weights(),
            )
        )
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


def write_sweep(points: list[SweepPoint], output_dir: str | Path, title: str) -> list[Path]:
    """``sweep.json``, ``sweep.md`` and ``sweep.png`` (the trade-off, Pareto front marked)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "sweep.json",
        json_safe({"title": title, "points": [dataclasses.asdict(p) for p in points]}),
    )
    lines = [
        f"# mtrec sweep: {title}",
        "",
        "| model | retrieval weight | top-10 ref | top-10 honest | RMSE | Pareto | train s |",
        "|---|---:|---:|---:|---:|:---:|---:|",
    ]
    for p in points:
        weight = "learned" if p.retrieval_weight is None else f"{p.retrieval_weight:g}"
        if p.learned_weights:
            weight += f" (ended at {p.learned_weights[0]:.3g} : {p.learned_weights[1]:.3g})"
        lines.append(
            f"| {p.name} | {weight} | {p.top_k_accuracy:.4f} | {p.honest_top_k_accuracy:.4f} "
            f"| {p.rmse:.4f} | {'yes' if p.pareto else ''} | {p.train_seconds:.1f} |"
        )
    fixed = [p for p in points if p.retrieval_weight is not None]
    learned = [p for p in points if p.retrieval_weight is None]
    if fixed and learned:
        best = max(fixed, key=lambda p: p.honest_top_k_accuracy - 4 * p.rmse)
        lines += [
            "",
            f"Learned weighting against the best fixed weight ({best.name}, by honest top-10 "
            f"minus 4 x RMSE): honest top-10 {learned[0].honest_top_k_accuracy:.4f} vs "
            f"{best.honest_top_k_accuracy:.4f}, RMSE {learned[0].rmse:.4f} vs {best.rmse:.4f}.",
        ]
    lines += ["", "![trade-off](sweep.png)", ""]
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    _plot_sweep(points, out / "sweep.png", title)
    return [out / "sweep.json", out / "sweep.md", out / "sweep.png"]


def _plot_sweep(points: list[SweepPoint], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    front = sorted((p for p in points if p.pareto), key=lambda p: p.rmse)
    ax.plot(
        [p.rmse for p in front],
        [p.honest_top_k_accuracy for p in front],
        "-",
        color="#999",
        zorder=1,
        label="Pareto front",
    )
    for p in points:
        color = "#DD8452" if p.retrieval_weight is None else ("#4C72B0" if p.pareto else "#9bb0d3")
        ax.scatter(p.rmse, p.honest_top_k_accuracy, color=color, zorder=2)
        ax.annotate(
            "learned" if p.retrieval_weight is None else f"{p.retrieval_weight:g}",
            (p.rmse, p.honest_top_k_accuracy),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("RMSE, scaled (lower is better)")
    ax.set_ylabel("top-10 accuracy, honest (higher is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
