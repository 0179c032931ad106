"""The flags several commands share, and the data they name, loaded one way."""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable
from inspect import Parameter
from pathlib import Path
from typing import Annotated, Any

import typer

from mtrec.cli.program import err
from mtrec.data import Dataset, load_movielens
from mtrec.data.files import ColumnMap, load_interactions
from mtrec.data.movielens import MOVIELENS
from mtrec.errors import ConfigError

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
UsersFile = Annotated[
    Path | None,
    typer.Option(
        "--users-file",
        help="--interactions: users with age/gender/occupation columns (side features).",
    ),
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
_DATA_PARAMETERS = (
    ("data_dir", DataDir, None), ("cache_dir", CacheDir, None),
    ("dataset", DatasetName, "ml-100k"), ("interactions", InteractionsFile, None),
    ("user_col", UserCol, "user_id"), ("item_col", ItemCol, "item_id"),
    ("rating_col", RatingCol, None), ("timestamp_col", TimestampCol, None),
    ("items_file", ItemsFile, None), ("users_file", UsersFile, None),
    ("skip_bad_rows", SkipBadRows, False), ("rating_range", RatingRange, None),
)  # fmt: skip
"""The flags of the commands that take data (MovieLens or the user's own file): name,
type and default, declared once."""
DATA_FLAGS = tuple(name for name, _, _ in _DATA_PARAMETERS)


def takes_data(after: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the data flags (``_DATA_PARAMETERS``)
    after its parameter ``after`` (first where None); the command receives their values as
    one dict, ``data_flags``. Typer reads the command's signature, so the one written here
    is the command's own with the data flags spliced in."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation), kind=Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command).parameters.values()
            if p.name != "data_flags"
        ]
        at = 0 if after is None else [p.name for p in own].index(after) + 1
        data = [
            Parameter(n, Parameter.KEYWORD_ONLY, default=d, annotation=a)
            for n, a, d in _DATA_PARAMETERS
        ]
        parameters = [*own[:at], *data, *own[at:]]

        @functools.wraps(command)
        def run(**given: Any) -> None:
            data = {name: given.pop(name) for name in DATA_FLAGS}
            command(**given, data_flags=data)

        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def load_data(
    data_dir: Path | None,
    cache_dir: Path | None,
    dataset: str,
    interactions: Path | None,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    items_file: Path | None,
    users_file: Path | None,
    skip_bad_rows: bool,
    rating_range: str | None,
) -> Dataset:
    """MovieLens (any size) or the user's own file, as the flags say; says what it dropped."""
    if interactions is None:
        if items_file or users_file or skip_bad_rows or rating_range is not None:
            raise ConfigError(
                "--items-file, --users-file, --skip-bad-rows and --rating-range go with "
                "--interactions"
            )
        return load_movielens(dataset, data_dir=data_dir, cache_dir=cache_dir)
    loaded = load_interactions(
        interactions,
        ColumnMap(user_col, item_col, rating_col, timestamp_col),
        items=items_file,
        users=users_file,
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


def parse_seed(text: str) -> int:
    if not text.strip().lstrip("-").isdigit():
        raise ConfigError(f"--seeds: expected integers separated by commas, got {text!r}")
    return int(text)


def key_int(option: str) -> tuple[str, int]:
    key, _, value = option.partition("=")
    if not key or not value.strip().isdigit():
        raise ConfigError(f"--index-option: expected KEY=INTEGER, got {option!r}")
    return key.strip(), int(value)


ModelDir = Annotated[
    Path, typer.Option("--model", "-m", help="A directory written by mtrec train.")
]
ResultsDir = Annotated[Path, typer.Option("--output", "-o", help="Where results go.")]
"""``--output`` of the commands that write a results folder (compare, sweep)."""
DeviceFlag = Annotated[
    str | None,
    typer.Option(
        help="Where training runs: auto (a CUDA GPU where there is one, else the CPU), cpu, "
        "cuda, cuda:N or mps. Evaluation's top-k runs there too; serving stays on the CPU."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


def test_data(flags: dict[str, Any]) -> Dataset:
    """--test-interactions, read with the same column flags as --interactions (the
    catalogue comes from the training data)."""
    data_flags = {key: flags[key] for key in DATA_FLAGS}
    test = {"interactions": flags["test_interactions"], "items_file": None, "users_file": None}
    return load_data(**{**data_flags, **test})
