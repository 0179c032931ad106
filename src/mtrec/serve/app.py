"""The app factory: the model, its routes, error handlers and guard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtrec.errors import ConfigError, UnknownIdError
from mtrec.serve.guard import MAX_BODY_BYTES, Guard
from mtrec.serve.holder import ModelHolder, register_worker, reload_logged
from mtrec.serve.metrics import Metrics
from mtrec.serve.routes import batch_slots, router
from mtrec.serve.schemas import error

log = logging.getLogger("mtrec.serve")


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
    metrics = Metrics(shared=supervised is not None)
    app = FastAPI(
        title="mtrec",
        version="1",
        summary="Retrieve, then rank: recommendations from one multi-task model.",
        lifespan=_lifespan(holder, supervised),
        docs_url=None,  # ours below: Swagger UI from a package, not a CDN
        redoc_url=None,
    )
    _add_docs(app)
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.supervised = supervised
    app.state.batch_slots = batch_slots()
    app.state.page_html = resources.files("mtrec").joinpath("page.html").read_text("utf-8")
    _add_error_handlers(app)
    # the routes themselves, not an included router: the guard labels a refused request
    # with its route's template, which FastAPI's lazily included routers do not expose
    app.router.routes.extend(router.routes)
    app.add_middleware(
        Guard,
        api_key=api_key,
        max_body=max_body,
        metrics=metrics,
        routes=app.router.routes,
        allowed_hosts=hosts,
    )
    return app


DOCS_ASSETS = "/docs-assets"
"""Where the Swagger UI's script and style are served from (the swagger-ui-bundle package)."""


def _add_docs(app: FastAPI) -> None:
    """``/docs`` that works offline: FastAPI's page fetches Swagger UI from a CDN, blank
    without the internet; here its files come from the ``swagger-ui-bundle`` package
    (the serve extra), or from the CDN where that is not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]
    except ImportError:
        local = False
    else:
        local = True
        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        openapi, title = app.openapi_url or "/openapi.json", "mtrec API"
        if not local:
            return get_swagger_ui_html(openapi_url=openapi, title=title)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=title,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def _lifespan(
    holder: ModelHolder, supervised: Path | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """SIGHUP reloads the model, as the admin route does (only where signals can be had);
    a worker registers in ``supervised`` so that a reload on one worker reaches the others,
    and removes the workers' shared folder on its way out if the supervisor has died."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(reload_logged(holder))
            )
        supervisor = os.getppid()
        registered = None if supervised is None else register_worker(supervised)
        # a reload signalled while this worker was still loading
        if registered is not None and holder.stale():
            await reload_logged(holder)
        yield
        if registered is not None:
            registered.unlink(missing_ok=True)
        if supervised is not None and os.getppid() != supervisor:  # it was killed: its
            shutil.rmtree(supervised.parent, ignore_errors=True)  # cleanup will not run

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is a JSON body ``{"error": {"type", "message"}}``; tracebacks stay in
    the server log."""

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, exc: UnknownIdError) -> JSONResponse:
        return error(404, "unknown_id", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(ConfigError)
    async def bad_value(request: Request, exc: ConfigError) -> JSONResponse:
        return error(422, "invalid", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return error(422, "invalid", "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, "internal", "internal error (logged on the server)")
