"""Arrow columns to NumPy values: ids (integers where every one is canonical, else text),
numbers, and ids encoded as rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

_INT = r"^(0|-?[1-9]\d{0,17})$"
"""Text ids are integers only where every one is a canonical decimal that fits int64
(so "007" and "7" stay two ids, as they are two strings)."""


DECIMAL = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
r"""A number as typed: digits, a point, an exponent; not "nan" or "inf" (read it with
``re.ASCII``: Python's ``\d`` also takes other scripts' digits)."""


FLOAT_EXACT = 2.0**53
"""The largest id a float column can hold without merging it with its neighbours."""


def id_values(column: Any) -> tuple[NDArray[Any], NDArray[np.bool_]]:
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
        # a float holds every integer only up to 2^53: past it, distinct ids were already
        # merged before they reached us (a column of 200 users kept 6), so they are bad
        exact = np.abs(values) <= FLOAT_EXACT
        whole = np.isfinite(values) & (values == np.round(values)) & exact
        return np.where(whole, values, 0).astype(np.int64), missing | ~whole
    text = pc.utf8_trim_whitespace(column.cast(pa.string())).fill_null("")
    missing |= pc.equal(text, "").to_numpy(zero_copy_only=False)
    if pc.all(pc.or_(pc.match_substring_regex(text, _INT), pc.equal(text, ""))).as_py():
        return pc.cast(pc.if_else(pc.equal(text, ""), "0", text), pa.int64()).to_numpy(), missing
    return text, missing  # a pyarrow array; encode_ids turns it into codes


def number_values(column: Any, integer: bool) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """A rating column as float64 (bad: missing, unparsable, or beyond float32), or a
    timestamp column as int64 seconds (integers kept exact: no trip through float)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_timestamp(column.type):  # to the second, as a decimal timestamp is (a
        column = pc.floor_temporal(column, unit="second")  # part refused the whole frame)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        column = pc.cast(column.cast(pa.timestamp("s")), pa.int64())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pc.utf8_trim_whitespace(column)
        pattern = r"^\s*[-+]?\d{1,18}\s*$" if integer else DECIMAL
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


def encode_ids(
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
