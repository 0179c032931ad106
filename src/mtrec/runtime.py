"""Process-level settings: the allocator the command-line tool tunes once at start, the
device a run trains on, and how independent runs share the CPU's cores."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from mtrec.errors import ConfigError

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc on Linux (whose ``mallopt`` these settings are)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS.

    Training allocates and frees (batch x batch) tensors of a few MB every step. By
    default glibc serves those with fresh ``mmap`` calls whose pages fault in on first
    touch, so each step pays for zeroing memory it just gave back: ``mtrec compare``
    took 96k-283k minor page faults and 3.5-3.7 s, against 78k and 3.35 s with this
    setting (``/usr/bin/time``, this 2-core machine).

    Data columns (hundreds of MB at 25M rows) stay above the threshold, so they are
    mapped and unmapped on their own: with a 256 MB threshold they came from the heap and
    fragmented it, and ``mtrec train`` on 25M rows peaked at 7.98 GB RSS; with 32 MB,
    4.79 GB, the same metrics and no slower training (65.5 s against 69.2 s an epoch),
    while ``mtrec compare`` keeps its ~80k faults. Returns whether it applied (glibc on
    Linux only; elsewhere it does nothing).
    """
    libc = _glibc()
    if libc is None:
        return False
    # blocks below 32 MB come from the heap, and up to 256 MB of freed ones stay there
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    ok &= libc.mallopt(_M_TOP_PAD, 64 << 20)
    return bool(ok)


_M_ARENA_MAX = -8


def tune_allocator_to_serve() -> bool:
    """A service's allocator: two arenas, and freed blocks over 32 MB given back.

    The request threads each grew a glibc arena of their own and kept what a large batch
    had freed: eight maximal batch requests at once left the service 572 MB larger after
    they had been answered (peak +736 MB); with this, +145-290 MB (peak +549-599 MB, four runs)
    (``benchmarks/serve_batch_memory.py``, ML-100K's default model). Returns whether it
    applied (glibc on Linux only)."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_ARENA_MAX, 2)
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 32 << 20)
    return bool(ok)


def give_back_freed_memory() -> None:
    """Return what a large piece of work freed to the OS: a full collection (which also
    empties the interpreter's free lists, whose few objects otherwise pin whole 1 MiB
    object arenas), then glibc's ``malloc_trim`` (free pages inside the heap).

    Eight maximal batch requests at once left the service 150-220 MB larger after they
    were answered; with this after each, +54-66 MB (``benchmarks/serve_batch_memory.py``,
    ML-100K's default model, 2-core AMD EPYC)."""
    import gc

    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


DEVICE_SPEC = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
"""What ``--device`` accepts."""


def check_device_spec(spec: str) -> None:
    """Reject a device name mtrec does not train on, without asking what this machine has
    (a saved config must load on a machine without the GPU it names)."""
    if not isinstance(spec, str) or not DEVICE_SPEC.fullmatch(spec):
        raise ConfigError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}")


def local_rank() -> int:
    """This process's index on its machine under ``torchrun`` (0 when alone)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(spec: str) -> torch.device:
    """The device a run trains on. ``auto``: a CUDA GPU where PyTorch sees one (under
    torchrun, the process's own by ``LOCAL_RANK``), else the CPU. Apple's ``mps`` is
    taken only when named: it lacks the sparse tensors mtrec's large-table updates use.
    A named device that is not here is an error, never a silent fall back to the CPU."""
    check_device_spec(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps': this PyTorch build or machine has no MPS device")
        return torch.device("mps")
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        raise ConfigError(
            f"device {spec!r}: PyTorch sees no CUDA GPU here (its CUDA version: {build}); "
            "use --device cpu, or auto to take a GPU only where there is one"
        )
    index = int(spec.partition(":")[2] or local_rank())
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {spec!r}: cuda:{index} does not exist here "
            f"({torch.cuda.device_count()} CUDA device(s))"
        )
    return torch.device("cuda", index)


def move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a CUDA copy goes through pinned memory without blocking
    the host, so the next batch is gathered while this one trains."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


T = TypeVar("T")
Q = TypeVar("Q")

_SPARE_WORK: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()


def on_a_spare_core(task: Callable[[], object]) -> None:
    """Have ``task`` run when a core is spare: by the first ``side_by_side`` worker left
    without a job (the last job's tail leaves a core idle), or in a background thread
    while jobs run one after the other (their kernels leave the GIL free). For work whose
    only use is to save time later, such as an import: its errors are dropped, and the
    later use raises them."""
    _SPARE_WORK.put(task)


def _drained(items: queue.SimpleQueue[Q]) -> Iterator[Q]:
    """``items``' entries until it is empty, taken one at a time (other threads take too)."""
    while True:
        try:
            yield items.get_nowait()
        except queue.Empty:
            return


def _run_spare_work() -> None:
    for task in _drained(_SPARE_WORK):
        with contextlib.suppress(Exception):
            task()


def side_by_side(jobs: Sequence[Callable[[], T]], at_once: bool = True) -> tuple[list[T], int]:
    """Run independent CPU jobs at once, this process's CPU threads shared among them; each
    job's result in order, and how many ran at once (1: one after the other, as they do
    without ``at_once``).

    PyTorch's kernels on small tensors gain little from a second thread: ``mtrec
    compare``'s three models on ML-100K trained in 8.3 s on one thread and 5.3 s on two,
    and in 4.6 s side by side on one thread each, with the same losses to the last bit
    (2-core AMD EPYC). Jobs are taken in the order given as workers free up, so the
    longest should come first. They must not draw from the global random generator
    (threads would interleave their draws) nor change process settings. The thread
    count is restored after. After a failure no job starts; the first one's (by position)
    is raised once the running jobs have ended. The workers are daemon threads, so an
    interrupt does not wait for them. Work left by ``on_a_spare_core`` runs as the jobs
    end.
    """
    total = torch.get_num_threads()
    workers = min(len(jobs), total) if at_once else 1
    if workers < 2:
        if not _SPARE_WORK.empty():
            threading.Thread(target=_run_spare_work, name="mtrec-spare", daemon=True).start()
        return [job() for job in jobs], 1
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for position in range(len(jobs)):
        todo.put(position)
    results: dict[int, T] = {}
    failures: dict[int, BaseException] = {}

    def work() -> None:
        for position in _drained(todo):
            if failures:  # one failed: start nothing more
                return
            try:
                results[position] = jobs[position]()
            except BaseException as error:  # raised in the caller's thread
                failures[position] = error
        _run_spare_work()

    torch.set_num_threads(max(1, total // workers))  # a new thread takes this count
    try:
        threads = [
            threading.Thread(target=work, name=f"mtrec-side-by-side-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(total)
    if failures:
        raise failures[min(failures)]
    return [results[position] for position in range(len(jobs))], workers
