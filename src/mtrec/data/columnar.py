"""A user's file or frame read as Arrow columns: opened, its columns found, bad rows named by
line or row.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import ConfigError, DataError, setting

log = logging.getLogger("mtrec.data")


BadRows = Literal["error", "skip"]
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
FRAME = "DataFrame"
"""What errors about data given in memory name in place of a file."""


class ColumnarTable:
    """One CSV or Parquet file, or a table in memory: its column names, typed columns,
    and row locations."""

    def __init__(self, path: Path, names: list[str], parquet: bool, arrow: Any = None) -> None:
        self.path, self.names, self.parquet, self.arrow = path, names, parquet, arrow

    @classmethod
    def open(cls, source: str | Path | Any) -> ColumnarTable:
        """A file by its path, or a pandas/polars DataFrame or pyarrow Table."""
        if isinstance(source, str | Path):
            return cls.read(Path(source))
        table = as_arrow(source)
        return cls(Path(FRAME), [str(n) for n in table.column_names], False, table)

    @classmethod
    def read(cls, path: Path) -> ColumnarTable:
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

            reader = pacsv.open_csv(path, parse_options=parse_options(path, lambda _: "skip"))
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
                parse_options=parse_options(self.path, on_invalid),
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
        skip = setting("--skip-bad-rows", "bad_rows='skip'")
        hint = f"; pass {skip} to drop and count such rows"
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


def as_arrow(frame: Any) -> Any:
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


def parse_options(path: Path, on_invalid: Any = None) -> Any:
    import pyarrow.csv as pacsv

    tsv = ".tsv" in [s.lower() for s in path.suffixes]
    return pacsv.ParseOptions(delimiter="\t" if tsv else ",", invalid_row_handler=on_invalid)
