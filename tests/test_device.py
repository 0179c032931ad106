"""Device plumbing: which device a run takes, the GPU loop's deferred loss reads (run on the
CPU through the same code), and what only a CUDA machine can check (skipped elsewhere)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.distributed import backend_for
from mtrec.errors import ConfigError, TrainingError
from mtrec.features import EncodedInteractions, Vocabs, encode, seen_items
from mtrec.index import ExactIndex
from mtrec.model import MultiTaskModel
from mtrec.runtime import on_a_spare_core, resolve_device, side_by_side
from mtrec.train import EpochStats, TrainingRecord, run_fingerprint, train
from mtrec.train.checkpoint import Checkpointing
from mtrec.train.setup import Run

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# every option that creates tensors of its own in a step: dropout, history tower, new-user
# draws, extra negatives, log-Q, accidental hits, liked-only positives, lazy AdamW
MODEL = ModelConfig(
    embedding_dim=8,
    head_layers=(16,),
    dropout=0.2,
    history=True,
    new_user_rate=0.1,
    rating_biases=True,
)
CONFIG = TrainConfig(
    epochs=2,
    batch_size=100,
    shuffle=True,
    seed=3,
    optimizer="adamw",
    learning_rate=0.01,
    weight_decay=0.05,
    extra_negatives=7,
    logq_correction=True,
    remove_accidental_hits=True,
    positive_min_rating=0.75,
    sparse_updates="on",
    precision="fp32",
)


@pytest.fixture()
def data(tiny_dir: Path) -> tuple[EncodedInteractions, Vocabs]:
    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    return encode(ds.interactions, vocabs), vocabs


def _model(data: tuple[EncodedInteractions, Vocabs]) -> MultiTaskModel:
    rows, vocabs = data
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), MODEL, seed=3)
    model.set_history(seen_items(rows, len(vocabs.users)))
    return model


class Recorder:
    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None: ...

    def step(self, losses: dict[str, float]) -> None:
        self.losses.append(losses)

    def end_epoch(self, stats: EpochStats) -> None: ...

    def finish(self, record: TrainingRecord) -> None: ...


@pytest.fixture()
def read_every_5(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accelerator loop's deferred loss reads, on the CPU."""
    monkeypatch.setattr(Run, "read_every", property(lambda self: 5))


def test_device_names_are_checked_and_a_missing_gpu_is_an_error() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "", "CUDA", "cpu:0"):
        with pytest.raises(ConfigError, match="expected auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)
    with pytest.raises(ConfigError, match=r"TrainConfig\.device: expected"):
        TrainConfig(device="tpu")
    assert TrainConfig(device="cuda:1").device == "cuda:1"  # checked where it trains
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        for spec in ("cuda", "cuda:0"):
            with pytest.raises(ConfigError, match="PyTorch sees no CUDA GPU here"):
                resolve_device(spec)
    else:
        with pytest.raises(ConfigError, match="does not exist here"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_the_backend_follows_the_device() -> None:
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 1)) == "nccl"


def test_an_explicit_cpu_run_is_the_default_run_and_the_device_is_not_the_runs_identity(
    data: tuple[EncodedInteractions, Vocabs],
) -> None:
    a, b = _model(data), _model(data)
    history = train(a, data[0], CONFIG)
    train(b, data[0], dataclasses.replace(CONFIG, device="cpu"))
    assert history.device == str(resolve_device("auto"))
    if history.device == "cpu":
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    n = len(data[0])
    other = dataclasses.replace(CONFIG, device="cuda:3")  # resumable on another device
    assert run_fingerprint(a, CONFIG, n) == run_fingerprint(a, other, n)
    assert all(p.device.type == "cpu" for p in a.parameters())  # back where serving reads


def test_reading_losses_every_few_batches_trains_the_same_model(
    data: tuple[EncodedInteractions, Vocabs], monkeypatch: pytest.MonkeyPatch
) -> None:
    every, deferred = Recorder(), Recorder()
    a, b = _model(data), _model(data)
    history_a = train(a, data[0], CONFIG, every)
    monkeypatch.setattr(Run, "read_every", property(lambda self: 5))
    history_b = train(b, data[0], CONFIG, deferred)
    assert len(every.losses) == 2 * 12 and deferred.losses == every.losses
    assert [e.loss for e in history_a.epochs] == [e.loss for e in history_b.epochs]
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.usefixtures("read_every_5")
def test_deferred_reads_name_the_batch_that_diverged(
    data: tuple[EncodedInteractions, Vocabs],
) -> None:
    model = _model(data)

    class Poison(Recorder):
        def step(self, losses: dict[str, float]) -> None:
            super().step(losses)
            if len(self.losses) == 15:  # read after batch 5 of epoch 2: batch 6 is nan
                with torch.no_grad():
                    model.user_embedding.weight[:] = float("nan")

    with pytest.raises(TrainingError, match=r"loss nan at epoch 2, batch 6 of 12 \(on cpu"):
        train(model, data[0], CONFIG, Poison())


@pytest.mark.usefixtures("read_every_5")
def test_deferred_reads_resume_from_a_checkpoint_to_the_same_weights(
    data: tuple[EncodedInteractions, Vocabs], tmp_path: Path
) -> None:
    whole = _model(data)
    history = train(whole, data[0], CONFIG)

    class Crash(Exception):
        pass

    class CrashAt(Recorder):
        def step(self, losses: dict[str, float]) -> None:
            super().step(losses)
            if len(self.losses) == 17:
                raise Crash

    every4 = Checkpointing(tmp_path, every_steps=4)
    with pytest.raises(Crash):
        train(_model(data), data[0], CONFIG, CrashAt(), every4)
    resumed = _model(data)
    again = train(resumed, data[0], CONFIG, checkpoints=dataclasses.replace(every4, resume=True))
    assert [e.loss for e in again.epochs] == pytest.approx([e.loss for e in history.epochs])
    for x, y in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(x, y)


@cuda
def test_training_on_cuda_matches_the_cpu_run(data: tuple[EncodedInteractions, Vocabs]) -> None:
    # no random draws in a step (dropout, new users): the same arithmetic on both devices,
    # up to the GPU's summation order
    plain = ModelConfig(embedding_dim=8, head_layers=(16,), history=True, new_user_rate=0.0)
    rows, vocabs = data
    models = []
    for device in ("cpu", "cuda"):
        model = MultiTaskModel(len(vocabs.users), len(vocabs.items), plain, seed=3)
        model.set_history(seen_items(rows, len(vocabs.users)))
        history = train(model, rows, dataclasses.replace(CONFIG, device=device))
        assert history.device.startswith(device)
        assert all(p.device.type == "cpu" for p in model.parameters())
        models.append(model)
    for name, x in models[0].state_dict().items():
        torch.testing.assert_close(x, models[1].state_dict()[name], atol=1e-4, rtol=1e-3)


@cuda
def test_the_exact_index_searches_on_cuda_like_on_the_cpu() -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((5000, 16)).astype(np.float32)
    queries = rng.standard_normal((2000, 16)).astype(np.float32)
    exclude = [np.array([0, 1, 2])] * 2000
    cpu = ExactIndex(items).search(queries, 10, exclude=exclude)
    gpu = ExactIndex(items, device="cuda").search(queries, 10, exclude=exclude)
    np.testing.assert_array_equal(cpu[1], gpu[1])
    np.testing.assert_allclose(cpu[0], gpu[0], rtol=1e-4)


def test_a_saved_model_records_the_device_that_ran_but_keeps_the_machine_out_of_its_config(
    tiny_dir: Path, tmp_path: Path
) -> None:
    from mtrec import artifact
    from mtrec.pipeline import train_model

    small = ModelConfig(embedding_dim=8, head_layers=(16,))
    saved = train_model(
        read_grouplens_dir(tiny_dir), small, TrainConfig(epochs=1, batch_size=100, device="cpu")
    )
    assert saved.metrics["device"] == "cpu"
    loaded = artifact.load(artifact.save(saved, tmp_path / "model"))
    assert loaded.train_config.device == "auto"  # retrains or warm-starts on any machine


def test_the_command_line_names_a_bad_or_missing_device_before_training(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_run import run_cli

    out = tmp_path / "model"
    base = ["train", "--data-dir", str(tiny_dir), "--preset", "reference", "-o", str(out), "-q"]
    assert run_cli([*base, "--device", "gpu"]) == 3
    assert "TrainConfig.device: expected auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err
    assert run_cli([*base, "--eval-users", "-1"]) == 3
    assert "--eval-users must be >= 0" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_cli([*base, "--device", "cuda"]) == 3
        assert "PyTorch sees no CUDA GPU here" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli([*base, "--device", "cpu", "--epochs", "1", "--eval-users", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["evaluated_users"]["users"] == 5


@pytest.fixture
def two_threads() -> Iterator[None]:
    """This process on two CPU threads for the test, whatever the machine has."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _job(position: int, fail: type[Exception] | None = None) -> Callable[[], tuple]:
    def run() -> tuple[int, int, str]:
        time.sleep(0.02 * (3 - position))  # the first ends last: the order is kept anyway
        if fail is not None:
            raise fail(f"job {position}")
        return position, torch.get_num_threads(), threading.current_thread().name

    return run


def test_side_by_side_shares_the_threads_and_keeps_the_order(two_threads: None) -> None:
    results, together = side_by_side([_job(n) for n in range(3)])
    assert together == 2
    assert [r[0] for r in results] == [0, 1, 2]
    assert {r[1] for r in results} == {1}  # one thread each, two jobs at once
    assert len({r[2] for r in results}) == 2 and threading.main_thread().name not in (
        r[2] for r in results
    )
    assert torch.get_num_threads() == 2  # restored
    torch.set_num_threads(1)  # one thread: one after the other, in this thread
    results, together = side_by_side([_job(n) for n in range(2)])
    assert together == 1 and {r[2] for r in results} == {threading.current_thread().name}


def test_side_by_side_starts_nothing_after_a_failure_and_raises_the_first(
    two_threads: None,
) -> None:
    ended: list[int] = []

    def slow(position: int, fail: type[Exception] | None = None) -> Callable[[], int]:
        def run() -> int:
            time.sleep(0.1)
            ended.append(position)
            if fail is not None:
                raise fail(f"job {position}")
            return position

        return run

    # job 1 fails while job 0 runs; job 0 ends, jobs 2 and 3 never start
    jobs = [slow(0, KeyError), _job(1, ValueError), slow(2), slow(3)]
    with pytest.raises(KeyError, match="job 0"):  # the first by position, though it ended last
        side_by_side(jobs)
    assert ended == [0] and torch.get_num_threads() == 2


@pytest.mark.parametrize("threads", [1, 2])
def test_spare_work_runs_on_a_spare_core_and_its_errors_are_dropped(
    two_threads: None, threads: int
) -> None:
    torch.set_num_threads(threads)
    ran: list[str] = []

    def broken() -> None:
        raise OSError("a failed warm-up is dropped")

    def spare() -> None:
        ran.append(threading.current_thread().name)

    on_a_spare_core(broken)
    on_a_spare_core(spare)

    def job() -> int:
        time.sleep(0.05)
        return 1

    assert side_by_side([job, job]) == ([1, 1], threads)
    for _ in range(100):  # one after the other, the spare work runs in its own thread
        if ran:
            break
        time.sleep(0.01)
    assert len(ran) == 1 and ran[0] != threading.main_thread().name
    assert ran[0].startswith("mtrec-side-by-side" if threads == 2 else "mtrec-spare")
