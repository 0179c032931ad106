"""What a list holds: typed records a user, the service and a DataFrame read alike."""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import numpy as np

from mtrec.artifact import ItemInfo
from mtrec.errors import ConfigError
from mtrec.features import RatingScale
from mtrec.ranking import (
    RankedBatch,
)
from mtrec.vocab import Vocab

FrameKind = Literal["pandas", "polars", "arrow"]


class ListFilters(TypedDict, total=False):
    """The filters a list takes by keyword (``Recommender.recommend_many``'s)."""

    exclude_items: Sequence[int | str]
    genres: Sequence[str]


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended item: who it is, why it was retrieved and how it was ranked."""

    item_id: int | str
    title: str | None
    genres: tuple[str, ...]
    retrieval_score: float | None
    """Dot product of the user and item embeddings (None for a cold-start fallback)."""
    predicted_rating: float | None
    """The rating head's scaled prediction y, unclipped (None for a fallback)."""
    stars: float | None
    """``1 + 4 y`` on MovieLens, clipped to the rating range (None for a fallback)."""
    rank_score: float | None = None
    """The ranking stage's score, which orders the list (None where the list is ordered
    by predicted rating, or for a fallback)."""

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (``dataclasses.asdict`` is 10x slower on the serving path)."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "genres": list(self.genres),
            "retrieval_score": self.retrieval_score,
            "predicted_rating": self.predicted_rating,
            "stars": self.stars,
            "rank_score": self.rank_score,
        }


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """A user's list; ``fallback`` marks the popularity list given to an unknown user."""

    user_id: int | str | None
    """None for a list made from a history (``recommend_for_history``)."""
    items: list[Recommendation]
    fallback: bool = False
    notice: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": [i.to_dict() for i in self.items],
            "fallback": self.fallback,
            "notice": self.notice,
        }

    def to_frame(self, kind: FrameKind = "pandas") -> Any:
        """The list as a table, one row per item (see ``to_frame``)."""
        return to_frame([self], kind)


FRAME_COLUMNS = (
    "user_id", "rank", "item_id", "title", "genres", "retrieval_score", "predicted_rating",
    "stars", "rank_score", "fallback",
)  # fmt: skip


def to_frame(lists: Sequence[Recommendations], kind: FrameKind = "pandas") -> Any:
    """Users' lists (``recommend_many``) as one long table with ``FRAME_COLUMNS``: a
    pandas or polars DataFrame, or a pyarrow Table (pandas/polars imported only when
    asked for)."""
    import pyarrow as pa

    rows = [
        (lst.user_id, rank, r.item_id, r.title, list(r.genres), r.retrieval_score,
         r.predicted_rating, r.stars, r.rank_score, lst.fallback)
        for lst in lists
        for rank, r in enumerate(lst.items, start=1)
    ]  # fmt: skip
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(FRAME_COLUMNS)
    types = [None, pa.int32(), None, pa.string(), pa.list_(pa.string()), pa.float64(),
             pa.float64(), pa.float64(), pa.float64(), pa.bool_()]  # fmt: skip
    ids = [_id_type(c) for c in (columns[0], columns[2])]
    types[0], types[2] = ids
    table = pa.table(
        {
            name: pa.array(list(values), type=t)
            for name, values, t in zip(FRAME_COLUMNS, columns, types, strict=True)
        }
    )
    return frame_of(table, kind)


def frame_of(table: Any, kind: FrameKind = "pandas") -> Any:
    """An Arrow table as ``kind``: a pandas or polars DataFrame (imported only when asked
    for), or the table itself."""
    import pyarrow as pa

    if kind == "arrow":
        return table
    if kind == "pandas":
        pandas = _frame_library("pandas")

        # ids stay integers where a history's list has no user id (not floats with NaN)
        return table.to_pandas(types_mapper={pa.int64(): pandas.Int64Dtype()}.get)
    if kind == "polars":
        return _frame_library("polars").from_arrow(table)
    raise ConfigError(f"to_frame: expected 'pandas', 'polars' or 'arrow', got {kind!r}")


def _frame_library(name: str) -> Any:
    """pandas or polars, imported only when a frame of that kind is asked for."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"{name} is not installed: pip install {name} (in a clone of mtrec: "
            "bash scripts/setup.sh, which installs the frames extra)"
        ) from None


def _id_type(ids: Sequence[Any]) -> Any:
    """Integer ids as int64, any other (string) ids as text; None (a history's list) stays null."""
    import pyarrow as pa

    present = [i for i in ids if i is not None]
    return pa.int64() if all(isinstance(i, int) for i in present) else pa.string()


@dataclasses.dataclass(frozen=True)
class CatalogueItem:
    """An item as the catalogue describes it (what a title search finds); the items a
    user rated and an item's neighbours add one number to it."""

    item_id: int | str
    title: str | None
    genres: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data: every field, the genres as a list."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {**data, "genres": list(self.genres)}


@dataclasses.dataclass(frozen=True)
class SimilarItem(CatalogueItem):
    """An item near another in embedding space; ``score`` is the cosine similarity."""

    score: float


@dataclasses.dataclass(frozen=True)
class RatedItem(CatalogueItem):
    """An item the user rated in training, with the rating they gave (in stars)."""

    rating: float


def describe(
    vocab: Vocab, info: ItemInfo, row: int
) -> tuple[int | str, str | None, tuple[str, ...]]:
    """(item id, title, genres) of an item row: the fields every item record starts with."""
    return vocab.id_array[row].item(), info.titles[row], tuple(info.genres[row])


def records_of(
    batch: RankedBatch, i: int, vocab: Vocab, info: ItemInfo, scale: RatingScale
) -> list[Recommendation]:
    out = []
    stars = scale.stars(batch.predicted[i])
    for j, row in enumerate(batch.rows[i].tolist()):
        if row < 0:
            break
        out.append(
            Recommendation(
                *describe(vocab, info, row),
                retrieval_score=float(batch.retrieval[i, j]),
                predicted_rating=float(batch.predicted[i, j]),
                stars=float(stars[j]),
                rank_score=None if batch.score is None else float(batch.score[i, j]),
            )
        )
    return out


@dataclasses.dataclass(frozen=True)
class RankedLists:
    """Many users' lists (``Recommender.ranked_many``): per user in order, a known user's
    id (its list is the next row of ``batch``) or an unknown user's fallback list."""

    lists: list[int | str | Recommendations]
    batch: RankedBatch | None
    vocab: Vocab
    info: ItemInfo
    scale: RatingScale

    def records(self) -> list[Recommendations]:
        out, i = [], 0
        for entry in self.lists:
            if isinstance(entry, Recommendations):
                out.append(entry)
                continue
            assert self.batch is not None
            out.append(
                Recommendations(entry, records_of(self.batch, i, self.vocab, self.info, self.scale))
            )
            i += 1
        return out

    def json(self) -> bytes:
        """``{"results": [...]}`` of ``records()``, byte for byte as the service encodes
        their dicts (compact UTF-8 JSON), written from the arrays: a record, a dict and
        four floats an item were ~750k objects for a 943-user, k 100 batch, and what
        they left scattered in the heap stayed with the worker after the answer."""
        fields = self._item_fields()
        parts, i = [], 0
        for entry in self.lists:
            if isinstance(entry, Recommendations):
                parts.append(_compact(entry.to_dict()))
                continue
            items = ",".join(self._items_json(i, fields))
            parts.append(
                f'{{"user_id":{_compact(entry)},"items":[{items}],"fallback":false,"notice":null}}'
            )
            i += 1
        return ('{"results":[' + ",".join(parts) + "]}").encode()

    def _item_fields(self) -> dict[int, str]:
        """The opening fields (id, title, genres) of each item row the lists hold."""
        if self.batch is None:
            return {}
        rows = np.unique(self.batch.rows)
        fields = {}
        for row in rows[rows >= 0].tolist():
            item_id, title, genres = describe(self.vocab, self.info, row)
            fields[row] = (
                f'"item_id":{_compact(item_id)},"title":{_compact(title)},'
                f'"genres":{_compact(list(genres))}'
            )
        return fields

    def _items_json(self, i: int, fields: dict[int, str]) -> list[str]:
        batch = self.batch
        assert batch is not None
        rows = batch.rows[i]
        n = int(np.argmin(rows >= 0)) if (rows < 0).any() else len(rows)  # pads close a list
        columns = [
            batch.retrieval[i, :n],
            batch.predicted[i, :n],
            self.scale.stars(batch.predicted[i, :n]),
        ]
        if batch.score is not None:
            columns.append(batch.score[i, :n])
        if not all(np.isfinite(c).all() for c in columns):
            raise ValueError("Out of range float values are not JSON compliant")
        scores = [repr(v) for v in columns[3].tolist()] if batch.score is not None else ["null"] * n
        return [
            f'{{{fields[row]},"retrieval_score":{r!r},"predicted_rating":{p!r},"stars":{s!r},'
            f'"rank_score":{score}}}'
            for row, r, p, s, score in zip(
                rows[:n].tolist(),
                columns[0].tolist(),
                columns[1].tolist(),
                columns[2].tolist(),
                scores,
                strict=True,
            )
        ]


def _compact(value: Any) -> str:
    """``value`` as the service's JSON encodes it (compact, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def check_list_sizes(k: int, candidates: int | None) -> None:
    """A list's length and candidates per source: at least 1 (0 is not "the default")."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"k: expected an integer >= 1, got {k!r}")
    if candidates is not None and (
        isinstance(candidates, bool)
        or not isinstance(candidates, numbers.Integral)
        or candidates < 1
    ):
        raise ConfigError(f"candidates: expected an integer >= 1 (or none), got {candidates!r}")
