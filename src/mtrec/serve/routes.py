"""The service's routes: validate, call the live ``Recommender``, serialise.

Each route reads the model holder (and the app's metrics and worker folder) from
``app.state``, which :func:`mtrec.serve.app.create_app` fills, so the routes are plain
functions on one router rather than closures in the factory.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.background import BackgroundTask

from mtrec.recommend import MAX_QUERY, Recommendations, find_items
from mtrec.runtime import give_back_freed_memory
from mtrec.serve.holder import ModelHolder, log_failed_reload, reason, signal_workers
from mtrec.serve.schemas import (
    ERRORS,
    MAX_CANDIDATES,
    MAX_GENRES,
    MAX_ITEMS,
    MAX_K,
    BatchOut,
    BatchRequest,
    HistoryEntry,
    HistoryOut,
    HistoryRequest,
    ItemsOut,
    RankOut,
    RankRequest,
    SimilarOut,
    error,
)

router = APIRouter()


def _holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


Holder = Annotated[ModelHolder, Depends(_holder)]
LISTS: dict[str, Any] = {"tags": ["recommendations"], "responses": ERRORS}
"""What every route answering with items declares."""
TopK = Annotated[int, Query(ge=1, le=MAX_K)]


def _items_of(
    holder: ModelHolder, side: str, given_id: int | str, items: Sequence[Any]
) -> JSONResponse:
    """``{"<side>_id": the id as the model spells it, "items": [...]}``."""
    canonical = holder.recommender.canonical_id(side, given_id)
    return JSONResponse({f"{side}_id": canonical, "items": [i.to_dict() for i in items]})


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(holder: Holder) -> dict[str, Any]:
    """A model is loaded and answering (open to all: no paths in it); ``worker``: the
    process that answered."""
    described = holder.describe()
    described.pop("model_dir")
    return {"status": "ready", "worker": os.getpid(), **described}


@router.get("/metrics", tags=["operations"], response_class=Response)
async def prometheus(request: Request) -> Response:
    """Request counts by route and status, and latency histograms (Prometheus text)."""
    text = await run_in_threadpool(request.app.state.metrics.render)  # off the event loop
    return Response(text, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, **LISTS)
async def recommendations(
    holder: Holder,
    user_id: str,
    k: TopK = 10,
    candidates: Annotated[int | None, Query(ge=1, le=MAX_CANDIDATES)] = None,
    exclude_seen: bool = True,
    ranking: bool = True,
    exclude_items: Annotated[list[str], Query(max_length=MAX_ITEMS)] = [],  # noqa: B006
    genres: Annotated[list[str], Query(max_length=MAX_GENRES)] = [],  # noqa: B006
) -> JSONResponse:
    """The user's top ``k``: ``candidates`` per source (default the model's) ordered by
    the ranking stage, or for a model without one retrieved by dot product and sorted
    by predicted rating. ``ranking=false``: the first stage alone (retrieval order).
    Filters: ``exclude_items`` (repeat) never appear; with ``genres`` (repeat), only
    items of at least one of them. An unknown user gets popular items,
    ``fallback: true``."""
    result = holder.recommender.recommend(
        user_id,
        k=k,
        candidates=candidates,
        exclude_seen=exclude_seen,
        ranking=ranking,
        exclude_items=exclude_items,
        genres=genres,
    )
    return JSONResponse(result.to_dict())


BATCHES_AT_ONCE = 1
"""Batch requests one worker process works on at once; the others wait their turn. A
worker computes on one thread, so more at once only interleave, and each holds its
buffers meanwhile: eight maximal batches at once through two workers peaked at +244-365 MB
and held +54-66 MB after with four at once a worker, +144-257 and +20-80 with one
(``benchmarks/serve_batch_memory.py``, 2-core AMD EPYC); with the JSON written from the
ranked arrays too (``RankedLists.json``), +119-125 and 0-5 (once +18)."""


TRIM_AFTER_ITEMS = 10_000
"""Items in a batch answer (users x k) from which the worker hands memory back after it:
the full collection takes 20-90 ms of a loaded worker, not worth it after a small one."""


def batch_slots() -> anyio.CapacityLimiter:
    """The limiter :func:`recommendations_batch` waits on (one an app: ``create_app``)."""
    return anyio.CapacityLimiter(BATCHES_AT_ONCE)


@router.post("/v1/recommendations:batch", response_model=BatchOut, **LISTS)
async def recommendations_batch(
    holder: Holder, http: Request, request: Annotated[BatchRequest, Body()]
) -> Response:
    """Lists for up to 1,000 users in one batched pass (index search, ranking stage),
    in the order given; unknown users get popular items (``fallback: true``). A worker
    answers one batch at a time; after a large one, what it freed goes back to the OS."""

    def answer() -> Response:  # off the event loop: the lists, then their JSON
        lists = holder.recommender.ranked_many(
            request.user_ids,
            request.k,
            request.candidates,
            request.exclude_seen,
            request.ranking,
            exclude_items=request.exclude_items,
            genres=request.genres,
        )
        large = len(request.user_ids) * request.k >= TRIM_AFTER_ITEMS
        return Response(
            lists.json(),
            media_type="application/json",
            background=BackgroundTask(give_back_freed_memory) if large else None,
        )

    return await anyio.to_thread.run_sync(answer, limiter=http.app.state.batch_slots)


@router.post("/v1/recommendations", response_model=Recommendations, **LISTS)
async def recommendations_for_history(
    holder: Holder, request: Annotated[HistoryRequest, Body()]
) -> JSONResponse:
    """A list for a user the model never saw, from their history, without retraining.
    Unknown items are left out and named in ``notice``; an empty history gets popular
    items (``fallback: true``); a model whose towers do not read histories: 422."""
    history = [
        (e.item_id, e.rating) if isinstance(e, HistoryEntry) else (e, None) for e in request.history
    ]
    result = holder.recommender.recommend_for_history(
        history,
        k=request.k,
        candidates=request.candidates,
        exclude_items=request.exclude_items,
        genres=request.genres,
    )
    return JSONResponse(result.to_dict())


@router.get("/v1/users/{user_id}/history", response_model=HistoryOut, **LISTS)
async def history(holder: Holder, user_id: str, k: TopK = 10) -> JSONResponse:
    """The user's best-rated training items (empty for an unknown user)."""
    return _items_of(holder, "user", user_id, holder.recommender.history(user_id, k=k))


@router.post("/v1/rank", response_model=RankOut, **LISTS)
async def rank(holder: Holder, request: Annotated[RankRequest, Body()]) -> JSONResponse:
    """The given items ordered by predicted rating for the user (404 for unknown ids)."""
    items = holder.recommender.rank(request.user_id, request.item_ids)
    return _items_of(holder, "user", request.user_id, items)


@router.get("/v1/items", response_model=ItemsOut, **LISTS)
async def items(
    holder: Holder, q: Annotated[str, Query(max_length=MAX_QUERY)] = "", k: TopK = 10
) -> JSONResponse:
    """Items whose title holds ``q`` (any case) or whose id is ``q``, the most liked in
    training first: what a new user's history is picked from (the page's history box)."""
    found = find_items(holder.recommender, q, k)
    return JSONResponse({"items": [i.to_dict() for i in found]})


@router.get("/v1/items/{item_id}/similar", response_model=SimilarOut, **LISTS)
async def similar(holder: Holder, item_id: str, k: TopK = 10) -> JSONResponse:
    """Items with the most similar embeddings (cosine), the item itself left out."""
    return _items_of(holder, "item", item_id, holder.recommender.similar(item_id, k=k))


@router.post("/v1/admin/reload", tags=["operations"])
async def reload(holder: Holder, request: Request) -> JSONResponse:
    """Load the model directory again (e.g. after ``mtrec train`` replaced it) and swap it
    in without a restart; on failure the current model stays and the error is returned."""
    supervised = request.app.state.supervised
    try:
        described = await holder.reload()
        if supervised is not None:  # the others reload in place too, as on SIGHUP
            described["other_workers"] = signal_workers(supervised, signal.SIGHUP)
        return JSONResponse(described)
    except Exception as exc:  # whatever the files hold, the current model stays
        log_failed_reload(holder, exc, "reload")
        return error(409, "reload_failed", f"kept the current model: {reason(exc)}")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    """One page: a user's top-rated movies, recommendations and similar movies."""
    return HTMLResponse(request.app.state.page_html)
