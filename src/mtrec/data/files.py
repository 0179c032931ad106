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
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from mtrec.data.interactions import Dataset, Interactions, Items
from mtrec.data.releases import catalogue_items
from mtrec.errors import ConfigError, DataError

log = logging.getLogger("mtrec.data")

BadRows = Literal["error", "skip"]
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
PLAUSIBLE_RATING = 1e6
"""Without a declared range, ratings beyond this magnitude are bad rows."""
_INT = r"^(0|-?[1-9]\d{0,17})$"
"""Text ids are integers only where every one is a canonical decimal that fits int64
(so "007" and "7" stay two ids, as they are two strings)."""
_FLOAT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


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
    bad_rows: BadRows = "error",
    name: str | None = None,
    rating_range: tuple[float, float] | None = None,
) -> Dataset:
    """Load an interaction log (and optionally an items file with titles and genres).

    ``path`` and ``items`` may also be data in memory: a pandas or polars DataFrame or a
    pyarrow Table, checked like a file (a bad value is named by its row and column).

    A rating outside ``rating_range`` (by default +-``PLAUSIBLE_RATING``: one stray 1e30
    would squash every other rating into nothing) is a bad row like an unparsable one.

    >>> ds = load_interactions("events.parquet", ColumnMap(user="uid", item="sku"))
    >>> ds.has_ratings  # False when there is no rating column: retrieval only
    """
    columns = columns or ColumnMap()
    table = _Table.open(path)
    path = table.path
    for flag, column in (("--user-col", columns.user), ("--item-col", columns.item)):
        table.require(column, flag)
    rating = _optional(table, columns.rating, "rating", "--rating-col")
    timestamp = _optional(table, columns.timestamp, "timestamp", "--timestamp-col")
    wanted = {"user": columns.user, "item": columns.item}
    if rating:
        wanted["rating"] = rating
    if timestamp:
        wanted["timestamp"] = timestamp
    data = table.load(list(wanted.values()), ids=(columns.user, columns.item))
    n = data.num_rows
    bad: dict[str, NDArray[np.bool_]] = {}
    user, bad[columns.user] = table.convert(data, columns.user, _ids)
    item, bad[columns.item] = table.convert(data, columns.item, _ids)
    low, high = rating_range or (-PLAUSIBLE_RATING, PLAUSIBLE_RATING)
    if low > high:
        raise ConfigError(f"rating range: {low} is above {high}")
    notes = {}
    if rating:
        ratings, bad[rating] = table.convert(data, rating, _numbers, False)
        bad[rating] |= ~((ratings >= low) & (ratings <= high))  # NaN: outside too
        notes[rating] = f"ratings must lie in [{low:g}, {high:g}] (--rating-range)"
    else:
        ratings = np.ones(n, dtype=np.float64)
    if timestamp:
        times, bad[timestamp] = table.convert(data, timestamp, _numbers, True)
    else:
        times = np.zeros(n, dtype=np.int64)
    keep, skipped = table.check(bad, bad_rows, data, notes)
    catalogue = None
    if items is not None:
        raw_ids, meta, items_path = _read_items(items, item_columns, columns.item)
        ints = isinstance(item, np.ndarray)
        catalogue = _same_id_kind((raw_ids, meta), ints, path, items_path)
    user_codes, user_names = _encode(user, keep)
    item_codes, item_names = _encode(item, keep, None if catalogue is None else catalogue[0])
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
    if not rating:
        log.warning("%s has no rating column: training the retrieval task only", path)
    return Dataset(
        name=name or path.name.split(".")[0],
        interactions=interactions,
        items=None if catalogue is None else catalogue[1],
        source=f"file {path}" if table.arrow is None else str(path),
        has_ratings=bool(rating),
        skipped=skipped,
    )


def _release_arrow_memory() -> None:
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _same_id_kind(
    catalogue: tuple[NDArray[Any], Items], log_ints: bool, log_path: Path, items_path: Path
) -> tuple[NDArray[Any], Items]:
    """The items file's ids in the log's kind: integer ids stay integers only if both are."""
    raw, items = catalogue
    if raw.dtype.kind in "iu" and not log_ints:
        raw = raw.astype(np.str_)
        return raw, dataclasses.replace(items, ids=raw)
    if raw.dtype.kind not in "iu" and log_ints:
        raise DataError(
            f"item ids are text here but integers in {log_path}", path=items_path, field="id"
        )
    return raw, items


def _optional(table: _Table, given: str | None, default: str, flag: str) -> str | None:
    if given is None:
        return default if default in table.names else None
    if given == "":  # explicitly none
        return None
    table.require(given, flag)
    return given


FRAME = "DataFrame"
"""What errors about data given in memory name in place of a file."""


class _Table:
    """One CSV or Parquet file, or a table in memory: its column names, typed columns,
    and row locations."""

    def __init__(self, path: Path, names: list[str], parquet: bool, arrow: Any = None) -> None:
        self.path, self.names, self.parquet, self.arrow = path, names, parquet, arrow

    @classmethod
    def open(cls, source: str | Path | Any) -> _Table:
        """A file by its path, or a pandas/polars DataFrame or pyarrow Table."""
        if isinstance(source, str | Path):
            return cls.read(Path(source))
        table = _as_arrow(source)
        return cls(Path(FRAME), [str(n) for n in table.column_names], False, table)

    @classmethod
    def read(cls, path: Path) -> _Table:
        import pyarrow as pa

        suffixes = [s.lower() for s in path.suffixes]
        while suffixes and suffixes[-1] in COMPRESSIONS:
            suffixes.pop()
        kind = suffixes[-1] if suffixes else ""
        if not path.is_file():
            raise DataError("no such file", path=path)
        try:
            if kind in PARQUET_SUFFIXES:
                import pyarrow.parquet as pq

                return cls(path, list(pq.read_schema(path).names), parquet=True)
            if kind not in CSV_SUFFIXES:
                raise DataError(
                    f"unknown format {kind or '(no suffix)'!r}: expected .csv, .tsv or .parquet",
                    path=path,
                )
            import pyarrow.csv as pacsv

            reader = pacsv.open_csv(path, parse_options=_parse_options(path, lambda _: "skip"))
            names = list(reader.schema.names)
            reader.close()
            return cls(path, names, parquet=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"unreadable: {exc}", path=path) from None

    def require(self, column: str, flag: str) -> None:
        if column not in self.names:
            raise DataError(
                f"no column {column!r} (set {flag}); the file has {self.names}",
                path=self.path,
                field=column,
            )

    def load(self, wanted: list[str], ids: tuple[str, ...] = ()) -> Any:
        """The wanted columns as a pyarrow Table (types inferred; strings where a column
        does not parse, so that :meth:`check` can name the bad value). A CSV's ``ids``
        columns are read as text: inferred as integers, "007" and "7" would be one id."""
        import pyarrow as pa

        if self.arrow is not None:
            return self.arrow.select(wanted)
        if self.parquet:
            import pyarrow.parquet as pq

            try:
                return pq.read_table(self.path, columns=wanted)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"unreadable: {exc}", path=self.path) from None
        import pyarrow.csv as pacsv

        ragged: list[int | None] = []

        def on_invalid(row: Any) -> str:
            ragged.append(row.number)
            return "error"

        def read(types: dict[str, Any], threads: bool) -> Any:
            return pacsv.read_csv(
                self.path,
                read_options=pacsv.ReadOptions(use_threads=threads),
                parse_options=_parse_options(self.path, on_invalid),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted, column_types=types, strings_can_be_null=True
                ),
            )

        try:
            try:
                return read({c: pa.string() for c in ids}, threads=True)
            except pa.ArrowInvalid:
                # a value that does not parse as its column's inferred type (or a ragged
                # row): read the columns as text, single-threaded so rows are numbered
                ragged.clear()
                return read({c: pa.string() for c in wanted}, threads=False)
        except pa.ArrowInvalid as exc:
            line = ragged[0] if ragged else None
            detail = str(exc).splitlines()[0]
            raise DataError(f"malformed row: {detail}", path=self.path, line=line) from None
        except OSError as exc:
            raise DataError(f"unreadable: {exc}", path=self.path) from None

    def convert(self, data: Any, column: str, how: Any, *args: Any) -> Any:
        """``how(data.column(column), *args)``; a column of the wrong kind altogether (a
        list or a boolean column, say) raises DataError naming the file and the column."""
        import pyarrow as pa

        try:
            return how(data.column(column), *args)
        except (ValueError, pa.ArrowException) as exc:
            raise DataError(str(exc).splitlines()[0], path=self.path, field=column) from None

    def check(
        self,
        bad: dict[str, NDArray[np.bool_]],
        policy: BadRows,
        data: Any,
        notes: dict[str, str] | None = None,
    ) -> tuple[NDArray[np.bool_], dict[str, int]]:
        """Rows to keep, and per column how many were dropped; raises on ``error``, with
        the column's note (what a good value is) where there is one."""
        counts = {column: int(mask.sum()) for column, mask in bad.items() if mask.any()}
        any_bad = np.zeros(len(next(iter(bad.values()))), dtype=bool)
        for mask in bad.values():
            any_bad |= mask
        if not counts:
            return ~any_bad, {}
        if policy == "skip":
            log.warning(
                "%s: skipped %d bad rows (%s)",
                self.path,
                int(any_bad.sum()),
                ", ".join(f"{c}: {k}" for c, k in counts.items()),
            )
            return ~any_bad, counts
        first = {column: int(np.argmax(mask)) for column, mask in bad.items() if mask.any()}
        column = min(first, key=first.__getitem__)
        row = first[column]
        value = data.column(column)[row].as_py()
        what = "missing value" if value is None or str(value).strip() == "" else "bad value"
        what += "" if value is None else f" {value!r}"
        what += f" ({notes[column]})" if notes and column in notes else ""
        others = f" ({counts[column]} rows like this)" if counts[column] > 1 else ""
        hint = "; pass --skip-bad-rows to drop and count such rows"
        if self.parquet:
            group, within = self._row_group(row)
            raise DataError(
                f"row group {group}, row {within}: {what}{others}{hint}",
                path=self.path,
                field=column,
            )
        if self.arrow is not None:  # rows as the frame counts them, from 0
            hint = "; pass bad_rows='skip' to drop and count such rows"
            raise DataError(f"row {row}: {what}{others}{hint}", path=self.path, field=column)
        # line 1 is the header
        raise DataError(f"{what}{others}{hint}", path=self.path, line=row + 2, field=column)

    def _row_group(self, row: int) -> tuple[int, int]:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(self.path).metadata
        sizes = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        ends = np.cumsum(sizes)
        group = int(np.searchsorted(ends, row, side="right"))
        return group, row - int(ends[group] - sizes[group])


def _as_arrow(frame: Any) -> Any:
    """A pyarrow Table of a pandas or polars DataFrame or a pyarrow Table (neither library
    is imported unless given: the frame's own methods convert it)."""
    import pyarrow as pa

    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    kind = f"{type(frame).__module__}.{type(frame).__name__}"
    if kind.startswith("polars.") and hasattr(frame, "to_arrow"):
        return frame.to_arrow()
    if kind.startswith("pandas.") and hasattr(frame, "columns"):
        if not all(isinstance(c, str) for c in frame.columns):
            raise ConfigError(f"DataFrame: column names must be strings, got {list(frame.columns)}")
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column of mixed objects ([1, "x"])
            # as text, as a CSV would read it: the checks then name the bad row
            columns = {
                name: pa.array(
                    [None if v is None or v != v else str(v) for v in frame[name].tolist()],
                    type=pa.string(),
                )
                if frame[name].dtype == object
                else pa.Array.from_pandas(frame[name])
                for name in frame.columns
            }
            return pa.table(columns)
    raise ConfigError(
        f"expected a file path, a pandas or polars DataFrame or a pyarrow Table, got {kind}"
    )


def _parse_options(path: Path, on_invalid: Any = None) -> Any:
    import pyarrow.csv as pacsv

    tsv = ".tsv" in [s.lower() for s in path.suffixes]
    return pacsv.ParseOptions(delimiter="\t" if tsv else ",", invalid_row_handler=on_invalid)


def _ids(column: Any) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Integer ids as int64, other ids as stripped strings; bad = missing or empty."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(column.type):
        filled = column.fill_null(0) if column.null_count else column
        values = filled.to_numpy()
        if values.dtype == np.uint64:  # beyond int64 an id would wrap to a negative one
            missing = missing | (values > np.iinfo(np.int64).max)
            values = np.where(missing, 0, values)
        return values.astype(np.int64, copy=False), missing
    if pa.types.is_floating(column.type):  # e.g. ids of a pandas frame that had a NaN
        values = column.fill_null(0).to_numpy()
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**62)
        return np.where(whole, values, 0).astype(np.int64), missing | ~whole
    text = pc.utf8_trim_whitespace(column.cast(pa.string())).fill_null("")
    missing |= pc.equal(text, "").to_numpy(zero_copy_only=False)
    if pc.all(pc.or_(pc.match_substring_regex(text, _INT), pc.equal(text, ""))).as_py():
        return pc.cast(pc.if_else(pc.equal(text, ""), "0", text), pa.int64()).to_numpy(), missing
    return text, missing  # a pyarrow array; _encode turns it into codes


def _numbers(column: Any, integer: bool) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """A rating column as float64 (bad: missing, unparsable, or beyond float32), or a
    timestamp column as int64 seconds (integers kept exact: no trip through float)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(column.cast(pa.timestamp("s")), pa.int64())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pc.utf8_trim_whitespace(column)
        pattern = r"^\s*[-+]?\d{1,18}\s*$" if integer else _FLOAT
        ok = pc.fill_null(pc.match_substring_regex(text, pattern), False)
        column = pc.cast(pc.if_else(ok, text, None), pa.int64() if integer else pa.float64())
    elif not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ValueError(f"expected numbers, the column holds {column.type}")
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if integer and pa.types.is_integer(column.type):
        filled = column.fill_null(0) if column.null_count else column
        return filled.to_numpy().astype(np.int64, copy=False), missing
    column = column.cast(pa.float64())
    values = (column.fill_null(np.nan) if column.null_count else column).to_numpy()
    limit = 2.0**62 if integer else float(np.finfo(np.float32).max)
    bad = missing | ~np.isfinite(values) | (np.abs(values) > limit)
    if integer:
        return np.where(bad, 0, np.floor(np.where(bad, 0, values))).astype(np.int64), bad
    return values, bad


def _encode(
    ids: Any, keep: NDArray[np.bool_], catalogue: Any = None
) -> tuple[NDArray[np.int64], NDArray[np.str_] | None]:
    """Integer ids as they are; string ids as codes into their sorted distinct names (those
    of an items file included, so that its ids and the log's share one vocabulary)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(ids, np.ndarray):
        return (ids if keep.all() else ids[keep]), None
    kept = ids.filter(pa.array(keep)) if not keep.all() else ids
    encoded = pc.dictionary_encode(kept)
    names = encoded.dictionary.to_numpy(zero_copy_only=False).astype(np.str_)
    if catalogue is not None:
        names = np.concatenate([names, np.asarray(catalogue, dtype=np.str_)])
    distinct = np.unique(names)
    remap = np.searchsorted(distinct, names[: len(encoded.dictionary)])
    return remap[encoded.indices.to_numpy(zero_copy_only=False)].astype(np.int64), distinct


def _read_items(
    source: str | Path | Any, columns: ItemColumns | None, item_column: str
) -> tuple[NDArray[Any], Items, Path]:
    """(raw ids, Items, where) of an items file or frame: titles, ``|``-separated genres,
    and years from a column or from the title (as MovieLens' files, :func:`catalogue_items`)."""
    columns = columns or ItemColumns()
    table = _Table.open(source)
    path = table.path
    id_column = columns.id or next(
        (c for c in (item_column, "item_id", "id") if c in table.names), item_column
    )
    table.require(id_column, "--items-id-col")
    present = [c for c in (columns.title, columns.genres, columns.year) if c in table.names]
    data = table.load([id_column, *present], ids=(id_column,))
    ids, missing = table.convert(data, id_column, _ids)
    table.check({id_column: missing}, "error", data)
    raw = ids if isinstance(ids, np.ndarray) else ids.to_numpy(zero_copy_only=False).astype(str)
    if len(np.unique(raw)) != len(raw):
        raise DataError("item ids repeat in the items file", path=path, field=id_column)
    n = len(raw)

    def text(column: str) -> list[str]:
        if column not in present:
            return [""] * n
        return [str(v or "") for v in data.column(column).to_pylist()]

    years = None
    if columns.year in present:
        years, _ = table.convert(data, columns.year, _numbers, True)  # bad or missing: 0
    items = catalogue_items(raw, text(columns.title), text(columns.genres), years)
    return raw, items, path
