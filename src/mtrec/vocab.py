"""Raw ids <-> contiguous table rows, with an explicit policy for unknown ids."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mtrec.errors import ArtifactError, DataError, UnknownIdError

_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]{0,18}")
"""A decimal integer as written canonically: ASCII digits, no sign but '-', no leading
zeros, at most 19 digits (int64). '05', ' 5', '²' or '٥' are not ids of user 5."""


class Vocab:
    """Maps a set of raw ids (integers or strings) to rows ``0..len-1`` and back.

    Rows follow the sorted order of the ids, so the same id set always gives the same
    rows (a warm-started model's vocabulary appends its new ids instead: ``extended``).
    Only the features and recommend stages translate ids; the model and the
    evaluation see rows.

    >>> v = Vocab("item", [30, 10, 20])
    >>> v.rows([20, 30]).tolist(), v.ids([0]).tolist()
    ([1, 2], [10])
    """

    def __init__(self, name: str, ids: ArrayLike, *, ordered: bool = False) -> None:
        """``ordered``: rows follow ``ids`` as given (distinct), not their sorted order; a
        warm-started model's vocabulary keeps its old rows and appends new ids after them."""
        self.name = name
        given = np.asarray(ids)
        self._ids = given if ordered else np.unique(given)
        self._order: NDArray[np.int64] | None = None  # sorted position -> row, if not sorted
        self._sorted = self._ids
        if ordered and len(given):
            order = np.argsort(given, kind="stable")
            self._sorted = given[order]
            if (self._sorted[1:] == self._sorted[:-1]).any():
                raise ArtifactError(f"vocabulary {name!r}: an id repeats")
            if not (order == np.arange(len(order))).all():
                self._order = order.astype(np.int64)

    def extended(self, ids: ArrayLike) -> Vocab:
        """This vocabulary with the ids it lacks appended (sorted among themselves): every
        known id keeps its row."""
        ids = np.unique(np.asarray(ids))
        new = ids[~self.known(ids)]
        if not len(new):
            return self
        if len(self._ids) and (new.dtype.kind in "iu") != (self._ids.dtype.kind in "iu"):
            raise DataError(
                f"{self.name} ids: the new data's are {_kind(new)}, the model's {_kind(self._ids)}"
            )
        return Vocab(self.name, np.concatenate([self._ids, new]), ordered=True)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw_id: object) -> bool:
        return bool(self.known(np.asarray([raw_id]))[0])

    @property
    def id_array(self) -> NDArray[Any]:
        """All ids, in row order."""
        return self._ids

    def known(self, ids: ArrayLike) -> NDArray[np.bool_]:
        """Which of ``ids`` are in the vocabulary."""
        ids = np.asarray(ids)
        if ids.dtype.kind != self._ids.dtype.kind and not (
            ids.dtype.kind in "iu" and self._ids.dtype.kind in "iu"
        ):
            return np.zeros(ids.shape, dtype=bool)
        pos = np.searchsorted(self._sorted, ids).clip(0, max(len(self._ids) - 1, 0))
        return (
            np.asarray(self._sorted[pos] == ids)
            if len(self._ids)
            else np.zeros(ids.shape, dtype=bool)
        )

    def rows(self, ids: ArrayLike, unknown: Literal["error", "oov"] = "error") -> NDArray[np.int64]:
        """Rows of ``ids``; unknown ids raise ``UnknownIdError`` or map to -1 (``"oov"``)."""
        ids = np.asarray(ids)
        direct = self._direct_rows(ids)
        if direct is not None:
            if unknown == "error" and (direct < 0).any():
                raise UnknownIdError(self.name, ids[direct < 0].flat[0].item())
            return direct
        ok = self.known(ids)
        if unknown == "error" and not ok.all():
            raise UnknownIdError(self.name, ids[~ok].flat[0].item())
        pos = (
            np.searchsorted(self._sorted, ids) if ok.any() else np.zeros(ids.shape, dtype=np.int64)
        )
        if self._order is not None:
            pos = self._order[pos.clip(0, len(self._ids) - 1)]
        return np.where(ok, pos, -1).astype(np.int64)

    def _direct_rows(self, ids: NDArray[Any]) -> NDArray[np.int64] | None:
        """Many integer ids over a compact id range: one table lookup per id (O(n)), where
        a binary search per id costs seconds at tens of millions. None: not applicable."""
        if (
            len(ids) < 65536
            or not len(self._ids)
            or ids.dtype.kind not in "iu"
            or self._ids.dtype.kind not in "iu"
        ):
            return None
        lo, hi = int(self._sorted[0]), int(self._sorted[-1])
        if hi - lo > max(16 * len(self._ids), 1 << 20):
            return None
        table = np.full(hi - lo + 2, -1, dtype=np.int64)  # the last slot: out of range
        table[self._ids - lo] = np.arange(len(self._ids))
        shifted = ids.astype(np.int64, copy=False) - lo
        shifted[(shifted < 0) | (shifted > hi - lo)] = hi - lo + 1
        return table[shifted]

    def parse(self, raw: int | str) -> int | str:
        """An id as typed on a command line or in a URL ("5") in this vocabulary's type.

        The one id parser of the CLI, the library and the service: over integer ids, a
        string is an integer only when written canonically (see ``_CANONICAL_INT``);
        anything else stays the string it was, which such a vocabulary does not hold.
        """
        if isinstance(raw, str) and self._ids.dtype.kind in "iu" and _CANONICAL_INT.fullmatch(raw):
            return int(raw)
        return raw

    def row(self, raw_id: object) -> int:
        """The row of one id; ``UnknownIdError`` if it is not in the vocabulary."""
        return int(self.rows(np.asarray([raw_id]))[0])

    def ids(self, rows: ArrayLike) -> NDArray[Any]:
        """Raw ids of ``rows``."""
        return self._ids[np.asarray(rows, dtype=np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ids": self._ids.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        """Rebuild from ``to_dict`` output; anything else raises ``ArtifactError``."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ArtifactError(
                "vocabulary: expected an object with a string 'name' and a list 'ids'"
            )
        ids = data.get("ids")
        ints = isinstance(ids, list) and all(type(i) is int for i in ids)
        strs = isinstance(ids, list) and all(type(i) is str for i in ids)
        if not (ints or strs):
            raise ArtifactError(
                f"vocabulary {data['name']!r}: 'ids' must be a list of all integers or all strings"
            )
        if ints and ids and not (min(ids) >= -(2**63) and max(ids) < 2**63):
            raise ArtifactError(f"vocabulary {data['name']!r}: an id does not fit in 64 bits")
        return cls(data["name"], np.array(ids, dtype=np.int64 if ints else np.str_), ordered=True)


def _kind(ids: NDArray[Any]) -> str:
    return "integers" if ids.dtype.kind in "iu" else "text"
