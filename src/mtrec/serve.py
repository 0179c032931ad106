"""The HTTP service: FastAPI over the same ``Recommender`` the command line uses.

``create_app(model_dir)`` builds the app (tests use it in process); ``mtrec serve`` runs it
on uvicorn. Routes are thin: validate, call the ``Recommender``, serialise. Every error
is a JSON body ``{"error": {"type", "message"}}``; tracebacks stay in the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import hmac
import json
import logging
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar

from fastapi import Body, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, Field, Strict, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

try:  # uvicorn's faster parser, where its 'standard' extra installed httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
except ImportError:  # h11 comes with uvicorn itself
    from uvicorn.protocols.http.h11_impl import (  # type: ignore[assignment]
        H11Protocol as _HttpProtocol,
    )

from mtrec.errors import ArtifactError, ConfigError, MtrecError, UnknownIdError
from mtrec.recommend import (
    RatedItem,
    Recommendation,
    Recommendations,
    Recommender,
    SimilarItem,
)

log = logging.getLogger("mtrec.serve")

MAX_K = 100
MAX_CANDIDATES = 1000
MAX_ITEMS = 1000
MAX_GENRES = 100
MAX_BODY_BYTES = 64 * 1024
HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's headers (from connecting or the last answer)."""
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz"})
"""Routes that need no API key: the page, liveness and readiness."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ModelHolder:
    """The live ``Recommender``; ``reload`` swaps in a freshly loaded one.

    The new model is loaded and checked completely before the reference is replaced,
    in one assignment: a request in flight keeps the model it started with, and no
    request ever sees a half-loaded one.
    """

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.manifest = self._manifest()
        self.recommender = Recommender.load(model_dir)
        self.loaded_at = time.time()
        self.generation = 1
        self._lock = asyncio.Lock()

    def _manifest(self) -> bytes | None:
        """The manifest as it is now, read before a load: if it differs later, the model
        on disk may be newer than the loaded one (never older)."""
        with contextlib.suppress(OSError):
            return (self.model_dir / "manifest.json").read_bytes()
        return None

    def stale(self) -> bool:
        """The directory's manifest changed since the last load began."""
        return self._manifest() != self.manifest

    async def reload(self) -> dict[str, Any]:
        async with self._lock:  # one reload at a time; requests go on meanwhile
            manifest = self._manifest()
            fresh = await run_in_threadpool(Recommender.load, self.model_dir)
            self.recommender, self.loaded_at = fresh, time.time()
            self.manifest = manifest
            self.generation += 1
            log.info("model reloaded from %s (generation %d)", self.model_dir, self.generation)
            return self.describe()

    def describe(self) -> dict[str, Any]:
        saved = self.recommender.saved
        return {
            "model_dir": str(self.model_dir),
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "users": len(saved.vocabs.users),
            "items": len(saved.vocabs.items),
            "index": saved.index.kind,
        }


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
    k: int = Field(10, ge=1, le=MAX_K)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    exclude_seen: bool = True
    ranking: bool = True


class BatchOut(BaseModel):
    results: list[Recommendations]


class HistoryRequest(Filters):
    """A user the model never saw, known by a history: item ids, or {item_id, rating}."""

    history: list[HistoryEntry | StrictInt | StrictStr] = Field(max_length=MAX_ITEMS)
    k: int = Field(10, ge=1, le=MAX_K)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)


# Responses are the Recommender's own records (``mtrec.recommend``): one schema for the
# command line's JSON, the library and the OpenAPI document. The wrappers below add only
# the id a list belongs to.


class RankOut(BaseModel):
    user_id: int | str
    items: list[Recommendation]


class HistoryOut(BaseModel):
    user_id: int | str
    items: list[RatedItem]


class SimilarOut(BaseModel):
    item_id: int | str
    items: list[SimilarItem]


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


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


class _Guard:
    """ASGI middleware: API key, body size and metrics, before any route runs."""

    def __init__(
        self,
        app: Any,
        api_key: str | None,
        max_body: int,
        metrics: _Metrics,
        routes: Sequence[BaseRoute] = (),
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body, metrics
        self.routes, self.allowed_hosts = routes, allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        response = self._refuse(scope)
        try:
            if response is None and scope["method"] in ("POST", "PUT", "PATCH"):
                receive, too_large = await self._buffer(receive)
                if too_large:
                    response = _error(413, "too_large", f"request body over {self.max_body} bytes")
            if response is not None:
                await response(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.observe(
                scope["method"], self._label(scope), status["code"], time.perf_counter() - start
            )

    def _label(self, scope: Scope) -> str:
        """The route's template, never the raw path: a label per distinct path would let
        anyone, key or not, grow the metrics (and the process) without bound."""
        route = scope.get("route")  # set where the request reached a route
        if route is None:  # refused before routing: find the template it would have had
            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", None) or "other"

    async def _buffer(self, receive: Receive) -> tuple[Receive, bool]:
        """Read the whole body (at most ``max_body`` bytes), then replay it to the app."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message]), False
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return receive, True
            if not message.get("more_body", False):
                return _replay(
                    [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                ), False

    def _refuse(self, scope: Scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        if self.allowed_hosts is not None:
            host = _host_name(headers.get(b"host", b""))
            if host not in self.allowed_hosts:  # e.g. a DNS-rebinding page in a browser
                return _error(400, "bad_host", f"host {host!r} is not served here")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return _error(413, "too_large", f"request body over {self.max_body} bytes")
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return None
        given = headers.get(b"authorization", b"")
        expected = b"Bearer " + self.api_key.encode()
        if not hmac.compare_digest(given, expected):
            return _error(
                401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)"
            )
        return None


def _host_name(header: bytes) -> str:
    """The Host header without its port ("[::1]:8000" -> "::1"), lower-cased."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> frozenset[str] | None:
    """The Host names ``mtrec serve`` answers: loopback names, the address it binds (unless
    a wildcard) and ``extra``; None (any) where ``extra`` holds ``*``."""
    if "*" in extra:
        return None
    named = {bind.strip("[]").lower()} - {"0.0.0.0", "::", ""}
    return LOOPBACK_HOSTS | named | {h.lower() for h in extra}


def _replay(messages: list[Message]) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    return receive


class _Metrics:
    """Prometheus counters and latency histogram, in a registry of this app's own;
    ``shared``: one of several worker processes, whose ``render`` adds up all of them
    (prometheus_client's multiprocess mode, its files under ``PROMETHEUS_MULTIPROC_DIR``)."""

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mtrec_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mtrec_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        every = CollectorRegistry()
        multiprocess.MultiProcessCollector(every)  # type: ignore[no-untyped-call]
        return generate_latest(every)


def create_app(
    model_dir: str | Path,
    *,
    api_key: str | None = None,
    max_body: int = MAX_BODY_BYTES,
    hosts: frozenset[str] | None = None,
    supervised: Path | None = None,
) -> FastAPI:
    """The service over the model in ``model_dir`` (loaded now: a bad model fails here).

    ``api_key``: when set, every route but ``/``, ``/healthz`` and ``/readyz`` needs
    ``Authorization: Bearer <key>``. ``hosts``: the Host names answered (others get 400;
    None: any). ``supervised``: one of several workers under uvicorn's supervisor, which
    registers in that folder (``/metrics`` adds up all workers; a reload reaches them all).
    The service reads no path but ``model_dir``.

    >>> app = create_app("mtrec-out/model")
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    holder = ModelHolder(Path(model_dir))
    metrics = _Metrics(shared=supervised is not None)
    registered = None if supervised is None else supervised / f"worker-{os.getpid()}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        loop = asyncio.get_running_loop()
        # SIGHUP reloads the model, as the admin route does (only where signals can be had)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(_reload_logged(holder))
            )
        if registered is not None:  # so that a reload on one worker reaches the others
            registered.touch()
            if holder.stale():  # a reload signalled while this worker was still loading
                await _reload_logged(holder)
        yield
        if registered is not None:
            registered.unlink(missing_ok=True)

    app = FastAPI(
        title="mtrec",
        version="1",
        summary="Retrieve, then rank: recommendations from one multi-task model.",
        lifespan=lifespan,
    )
    app.state.holder = holder

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, exc: UnknownIdError) -> JSONResponse:
        return _error(404, "unknown_id", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(ConfigError)
    async def bad_value(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(422, "invalid", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return _error(422, "invalid", "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error (logged on the server)")

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> dict[str, Any]:
        """A model is loaded and answering (open to all: no paths in it); ``worker``: the
        process that answered."""
        described = holder.describe()
        described.pop("model_dir")
        return {"status": "ready", "worker": os.getpid(), **described}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Request counts by route and status, and latency histograms (Prometheus text)."""
        text = await run_in_threadpool(metrics.render)  # off the event loop
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/users/{user_id}/recommendations",
        tags=["recommendations"],
        response_model=Recommendations,
        responses=ERRORS,
    )
    async def recommendations(
        user_id: str,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
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

    @app.post(
        "/v1/recommendations:batch",
        tags=["recommendations"],
        response_model=BatchOut,
        responses=ERRORS,
    )
    async def recommendations_batch(request: Annotated[BatchRequest, Body()]) -> JSONResponse:
        """Lists for up to 1,000 users in one batched pass (index search, ranking stage),
        in the order given; unknown users get popular items (``fallback: true``)."""
        results = await run_in_threadpool(  # a large batch must not hold the event loop
            holder.recommender.recommend_many,
            request.user_ids,
            request.k,
            request.candidates,
            request.exclude_seen,
            request.ranking,
            exclude_items=request.exclude_items,
            genres=request.genres,
        )
        return JSONResponse({"results": [r.to_dict() for r in results]})

    @app.post(
        "/v1/recommendations",
        tags=["recommendations"],
        response_model=Recommendations,
        responses=ERRORS,
    )
    async def recommendations_for_history(
        request: Annotated[HistoryRequest, Body()],
    ) -> JSONResponse:
        """A list for a user the model never saw, from their history, without retraining.
        Unknown items are left out and named in ``notice``; an empty history gets popular
        items (``fallback: true``); a model whose towers do not read histories: 422."""
        history = [
            (e.item_id, e.rating) if isinstance(e, HistoryEntry) else (e, None)
            for e in request.history
        ]
        result = holder.recommender.recommend_for_history(
            history,
            k=request.k,
            candidates=request.candidates,
            exclude_items=request.exclude_items,
            genres=request.genres,
        )
        return JSONResponse(result.to_dict())

    @app.get(
        "/v1/users/{user_id}/history",
        tags=["recommendations"],
        response_model=HistoryOut,
        responses=ERRORS,
    )
    async def history(user_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> JSONResponse:
        """The user's best-rated training items (empty for an unknown user)."""
        rec = holder.recommender
        items = rec.history(user_id, k=k)
        body = {
            "user_id": rec.canonical_id("user", user_id),
            "items": [i.to_dict() for i in items],
        }
        return JSONResponse(body)

    @app.post("/v1/rank", tags=["recommendations"], response_model=RankOut, responses=ERRORS)
    async def rank(request: Annotated[RankRequest, Body()]) -> JSONResponse:
        """The given items ordered by predicted rating for the user (404 for unknown ids)."""
        rec = holder.recommender
        items = rec.rank(request.user_id, request.item_ids)
        user_id = rec.canonical_id("user", request.user_id)
        return JSONResponse({"user_id": user_id, "items": [i.to_dict() for i in items]})

    @app.get(
        "/v1/items/{item_id}/similar",
        tags=["recommendations"],
        response_model=SimilarOut,
        responses=ERRORS,
    )
    async def similar(item_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> JSONResponse:
        """Items with the most similar embeddings (cosine), the item itself left out."""
        rec = holder.recommender
        items = rec.similar(item_id, k=k)
        body = {
            "item_id": rec.canonical_id("item", item_id),
            "items": [i.to_dict() for i in items],
        }
        return JSONResponse(body)

    @app.post("/v1/admin/reload", tags=["operations"])
    async def reload() -> JSONResponse:
        """Load the model directory again (e.g. after ``mtrec train`` replaced it) and swap it
        in without a restart; on failure the current model stays and the error is returned."""
        try:
            described = await holder.reload()
            if supervised is not None:  # the others reload in place too, as on SIGHUP
                described["other_workers"] = _signal_workers(supervised, signal.SIGHUP)
            return JSONResponse(described)
        except Exception as exc:  # whatever the files hold, the current model stays
            _log_failed_reload(holder, exc, "reload")
            return _error(409, "reload_failed", f"kept the current model: {_reason(exc)}")

    page_html = resources.files("mtrec").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """One page: a user's top-rated movies, recommendations and similar movies."""
        return HTMLResponse(page_html)

    routes = app.router.routes
    app.add_middleware(
        _Guard,
        api_key=api_key,
        max_body=max_body,
        metrics=metrics,
        routes=routes,
        allowed_hosts=hosts,
    )
    return app


def _signal_workers(folder: Path, signum: int) -> int:
    """Send ``signum`` to every other worker registered in ``folder``; how many got it."""
    sent = 0
    for entry in folder.glob("worker-*"):
        pid = int(entry.name.removeprefix("worker-"))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signum)
            sent += 1
        except ProcessLookupError:  # a worker that died without unregistering
            entry.unlink(missing_ok=True)
    return sent


async def _reload_logged(holder: ModelHolder) -> None:
    try:
        await holder.reload()
    except Exception as exc:  # a task's exception must not go unretrieved
        _log_failed_reload(holder, exc, "reload on SIGHUP")


def _log_failed_reload(holder: ModelHolder, exc: Exception, what: str) -> None:
    # an MtrecError says what is wrong with the files; anything else is ours: the traceback
    log.error(
        "%s failed, keeping generation %d: %s",
        what,
        holder.generation,
        _reason(exc),
        exc_info=not isinstance(exc, MtrecError),
    )


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, MtrecError) else f"internal error ({type(exc).__name__})"


def read_api_key(key_file: Path | None, environ: MutableMapping[str, str]) -> str | None:
    """The API key from ``key_file`` (first line) or ``MTREC_API_KEY``; never from argv."""
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"{key_file}: cannot read an API key ({exc})") from None
        if not key:
            raise ConfigError(f"{key_file}: the API key is empty")
        return key
    return environ.get("MTREC_API_KEY") or None


def serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    threads: int = 1,
    hosts: frozenset[str] | None = LOOPBACK_HOSTS,
    header_timeout: float = HEADER_TIMEOUT,
    workers: int = 1,
) -> None:
    """Run the service on uvicorn until interrupted (SIGHUP reloads the model).

    ``workers`` > 1: that many processes share the port (uvicorn's supervisor); each loads
    the model and ``/metrics`` adds up all of them. The admin route reloads every worker in
    place (as one process does: no request fails); SIGHUP to the supervisor makes uvicorn
    replace the workers one by one, which drops the connections of each old one.
    """
    import uvicorn

    if not (model_dir / "manifest.json").exists():
        raise ArtifactError(f"{model_dir}: not a model directory (no manifest.json)")
    settings: dict[str, Any] = {
        "model_dir": str(model_dir),
        "api_key": api_key,
        "hosts": None if hosts is None else sorted(hosts),
        "threads": threads,
        "header_timeout": header_timeout,
        "workers": workers,
    }
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level}
    options |= {"access_log": False, "http": BatchedAccept}
    if workers == 1:
        uvicorn.run(_worker_app(settings), **options)
        return
    metrics_dir = tempfile.mkdtemp(prefix="mtrec-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by each worker's client
    run_dir = Path(metrics_dir) / "workers"  # where workers register for reloads
    run_dir.mkdir()
    settings["run_dir"] = str(run_dir)
    # to the workers through a file only this user can read: in their environment the API
    # key would show in /proc/<pid>/environ for as long as they run
    settings_file = Path(metrics_dir) / "worker-settings.json"
    descriptor = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(settings, out)
    os.environ[_WORKER_SETTINGS] = str(settings_file)
    try:
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


_WORKER_SETTINGS = "MTREC_SERVE_WORKER"


def worker_app() -> FastAPI:
    """The app of one of several worker processes, from the supervisor's settings."""
    settings = json.loads(Path(os.environ[_WORKER_SETTINGS]).read_text(encoding="utf-8"))
    return _worker_app(settings, supervised=Path(settings["run_dir"]))


def _worker_app(settings: dict[str, Any], supervised: Path | None = None) -> FastAPI:
    import torch
    from threadpoolctl import threadpool_limits

    # One request is a handful of small kernels: intra-op threads only spin against the
    # event loop (measured: p99 at 32 connections fell from 75 ms to 20 ms with 1 thread).
    # NumPy's BLAS too: its threads spinning against two workers and the client on two
    # cores cut 32 connections from 1,898 to 150 ranked lists a second.
    torch.set_num_threads(int(settings["threads"]))
    threadpool_limits(limits=int(settings["threads"]))
    HeaderDeadline.seconds = float(settings["header_timeout"])
    BatchedAccept.workers = max(1, int(settings.get("workers", 1)))
    hosts = settings["hosts"]
    app = create_app(
        Path(settings["model_dir"]),
        api_key=settings["api_key"],
        hosts=None if hosts is None else frozenset(hosts),
        supervised=supervised,
    )
    gc.collect()
    gc.freeze()  # the loaded model's objects leave the collector's scans: fewer latency spikes
    return app


class HeaderDeadline(_HttpProtocol):
    """uvicorn's HTTP protocol with a deadline for each request's headers: uvicorn times
    out only idle keep-alive connections, so a client sending headers a byte at a time
    could hold any number of connections (3,000 were held for 30 s)."""

    seconds = HEADER_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._deadline is not None:
            self._deadline.cancel()

    def _arm(self) -> None:
        # one pending deadline a connection: a timer per request would hold every finished
        # request for the deadline (measured: +297 MB over 830k requests at 9,000 a second)
        if self._deadline is not None:
            self._deadline.cancel()
        waiting_on = self.cycle  # no new cycle by the deadline: no headers came
        self._deadline = self.loop.call_later(self.seconds, self._expire, waiting_on)

    def _expire(self, waiting_on: object) -> None:
        self._deadline = None
        if self.cycle is waiting_on and not self.transport.is_closing():
            self.transport.close()


ACCEPT_BATCH = 32
"""At most this many connections one worker accepts itself per loop turn, beside the one
libuv accepts: its share of those waiting (all of them for one worker, half for two)."""


class BatchedAccept(HeaderDeadline):
    """The HTTP protocol, with new connections accepted in batches.

    libuv (under uvloop) accepts one connection per loop turn, and a saturated worker's
    turn serves every request that is ready (~100 at 128 connections here, 80-100 ms), so
    a burst of new connections waited seconds in the listen queue: measured with one
    worker, 128 connections were accepted over 5-7 s, and their first requests were
    wrk's whole tail (p99 1.9-3.5 s) while no request took over 158 ms once read. So each
    turn that accepts a connection also accepts up to ``ACCEPT_BATCH`` more from the same
    listening socket (found once per process by its port; Linux only, elsewhere a no-op)
    and hands them to the loop. Each worker takes its share of the connections waiting (the
    listen queue's length, from ``TCP_INFO``, over ``workers``): workers that share the
    socket all wake for a burst, and one taking it whole would leave the others idle
    (measured: 32 connections then ran at one worker's 1,250 req/s instead of 2,300).
    A graceful shutdown stops it.
    """

    workers = 1
    """The worker processes sharing the listening socket."""

    _listeners: ClassVar[dict[int, socket.socket | None]] = {}
    """This process's listening sockets (duplicates) by port; None: not found."""
    _scheduled = False
    _closing = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not (BatchedAccept._scheduled or BatchedAccept._closing):
            BatchedAccept._scheduled = True  # one batch a loop turn
            self.loop.call_soon(self._accept_batch, transport.get_extra_info("sockname"))

    def shutdown(self) -> None:
        BatchedAccept._closing = True  # uvicorn stops accepting: so does the batch
        for listener in BatchedAccept._listeners.values():
            if listener is not None:
                listener.close()
        BatchedAccept._listeners.clear()
        super().shutdown()

    def _accept_batch(self, address: Any) -> None:
        BatchedAccept._scheduled = False
        if BatchedAccept._closing or not isinstance(address, tuple):
            return
        port = address[1]
        if port not in BatchedAccept._listeners:
            BatchedAccept._listeners[port] = _listening_socket(port)
        listener = BatchedAccept._listeners[port]
        if listener is None:
            return
        protocol = functools.partial(
            type(self), config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        for _ in range(min(ACCEPT_BATCH, _waiting(listener) // BatchedAccept.workers)):
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                return  # none left
            except (ConnectionAbortedError, InterruptedError):
                continue  # that client gave up before it was accepted
            except OSError as error:  # out of descriptors: the next turn; gone: never again
                if error.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                    BatchedAccept._listeners[port] = None
                return
            connection.setblocking(False)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as libuv's
            self.loop.create_task(self.loop.connect_accepted_socket(protocol, connection))


def _waiting(listener: socket.socket) -> int:
    """Connections in ``listener``'s accept queue (Linux reports it in ``TCP_INFO``'s
    ``tcpi_unacked`` for a listening socket); ``ACCEPT_BATCH`` where it cannot tell."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return int(struct.unpack_from("=I", info, 8 + 4 * 4)[0])  # 8 bytes, then u32s
    except (OSError, AttributeError, struct.error):
        return ACCEPT_BATCH


def _listening_socket(port: int) -> socket.socket | None:
    """A duplicate of this process's listening socket on ``port`` (the one the server
    accepted the connection on), or None where it cannot be found."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    for entry in fds.iterdir():
        try:
            if not os.readlink(entry).startswith("socket:"):
                continue
            candidate = socket.socket(fileno=os.dup(int(entry.name)))
        except (OSError, ValueError):
            continue
        try:
            listening = candidate.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if listening and candidate.getsockname()[1] == port:
                candidate.setblocking(False)
                return candidate
        except OSError:
            pass
        candidate.close()
    return None
