"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint holds the model weights, the optimizer's accumulators, the shuffling
generator's state at the start of the epoch in progress, the position in that epoch
(batches done) and the losses summed so far: resuming from it replays exactly the
batches an uninterrupted run would have seen, so the final weights are identical.

Each is one safetensors file (tensors, plus JSON metadata in its header), written to a
temporary file, fsynced and renamed into place; it carries a SHA-256 of its contents,
so a truncated or bit-flipped file is detected and skipped in favour of an older one.
Only the newest ``keep`` are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from mtrec.errors import TrainingError
from mtrec.io import atomic_path

log = logging.getLogger("mtrec.train.checkpoint")
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.safetensors$")
FORMAT = "1"


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Where and how often ``train`` checkpoints; a run option, not a hyperparameter."""

    directory: Path
    every_steps: int | None = None
    """Also checkpoint every N batches within an epoch (always at each epoch's end)."""
    keep: int = 3
    """How many of the newest checkpoints to keep."""
    resume: bool = False
    """Continue from the newest valid checkpoint in ``directory``, if there is one."""


@dataclasses.dataclass
class TrainState:
    """A run's position: ``step`` batches of epoch ``epoch`` (1-based) are done."""

    epoch: int
    step: int
    model: dict[str, torch.Tensor]
    accumulators: list[torch.Tensor]
    epoch_rng: torch.Tensor
    """The shuffling generator's state at the start of ``epoch``."""
    sums: list[float]
    history: list[dict[str, Any]]
    fingerprint: str
    """Identifies the run (configs and data size): a checkpoint resumes only its own run."""
    global_rng: torch.Tensor | None = None
    """The state of the generator dropout and new-user rows draw from (the model's
    ``draws``) when the checkpoint was taken. Written by versions that drew from PyTorch's
    global generator, seeded alike, it was that one's: the same stream, so they resume."""


def _digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(settings: Checkpointing, state: TrainState) -> Path:
    """Write ``state`` atomically and prune all but the newest ``settings.keep``."""
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in state.model.items()}
    tensors |= {f"optim/{i}": a.contiguous() for i, a in enumerate(state.accumulators)}
    tensors["rng/epoch_start"] = state.epoch_rng
    if state.global_rng is not None:
        tensors["rng/global"] = state.global_rng
    meta = {
        "format": FORMAT,
        "epoch": str(state.epoch),
        "step": str(state.step),
        "sums": json.dumps(state.sums),
        "history": json.dumps(state.history),
        "fingerprint": state.fingerprint,
    }
    meta["sha256"] = _digest(tensors, meta)
    path = settings.directory / f"ckpt-e{state.epoch:04d}-s{state.step:06d}.safetensors"
    with atomic_path(path) as tmp:
        tmp.write_bytes(save_bytes(tensors, metadata=meta))
    for old in list_checkpoints(settings.directory)[settings.keep :]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest position first."""
    if not directory.is_dir():
        return []
    found = [(m, p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    found.sort(key=lambda mp: (int(mp[0].group(1)), int(mp[0].group(2))), reverse=True)
    return [p for _, p in found]


def read_checkpoint(path: Path) -> TrainState:
    """Load and verify one checkpoint; ``ValueError`` says what is wrong with it."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise ValueError(f"unreadable ({exc})") from None
    expected = meta.pop("sha256", None)
    if meta.get("format") != FORMAT or expected is None or _digest(tensors, meta) != expected:
        raise ValueError("checksum or format does not match (truncated or corrupt)")
    n_optim = sum(1 for k in tensors if k.startswith("optim/"))
    return TrainState(
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        model={k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")},
        accumulators=[tensors[f"optim/{i}"] for i in range(n_optim)],
        epoch_rng=tensors["rng/epoch_start"],
        sums=json.loads(meta["sums"]),
        history=json.loads(meta["history"]),
        fingerprint=meta["fingerprint"],
        global_rng=tensors.get("rng/global"),
    )


def load_latest(settings: Checkpointing, fingerprint: str) -> tuple[TrainState, Path] | None:
    """The newest checkpoint of this run that verifies; corrupt ones are skipped with a warning.

    Temporary files left by a run killed while writing are removed first.
    """
    if settings.directory.is_dir():
        for stale in settings.directory.glob(".ckpt-e*.safetensors.*.tmp"):
            stale.unlink(missing_ok=True)
    for path in list_checkpoints(settings.directory):
        try:
            state = read_checkpoint(path)
        except (ValueError, KeyError) as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
            continue
        if state.fingerprint != fingerprint:
            raise TrainingError(
                f"{path}: a checkpoint of another run (other settings or data); resume with the "
                "same settings, or use another --checkpoint-dir"
            )
        return state, path
    return None
