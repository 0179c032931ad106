"""``Recommender``: a saved model ready to answer, in raw ids; rows never leave it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec import artifact
from mtrec.artifact import SavedModel
from mtrec.errors import ConfigError, UnknownIdError
from mtrec.features import fallback_order
from mtrec.index import ExactIndex
from mtrec.ranking import (
    RankedBatch,
    exclusion_lists,
    history_query,
    rank_candidates,
    retrieve_then_rank,
    user_queries,
)
from mtrec.ranking.neighbours import unit_rows
from mtrec.recommend.records import (
    ListFilters,
    RankedLists,
    RatedItem,
    Recommendation,
    Recommendations,
    SimilarItem,
    check_list_sizes,
    describe,
    records_of,
)
from mtrec.vocab import Vocab

CANDIDATE_ROWS = 8_192
"""Users x candidates ranked in one pass (943 users x 1,000 candidates at once: +472 MB).
Eight such batches at once through the service (``benchmarks/serve_batch_memory.py``,
2-core AMD EPYC): peak +520 / +589 MB in passes of 32,768, +430 / +270 MB of 8,192."""


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
        self.popular_rows = fallback_order(saved.popularity)
        """Item rows, the most liked in training first (an unknown user's list)."""
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
            RatedItem(*describe(self.vocabs.items, info, r), float(s))
            for r, s in zip(items[order].tolist(), stars.tolist(), strict=True)
        ]

    def recommend(
        self,
        user_id: int | str,
        k: int = 10,
        candidates: int | None = None,
        exclude_seen: bool = True,
        ranking: bool = True,
        **filters: Unpack[ListFilters],
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
        # recommend_many checks k, candidates and the filters
        return self.recommend_many([user_id], k, candidates, exclude_seen, ranking, **filters)[0]

    def recommend_many(
        self,
        user_ids: Sequence[int | str],
        k: int = 10,
        candidates: int | None = None,
        exclude_seen: bool = True,
        ranking: bool = True,
        **filters: Unpack[ListFilters],
    ) -> list[Recommendations]:
        """``recommend`` for many users in one batched index search and head pass."""
        return self.ranked_many(user_ids, k, candidates, exclude_seen, ranking, **filters).records()

    def ranked_many(
        self, user_ids: Sequence[int | str], *options: Any, **named: Any
    ) -> RankedLists:
        """``recommend_many``'s lists (the same arguments) as ranked arrays: records, or
        the service's JSON written from the arrays (``RankedLists.json``)."""
        k, candidates, exclude_seen, ranking, exclude, genres = _list_options(*options, **named)
        check_list_sizes(k, candidates)
        blocked = self.blocked_rows(exclude, genres)
        users = self.vocabs.users
        rows = [self._row(users, u) for u in user_ids]
        known = np.array([r for r in rows if r is not None], dtype=np.int64)
        args = (k, candidates, exclude_seen, ranking, blocked)
        batch = self.rank_rows(known, *args) if len(known) else None
        # a known user's id as the model knows it; an unknown one's in the model's type
        # ("999" over integer ids: 999), with its fallback list
        fallback = self._fallback
        lists = [
            users.id_array[r].item() if r is not None else fallback(users.parse(u), k, blocked)
            for u, r in zip(user_ids, rows, strict=True)
        ]
        return RankedLists(lists, batch, self.vocabs.items, self.saved.items, self.saved.scale)

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
        item rows no list holds (``blocked_rows``). At most ``CANDIDATE_ROWS`` users x
        candidates a pass: memory stays bounded whatever the batch."""
        chunk = max(1, CANDIDATE_ROWS // max(candidates or 100, k))
        if len(user_rows) > chunk:
            args = (k, candidates, exclude_seen, ranking, blocked)
            parts = range(0, len(user_rows), chunk)
            return RankedBatch.stack(
                [self.rank_rows(user_rows[i : i + chunk], *args) for i in parts]
            )
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
        check_list_sizes(k, candidates)
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
        items = records_of(batch, 0, self.vocabs.items, self.saved.items, self.saved.scale)
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
        popular = self.popular_rows
        if blocked is not None:
            popular = popular[~np.isin(popular, blocked)]
        items = [
            Recommendation(*describe(self.vocabs.items, info, r), None, None, None)
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
        return records_of(
            batch.take(order), 0, self.vocabs.items, self.saved.items, self.saved.scale
        )

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
            SimilarItem(*describe(self.vocabs.items, info, r), float(s))
            for s, r in zip(scores[0].tolist(), rows[0].tolist(), strict=True)
            if r >= 0
        ]


def _list_options(
    k: int = 10,
    candidates: int | None = None,
    exclude_seen: bool = True,
    ranking: bool = True,
    *,
    exclude_items: Sequence[int | str] = (),
    genres: Sequence[str] = (),
) -> tuple[int, int | None, bool, bool, Sequence[int | str], Sequence[str]]:
    """``recommend_many``'s arguments after the users, with its defaults; another name
    is a ``TypeError``, as in a call of ``recommend_many``."""
    return k, candidates, exclude_seen, ranking, exclude_items, genres


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
