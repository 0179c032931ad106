"""The service's request and response bodies, their limits, and the one error shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, Strict, StrictBool, StrictInt, StrictStr

from mtrec.recommend import (
    CatalogueItem,
    RatedItem,
    Recommendation,
    Recommendations,
    SimilarItem,
)

MAX_K = 100
MAX_CANDIDATES = 1000
MAX_ITEMS = 1000
MAX_GENRES = 100


class RankRequest(BaseModel):
    """Items to order by predicted rating for one user."""

    user_id: StrictInt | StrictStr  # strict: JSON true or 5.0 is not user 1 or 5
    item_ids: list[StrictInt | StrictStr] = Field(min_length=1, max_length=MAX_ITEMS)


class HistoryEntry(BaseModel):
    """One item a new user rated; ``rating`` in the data's scale, or null for "interacted"."""

    item_id: StrictInt | StrictStr
    rating: Annotated[float, Strict()] | None = None


class Filters(BaseModel):
    """Items a list leaves out: ``exclude_items``, and with ``genres`` every item of none."""

    exclude_items: list[StrictInt | StrictStr] = Field([], max_length=MAX_ITEMS)
    genres: list[StrictStr] = Field([], max_length=MAX_GENRES)


class BatchRequest(Filters):
    """Lists for many known users in one pass, with the same filters for all."""

    user_ids: list[StrictInt | StrictStr] = Field(min_length=1, max_length=MAX_ITEMS)
    k: StrictInt = Field(10, ge=1, le=MAX_K)  # strict: JSON true is not k = 1
    candidates: StrictInt | None = Field(None, ge=1, le=MAX_CANDIDATES)
    exclude_seen: StrictBool = True
    ranking: StrictBool = True


class BatchOut(BaseModel):
    results: list[Recommendations]


class HistoryRequest(Filters):
    """A user the model never saw, known by a history: item ids, or {item_id, rating}."""

    history: list[HistoryEntry | StrictInt | StrictStr] = Field(max_length=MAX_ITEMS)
    k: StrictInt = Field(10, ge=1, le=MAX_K)  # strict: JSON true is not k = 1
    candidates: StrictInt | None = Field(None, ge=1, le=MAX_CANDIDATES)


class RankOut(BaseModel):
    user_id: int | str
    items: list[Recommendation]


class HistoryOut(BaseModel):
    user_id: int | str
    items: list[RatedItem]


class SimilarOut(BaseModel):
    item_id: int | str
    items: list[SimilarItem]


class ItemsOut(BaseModel):
    items: list[CatalogueItem]


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (401, "missing or wrong API key"),
        (404, "unknown id"),
        (413, "body too large"),
        (422, "invalid input"),
    )
}


def error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)
