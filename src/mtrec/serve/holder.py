"""The live model, swapped whole on a reload, and the workers a reload reaches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi.concurrency import run_in_threadpool

from mtrec.errors import MtrecError
from mtrec.recommend import Recommender

log = logging.getLogger("mtrec.serve")


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


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or "" where
    that cannot be read: a pid is reused once its process is gone, its start time is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name may hold spaces


def register_worker(folder: Path) -> Path:
    """Register this worker in ``folder`` for reloads: its pid and its start time."""
    entry = folder / f"worker-{os.getpid()}"
    entry.write_text(process_start(os.getpid()))
    return entry


def signal_workers(folder: Path, signum: int) -> int:
    """Send ``signum`` to every other worker registered in ``folder``; how many got it.
    A registration whose process is gone, or whose pid now belongs to another process
    (a SIGKILLed worker leaves its file), is removed instead of signalled."""
    sent = 0
    for entry in folder.glob("worker-*"):
        pid = int(entry.name.removeprefix("worker-"))
        if pid == os.getpid():
            continue
        try:
            recorded = entry.read_text().strip()
        except OSError:
            continue
        if recorded != process_start(pid):
            entry.unlink(missing_ok=True)
            continue
        try:
            os.kill(pid, signum)
            sent += 1
        except ProcessLookupError:  # a worker that died without unregistering
            entry.unlink(missing_ok=True)
    return sent


async def reload_logged(holder: ModelHolder) -> None:
    try:
        await holder.reload()
    except Exception as exc:  # a task's exception must not go unretrieved
        log_failed_reload(holder, exc, "reload on SIGHUP")


def log_failed_reload(holder: ModelHolder, exc: Exception, what: str) -> None:
    # an MtrecError says what is wrong with the files; anything else is ours: the traceback
    log.error(
        "%s failed, keeping generation %d: %s",
        what,
        holder.generation,
        reason(exc),
        exc_info=not isinstance(exc, MtrecError),
    )


def reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, MtrecError) else f"internal error ({type(exc).__name__})"
