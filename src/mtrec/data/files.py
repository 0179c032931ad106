"""Users' own interaction logs: CSV or Parquet, any column names, integer or string ids.

Everything stays columnar: pyarrow reads the file (multi-threaded for CSV), the checks
are vectorised over whole columns, and string ids become int64 codes into one sorted
array of distinct names (see :class:`~mtrec.data.interactions.Interactions`).

A bad value is an error naming the file, the line (CSV) or row group and row (Parquet),
and the column, with how many rows share the problem. With ``bad_rows="skip"`` such rows
are dropped instead and counted per column in ``Dataset.skipped``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from mtrec.data.columnar import BadRows, ColumnarTable
from mtrec.data.interactions import Dataset, Interactions, Items, Users
from mtrec.data.releases import catalogue_items
from mtrec.data.values import encode_ids, id_values, number_values
from mtrec.errors import ConfigError, DataError, setting

log = logging.getLogger("mtrec.data")


PLAUSIBLE_RATING = 1e6
"""Without a declared range, ratings beyond this magnitude are bad rows."""


Meta = TypeVar("Meta", Items, Users)
"""An items or a users table: metadata whose ``ids`` follow the log's id kind."""


@dataclasses.dataclass(frozen=True)
class ColumnMap:
    """Which columns hold what. ``rating``/``timestamp`` None: use ``rating``/``timestamp``
    when the file has them; without a rating column only retrieval trains."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None


@dataclasses.dataclass(frozen=True)
class ItemColumns:
    """Columns of an items file. ``id`` None: the interactions' item column name."""

    id: str | None = None
    title: str = "title"
    genres: str = "genres"
    """Multi-valued, ``|``-separated (as MovieLens); optional."""
    year: str = "year"
    """Optional; without it a trailing ``(1995)`` in the title gives the year."""


def load_interactions(
    path: str | Path | Any,
    columns: ColumnMap | None = None,
    *,
    items: str | Path | Any | None = None,
    item_columns: ItemColumns | None = None,
    users: str | Path | Any | None = None,
    bad_rows: BadRows = "error",
    name: str | None = None,
    rating_range: tuple[float, float] | None = None,
) -> Dataset:
    """Load an interaction log (and optionally an items file with titles and genres).

    ``path``, ``items`` and ``users`` may also be data in memory: a pandas or polars
    DataFrame or a pyarrow Table, checked like a file (a bad value is named by its row and
    column). ``users``: a user id column (the log's user column name, ``user_id`` or
    ``id``) and any of ``age``, ``gender``, ``occupation`` (the side features the
    ``default`` preset reads; the others are left out).

    A rating outside ``rating_range`` (by default +-``PLAUSIBLE_RATING``: one stray 1e30
    would squash every other rating into nothing) is a bad row like an unparsable one.

    >>> ds = load_interactions("events.parquet", ColumnMap(user="uid", item="sku"))
    >>> ds.has_ratings  # False when there is no rating column: retrieval only
    """
    columns = columns or ColumnMap()
    table = ColumnarTable.open(path)
    path = table.path
    wanted = _wanted(table, columns)
    data = table.load(list(wanted.values()), ids=(columns.user, columns.item))
    bad: dict[str, NDArray[np.bool_]] = {}
    user, bad[columns.user] = table.convert(data, columns.user, id_values)
    item, bad[columns.item] = table.convert(data, columns.item, id_values)
    ratings, times, notes = _ratings_and_times(table, data, wanted, bad, rating_range)
    keep, skipped = table.check(bad, bad_rows, data, notes)
    catalogue = None
    if items is not None:
        raw_ids, meta, items_path = _read_items(items, item_columns, columns.item)
        ints = isinstance(item, np.ndarray)
        catalogue = _same_id_kind((raw_ids, meta), ints, path, items_path)
    people = None
    if users is not None:
        user_ids, people, users_path = _read_users(users, columns.user)
        ints = isinstance(user, np.ndarray)
        _, people = _same_id_kind((user_ids, people), ints, path, users_path)
    user_codes, user_names = encode_ids(user, keep)
    item_codes, item_names = encode_ids(item, keep, None if catalogue is None else catalogue[0])
    every = keep.all()
    interactions = Interactions(
        user_codes,
        item_codes,
        (ratings if every else ratings[keep]).astype(np.float32),
        (times if every else times[keep]).astype(np.int64),
        user_names,
        item_names,
    )
    del data  # the columns are NumPy arrays now; arrow's pool keeps freed blocks unless
    _release_arrow_memory()  # told (25M rows: 2.05 GB resident after loading, 1.06 GB after)
    if not len(interactions):
        raise DataError("no interactions left to train on", path=path)
    rated = "rating" in wanted
    if not rated:
        log.warning("%s has no rating column: training the retrieval task only", path)
    return Dataset(
        name=name or path.name.split(".")[0],
        interactions=interactions,
        items=None if catalogue is None else catalogue[1],
        users=people,
        source=f"file {path}" if table.arrow is None else str(path),
        has_ratings=rated,
        skipped=skipped,
    )


def _wanted(table: ColumnarTable, columns: ColumnMap) -> dict[str, str]:
    """The file's columns to read, by role: user and item (required), rating and
    timestamp (where given or present)."""
    for role, column in (("user", columns.user), ("item", columns.item)):
        table.require(column, setting(f"--{role}-col", f"ColumnMap({role}=...)"))
    rating = _optional(table, columns.rating, "rating")
    timestamp = _optional(table, columns.timestamp, "timestamp")
    wanted = {"user": columns.user, "item": columns.item}
    if rating:
        wanted["rating"] = rating
    if timestamp:
        wanted["timestamp"] = timestamp
    return wanted


def _ratings_and_times(
    table: ColumnarTable,
    data: Any,
    wanted: dict[str, str],
    bad: dict[str, NDArray[np.bool_]],
    rating_range: tuple[float, float] | None,
) -> tuple[NDArray[np.float64], NDArray[np.int64], dict[str, str]]:
    """The ratings (ones without a rating column) and timestamps (zeros without one), their
    bad rows added to ``bad``, and a note per column on what a good value is."""
    n = data.num_rows
    low, high = rating_range or (-PLAUSIBLE_RATING, PLAUSIBLE_RATING)
    if low > high:
        raise ConfigError(f"rating range: {low} is above {high}")
    notes = {}
    rating, timestamp = wanted.get("rating"), wanted.get("timestamp")
    if rating:
        ratings, bad[rating] = table.convert(data, rating, number_values, False)
        bad[rating] |= ~((ratings >= low) & (ratings <= high))  # NaN: outside too
        notes[rating] = (
            f"ratings must lie in [{low:g}, {high:g}] ({setting('--rating-range', 'rating_range')})"
        )
    else:
        ratings = np.ones(n, dtype=np.float64)
    if timestamp:
        times, bad[timestamp] = table.convert(data, timestamp, number_values, True)
    else:
        times = np.zeros(n, dtype=np.int64)
    return ratings, times, notes


def _release_arrow_memory() -> None:
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _same_id_kind(
    table: tuple[NDArray[Any], Meta], log_ints: bool, log_path: Path, table_path: Path
) -> tuple[NDArray[Any], Meta]:
    """An items or users file's ids in the log's kind: integer ids stay integers only if
    both are."""
    raw, meta = table
    if raw.dtype.kind in "iu" and not log_ints:
        raw = raw.astype(np.str_)
        return raw, dataclasses.replace(meta, ids=raw)
    if raw.dtype.kind not in "iu" and log_ints:
        side = "item" if isinstance(meta, Items) else "user"
        raise DataError(
            f"{side} ids are text here but integers in {log_path}", path=table_path, field="id"
        )
    return raw, meta


def _optional(table: ColumnarTable, given: str | None, role: str) -> str | None:
    """The ``role`` column (rating or timestamp): as given, "" for none, None for the
    column of the role's name where the file has one."""
    if given is None:
        return role if role in table.names else None
    if given == "":  # explicitly none
        return None
    table.require(given, setting(f"--{role}-col", f"ColumnMap({role}=...)"))
    return given


def _read_items(
    source: str | Path | Any, columns: ItemColumns | None, item_column: str
) -> tuple[NDArray[Any], Items, Path]:
    """(raw ids, Items, where) of an items file or frame: titles, ``|``-separated genres,
    and years from a column or from the title (as MovieLens' files, :func:`catalogue_items`)."""
    columns = columns or ItemColumns()
    table = ColumnarTable.open(source)
    path = table.path
    id_column = columns.id or _id_column(table, item_column, "item")
    table.require(id_column, setting("--items-id-col", "ItemColumns(id=...)"))
    present = [c for c in (columns.title, columns.genres, columns.year) if c in table.names]
    data, raw = _keyed_rows(table, id_column, present, "item")
    n = len(raw)

    def text(column: str) -> list[str]:
        if column not in present:
            return [""] * n
        return [str(v or "") for v in data.column(column).to_pylist()]

    years = None
    if columns.year in present:
        years, _ = table.convert(data, columns.year, number_values, True)  # bad or missing: 0
    items = catalogue_items(raw, text(columns.title), text(columns.genres), years)
    return raw, items, path


def _id_column(table: ColumnarTable, log_column: str, side: str) -> str:
    """An items or users file's id column: the log's own name for it, else ``<side>_id``,
    else ``id`` (the log's name where none is there: ``require`` then names it)."""
    return next((c for c in (log_column, f"{side}_id", "id") if c in table.names), log_column)


def _keyed_rows(
    table: ColumnarTable, id_column: str, present: list[str], side: str
) -> tuple[Any, NDArray[Any]]:
    """An items or users file's ``present`` columns and its ids: every row has one, and
    none repeats (one row per item or user)."""
    data = table.load([id_column, *present], ids=(id_column,))
    ids, missing = table.convert(data, id_column, id_values)
    table.check({id_column: missing}, "error", data)
    raw = ids if isinstance(ids, np.ndarray) else ids.to_numpy(zero_copy_only=False).astype(str)
    if len(np.unique(raw)) != len(raw):
        raise DataError(f"{side} ids repeat in the {side}s file", path=table.path, field=id_column)
    return data, raw


USER_COLUMNS = ("age", "gender", "occupation")
"""What a users file may give (by these names): the user side features presets read."""


def _read_users(source: str | Path | Any, user_column: str) -> tuple[NDArray[Any], Users, Path]:
    """(raw ids, Users, where) of a users file or frame: an id column and any of
    ``USER_COLUMNS`` (a value left empty is "not given": no feature code)."""
    table = ColumnarTable.open(source)
    path = table.path
    id_column = _id_column(table, user_column, "user")
    table.require(id_column, setting("--user-col", "ColumnMap(user=...)"))
    present = [c for c in USER_COLUMNS if c in table.names]
    if not present:
        raise DataError(
            f"no user feature column: expected one of {list(USER_COLUMNS)}, the file has "
            f"{table.names}",
            path=path,
        )
    data, raw = _keyed_rows(table, id_column, present, "user")
    n = len(raw)

    def text(column: str) -> NDArray[np.str_]:
        if column not in present:
            return np.full(n, "", dtype=np.str_)
        return np.array(
            [str(v if v is not None else "").strip() for v in data.column(column).to_pylist()]
        )

    age = np.full(n, -1, dtype=np.int32)
    if "age" in present:
        ages, bad = table.convert(data, "age", number_values, True)
        age = np.where(bad | (ages < 0), -1, ages).astype(np.int32)
    return raw, Users(raw, age, text("gender"), text("occupation"), np.full(n, "")), path
