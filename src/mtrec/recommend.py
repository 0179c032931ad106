"""What a user gets: a saved model's lists, from its ranking stage or its rating head.

``Recommender`` is the one object the CLI (and later the HTTP service) use: it holds a
loaded model directory and answers ``recommend``, ``similar`` and ``rank`` with typed
records. Ids are raw dataset ids; rows never leave this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec import artifact
from mtrec.artifact import ItemInfo, SavedModel
from mtrec.data import Items
from mtrec.errors import ConfigError, UnknownIdError
from mtrec.features import RatingScale, Vocabs
from mtrec.index import ExactIndex
from mtrec.io import atomic_path
from mtrec.model import MultiTaskModel
from mtrec.ranking import (
    RankedBatch,
    exclusion_lists,
    history_query,
    rank_candidates,
    retrieve_then_rank,
    user_queries,
)
from mtrec.ranking.neighbours import unit_rows
from mtrec.vocab import Vocab


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

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (``dataclasses.asdict`` is 10x slower on the serving path)."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "genres": list(self.genres),
            "retrieval_score": self.retrieval_score,
            "predicted_rating": self.predicted_rating,
            "stars": self.stars,
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


FrameKind = Literal["pandas", "polars", "arrow"]
FRAME_COLUMNS = (
    "user_id", "rank", "item_id", "title", "genres", "retrieval_score", "predicted_rating",
    "stars", "fallback",
)  # fmt: skip


def to_frame(lists: Sequence[Recommendations], kind: FrameKind = "pandas") -> Any:
    """Users' lists (``recommend_many``) as one long table with ``FRAME_COLUMNS``: a
    pandas or polars DataFrame, or a pyarrow Table (pandas/polars imported only when
    asked for)."""
    import pyarrow as pa

    rows = [
        (lst.user_id, rank, r.item_id, r.title, list(r.genres), r.retrieval_score,
         r.predicted_rating, r.stars, lst.fallback)
        for lst in lists
        for rank, r in enumerate(lst.items, start=1)
    ]  # fmt: skip
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(FRAME_COLUMNS)
    types = [None, pa.int32(), None, pa.string(), pa.list_(pa.string()), pa.float64(),
             pa.float64(), pa.float64(), pa.bool_()]  # fmt: skip
    ids = [_id_type(c) for c in (columns[0], columns[2])]
    types[0], types[2] = ids
    table = pa.table(
        {
            name: pa.array(list(values), type=t)
            for name, values, t in zip(FRAME_COLUMNS, columns, types, strict=True)
        }
    )
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
            f"{name} is not installed: pip install {name} (or 'mtrec-torch[frames]')"
        ) from None


def _id_type(ids: Sequence[Any]) -> Any:
    """Integer ids as int64, any other (string) ids as text; None (a history's list) stays null."""
    import pyarrow as pa

    present = [i for i in ids if i is not None]
    return pa.int64() if all(isinstance(i, int) for i in present) else pa.string()


@dataclasses.dataclass(frozen=True)
class SimilarItem:
    """An item near another in embedding space; ``score`` is the cosine similarity."""

    item_id: int | str
    title: str | None
    genres: tuple[str, ...]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "genres": list(self.genres),
            "score": self.score,
        }


@dataclasses.dataclass(frozen=True)
class RatedItem:
    """An item the user rated in training, with the rating they gave (in stars)."""

    item_id: int | str
    title: str | None
    genres: tuple[str, ...]
    rating: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "genres": list(self.genres),
            "rating": self.rating,
        }


def recommend_reference(
    model: MultiTaskModel,
    vocabs: Vocabs,
    user_id: int | str,
    *,
    k: int = 10,
    candidates: int | None = None,
    items: Items | None = None,
    scale: RatingScale | None = None,
) -> list[Recommendation]:
    """The reference's prediction: top ``candidates`` (default ``k``) over the whole
    catalogue by dot product, training movies included, ranked by predicted rating.

    >>> recs = recommend_reference(model, vocabs, 5, items=dataset.items)
    """
    with torch.inference_mode():
        index = ExactIndex(model.embed_items().numpy())
    row = np.array([vocabs.users.row(user_id)], dtype=np.int64)
    batch = retrieve_then_rank(model, index, row, k=k, candidates=candidates or k)
    info = ItemInfo.from_items(vocabs.items, items)
    return _records(batch, 0, vocabs.items, info, scale or RatingScale())


def _describe(
    vocab: Vocab, info: ItemInfo, row: int
) -> tuple[int | str, str | None, tuple[str, ...]]:
    """(item id, title, genres) of an item row: the fields every item record starts with."""
    return vocab.id_array[row].item(), info.titles[row], tuple(info.genres[row])


def _records(
    batch: RankedBatch, i: int, vocab: Vocab, info: ItemInfo, scale: RatingScale
) -> list[Recommendation]:
    out = []
    stars = scale.stars(batch.predicted[i])
    for j, row in enumerate(batch.rows[i].tolist()):
        if row < 0:
            break
        out.append(
            Recommendation(
                *_describe(vocab, info, row),
                retrieval_score=float(batch.retrieval[i, j]),
                predicted_rating=float(batch.predicted[i, j]),
                stars=float(stars[j]),
            )
        )
    return out


class Recommender:
    """A saved model, ready to answer: retrieve, then rank; similar items; rank given items.

    >>> rec = Recommender.load("mtrec-out/model")
    >>> rec.recommend(5, k=10).items[0].title
    >>> rec.similar(50, k=5)
    """

    def __init__(self, saved: SavedModel) -> None:
        self.saved = saved
        self.model = saved.model
        self.vocabs = saved.vocabs
        self.index = saved.index
        self.two_stage = saved.two_stage()
        """The ranking stage (None: the list is retrieval re-sorted by predicted rating)."""
        with torch.inference_mode():
            self._users = (
                self.two_stage.stage.user_embeddings
                if self.two_stage is not None
                else self.model.embed_users().numpy()
            )  # every known user's query, pooled once (a history-reading tower is costly)
        with torch.inference_mode():
            items = self.model.embed_items().numpy()
        self._cosine = ExactIndex(unit_rows(items))
        order = np.argsort(-saved.popularity, kind="stable")
        self._popular = order.astype(np.int64)
        by_genre: dict[str, list[int]] = {}
        for row, genres in enumerate(saved.items.genres):
            for genre in genres:
                by_genre.setdefault(genre, []).append(row)
        self._genre_rows = {g: np.array(rows, dtype=np.int64) for g, rows in by_genre.items()}

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a directory written by ``mtrec train`` (see ``mtrec.artifact``)."""
        return cls(artifact.load(directory))

    def _row(self, vocab: Vocab, raw: int | str) -> int | None:
        raw = vocab.parse(raw)
        return vocab.row(raw) if raw in vocab else None

    def canonical_id(self, kind: str, raw: int | str) -> int | str:
        """``raw`` (e.g. "5" from a URL) as the ``kind`` ("user" or "item") vocabulary types it."""
        return (self.vocabs.users if kind == "user" else self.vocabs.items).parse(raw)

    def item_row(self, item_id: int | str) -> int:
        """The row of a known item; ``UnknownIdError`` otherwise."""
        row = self._row(self.vocabs.items, item_id)
        if row is None:
            raise UnknownIdError("item", self.vocabs.items.parse(item_id))
        return row

    def seen(self, user_id: int | str) -> list[int | str]:
        """Ids of the items ``user_id`` rated in training (empty for an unknown user)."""
        row = self._row(self.vocabs.users, user_id)
        return [] if row is None else self.vocabs.items.ids(self._seen_rows(row)).tolist()

    def _seen_rows(self, row: int) -> NDArray[np.int64]:
        return self.saved.seen.of(row)[0]

    def history(self, user_id: int | str, k: int = 10) -> list[RatedItem]:
        """The user's ``k`` best-rated training items (ties: the more popular first);
        empty for an unknown user."""
        row = self._row(self.vocabs.users, user_id)
        if row is None:
            return []
        items, labels = self.saved.seen.of(row)
        order = np.lexsort((-self.saved.popularity[items], -labels))[:k]
        stars = self.saved.scale.stars(labels[order])
        info = self.saved.items
        return [
            RatedItem(*_describe(self.vocabs.items, info, r), float(s))
            for r, s in zip(items[order].tolist(), stars.tolist(), strict=True)
        ]

    def recommend(
        self,
        user_id: int | str,
        k: int = 10,
        candidates: int | None = None,
        exclude_seen: bool = True,
        ranking: bool = True,
        *,
        exclude_items: Sequence[int | str] = (),
        genres: Sequence[str] = (),
    ) -> Recommendations:
        """The user's top ``k`` (training items left out unless ``exclude_seen=False``).

        With a ranking stage: ``candidates`` (default the ranker's, 50) from each source,
        ordered by the ranker. Without: the top ``candidates`` (default 100) by retrieval
        score re-sorted by predicted rating. An unknown user gets the items most often
        rated four stars or more, flagged ``fallback``. ``ranking=False``: the first stage
        alone, the top ``k`` by retrieval score (for comparison and debugging).

        Filters: ``exclude_items`` never appear (unknown ids: ``UnknownIdError``);
        ``genres``, where given, keeps only items of at least one of them.
        """
        return self.recommend_many(
            [user_id], k, candidates, exclude_seen, ranking, exclude_items=exclude_items,
            genres=genres,
        )[0]  # fmt: skip

    def recommend_many(
        self,
        user_ids: Sequence[int | str],
        k: int = 10,
        candidates: int | None = None,
        exclude_seen: bool = True,
        ranking: bool = True,
        *,
        exclude_items: Sequence[int | str] = (),
        genres: Sequence[str] = (),
    ) -> list[Recommendations]:
        """``recommend`` for many users in one batched index search and head pass."""
        blocked = self.blocked_rows(exclude_items, genres)
        rows = [self._row(self.vocabs.users, u) for u in user_ids]
        known = np.array([r for r in rows if r is not None], dtype=np.int64)
        batch = (
            self.rank_rows(known, k, candidates, exclude_seen, ranking, blocked)
            if len(known)
            else None
        )
        out, j = [], 0
        for user_id, row in zip(user_ids, rows, strict=True):
            if row is None:
                out.append(self._fallback(user_id, k, blocked))
                continue
            assert batch is not None
            out.append(
                Recommendations(
                    self.vocabs.users.id_array[row].item(),  # the id as the model knows it
                    _records(batch, j, self.vocabs.items, self.saved.items, self.saved.scale),
                )
            )
            j += 1
        return out

    def rank_rows(
        self,
        user_rows: NDArray[np.int64],
        k: int,
        candidates: int | None,
        exclude_seen: bool,
        ranking: bool = True,
        blocked: NDArray[np.int64] | None = None,
    ) -> RankedBatch:
        """The served lists of known user rows, as arrays (what batch export writes);
        ``ranking=False``: the first stage's top ``k`` in retrieval order. ``blocked``:
        item rows no list holds (``blocked_rows``)."""
        if self.two_stage is not None and ranking:
            stage = self.two_stage.stage
            queries = user_queries(stage, user_rows, self.saved.seen, exclude_seen, blocked)
            return self.two_stage.lists(queries, k, candidates)
        vectors = self._users[user_rows]
        exclude = self._exclude(user_rows, exclude_seen, blocked)
        if not ranking:
            _, rows = self.index.search(vectors, k, exclude=exclude)
            return self._scored(user_rows, rows)
        return retrieve_then_rank(
            self.model,
            self.index,
            user_rows,
            k=k,
            candidates=candidates or 100,
            exclude=exclude,
            user_vectors=vectors,
        )

    def _exclude(
        self,
        user_rows: NDArray[np.int64],
        exclude_seen: bool,
        blocked: NDArray[np.int64] | None = None,
    ) -> list[NDArray[np.int64]] | None:
        seen = [self._seen_rows(int(r)) for r in user_rows] if exclude_seen else None
        return exclusion_lists(seen, blocked, len(user_rows))

    def blocked_rows(
        self, exclude_items: Sequence[int | str] = (), genres: Sequence[str] = ()
    ) -> NDArray[np.int64] | None:
        """Item rows a request's filters leave out: ``exclude_items``, and with ``genres``
        every item of none of them; None when nothing is left out."""
        if not exclude_items and not genres:
            return None
        out = np.zeros(len(self.vocabs.items), dtype=bool)
        out[[self.item_row(i) for i in exclude_items]] = True
        if genres:
            unknown = sorted(set(genres) - set(self._genre_rows))
            if unknown:
                raise ConfigError(
                    f"unknown genre(s) {unknown}; this model's: {sorted(self._genre_rows)}"
                )
            allowed = np.zeros_like(out)
            for genre in genres:
                allowed[self._genre_rows[genre]] = True
            out |= ~allowed
        return np.flatnonzero(out)

    def recommend_for_history(
        self,
        history: Sequence[tuple[int | str, float | None]],
        k: int = 10,
        candidates: int | None = None,
        *,
        exclude_items: Sequence[int | str] = (),
        genres: Sequence[str] = (),
    ) -> Recommendations:
        """A list for a user the model never saw, from the items they rated: pairs of
        (item id, rating in the data's own scale, or None for "interacted, no rating").

        No retraining: the user tower embeds the history (a model trained with
        ``ModelConfig.history``) and the ranking stage orders candidates as for anyone.
        Items the model does not know are left out and named in ``notice``; an empty
        history gets the popularity fallback. The history's items are not recommended;
        ``exclude_items`` and ``genres`` filter as for ``recommend``.

        >>> rec.recommend_for_history([(50, 5.0), (181, 4.0), (172, None)], k=10)
        """
        if not self.model.config.history:
            raise ConfigError(
                "this model's user tower does not read histories; train it with the default "
                "preset (mtrec train --preset default) to recommend from a history"
            )
        rows, labels, unknown = self._history_rows(history)
        notice = f"unknown item(s) left out of the history: {unknown}" if unknown else None
        blocked = self.blocked_rows(exclude_items, genres)
        if not len(rows):
            fallback = self._fallback(None, k, blocked)
            return dataclasses.replace(fallback, notice=notice or fallback.notice)
        query = dataclasses.replace(history_query(self.model, rows, labels), blocked=blocked)
        if self.two_stage is not None:
            batch = self.two_stage.lists(query, k, candidates)
        else:
            batch = retrieve_then_rank(  # user row -1: no row of their own, no bias
                self.model,
                self.index,
                query.user_rows,
                k=k,
                candidates=candidates or 100,
                exclude=query.exclusions(),
                user_vectors=query.embeddings,
            )
        items = _records(batch, 0, self.vocabs.items, self.saved.items, self.saved.scale)
        return Recommendations(None, items, notice=notice)

    def _history_rows(
        self, history: Sequence[tuple[int | str, float | None]]
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], list[int | str]]:
        """Item rows (sorted, each once: the last rating wins), scaled ratings, unknown ids.

        One vectorised vocabulary lookup for the whole history (a lookup per entry cost
        milliseconds for histories of hundreds of items)."""
        scale, vocab = self.saved.scale, self.vocabs.items
        ratings = np.array([np.nan if r is None else r for _, r in history], dtype=np.float64)
        bad = ~np.isnan(ratings) & ~((ratings >= scale.low) & (ratings <= scale.high))
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            item_id, rating = history[position]
            raise ConfigError(
                f"history entry {position + 1} ({item_id!r}): rating {rating!r} is outside "
                f"this model's scale {scale.low:g}..{scale.high:g}"
            )
        parsed = [vocab.parse(item_id) for item_id, _ in history]
        typed, fits = _typed_ids(parsed, vocab.id_array.dtype)
        rows = np.where(fits, vocab.rows(typed, unknown="oov"), -1)
        known = rows >= 0
        unknown = [item_id for (item_id, _), ok in zip(history, known, strict=True) if not ok]
        neutral = float(self.saved.seen.labels.mean()) if len(self.saved.seen.labels) else 0.5
        labels = np.where(np.isnan(ratings), neutral, scale.scale(np.nan_to_num(ratings)))
        # the last entry of an item wins: unique over the reversed order keeps it
        rows_k, labels_k = rows[known][::-1], labels[known][::-1]
        unique, first = np.unique(rows_k, return_index=True)
        return unique.astype(np.int64), labels_k[first].astype(np.float32), unknown

    def _fallback(
        self, user_id: int | str | None, k: int, blocked: NDArray[np.int64] | None = None
    ) -> Recommendations:
        info = self.saved.items
        popular = self._popular
        if blocked is not None:
            popular = popular[~np.isin(popular, blocked)]
        items = [
            Recommendation(*_describe(self.vocabs.items, info, r), None, None, None)
            for r in popular[:k].tolist()
        ]
        who = "no history" if user_id is None else f"unknown user {user_id!r}"
        notice = f"{who}: showing the items most often rated 4+ stars in training"
        return Recommendations(user_id, items, fallback=True, notice=notice)

    def rank(self, user_id: int | str, item_ids: Sequence[int | str]) -> list[Recommendation]:
        """The given items ordered by predicted rating for ``user_id`` (both must be known)."""
        user = self._row(self.vocabs.users, user_id)
        if user is None:
            raise UnknownIdError("user", self.vocabs.users.parse(user_id))
        cands = np.array([[self.item_row(i) for i in item_ids]], dtype=np.int64)
        batch = self._scored(np.array([user]), cands)
        order = np.argsort(-batch.predicted, axis=1, kind="stable")
        return _records(batch.take(order), 0, self.vocabs.items, self.saved.items, self.saved.scale)

    def _scored(self, user_rows: NDArray[np.int64], rows: NDArray[np.int64]) -> RankedBatch:
        """Known users' (n, c) item rows (-1 pads) with their retrieval scores and the
        predicted ratings the served list would show (the ranking stage's correction
        included)."""
        if self.two_stage is None:
            vectors = self._users[user_rows]
            return RankedBatch(rows, *rank_candidates(self.model, user_rows, rows, vectors))
        queries = user_queries(self.two_stage.stage, user_rows, self.saved.seen)
        return self.two_stage.scored(queries, rows)

    def similar(self, item_id: int | str, k: int = 10) -> list[SimilarItem]:
        """The ``k`` items with the most similar embeddings (cosine), the item itself excluded."""
        row = self.item_row(item_id)
        query = self._cosine.embeddings[row : row + 1]
        scores, rows = self._cosine.search(query, k, exclude=[np.array([row])])
        info = self.saved.items
        return [
            SimilarItem(*_describe(self.vocabs.items, info, r), float(s))
            for s, r in zip(scores[0].tolist(), rows[0].tolist(), strict=True)
            if r >= 0
        ]


def _typed_ids(
    ids: list[int | str], dtype: np.dtype[Any]
) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """``ids`` as an array of the vocabulary's kind, and which of them are of that kind
    (integers within int64, or strings); the others hold a placeholder and are unknown."""
    if dtype.kind in "iu":
        fits = np.array([type(i) is int and -(2**63) <= i < 2**63 for i in ids], dtype=bool)
        values = [i if ok else 0 for i, ok in zip(ids, fits, strict=True)]
        return np.array(values, dtype=np.int64), fits
    fits = np.array([isinstance(i, str) for i in ids], dtype=bool)
    return np.array([i if ok else "" for i, ok in zip(ids, fits, strict=True)], np.str_), fits


def write_all_users(
    rec: Recommender,
    path: str | Path,
    *,
    k: int = 10,
    candidates: int | None = None,
    exclude_seen: bool = True,
    users_per_batch: int = 4096,
) -> int:
    """Write every known user's list to a Parquet file, atomically; returns the row count.

    Columns: ``user_id, rank, item_id, title, retrieval_score, predicted_rating, stars``.
    Users are processed ``users_per_batch`` at a time, so memory stays bounded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    vocab_users, vocab_items = rec.vocabs.users, rec.vocabs.items
    titles = np.array([t or "" for t in rec.saved.items.titles], dtype=object)
    n_users = len(vocab_users)
    written = 0
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for lo in range(0, n_users, users_per_batch):
                user_rows = np.arange(lo, min(lo + users_per_batch, n_users), dtype=np.int64)
                batch = rec.rank_rows(user_rows, k, candidates, exclude_seen)
                keep = batch.rows >= 0
                ranks = np.broadcast_to(np.arange(1, batch.rows.shape[1] + 1), batch.rows.shape)
                item_rows = batch.rows[keep]
                table = pa.table(
                    {
                        "user_id": vocab_users.ids(
                            np.broadcast_to(user_rows[:, None], batch.rows.shape)[keep]
                        ),
                        "rank": ranks[keep].astype(np.int32),
                        "item_id": vocab_items.ids(item_rows),
                        "title": titles[item_rows],
                        "retrieval_score": batch.retrieval[keep],
                        "predicted_rating": batch.predicted[keep],
                        "stars": rec.saved.scale.stars(batch.predicted[keep]),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                written += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return written
