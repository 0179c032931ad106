"""Running the app on uvicorn: one process or several workers, with deadlines for slow clients."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import signal
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from mtrec.errors import ArtifactError, ConfigError
from mtrec.runtime import tune_allocator_to_serve
from mtrec.serve.app import create_app
from mtrec.serve.guard import LOOPBACK_HOSTS
from mtrec.serve.protocol import (
    HEADER_TIMEOUT,
    BatchedAccept,
    HeaderDeadline,
    raise_descriptor_limit,
)


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
    access_log: bool = True,
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
    raise_descriptor_limit()  # the workers inherit it
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level}
    options |= {"access_log": False, "http": BatchedAccept}  # the guard writes ours
    options["log_config"] = logging_config(access_log and log_level in ("info", "debug", "trace"))
    if workers == 1:
        uvicorn.run(_worker_app(settings), **options)
        return
    metrics_dir = tempfile.mkdtemp(prefix="mtrec-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by each worker's client
    run_dir = Path(metrics_dir) / "workers"  # where workers register for reloads
    run_dir.mkdir()
    settings["run_dir"] = str(run_dir)
    settings["supervisor"] = os.getpid()
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


def logging_config(access_log: bool) -> dict[str, Any]:
    """uvicorn's logging, and the guard's access lines (``mtrec.access``) on stdout, one
    line each with nothing added (each worker applies it as it starts)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["mtrec_access"] = {"format": "%(message)s"}
    config["handlers"]["mtrec_access"] = {
        "formatter": "mtrec_access",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["mtrec.access"] = {
        "handlers": ["mtrec_access"],
        "level": "INFO" if access_log else "WARNING",
        "propagate": False,
    }
    return config


def worker_app() -> FastAPI:
    """The app of one of several worker processes, from the supervisor's settings."""
    settings = json.loads(Path(os.environ[_WORKER_SETTINGS]).read_text(encoding="utf-8"))
    run_dir = Path(settings["run_dir"])
    _end_with_supervisor(int(settings["supervisor"]))
    return _worker_app(settings, supervised=run_dir)


def _end_with_supervisor(supervisor: int) -> None:
    """Stop this worker when its supervisor dies (the worker's shutdown then removes the
    folder the workers share: ``app``): a SIGKILLed supervisor had left its workers
    holding the port, and their settings (the API key) behind."""
    _ask_for_sigterm_on_parent_death()
    if os.getppid() != supervisor:  # it died before the request above took hold
        raise SystemExit(0)


def _ask_for_sigterm_on_parent_death() -> None:
    """Linux's PR_SET_PDEATHSIG (SIGTERM: uvicorn's graceful shutdown); elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
