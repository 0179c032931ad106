"""Fault injection: SIGKILL `mtrec train` at random points, resume, compare with a clean run.

1. Trains once without interruption (no checkpoints at all): the reference weights.
2. Trains again with ``--checkpoint-dir --checkpoint-every N --resume``, killing the
   process with SIGKILL ``--kills`` times: each kill comes a random 0-200 ms
   (``--max-delay-ms``) after the run has passed one of ``--kills`` checkpoint
   positions drawn at random over the whole run,
   so it lands anywhere in a step, in an optimizer update or while a checkpoint is
   being written. After each kill the
   same command is started again and resumes.
3. The final ``model.safetensors`` must equal the reference tensor for tensor, and the
   evaluation metrics must be the same.

    python tests/faults/kill_resume.py                      # MovieLens-100K, 5 kills
    python tests/faults/kill_resume.py --data-dir DIR --kills 2 --epochs 4

Exits 0 when every run matches, 1 otherwise; prints one line per kill.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

POSITION = re.compile(r"^ckpt-e(\d+)-s(\d+)\.safetensors$")


def newest_position(directory: Path) -> tuple[int, int]:
    found = [
        (int(m.group(1)), int(m.group(2)))
        for p in directory.glob("ckpt-*")
        if (m := POSITION.match(p.name))
    ]
    return max(found, default=(0, 0))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--every", type=int, default=5, help="checkpoint every N batches")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument(
        "--data-dir", type=Path, help="GroupLens-format directory (default: MovieLens-100K)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seeds where the kills land")
    ap.add_argument("--max-delay-ms", type=float, default=200, help="kill up to this long after")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mtrec-faults-"))
    base = [
        sys.executable,
        "-m",
        "mtrec",
        "train",
        "--quiet",
        "--shuffle",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        "3",
        "--precision",  # auto decides by timing: pinned, as the runs must match bit for bit
        "fp32",
    ]
    if args.data_dir:
        base += ["--data-dir", str(args.data_dir)]
    # every epoch runs (the default stops once its list stops improving: on small data
    # that can be before the kills land)
    every_epoch = work / "every-epoch.toml"
    every_epoch.write_text("[ranker]\nmin_gain = 0.0\n")
    base += ["--config", str(every_epoch)]

    subprocess.run([*base, "-o", str(work / "reference")], check=True, capture_output=True)
    reference = load_file(str(work / "reference" / "model.safetensors"))
    ref_metrics = json.loads((work / "reference" / "metrics.json").read_text())

    ckpt = work / "checkpoints"
    run = [
        *base,
        "-o",
        str(work / "resumed"),
        "--checkpoint-dir",
        str(ckpt),
        "--checkpoint-every",
        str(args.every),
        "--keep-checkpoints",
        "2",
        "--resume",
    ]
    ckpt.mkdir()
    n_train = json.loads((work / "reference" / "config.json").read_text())["data"]["split"][
        "n_train"
    ]
    n_batches = -(-n_train // args.batch_size)
    positions = [
        (e, s) for e in range(1, args.epochs + 1) for s in range(args.every, n_batches, args.every)
    ]
    positions = sorted(positions + [(e, 0) for e in range(2, args.epochs + 1)])  # + epoch ends
    targets = sorted(rng.sample(positions, args.kills))
    kills = 0
    for target in targets:
        if newest_position(ckpt) >= target:  # an earlier kill landed past it: take the next one
            target = next((p for p in positions if p > newest_position(ckpt)), positions[-1])
        proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and newest_position(ckpt) < target:
            time.sleep(0.002)
        delay = rng.uniform(0, args.max_delay_ms / 1000)
        time.sleep(delay)
        if proc.poll() is not None:
            print(f"the run finished before kill {kills + 1} could land: give it more --epochs")
            return 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        at = f"epoch {target[0]}, batch {target[1]}"
        print(f"kill {kills}: SIGKILL {delay * 1000:.0f} ms after the checkpoint at {at}")
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr)
        return 1
    resumed = load_file(str(work / "resumed" / "model.safetensors"))
    res_metrics = json.loads((work / "resumed" / "metrics.json").read_text())
    same_weights = reference.keys() == resumed.keys() and all(
        torch.equal(reference[k], resumed[k]) for k in reference
    )
    same_metrics = all(
        ref_metrics[k] == res_metrics[k] for k in ("top_k_accuracy", "rmse", "rmse_stars")
    )
    print(
        f"{kills} kills; final weights identical to the uninterrupted run: {same_weights}; "
        f"metrics identical: {same_metrics} (top-10 {res_metrics['top_k_accuracy']:.6f}, "
        f"RMSE {res_metrics['rmse']:.6f})"
    )
    return 0 if same_weights and same_metrics else 1


if __name__ == "__main__":
    sys.exit(main())
