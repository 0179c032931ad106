"""The training matmuls' precision: bf16 only where this machine runs it clearly faster."""

from __future__ import annotations

import platform
import time

import torch

from mtrec.config import TrainConfig
from mtrec.distributed import world
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel, RetrievalOptions
from mtrec.train.batches import device_batch, wait_for


def native_bf16(device: torch.device | None = None) -> bool:
    """Whether ``device`` (default: the CPU) has bfloat16 matmuls in hardware: AVX512-BF16
    or AMX-BF16 on a CPU, bf16 support on a CUDA GPU (Ampere and later).

    Without them bf16 matmuls are emulated and slower than float32, so ``auto`` would
    only lose accuracy.
    """
    if device is not None and device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device is not None and device.type != "cpu":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_MARGIN = 0.8
"""``auto`` picks bf16 only when its steps take at most this share of fp32's: close calls
stay fp32 (exact, and the same choice run after run: at 0.9 the default preset's model,
0.89 here, flipped between runs)."""


BF16_MIN_STEP = 1e-3
"""Seconds: an fp32 step faster than this stays fp32 (nothing to gain, only noise)."""


def choose_precision(
    model: MultiTaskModel, data: EncodedInteractions, config: TrainConfig, options: RetrievalOptions
) -> tuple[torch.dtype | None, str]:
    """The training matmul dtype and why. ``auto`` on a device with native bf16 matmuls
    times training steps (forward and backward on the first batch, alternating fp32 and
    bf16, a few tens of milliseconds) and takes bf16 only where it is clearly faster
    (``BF16_MARGIN``) on steps long enough to matter (``BF16_MIN_STEP``): on
    some CPUs with AVX512-BF16 but no AMX it is slower than fp32. Nothing of the trial
    stays (gradients cleared, the random state restored); data-parallel processes decide
    together."""
    if config.precision != "auto":
        dtype = torch.bfloat16 if config.precision == "bf16" else None
        return dtype, f"{config.precision}, as configured"
    device = model.user_embedding.weight.device
    if not native_bf16(device):
        what = "this CPU has no native bf16 instructions"
        return None, f"auto: fp32 ({what if device.type == 'cpu' else f'no bf16 on {device}'})"
    fp32, bf16 = _time_steps(model, data, config, options)
    said = f"bf16 steps {bf16 * 1e3:.1f} ms, fp32 {fp32 * 1e3:.1f} ms (median, timed at start)"
    if bf16 <= BF16_MARGIN * fp32 and fp32 >= BF16_MIN_STEP:
        return torch.bfloat16, f"auto: bf16 ({said})"
    why = "bf16 not faster by 20%" if fp32 >= BF16_MIN_STEP else "steps too short to gain"
    return None, f"auto: fp32 ({said}: {why})"


def _time_steps(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    options: RetrievalOptions,
    rounds: int = 8,
) -> tuple[float, float]:
    """Median seconds of one training step's forward and backward in fp32 and in bf16."""
    device = model.user_embedding.weight.device
    batch = device_batch(data, slice(0, min(config.batch_size, len(data))), device)
    weights = (config.retrieval_weight, config.rating_weight)
    draws = model.draws.get_state() if model.draws is not None else None  # must not shift
    times: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    try:
        for n in range(rounds + 1):
            for dtype in (None, torch.bfloat16) if n % 2 else (torch.bfloat16, None):
                wait_for(device)
                started = time.perf_counter()
                model.loss(*batch, *weights, dtype, options).total.backward()  # type: ignore[no-untyped-call]
                wait_for(device)  # a GPU runs asynchronously: time the work, not its launch
                if n:  # the first round warms both up
                    times[dtype].append(time.perf_counter() - started)
                model.zero_grad(set_to_none=True)
    finally:
        if draws is not None and model.draws is not None:
            model.draws.set_state(draws)
    medians = torch.tensor(
        [sorted(t)[len(t) // 2] for t in times.values()], dtype=torch.float64, device=device
    )
    if world().size > 1:  # every process takes the same precision
        torch.distributed.all_reduce(medians)
    return float(medians[0]), float(medians[1])
