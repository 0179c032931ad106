"""``mtrec train``: check the flags, resolve the run config, train, write the model."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mtrec import artifact
from mtrec.artifact import SavedModel
from mtrec.cli.options import (
    DATA_FLAGS,
    AsJson,
    DeviceFlag,
    SplitKind,
    TestInteractions,
    key_int,
    load_data,
    takes_data,
    test_data,
)
from mtrec.cli.program import err, invocation, out, relaunch_with_torchrun
from mtrec.cli.render import ModelBar, metrics_line, progress_bars
from mtrec.config import (
    DATA_KEYS,
    RunConfig,
    effective_config,
    holdout_fraction,
    jsonable,
    refuse_preset_on_warm_start,
)
from mtrec.distributed import World, join_from_env, leave
from mtrec.errors import ConfigError
from mtrec.evaluate import EVAL_USERS
from mtrec.index import INDEX_KINDS, check_index_options
from mtrec.io import json_safe
from mtrec.pipeline import PHASE_LOG, train_model
from mtrec.report import write_train_report
from mtrec.runtime import resolve_device
from mtrec.train.checkpoint import Checkpointing
from mtrec.warm import REPLAY

CONFIG_FLAGS = (
    "retrieval_weight", "rating_weight", "epochs", "batch_size", "learning_rate",
    "embedding_dim", "seed", "shuffle", "precision", "device",
)  # fmt: skip
"""The flags that override the run config's model and training fields."""


@takes_data(after="replay")
def train_cmd(
    ctx: typer.Context,
    data_flags: dict[str, Any],
    config: Annotated[
        Path | None,
        typer.Option(  # help is Rich markup: a bracketed word is escaped to be shown
            help="A run config (TOML or JSON; a saved model's config.json too): the preset, "
            r"\[model], \[train], \[ranker], \[data] and \[index] settings; flags override it."
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(help="Print the effective config as JSON (a complete --config) and stop."),
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Warm start: continue this saved model on the given (new) interactions; known "
            "users and items keep their rows, new ones are appended; its config is the base."
        ),
    ] = None,
    replay: Annotated[
        float,
        typer.Option(
            help="With --init-from: the share of the saved model's own rows its rating head "
            "trains on again beside the new rows (0: the new rows alone); the lists learn "
            "from the new rows only."
        ),
    ] = REPLAY,
    split: SplitKind = "random",
    holdout: Annotated[
        str | None,
        typer.Option(
            help="Share of the rows held out to evaluate on, or 'none' to train on every row "
            "(a model to deploy: seen items and popularity from the whole log). Default 0.2."
        ),
    ] = None,
    holdout_estimate: Annotated[
        float | None,
        typer.Option(
            help="With --holdout none: first train the same config with this share held out "
            "and record its metrics in metrics.json as an estimate."
        ),
    ] = None,
    test_interactions: TestInteractions = None,
    eval_users: Annotated[
        int,
        typer.Option(
            help="Test users measured at most: a seeded sample above it (metrics.json "
            "says so); 0 measures every test user."
        ),
    ] = EVAL_USERS,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The model directory to write.")
    ] = Path("mtrec-out/model"),
    preset: Annotated[
        str | None,
        typer.Option(
            help="Named configuration the flags below override: default (the best measured: "
            "history-aware towers and a ranking stage), tuned, or reference (the tutorial's)."
        ),
    ] = None,
    retrieval_weight: Annotated[
        float | None, typer.Option(help="Weight of the retrieval loss.")
    ] = None,
    rating_weight: Annotated[
        float | None,
        typer.Option(
            "--rating-weight",
            "--ranking-weight",
            help="Weight of the rating loss (--ranking-weight: its old name, deprecated).",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    embedding_dim: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seeds split, initialisation, batch order.")
    ] = None,
    shuffle: Annotated[
        bool | None, typer.Option("--shuffle/--no-shuffle", help="Reshuffle each epoch.")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32 or bf16 training matmuls.")
    ] = None,
    device: DeviceFlag = None,
    index: Annotated[str, typer.Option(help="exact, faiss-hnsw or faiss-ivf.")] = "exact",
    index_option: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=INT for the index, repeatable: m, ef_construction, ef_search, nlist, nprobe."
        ),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Checkpoint here at each epoch's end (and --checkpoint-every)."),
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Also checkpoint every N batches.")
    ] = None,
    keep_checkpoints: Annotated[int, typer.Option(help="How many checkpoints to keep.")] = 3,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest valid checkpoint.")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Data-parallel processes on this machine (runs torchrun --standalone); "
            "under torchrun, leave it at 1."
        ),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: AsJson = False,
) -> None:
    """Train one multi-task model and write it, with its index, to a model directory."""
    checkpoints = _checked_flags(
        workers, eval_users, replay, checkpoint_dir, checkpoint_every, keep_checkpoints, resume
    )
    refuse_preset_on_warm_start(preset, init_from is not None)
    warm = None if init_from is None else artifact.load(init_from)
    saved_config = None if warm is None else artifact.config_document(warm)
    run = RunConfig.of(config, saved_config)  # then the flags over it
    given = {k: v for k, v in locals().items() if k in CONFIG_FLAGS}
    model_config, train_config, ranker = run.resolve(preset, **given)
    flags = run.data_settings({**data_flags, **locals()}, _given(ctx))
    index, index_params = _index_settings(ctx, run, index, index_option)
    if print_config:
        data_keys = {key: jsonable(flags[key]) for key in DATA_KEYS}
        index_keys = {"kind": index, "options": index_params}
        document = effective_config(model_config, train_config, ranker, data_keys, index_keys)
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    artifact.check_target(output)  # before the work, not after it
    where = _join(train_config.device)
    quiet = quiet or not where.is_main  # one voice: rank 0 reports progress and notices
    PHASE_LOG.setLevel(logging.WARNING if quiet else logging.NOTSET)
    data = load_data(**{k: v for k, v in flags.items() if k in DATA_FLAGS})
    test = None if flags["test_interactions"] is None else test_data(flags)
    test_fraction = holdout_fraction(flags["holdout"], test is not None, _given(ctx)("holdout"))
    bars = progress_bars(err)
    with contextlib.nullcontext() if quiet else bars:
        saved = train_model(
            data,
            model_config,
            train_config,
            split=flags["split"],
            test_fraction=test_fraction,
            test=test,
            estimate_fraction=flags["holdout_estimate"],
            index=index,
            index_params=index_params,
            progress=None if quiet else ModelBar(bars, "multi-task"),
            checkpoints=checkpoints,
            ranker=ranker,
            ranker_progress=None if quiet else ModelBar(bars, "ranker's stage one"),
            init_from=warm,
            replay=replay,
            eval_users=flags["eval_users"],
        )
    leave()
    if where.is_main:  # rank 0 writes the model and reports for every process
        _write_and_report(saved, output, as_json)


def _join(device: str) -> World:
    """This process's place in a data-parallel run (alone: the main one); a device that is
    not here fails before any work, and the backend follows the device."""
    resolve_device(device)
    where = join_from_env(device)
    if not where.is_main:
        logging.getLogger("mtrec").setLevel(logging.WARNING)
    return where


def _checked_flags(
    workers: int,
    eval_users: int,
    replay: float,
    checkpoint_dir: Path | None,
    checkpoint_every: int | None,
    keep_checkpoints: int,
    resume: bool,
) -> Checkpointing | None:
    """The flags that need no data checked before any work (a deprecated one named); the
    checkpointing they ask for. ``--workers N`` runs the same command under torchrun."""
    if any(a.split("=")[0] == "--ranking-weight" for a in invocation["argv"]):
        err.print("[yellow]--ranking-weight is deprecated: use --rating-weight[/yellow]")
    if workers > 1:
        relaunch_with_torchrun(workers)
    if workers < 1:
        raise ConfigError("--workers must be >= 1")
    if eval_users < 0:
        raise ConfigError("--eval-users must be >= 0 (0 measures every test user)")
    if not 0 <= replay <= 1:  # NaN too
        raise ConfigError(f"--replay: expected a share in [0, 1], got {replay}")
    if checkpoint_dir is None and (resume or checkpoint_every):
        raise ConfigError("--resume and --checkpoint-every need --checkpoint-dir")
    if keep_checkpoints < 1 or (checkpoint_every is not None and checkpoint_every < 1):
        raise ConfigError("--keep-checkpoints and --checkpoint-every must be >= 1")
    if checkpoint_dir is None:
        return None
    return Checkpointing(checkpoint_dir, checkpoint_every, keep_checkpoints, resume)


def _write_and_report(saved: SavedModel, output: Path, as_json: bool) -> None:
    """Save the model, then say what it measured (JSON or one line) and where the time
    went (``metrics.json``'s ``phases``, the save added)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtrec-report-") as drafts:
        report = write_train_report(saved.metrics, Path(drafts), _run_title(saved))
        path = artifact.save(saved, output, extras={p.name: p for p in report})
    phases = {**saved.metrics.get("phases", {}), "save": time.perf_counter() - started}
    if as_json:
        document = json_safe({"model": str(path), "metrics": saved.metrics})
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    m = saved.metrics
    seconds = f"trained in {m['fit_seconds']:.2f} s"
    if "epochs" in m:
        seconds += f" ({m['epochs']['ran']:g} of at most {m['epochs']['most']} epochs)"
    if "served" not in m:
        said = "every row trained, nothing held out to evaluate on"
        if "estimate" in m:
            said += f"; held-out estimate: {metrics_line(m['estimate'])}"
        out.print(f"{said}; {seconds}; index {m['index']['kind']}", highlight=False)
    else:
        out.print(f"{metrics_line(m)}; {seconds}; index {m['index']['kind']}", highlight=False)
    spent = ", ".join(f"{name} {took:.1f} s" for name, took in phases.items())
    out.print(f"[dim]time: {spent}[/dim]", highlight=False)
    out.print(f"[dim]wrote {path} (its report: {path / 'report.md'}, report.png)[/dim]")


def _run_title(saved: SavedModel) -> str:
    """The report's title: the data and the run's seed."""
    split = saved.data.get("split") or {}
    held = f"{split['kind']} split" if split.get("test_fraction") else "every row trained"
    return f"{saved.data.get('dataset', 'data')}, {held}, seed {saved.train_config.seed}"


def _given(ctx: typer.Context) -> Callable[[str], bool]:
    """Whether a flag was given on the command line (or its environment variable)."""

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")

    return given


def _index_settings(
    ctx: typer.Context, run: RunConfig, kind: str, options: list[str] | None
) -> tuple[str, dict[str, int]]:
    """The index kind and options: flags, else the config file's ``[index]``."""
    params = dict(key_int(option) for option in options or [])
    kind, params = run.index_settings(kind, params, _given(ctx)("index"))
    if kind not in INDEX_KINDS:
        raise ConfigError(f"--index: expected one of {list(INDEX_KINDS)}, got {kind!r}")
    check_index_options(kind, params)  # before the training, not after it
    return kind, params
