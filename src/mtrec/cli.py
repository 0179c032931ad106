"""The ``mtrec`` command: parse flags, call the library, render. No logic lives here."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from mtrec import artifact
from mtrec.checkpoint import Checkpointing
from mtrec.compare import CompareResult, compare_seeds
from mtrec.config import DATA_KEYS, RunConfig, effective_config, ranker_preset
from mtrec.config import preset as make_preset
from mtrec.data import Dataset, load_movielens, synthesize
from mtrec.data.files import ColumnMap, load_interactions
from mtrec.data.movielens import MOVIELENS
from mtrec.data.synth import synthesize_planted, write_parquet
from mtrec.distributed import join_from_env, leave
from mtrec.errors import ConfigError, MtrecError
from mtrec.estimator import run_config
from mtrec.evaluate import EVAL_USERS, ListReport
from mtrec.evaluate.oracle import planted_lists
from mtrec.index import INDEX_KINDS
from mtrec.io import json_safe
from mtrec.pipeline import evaluate_saved_on, evaluate_saved_with_lists, train_model
from mtrec.plots import preload_plotting
from mtrec.recommend import Recommender, write_all_users
from mtrec.report import list_rows, lists_summary_lines, table_rows, write_outputs, write_sweep
from mtrec.runtime import resolve_device, tune_allocator
from mtrec.sweep import sweep
from mtrec.train import EpochStats
from mtrec.warm import REPLAY

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mtrec: one model trained jointly to retrieve and to rank.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch datasets; synthesise big ones.")
app.add_typer(data_app, name="data")
err = Console(stderr=True)
out = Console()
_state: dict[str, Any] = {"verbose": False, "argv": []}

DataDir = Annotated[
    Path | None,
    typer.Option(
        help="A GroupLens ml-100k directory (u.data, u.item, u.user); env MTREC_DATA_DIR."
    ),
]
CacheDir = Annotated[Path | None, typer.Option(help="Dataset cache; env MTREC_CACHE_DIR.")]
DatasetName = Annotated[
    str,
    typer.Option("--dataset", help=f"The MovieLens size: {', '.join(MOVIELENS)}."),
]
InteractionsFile = Annotated[
    Path | None,
    typer.Option("--interactions", help="Your own log (CSV, TSV or Parquet) instead of MovieLens."),
]
UserCol = Annotated[str, typer.Option("--user-col", help="--interactions: user id column.")]
ItemCol = Annotated[str, typer.Option("--item-col", help="--interactions: item id column.")]
RatingCol = Annotated[
    str | None,
    typer.Option(
        "--rating-col",
        help="--interactions: rating column (default 'rating' if present; '' for none: "
        "retrieval only).",
    ),
]
TimestampCol = Annotated[
    str | None,
    typer.Option("--timestamp-col", help="--interactions: timestamp column (default 'timestamp')."),
]
ItemsFile = Annotated[
    Path | None,
    typer.Option("--items-file", help="--interactions: items with title/genres/year columns."),
]
RatingRange = Annotated[
    str | None,
    typer.Option(
        "--rating-range",
        help="--interactions: LOW,HIGH; ratings outside are bad rows (default +-1e6).",
    ),
]
SkipBadRows = Annotated[
    bool,
    typer.Option(
        "--skip-bad-rows", help="--interactions: drop and count bad rows instead of stopping."
    ),
]


SplitKind = Annotated[
    str, typer.Option("--split", help="random, temporal (latest rows) or temporal-user.")
]
TestInteractions = Annotated[
    Path | None,
    typer.Option(
        "--test-interactions",
        help="A test log of its own (same column flags): evaluate on it instead of a split; "
        "rows whose user or item is unseen in training are counted and left out.",
    ),
]

DATA_FLAGS = (
    "data_dir", "cache_dir", "dataset", "interactions", "user_col", "item_col", "rating_col",
    "timestamp_col", "items_file", "skip_bad_rows", "rating_range",
)  # fmt: skip
"""The parameters of the commands that take data: MovieLens or the user's own file."""


def _load_data(
    data_dir: Path | None,
    cache_dir: Path | None,
    dataset: str,
    interactions: Path | None,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    items_file: Path | None,
    skip_bad_rows: bool,
    rating_range: str | None,
) -> Dataset:
    """MovieLens (any size) or the user's own file, as the flags say; says what it dropped."""
    if interactions is None:
        if items_file is not None or skip_bad_rows or rating_range is not None:
            raise ConfigError(
                "--items-file, --skip-bad-rows and --rating-range go with --interactions"
            )
        return load_movielens(dataset, data_dir=data_dir, cache_dir=cache_dir)
    loaded = load_interactions(
        interactions,
        ColumnMap(user_col, item_col, rating_col, timestamp_col),
        items=items_file,
        bad_rows="skip" if skip_bad_rows else "error",
        rating_range=None if rating_range is None else _rating_range(rating_range),
    )
    if loaded.skipped:
        counts = ", ".join(f"{column} {n:,}" for column, n in loaded.skipped.items())
        err.print(f"[yellow]skipped bad rows: {counts}[/yellow]", highlight=False)
    return loaded  # without ratings, load_interactions has said: retrieval only


def _rating_range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(",")
    try:
        bounds = float(low), float(high)
    except ValueError:
        bounds = (math.nan, math.nan)
    if not sep or not all(math.isfinite(b) for b in bounds) or bounds[0] > bounds[1]:
        raise ConfigError(f"--rating-range: expected LOW,HIGH with LOW <= HIGH, got {text!r}")
    return bounds


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks and debug logs.")
    ] = False,
) -> None:
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )


class _ModelBar:
    """One model's line in a shared rich progress display, plus a summary line per epoch."""

    def __init__(self, bar: RichBar, name: str) -> None:
        self.bar, self.name = bar, name
        self.task = bar.add_task(name, total=None, losses="")
        self.n = 0

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None:
        self.bar.reset(
            self.task, total=n_batches, description=f"{self.name} epoch {epoch}/{epochs}"
        )
        self.n = 0

    def step(self, losses: dict[str, float]) -> None:
        self.n += 1
        if self.n % 10 == 0:  # rendering every batch would cost more than the batch
            text = "  ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "loss")
            self.bar.update(self.task, completed=self.n, losses=text)

    def end_epoch(self, stats: EpochStats) -> None:
        self.bar.update(self.task, completed=self.n)
        parts = [
            f"{task} loss {value:.4g}"
            for task, value in (("retrieval", stats.retrieval_loss), ("rating", stats.rating_loss))
            if value is not None
        ]
        summary = f"{self.name} epoch {stats.epoch}: {', '.join(parts)} ({stats.seconds:.2f} s)"
        self.bar.console.print(f"[dim]{summary}[/dim]")


def _progress_bars(console: Console) -> RichBar:
    return RichBar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        console=console,
    )


@app.command("compare")
def compare_cmd(
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    dataset: DatasetName = "ml-100k",
    interactions: InteractionsFile = None,
    user_col: UserCol = "user_id",
    item_col: ItemCol = "item_id",
    rating_col: RatingCol = None,
    timestamp_col: TimestampCol = None,
    items_file: ItemsFile = None,
    skip_bad_rows: SkipBadRows = False,
    rating_range: RatingRange = None,
    split: SplitKind = "random",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where results go.")] = Path(
        "mtrec-out/compare"
    ),
    preset: Annotated[
        str, typer.Option(help="reference (the tutorial), tuned or default.")
    ] = "reference",
    seed: Annotated[
        int, typer.Option(help="Seeds the split, initialisation and batch order.")
    ] = 42,
    seeds: Annotated[
        str | None, typer.Option(help="Several seeds, e.g. 42,1,2: mean and std are reported.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per model.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Rows per batch (the in-batch negatives).")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    embedding_dim: Annotated[int | None, typer.Option(help="Width of both towers.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="Training matmuls: auto (bf16 on CPUs with native bf16), fp32, bf16."),
    ] = None,
    device: DeviceFlag = None,
    user: Annotated[
        str | None,
        typer.Option(help="User whose retrieve-then-rank list is shown (default 5, or the first)."),
    ] = None,
    baselines: Annotated[
        bool, typer.Option(help="Also evaluate popularity, EASE and the global mean.")
    ] = False,
    ease_lambda: Annotated[float, typer.Option(help="L2 weight of the EASE baseline.")] = 500.0,
    k: Annotated[int, typer.Option("-k", "--k", help="List length for the lists table.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json to stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train the three weightings (rating, retrieval, multi-task) and compare them."""
    model_config, train_config = make_preset(
        preset,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        embedding_dim=embedding_dim,
        precision=precision,
        device=device,
    )
    seed_list = [seed] if seeds is None else [_parse_seed(s) for s in seeds.split(",")]
    preload_plotting()
    data = _load_data(**{k: v for k, v in locals().items() if k in DATA_FLAGS})
    bars = _progress_bars(err)
    with contextlib.nullcontext() if quiet else bars:
        result = compare_seeds(
            data,
            seed_list,
            model_config=model_config,
            train_config=train_config,
            user_id=user,
            progress=None if quiet else (lambda name: _ModelBar(bars, name)),
            baselines=baselines,
            ease_lambda=ease_lambda,
            split=split,
            ranker=ranker_preset(preset),
            k=k,
        )
    paths = write_outputs(result, output)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    _print_compare(result)
    out.print(f"[dim]wrote {', '.join(str(p) for p in paths)}[/dim]")


@app.command("sweep")
def sweep_cmd(
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    dataset: DatasetName = "ml-100k",
    interactions: InteractionsFile = None,
    user_col: UserCol = "user_id",
    item_col: ItemCol = "item_id",
    rating_col: RatingCol = None,
    timestamp_col: TimestampCol = None,
    items_file: ItemsFile = None,
    skip_bad_rows: SkipBadRows = False,
    rating_range: RatingRange = None,
    split: SplitKind = "random",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where results go.")] = Path(
        "mtrec-out/sweep"
    ),
    preset: Annotated[str, typer.Option(help="reference or tuned.")] = "tuned",
    weights: Annotated[
        str, typer.Option(help="Retrieval weights, comma-separated (ranking 1).")
    ] = ("0.1,0.3,1,2,4,10"),
    seed: Annotated[int, typer.Option(help="Seeds split, initialisation, batch order.")] = 42,
    learned: Annotated[bool, typer.Option(help="Also learn the weights (Kendall et al.).")] = True,
    as_json: AsJson = False,
) -> None:
    """Trade-off of the two tasks: the multi-task model over a grid of retrieval weights."""
    model_config, train_config = make_preset(preset)
    try:
        grid = [float(w) for w in weights.split(",")]
    except ValueError:
        raise ConfigError(
            f"--weights: expected numbers separated by commas, got {weights!r}"
        ) from None
    preload_plotting()
    data = _load_data(**{k: v for k, v in locals().items() if k in DATA_FLAGS})
    points = sweep(
        data,
        grid,
        seed=seed,
        model_config=model_config,
        train_config=train_config,
        learned=learned,
        split=split,
    )
    paths = write_sweep(points, output, f"{data.name}, preset {preset}, seed {seed}")
    if as_json:
        sys.stdout.write((output / "sweep.json").read_text())
        return
    table = Table(
        title=f"{data.name}, preset {preset}, seed {seed}: retrieval weight (rating weight 1)"
    )
    for col in ("model", "top-10 ref", "top-10 honest", "RMSE", "Pareto", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for p in points:
        table.add_row(
            p.name,
            f"{p.top_k_accuracy:.4f}",
            f"{p.honest_top_k_accuracy:.4f}",
            f"{p.rmse:.4f}",
            "yes" if p.pareto else "",
            f"{p.train_seconds:.1f}",
        )
    out.print(table)
    out.print(f"[dim]wrote {', '.join(str(p) for p in paths)}[/dim]")


def _parse_seed(text: str) -> int:
    if not text.strip().lstrip("-").isdigit():
        raise ConfigError(f"--seeds: expected integers separated by commas, got {text!r}")
    return int(text)


def _print_compare(result: CompareResult) -> None:
    table = Table(title=f"{result.dataset}, seed {result.seed}: reference and honest protocols")
    headers, rows = table_rows(result)
    for col in headers:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        table.add_row(*row)
    # a terminal gets its own width; a pipe or a file gets whole names instead of 80 columns
    wide = out if out.is_terminal else Console(width=132)
    wide.print(table)
    if result.lists:
        _print_lists(result.lists, wide)
        if result.other_seeds:
            for line in lists_summary_lines(result):
                wide.print(line, highlight=False)
    recs = Table(title=f"Retrieve, then rank: user {result.user_id} (multi-task)")
    for col in ("#", "title", "retrieval score", "predicted stars"):
        recs.add_column(col, justify="left" if col == "title" else "right")
    for n, r in enumerate(result.recommendations, start=1):
        recs.add_row(
            str(n), r.title or str(r.item_id), _num(r.retrieval_score, 3), _num(r.stars, 2)
        )
    out.print(recs)


def parse_history(text: str) -> list[tuple[str, float | None]]:
    """``ITEM[:RATING],...`` -> (item id as typed, rating or None); a bad entry is named."""
    entries: list[tuple[str, float | None]] = []
    for position, entry in enumerate(text.split(","), start=1):
        item, sep, rating = entry.strip().partition(":")
        if not item or (sep and not rating.strip()):
            raise ConfigError(
                f"--history entry {position} ({entry!r}): expected ITEM or ITEM:RATING"
            )
        try:
            value = float(rating) if sep else None
        except ValueError:
            raise ConfigError(
                f"--history entry {position} ({entry!r}): rating {rating!r} is not a number"
            ) from None
        entries.append((item, value))
    return entries


def _print_lists(lists: list[ListReport], console: Console) -> None:
    table = Table(title="The lists a user gets: served, each stage alone, popularity, EASE")
    headers, rows = list_rows(lists)
    for col in headers:
        table.add_column(col, justify="left" if col == headers[0] else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _key_int(option: str) -> tuple[str, int]:
    key, _, value = option.partition("=")
    if not key or not value.strip().isdigit():
        raise ConfigError(f"--index-option: expected KEY=INTEGER, got {option!r}")
    return key.strip(), int(value)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _finite(value: float | None) -> float | None:
    """None for a metric that does not apply (NaN in memory, null in JSON)."""
    return None if value is None or value != value else value


@data_app.command("fetch")
def data_fetch(
    data_dir: DataDir = None, cache_dir: CacheDir = None, dataset: DatasetName = "ml-100k"
) -> None:
    """Load a MovieLens dataset through the first source that works and cache it."""
    data = load_movielens(dataset, data_dir=data_dir, cache_dir=cache_dir)
    ev = data.interactions
    out.print(
        f"{data.name}: {len(ev):,} ratings, {len(data.user_ids()):,} users, "
        f"{len(data.item_ids()):,} items, from {data.source}",
        highlight=False,
        soft_wrap=True,
    )


@data_app.command("synth")
def data_synth(
    output: Annotated[Path, typer.Option("--output", "-o", help="The Parquet file to write.")],
    interactions: Annotated[int, typer.Option(help="Rows.")] = 25_000_000,
    users: Annotated[int, typer.Option(help="Users.")] = 200_000,
    items: Annotated[int, typer.Option(help="Items.")] = 80_000,
    seed: Annotated[int, typer.Option(help="The same seed gives the same file.")] = 0,
    planted: Annotated[
        bool,
        typer.Option(
            help="Plant taste clusters in the choices (users pick items by popularity and "
            "taste), and report the oracle's recall@10 beside popularity's. Without it, "
            "choices follow activity and popularity alone (for throughput runs)."
        ),
    ] = False,
    clusters: Annotated[int, typer.Option(help="--planted: taste clusters.")] = 32,
    temperature: Annotated[
        float, typer.Option(help="--planted: taste's temperature (larger: popularity rules).")
    ] = 0.1,
    popularity_weight: Annotated[
        float, typer.Option(help="--planted: the exponent a of popularity^a in a choice.")
    ] = 0.5,
) -> None:
    """Write a synthetic log (power-law popularity, latent-factor ratings) for benchmarks."""
    start = time.perf_counter()
    if planted:
        log, truth = synthesize_planted(
            interactions,
            users,
            items,
            clusters=clusters,
            temperature=temperature,
            popularity_weight=popularity_weight,
            seed=seed,
        )
    else:
        log = synthesize(interactions, users, items, seed=seed)
    write_parquet(log, output)
    out.print(
        f"wrote {len(log):,} interactions ({users:,} users, {items:,} items) to {output} "
        f"in {time.perf_counter() - start:.1f} s",
        highlight=False,
    )
    if planted:
        report = planted_lists(log, truth)
        oracle, popular = report.oracle, report.popularity
        out.print(
            f"on mtrec train's split (random 0.2, seed 42; {report.users:,} of "
            f"{report.of_users:,} test users sampled): recall@10 oracle "
            f"{oracle['recall']:.4f} (NDCG {oracle['ndcg']:.4f}), popularity "
            f"{popular['recall']:.4f} (NDCG {popular['ndcg']:.4f})",
            highlight=False,
        )


ModelDir = Annotated[
    Path, typer.Option("--model", "-m", help="A directory written by mtrec train.")
]
DeviceFlag = Annotated[
    str | None,
    typer.Option(
        help="Where training runs: auto (a CUDA GPU where there is one, else the CPU), cpu, "
        "cuda, cuda:N or mps. Evaluation's top-k runs there too; serving stays on the CPU."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A run config (TOML or JSON; a saved model's config.json too): the preset, "
            "[model], [train], [ranker], [data] and [index] settings; flags override it."
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(help="Print the effective config as JSON (a complete --config) and stop."),
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Warm start: continue this saved model on the given (new) interactions; known "
            "users and items keep their rows, new ones are appended; its config is the base."
        ),
    ] = None,
    replay: Annotated[
        float,
        typer.Option(
            help="With --init-from: the share of the saved model's own rows its rating head "
            "trains on again beside the new rows (0: the new rows alone); the lists learn "
            "from the new rows only."
        ),
    ] = REPLAY,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    dataset: DatasetName = "ml-100k",
    interactions: InteractionsFile = None,
    user_col: UserCol = "user_id",
    item_col: ItemCol = "item_id",
    rating_col: RatingCol = None,
    timestamp_col: TimestampCol = None,
    items_file: ItemsFile = None,
    skip_bad_rows: SkipBadRows = False,
    rating_range: RatingRange = None,
    split: SplitKind = "random",
    holdout: Annotated[
        str | None,
        typer.Option(
            help="Share of the rows held out to evaluate on, or 'none' to train on every row "
            "(a model to deploy: seen items and popularity from the whole log). Default 0.2."
        ),
    ] = None,
    holdout_estimate: Annotated[
        float | None,
        typer.Option(
            help="With --holdout none: first train the same config with this share held out "
            "and record its metrics in metrics.json as an estimate."
        ),
    ] = None,
    test_interactions: TestInteractions = None,
    eval_users: Annotated[
        int,
        typer.Option(
            help="Test users measured at most: a seeded sample above it (metrics.json "
            "says so); 0 measures every test user."
        ),
    ] = EVAL_USERS,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The model directory to write.")
    ] = Path("mtrec-out/model"),
    preset: Annotated[
        str | None,
        typer.Option(
            help="Named configuration the flags below override: default (the best measured: "
            "history-aware towers and a ranking stage), tuned, or reference (the tutorial's)."
        ),
    ] = None,
    retrieval_weight: Annotated[
        float | None, typer.Option(help="Weight of the retrieval loss.")
    ] = None,
    rating_weight: Annotated[
        float | None,
        typer.Option("--rating-weight", "--ranking-weight", help="Weight of the rating loss."),
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    embedding_dim: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seeds split, initialisation, batch order.")
    ] = None,
    shuffle: Annotated[
        bool | None, typer.Option("--shuffle/--no-shuffle", help="Reshuffle each epoch.")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32 or bf16 training matmuls.")
    ] = None,
    device: DeviceFlag = None,
    index: Annotated[str, typer.Option(help="exact, faiss-hnsw or faiss-ivf.")] = "exact",
    index_option: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=INT for the index, repeatable: m, ef_construction, ef_search, nlist, nprobe."
        ),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Checkpoint here at each epoch's end (and --checkpoint-every)."),
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Also checkpoint every N batches.")
    ] = None,
    keep_checkpoints: Annotated[int, typer.Option(help="How many checkpoints to keep.")] = 3,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest valid checkpoint.")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Data-parallel processes on this machine (runs torchrun --standalone); "
            "under torchrun, leave it at 1."
        ),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: AsJson = False,
) -> None:
    """Train one multi-task model and write it, with its index, to a model directory."""
    if workers > 1:
        _relaunch_with_torchrun(workers)
    if workers < 1:
        raise ConfigError("--workers must be >= 1")
    if eval_users < 0:
        raise ConfigError("--eval-users must be >= 0 (0 measures every test user)")
    if checkpoint_dir is None and (resume or checkpoint_every):
        raise ConfigError("--resume and --checkpoint-every need --checkpoint-dir")
    if keep_checkpoints < 1 or (checkpoint_every is not None and checkpoint_every < 1):
        raise ConfigError("--keep-checkpoints and --checkpoint-every must be >= 1")
    checkpoints = (
        None
        if checkpoint_dir is None
        else Checkpointing(checkpoint_dir, checkpoint_every, keep_checkpoints, resume)
    )
    warm = None if init_from is None else artifact.load(init_from)
    run = run_config(config, warm)  # then the flags over it
    model_config, train_config, ranker = run.resolve(
        preset,
        retrieval_weight=retrieval_weight,
        rating_weight=rating_weight,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        embedding_dim=embedding_dim,
        seed=seed,
        shuffle=shuffle,
        precision=precision,
        device=device,
    )
    flags = _with_file(ctx, run, locals())
    index, index_params = _index_settings(ctx, run, index, index_option)
    if print_config:
        data_keys = {key: _jsonable(flags[key]) for key in DATA_KEYS}
        document = effective_config(
            model_config, train_config, ranker, data_keys, {"kind": index, "options": index_params}
        )
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    resolve_device(train_config.device)  # a device that is not here fails before any work
    where = join_from_env(train_config.device)  # the backend follows the device
    if not where.is_main:  # one voice: rank 0 reports progress and notices
        quiet = True
        logging.getLogger("mtrec").setLevel(logging.WARNING)
    data = _load_data(**{k: v for k, v in flags.items() if k in DATA_FLAGS})
    test_file = flags["test_interactions"]
    test = None if test_file is None else _test_data(test_file, flags)
    bars = _progress_bars(err)
    with contextlib.nullcontext() if quiet else bars:
        saved = train_model(
            data,
            model_config,
            train_config,
            split=flags["split"],
            test_fraction=_holdout(flags["holdout"], test is not None),
            test=test,
            estimate_fraction=flags["holdout_estimate"],
            index=index,
            index_params=index_params,
            progress=None if quiet else _ModelBar(bars, "multi-task"),
            checkpoints=checkpoints,
            ranker=ranker,
            ranker_progress=None if quiet else _ModelBar(bars, "ranker's stage one"),
            init_from=warm,
            replay=replay,
            eval_users=flags["eval_users"],
        )
    leave()
    if not where.is_main:  # rank 0 writes the model and reports for every process
        return
    path = artifact.save(saved, output)
    if as_json:
        sys.stdout.write(
            json.dumps(json_safe({"model": str(path), "metrics": saved.metrics}), indent=2) + "\n"
        )
        return
    m = saved.metrics
    seconds = f"trained in {m['fit_seconds']:.2f} s"
    if "served" not in m:
        said = "every row trained, nothing held out to evaluate on"
        if "estimate" in m:
            said += f"; held-out estimate: {_metrics_line(m['estimate'])}"
        out.print(f"{said}; {seconds}; index {m['index']['kind']}", highlight=False)
    else:
        out.print(f"{_metrics_line(m)}; {seconds}; index {m['index']['kind']}", highlight=False)
    out.print(f"[dim]wrote {path}[/dim]")


def _metrics_line(m: dict[str, Any]) -> str:
    """The served list, top-10 accuracy and RMSE of a metrics.json, in one line."""
    rating = (
        "no rating task"
        if m["rmse"] != m["rmse"]
        else f"RMSE {m['rmse']:.4f} ({m['rmse_stars']:.3f} stars)"
    )
    head = m.get("rating_head", {}).get("rmse")
    if head is not None and head == head and head != m["rmse"]:
        rating += f", the rating head alone {head:.4f}"
    served = m["served"]
    return (
        f"served list: recall@{served['k']} {served['recall']:.4f}, NDCG@{served['k']} "
        f"{served['ndcg']:.4f} (honest); top-10 accuracy {m['top_k_accuracy']:.4f}, {rating}"
    )


PATH_KEYS = ("data_dir", "cache_dir", "interactions", "items_file", "test_interactions")


def _with_file(ctx: typer.Context, run: RunConfig, values: dict[str, Any]) -> dict[str, Any]:
    """The data flags' values: a flag given on the command line wins over the config
    file's ``[data]``, which wins over the flag's default."""
    out = {key: values[key] for key in DATA_KEYS}
    for key, value in run.data.items():
        if _given(ctx, key):
            continue
        out[key] = _file_value(key, value)
    return out


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _file_value(key: str, value: Any) -> Any:
    """A ``[data]`` value as its flag would give it; the wrong kind is an error naming it."""
    if key == "holdout" and isinstance(value, int | float) and not isinstance(value, bool):
        return "none" if value == 0 else str(value)
    if key == "holdout_estimate" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if key == "rating_range" and isinstance(value, list) and len(value) == 2:
        return ",".join(str(v) for v in value)
    if key == "eval_users":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config [data] {key}: expected an integer >= 0, got {value!r}")
        return value
    if key == "skip_bad_rows":
        if not isinstance(value, bool):
            raise ConfigError(f"config [data] {key}: expected true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"config [data] {key}: expected text, got {value!r}")
    return Path(value) if key in PATH_KEYS else value


def _index_settings(
    ctx: typer.Context, run: RunConfig, kind: str, options: list[str] | None
) -> tuple[str, dict[str, int]]:
    """The index kind and options: flags, else the config file's ``[index]``."""
    if not _given(ctx, "index") and "kind" in run.index:
        kind = run.index["kind"]
    params = dict(_key_int(option) for option in options or [])
    if not params and isinstance(run.index.get("options"), dict):
        params = run.index["options"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in params.values()):
            raise ConfigError(f"config [index] options: expected integers, got {params!r}")
    if kind not in INDEX_KINDS:
        raise ConfigError(f"--index: expected one of {list(INDEX_KINDS)}, got {kind!r}")
    return kind, params


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _holdout(text: str | None, given_test: bool) -> float:
    """--holdout as a test fraction: 'none' is 0 (as is any run with a test file)."""
    if given_test:
        if text is not None:
            raise ConfigError("--holdout goes without --test-interactions (every row trains)")
        return 0.0
    if text is None:
        return 0.2
    if text.strip().lower() == "none":
        return 0.0
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise ConfigError(f"--holdout: expected 'none' or a share in (0, 1), got {text!r}")
    return fraction


def _test_data(path: Path, flags: dict[str, Any]) -> Dataset:
    """--test-interactions, read with the same column flags as --interactions (the
    catalogue comes from the training data)."""
    data_flags = {key: flags[key] for key in DATA_FLAGS}
    return _load_data(**{**data_flags, "interactions": path, "items_file": None})


@app.command("evaluate")
def evaluate_cmd(
    model: ModelDir,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    dataset: DatasetName = "ml-100k",
    interactions: InteractionsFile = None,
    user_col: UserCol = "user_id",
    item_col: ItemCol = "item_id",
    rating_col: RatingCol = None,
    timestamp_col: TimestampCol = None,
    items_file: ItemsFile = None,
    skip_bad_rows: SkipBadRows = False,
    rating_range: RatingRange = None,
    test_interactions: TestInteractions = None,
    k: Annotated[int, typer.Option("-k", "--k", help="List length for the lists table.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Re-evaluate a saved model on its own split (rebuilt from the same data and checked),
    or on a test file of its own: its metrics, and the list it serves beside retrieval
    alone, popularity and EASE."""
    saved = artifact.load(model)
    unseen = None
    if test_interactions is not None:
        if interactions is not None:
            raise ConfigError("evaluate: give --interactions (its split) or --test-interactions")
        evaluation = evaluate_saved_on(saved, _test_data(test_interactions, locals()), k=k)
        report, lists, unseen = evaluation.report, evaluation.lists, evaluation.unseen.to_dict()
    else:
        data = _load_data(**{name: v for name, v in locals().items() if name in DATA_FLAGS})
        report, lists = evaluate_saved_with_lists(saved, data, k=k)
    now = dataclasses.asdict(report)
    if as_json:
        document = {
            "model": str(model),
            "metrics": now,
            "lists": [dataclasses.asdict(r) for r in lists],
            "saved": saved.metrics,
            **({"unseen_test": unseen} if unseen is not None else {}),
        }
        sys.stdout.write(json.dumps(json_safe(document), indent=2) + "\n")
        return
    table = Table(title=f"{model}: {report.protocol} protocol, {report.n_test:,} test rows")
    for col in ("metric", "now", "at training"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in ("top_k_accuracy", "rmse", "rmse_stars"):
        then = saved.metrics.get(key)
        table.add_row(key, _num(_finite(now[key]), 4), _num(_finite(then), 4))
    out.print(table)
    _print_lists(lists, out if out.is_terminal else Console(width=160))


@app.command("recommend")
def recommend_cmd(
    model: ModelDir,
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user's id.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many items to show.")] = 10,
    history: Annotated[
        str | None,
        typer.Option(
            help="A new user's history instead of --user: ITEM[:RATING],... e.g. 50:5,181:4,172."
        ),
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(help="Candidates per source before ranking (default: the model's, 50)."),
    ] = None,
    include_seen: Annotated[
        bool, typer.Option(help="Allow items the user rated in training.")
    ] = False,
    all_users: Annotated[bool, typer.Option(help="Every user, written to --output.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Parquet file for --all-users.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """A user's list: candidates from the two towers (and item-item), ordered by the ranking
    stage (or, for a model without one, by predicted rating); or a new user's, from --history."""
    if sum((all_users, user is not None, history is not None)) != 1:
        raise ConfigError("recommend: give exactly one of --user ID, --history or --all-users")
    if all_users and output is None:
        raise ConfigError("recommend --all-users: --output FILE.parquet is required")
    rec = Recommender.load(model)
    if all_users:
        assert output is not None
        rows = write_all_users(
            rec, output, k=k, candidates=candidates, exclude_seen=not include_seen
        )
        out.print(f"wrote {rows:,} recommendations for {len(rec.vocabs.users):,} users to {output}")
        return
    if history is not None:
        result = rec.recommend_for_history(parse_history(history), k=k, candidates=candidates)
    else:
        assert user is not None
        result = rec.recommend(user, k=k, candidates=candidates, exclude_seen=not include_seen)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    if result.notice:
        err.print(f"[yellow]notice:[/yellow] {result.notice}", highlight=False)
    kind = "most popular (fallback)" if result.fallback else "retrieved, then ranked"
    who = f"user {user}" if user is not None else "a new user, from their history"
    table = Table(title=f"{who}: {kind}")
    for col in ("#", "title", "genres", "retrieval score", "predicted stars"):
        table.add_column(col, justify="left" if col in ("title", "genres") else "right")
    for n, r in enumerate(result.items, start=1):
        table.add_row(
            str(n),
            r.title or str(r.item_id),
            ", ".join(r.genres),
            _num(r.retrieval_score, 3),
            _num(r.stars, 2),
        )
    out.print(table)


@app.command("similar")
def similar_cmd(
    model: ModelDir,
    item: Annotated[str, typer.Option("--item", "-i", help="The item's id.")],
    k: Annotated[int, typer.Option("-k", help="How many items to show.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Items whose embeddings are closest (cosine) to the given item's."""
    rec = Recommender.load(model)
    items = rec.similar(item, k=k)
    if as_json:
        sys.stdout.write(json.dumps([s.to_dict() for s in items], indent=2) + "\n")
        return
    row = rec.item_row(item)
    table = Table(title=f"similar to {rec.saved.items.titles[row] or item}")
    for col in ("#", "title", "genres", "cosine"):
        table.add_column(col, justify="left" if col in ("title", "genres") else "right")
    for n, s in enumerate(items, start=1):
        table.add_row(str(n), s.title or str(s.item_id), ", ".join(s.genres), f"{s.score:.3f}")
    out.print(table)


@app.command("serve")
def serve_cmd(
    model: ModelDir,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the API key (else MTREC_API_KEY).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    threads: Annotated[
        int, typer.Option(help="PyTorch threads (1 suits many small requests).")
    ] = 1,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name to answer besides loopback names and --host (repeat; '*': any). "
            "Others get 400, so a web page cannot reach the service through DNS rebinding."
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's headers.")
    ] = 10.0,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes sharing the port (default: the CPU cores, up to 4)."),
    ] = None,
) -> None:
    """Serve recommendations over HTTP (JSON API, /docs, /metrics and a web page at /)."""
    try:
        from mtrec.serve import allowed_hosts, read_api_key, serve
    except ImportError as exc:
        raise ConfigError(
            f"the service needs the 'serve' extra: pip install 'mtrec-torch[serve]' ({exc})"
        ) from None
    key = read_api_key(api_key_file, os.environ)
    if threads < 1:
        raise ConfigError(f"--threads: expected >= 1, got {threads}")
    if not header_timeout > 0:
        raise ConfigError(f"--header-timeout: expected > 0 seconds, got {header_timeout}")
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        workers = min(cores or os.cpu_count() or 1, 4)
    if workers < 1:
        raise ConfigError(f"--workers: expected >= 1, got {workers}")
    err.print(
        f"serving {model} on http://{host}:{port}/ with {workers} worker(s) "
        f"({'API key required' if key else 'no API key: open to anyone who can reach the port'})",
        highlight=False,
    )
    serve(
        model,
        host=host,
        port=port,
        api_key=key,
        log_level=log_level,
        threads=threads,
        hosts=allowed_hosts(host, allowed_host or []),
        header_timeout=header_timeout,
        workers=workers,
    )


def _relaunch_with_torchrun(workers: int) -> None:
    """``--workers N``: the same command under ``torchrun --standalone --nproc-per-node N``
    (PyTorch's own launcher: rendezvous on a free local port, one process per worker)."""
    argv = list(_state["argv"])
    for pos, arg in enumerate(argv):
        if arg == "--workers":
            del argv[pos : pos + 2]
            break
        if arg.startswith("--workers="):
            del argv[pos]
            break
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={workers}", "-m", "mtrec", *argv,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    raise typer.Exit(subprocess.run(cmd, env=env, check=False).returncode)


def console() -> None:
    """The ``mtrec`` program (console script and ``python -m mtrec``): :func:`main`, then an
    exit without the garbage collector's last passes over every object torch and the run
    made (module teardown collects cycles several times: 0.59-0.65 s of each
    ``mtrec compare`` here, 0.12-0.13 s after ``gc.freeze``). Objects still go by reference
    counting, files are closed and atexit handlers run; only cyclic garbage is left to the
    operating system. Not in :func:`main`, which tests call in process."""
    try:
        main()
    finally:
        gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """Run one command, map mtrec's errors to one line and an exit code."""
    tune_allocator()
    _state["argv"] = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv)  # standalone: usage errors print themselves and exit 2
    except MtrecError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        # escaped: a message may quote "[train]" or a user's text, not rich markup
        err.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
