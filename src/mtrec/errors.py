"""mtrec's own exceptions: one hierarchy so the CLI and HTTP layers can map them."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

_SURFACE: contextvars.ContextVar[str] = contextvars.ContextVar("mtrec_surface", default="python")


def setting(flag: str, parameter: str) -> str:
    """How a message names a setting: the command line's ``flag`` under ``mtrec``, the
    Python ``parameter`` elsewhere (a Python caller cannot pass ``--user-col``)."""
    return flag if _SURFACE.get() == "cli" else parameter


@contextlib.contextmanager
def on_the_command_line() -> Iterator[None]:
    """Messages raised inside name the CLI's flags (``setting``)."""
    token = _SURFACE.set("cli")
    try:
        yield
    finally:
        _SURFACE.reset(token)


class MtrecError(Exception):
    """Base class for every error mtrec raises on purpose (bad input, missing data...)."""

    exit_code = 1


class DataError(MtrecError):
    """Input data is missing or malformed; names the file, line and field where known."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class SourceError(DataError):
    """Every data source was tried and none worked; the message lists each and why."""

    def __init__(self, dataset: str, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        lines = "; ".join(f"[{source}] {why}" for source, why in failures)
        super().__init__(f"could not load {dataset} from any source: {lines}")


class ConfigError(MtrecError):
    """A configuration value or key is invalid."""

    exit_code = 3


class UnknownIdError(MtrecError, KeyError):
    """An id is not in a vocabulary (and the caller asked for an error)."""

    exit_code = 4

    def __init__(self, vocab: str, raw_id: object) -> None:
        self.vocab = vocab
        self.raw_id = raw_id
        super().__init__(f"unknown {vocab} id {raw_id!r}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class TrainingError(MtrecError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit the run)."""

    exit_code = 6


class ArtifactError(MtrecError):
    """A saved file (cache, model) is missing, corrupt or from an unsupported version."""

    exit_code = 5
