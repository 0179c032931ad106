"""The ASGI guard in front of every route: Host names, body size, API key, metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Match

from mtrec.serve.metrics import Metrics
from mtrec.serve.schemas import error

MAX_BODY_BYTES = 64 * 1024
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz"})
"""Routes that need no API key: the page, liveness and readiness."""
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Guard:
    """ASGI middleware: API key, body size and metrics, before any route runs."""

    def __init__(
        self,
        app: Any,
        api_key: str | None,
        max_body: int,
        metrics: Metrics,
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
        status = {"code": 500, "bytes": 0}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body":
                status["bytes"] += len(message.get("body", b""))
            await send(message)

        response = self._refuse(scope)
        try:
            if response is None and scope["method"] in ("POST", "PUT", "PATCH"):
                receive, too_large = await self._buffer(receive)
                if too_large:
                    response = error(413, "too_large", f"request body over {self.max_body} bytes")
            if response is not None:
                await response(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe(scope["method"], self._label(scope), status["code"], seconds)
            if ACCESS_LOG.isEnabledFor(logging.INFO):
                ACCESS_LOG.info(access_line(scope, status["code"], status["bytes"], seconds))

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
            # every Host header is checked: the dict keeps only the last one, and a proxy
            # may read the first
            hosts = [_host_name(v) for k, v in scope["headers"] if k == b"host"] or [""]
            if len(hosts) > 1:
                return error(400, "bad_host", f"{len(hosts)} Host headers: one is expected")
            if hosts[0] not in self.allowed_hosts:  # e.g. a DNS-rebinding page in a browser
                return error(400, "bad_host", f"host {hosts[0]!r} is not served here")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return error(413, "too_large", f"request body over {self.max_body} bytes")
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return None
        given = headers.get(b"authorization", b"")
        expected = b"Bearer " + self.api_key.encode()
        if not hmac.compare_digest(given, expected):
            return error(
                401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)"
            )
        return None


ACCESS_LOG = logging.getLogger("mtrec.access")
"""One line per request, as web servers write them (``mtrec serve --no-access-log``: none)."""


def access_line(scope: Scope, status: int, size: int, seconds: float) -> str:
    """The Common Log Format (client, time, request line, status, bytes) and the
    milliseconds taken: ``127.0.0.1 - - [08/Dec/2026:03:04:05 +0000] "GET /healthz
    HTTP/1.1" 200 15 0.4ms``. The target is the raw one, escaped: nothing a client
    sends can forge a line."""
    client = (scope.get("client") or ("-",))[0]
    target = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    shown = target.decode("ascii", "backslashreplace").replace('"', '\\"')
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    request = f"{scope['method']} {shown} HTTP/{scope.get('http_version', '1.1')}"
    return f'{client} - - [{when}] "{request}" {status} {size} {seconds * 1000:.1f}ms'


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
