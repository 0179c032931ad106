"""The HTTP protocol the service runs on uvicorn with: a deadline and a size cap for
each request as it arrives, a bound on open connections, and connections accepted in
batches."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import resource
import socket
import struct
from pathlib import Path
from typing import Any, ClassVar

try:  # uvicorn's faster parser, where its 'standard' extra installed httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
except ImportError:  # h11 comes with uvicorn itself
    from uvicorn.protocols.http.h11_impl import (  # type: ignore[assignment]
        H11Protocol as _HttpProtocol,
    )
HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a whole request, headers and body (from connecting or the
last answer)."""
MAX_HEAD_BYTES = 65_536
"""Bytes a request's line and headers may take (httptools has no cap of its own; h11's
is uvicorn's 16 KiB): four connections sending endless headers within the deadline had
raised the server's memory by 374 MB."""
SPARE_DESCRIPTORS = 64
"""Descriptors kept free of client connections: the model files a reload opens, and the
listening socket's next accept (so a health check always gets in)."""


class HeaderDeadline(_HttpProtocol):
    """uvicorn's HTTP protocol with a deadline for each request as it arrives, a cap on its
    head, and a bound on this process's open connections.

    uvicorn times out only idle keep-alive connections, so a client sending a request a
    byte at a time held its connection for as long as it liked: 3,000 trickling headers
    were held for 30 s, and 1,100 trickling bodies took every descriptor of a 1,024-limit
    server, which then reset every new connection (health checks and reloads included).
    Now a request's headers and body must arrive within ``seconds``; its head may take
    ``MAX_HEAD_BYTES`` (431 beyond); and where the open connections reach the descriptor
    limit less ``SPARE_DESCRIPTORS``, a new one closes the connection that has waited
    longest for its request, so that an answerable client always gets in."""

    seconds = HEADER_TIMEOUT
    max_head = MAX_HEAD_BYTES
    _waiting: ClassVar[dict[HeaderDeadline, None]] = {}
    """This process's connections waiting for a request to arrive, oldest first."""
    _open: ClassVar[int] = 0
    _deadline: asyncio.TimerHandle | None = None
    _waiting_on: object = None
    """The request that was current when the deadline was armed."""
    _head = 0
    """Bytes of the request's head so far; -1 once it is complete (httptools only)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        HeaderDeadline._open += 1
        if HeaderDeadline._open > connection_bound():
            _close_oldest_waiting()
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head = 0
        self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        HeaderDeadline._open -= 1
        HeaderDeadline._waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()

    def data_received(self, data: bytes) -> None:
        reading_head = self._head >= 0
        super().data_received(data)
        if reading_head and self._head >= 0 and _COUNTS_HEADS:  # still in the head
            self._head += len(data)
            if self._head > self.max_head and not self.transport.is_closing():
                self.transport.write(_HEAD_TOO_LARGE)
                self.transport.close()

    def on_headers_complete(self) -> None:
        self._head = -1
        super().on_headers_complete()

    def _arm(self) -> None:
        # one pending deadline a connection: a timer per request would hold every finished
        # request for the deadline (measured: +297 MB over 830k requests at 9,000 a second)
        if self._deadline is not None:
            self._deadline.cancel()
        HeaderDeadline._waiting.pop(self, None)  # waiting from now: the newest
        HeaderDeadline._waiting[self] = None
        self._waiting_on = self.cycle  # no new cycle by the deadline: no headers came
        self._deadline = self.loop.call_later(self.seconds, self._expire)

    def arrived(self) -> bool:
        """Whether a whole request (head and body) has come since the deadline was armed."""
        cycle = self.cycle
        return cycle is not self._waiting_on and not getattr(cycle, "more_body", False)

    def _expire(self) -> None:
        self._deadline = None
        HeaderDeadline._waiting.pop(self, None)
        if not self.arrived() and not self.transport.is_closing():
            self.transport.close()


_COUNTS_HEADS = hasattr(_HttpProtocol, "on_headers_complete")
"""httptools reports a complete head (h11 caps heads itself)."""
_HEAD_TOO_LARGE_BODY = json.dumps(
    {"error": {"type": "headers_too_large", "message": f"headers over {MAX_HEAD_BYTES} bytes"}}
).encode()
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_HEAD_TOO_LARGE_BODY), _HEAD_TOO_LARGE_BODY)
)


@functools.cache
def connection_bound() -> int:
    """Client connections this process keeps open at most: its descriptor limit less
    ``SPARE_DESCRIPTORS`` (at least 16); read once, not at every connection."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft - SPARE_DESCRIPTORS) if soft != resource.RLIM_INFINITY else 1 << 30


def raise_descriptor_limit() -> None:
    """Raise this process's descriptor limit to its hard limit (at most 65,536): a
    1,024-descriptor default bounds a server to about a thousand clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):  # else it stays: connection_bound reads it
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    connection_bound.cache_clear()


def _close_oldest_waiting() -> None:
    """Close the connection that has waited longest for its request, if any waits."""
    for connection in list(HeaderDeadline._waiting):
        del HeaderDeadline._waiting[connection]
        if not connection.arrived() and not connection.transport.is_closing():
            connection.transport.close()
            return


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
