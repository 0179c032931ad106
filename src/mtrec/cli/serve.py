"""``mtrec serve``: the HTTP service, from the ``serve`` extra."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mtrec.cli.options import ModelDir
from mtrec.cli.program import err
from mtrec.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
"""uvicorn's log levels."""


def serve_cmd(
    model: ModelDir,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the API key (else MTREC_API_KEY).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    threads: Annotated[
        int, typer.Option(help="PyTorch threads (1 suits many small requests).")
    ] = 1,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name to answer besides loopback names and --host (repeat; '*': any). "
            "Others get 400, so a web page cannot reach the service through DNS rebinding."
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's headers and body.")
    ] = 10.0,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes sharing the port (default: the CPU cores, up to 4)."),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            help="A line per request on stdout (Common Log Format and milliseconds), at "
            "log level info or below."
        ),
    ] = True,
) -> None:
    """Serve recommendations over HTTP (JSON API, /docs, /metrics and a web page at /)."""
    try:
        from mtrec.serve import allowed_hosts, read_api_key, serve
    except ImportError as exc:
        raise ConfigError(
            "the service needs the 'serve' extra: bash scripts/setup.sh in a clone of "
            f"mtrec (or pip install -e '.[serve]' there) ({exc})"
        ) from None
    key = read_api_key(api_key_file, os.environ)
    if threads < 1:
        raise ConfigError(f"--threads: expected >= 1, got {threads}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: expected 0..65535, got {port}")
    if log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level: expected one of {list(LOG_LEVELS)}, got {log_level!r}")
    if not header_timeout > 0:
        raise ConfigError(f"--header-timeout: expected > 0 seconds, got {header_timeout}")
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        workers = min(cores or os.cpu_count() or 1, 4)
    if workers < 1:
        raise ConfigError(f"--workers: expected >= 1, got {workers}")
    err.print(
        f"serving {model} on http://{host}:{port}/ with {workers} worker(s) "
        f"({'API key required' if key else 'no API key: open to anyone who can reach the port'})",
        highlight=False,
    )
    serve(
        model,
        host=host,
        port=port,
        api_key=key,
        log_level=log_level,
        threads=threads,
        hosts=allowed_hosts(host, allowed_host or []),
        header_timeout=header_timeout,
        workers=workers,
        access_log=access_log,
    )
