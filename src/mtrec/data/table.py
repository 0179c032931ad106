"""Small delimited text files parsed in Python, for errors that name file, line and field.

The MovieLens metadata files (and any ratings file pyarrow refused) go through here: a
few thousand lines, where a precise message matters more than speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import DataError


class TextTable:
    """Rows of string fields from one delimited text file, with their 1-based line numbers."""

    def __init__(self, text: str, sep: str, n_fields: int, path: str, header: bool = False) -> None:
        self.path = path
        self.rows: list[list[str]] = []
        self.lines: list[int] = []
        what = {"\t": "tab", "|": "pipe"}.get(sep, repr(sep))
        for number, line in enumerate(text.splitlines(), start=1):
            if (header and number == 1) or not line.strip():
                continue
            parts = line.split(sep)
            if len(parts) != n_fields:
                raise DataError(
                    f"expected {n_fields} {what}-separated fields, got {len(parts)}: {line[:80]!r}",
                    path=path,
                    line=number,
                )
            self.rows.append(parts)
            self.lines.append(number)
        if not self.rows:
            raise DataError("no data rows", path=path)

    def column(self, index: int) -> list[str]:
        return [row[index] for row in self.rows]

    def ints(self, index: int, field: str) -> NDArray[np.int64]:
        return self._numbers(index, field, np.int64)  # type: ignore[return-value]

    def floats(self, index: int, field: str) -> NDArray[np.float32]:
        return self._numbers(index, field, np.float32)  # type: ignore[return-value]

    def seconds(self, index: int, field: str) -> NDArray[np.int64]:
        """Whole-second timestamps, written as integers or decimals, read exactly (float64
        holds every such time; float32 rounded 881250949 to 881250944)."""
        return self._numbers(index, field, np.float64).astype(np.int64)

    def _numbers(self, index: int, field: str, dtype: type) -> NDArray[np.generic]:
        values = self.column(index)
        try:
            return np.array(values, dtype=dtype)
        except ValueError:
            convert = int if dtype is np.int64 else float
            for pos, value in enumerate(values):
                try:
                    convert(value)
                except ValueError:
                    kind = "an integer" if convert is int else "a number"
                    raise DataError(
                        f"expected {kind}, got {value!r}",
                        path=self.path,
                        line=self.lines[pos],
                        field=field,
                    ) from None
            raise

    def check_range(
        self, values: NDArray[Any], index: int, lo: float, hi: float, field: str
    ) -> None:
        """Raise naming the first row whose column ``index`` is out of [lo, hi]."""
        bad = np.flatnonzero((values < lo) | (values > hi))
        if len(bad):
            pos = int(bad[0])
            raise DataError(
                f"expected a value in [{lo:g}, {hi:g}], got {self.rows[pos][index].strip()}"
                + (f" ({len(bad)} such rows)" if len(bad) > 1 else ""),
                path=self.path,
                line=self.lines[pos],
                field=field,
            )
