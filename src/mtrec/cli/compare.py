"""``mtrec compare`` and ``mtrec sweep``: the reference's weightings, and the tasks' trade-off."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mtrec.cli.options import (
    AsJson,
    DeviceFlag,
    ResultsDir,
    SplitKind,
    load_data,
    parse_seed,
    takes_data,
)
from mtrec.cli.program import err, out
from mtrec.cli.render import ModelBar, print_compare, progress_bars
from mtrec.config import preset as make_preset
from mtrec.config import ranker_preset
from mtrec.errors import ConfigError
from mtrec.experiments import compare_seeds, sweep
from mtrec.plots import preload_plotting
from mtrec.report import TOP_K_REFERENCE, TOP_K_UNSEEN, write_outputs, write_sweep


@takes_data()
def compare_cmd(
    data_flags: dict[str, Any],
    split: SplitKind = "random",
    output: ResultsDir = Path("mtrec-out/compare"),
    preset: Annotated[
        str, typer.Option(help="reference (the tutorial), tuned or default.")
    ] = "reference",
    seed: Annotated[
        int, typer.Option(help="Seeds the split, initialisation and batch order.")
    ] = 42,
    seeds: Annotated[
        str | None, typer.Option(help="Several seeds, e.g. 42,1,2: mean and std are reported.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per model.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Rows per batch (the in-batch negatives).")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    embedding_dim: Annotated[int | None, typer.Option(help="Width of both towers.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="Training matmuls: auto (bf16 on CPUs with native bf16), fp32, bf16."),
    ] = None,
    device: DeviceFlag = None,
    user: Annotated[
        str | None,
        typer.Option(help="User whose retrieve-then-rank list is shown (default 5, or the first)."),
    ] = None,
    baselines: Annotated[
        bool, typer.Option(help="Also evaluate popularity, EASE and the global mean.")
    ] = False,
    ease_lambda: Annotated[float, typer.Option(help="L2 weight of the EASE baseline.")] = 500.0,
    k: Annotated[int, typer.Option("-k", "--k", help="List length for the lists table.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json to stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train the three weightings (rating, retrieval, multi-task) and compare them."""
    model_config, train_config = make_preset(
        preset,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        embedding_dim=embedding_dim,
        precision=precision,
        device=device,
    )
    if k < 1:  # before the training, not after it
        raise ConfigError(f"-k: expected a list length >= 1, got {k}")
    seed_list = [seed] if seeds is None else [parse_seed(s) for s in seeds.split(",")]
    preload_plotting()
    data = load_data(**data_flags)
    bars = progress_bars(err)
    with contextlib.nullcontext() if quiet else bars:
        result = compare_seeds(
            data,
            seed_list,
            model_config=model_config,
            train_config=train_config,
            user_id=user,
            progress=None if quiet else (lambda name: ModelBar(bars, name)),
            baselines=baselines,
            ease_lambda=ease_lambda,
            split=split,
            ranker=ranker_preset(preset),
            k=k,
        )
    paths = write_outputs(result, output)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    print_compare(result, preset)
    out.print(f"[dim]wrote {', '.join(str(p) for p in paths)}[/dim]")


@takes_data()
def sweep_cmd(
    data_flags: dict[str, Any],
    split: SplitKind = "random",
    output: ResultsDir = Path("mtrec-out/sweep"),
    preset: Annotated[str, typer.Option(help="reference or tuned.")] = "tuned",
    weights: Annotated[
        str, typer.Option(help="Retrieval weights, comma-separated (ranking 1).")
    ] = ("0.1,0.3,1,2,4,10"),
    seed: Annotated[int, typer.Option(help="Seeds split, initialisation, batch order.")] = 42,
    learned: Annotated[bool, typer.Option(help="Also learn the weights (Kendall et al.).")] = True,
    as_json: AsJson = False,
) -> None:
    """Trade-off of the two tasks: the multi-task model over a grid of retrieval weights."""
    model_config, train_config = make_preset(preset)
    try:
        grid = [float(w) for w in weights.split(",")]
    except ValueError:
        raise ConfigError(
            f"--weights: expected numbers separated by commas, got {weights!r}"
        ) from None
    preload_plotting()
    data = load_data(**data_flags)
    points = sweep(
        data,
        grid,
        seed=seed,
        model_config=model_config,
        train_config=train_config,
        learned=learned,
        split=split,
    )
    paths = write_sweep(points, output, f"{data.name}, preset {preset}, seed {seed}")
    if as_json:
        sys.stdout.write((output / "sweep.json").read_text())
        return
    table = Table(
        title=f"{data.name}, preset {preset}, seed {seed}: retrieval weight (rating weight 1)"
    )
    for col in ("model", TOP_K_REFERENCE, TOP_K_UNSEEN, "RMSE", "Pareto", "training s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for p in points:
        table.add_row(
            p.name,
            f"{p.top_k_accuracy:.4f}",
            f"{p.honest_top_k_accuracy:.4f}",
            f"{p.rmse:.4f}",
            "yes" if p.pareto else "",
            f"{p.train_seconds:.1f}",
        )
    out.print(table)
    out.print(f"[dim]wrote {', '.join(str(p) for p in paths)}[/dim]")
