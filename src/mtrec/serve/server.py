"""Running the app on uvicorn: one process or several workers, with deadlines for slow clients."""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import json
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI

try:  # uvicorn's faster parser, where its 'standard' extra installed httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
except ImportError:  # h11 comes with uvicorn itself
    from uvicorn.protocols.http.h11_impl import (  # type: ignore[assignment]
        H11Protocol as _HttpProtocol,
    )
from mtrec.errors import ArtifactError, ConfigError
from mtrec.runtime import tune_allocator_to_serve
from mtrec.serve.app import create_app
from mtrec.serve.guard import LOOPBACK_HOSTS

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's headers (from connecting or the last answer)."""


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
    tune_allocator_to_serve()
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
