"""``mtrec data``: fetch a MovieLens release, synthesise a big log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mtrec.cli.options import CacheDir, DataDir, DatasetName
from mtrec.cli.program import out
from mtrec.data import load_movielens, synthesize
from mtrec.data.synth import synthesize_planted, write_parquet
from mtrec.evaluate.oracle import planted_lists


def data_fetch(
    data_dir: DataDir = None, cache_dir: CacheDir = None, dataset: DatasetName = "ml-100k"
) -> None:
    """Load a MovieLens dataset through the first source that works and cache it."""
    data = load_movielens(dataset, data_dir=data_dir, cache_dir=cache_dir)
    ev = data.interactions
    out.print(
        f"{data.name}: {len(ev):,} ratings, {len(data.user_ids()):,} users, "
        f"{len(data.item_ids()):,} items, from {data.source}",
        highlight=False,
        soft_wrap=True,
    )


def data_synth(
    output: Annotated[Path, typer.Option("--output", "-o", help="The Parquet file to write.")],
    interactions: Annotated[int, typer.Option(help="Rows.")] = 25_000_000,
    users: Annotated[int, typer.Option(help="Users.")] = 200_000,
    items: Annotated[int, typer.Option(help="Items.")] = 80_000,
    seed: Annotated[int, typer.Option(help="The same seed gives the same file.")] = 0,
    planted: Annotated[
        bool,
        typer.Option(
            help="Plant taste clusters in the choices (users pick items by popularity and "
            "taste), and report the oracle's recall@10 beside popularity's. Without it, "
            "choices follow activity and popularity alone (for throughput runs)."
        ),
    ] = False,
    clusters: Annotated[int, typer.Option(help="--planted: taste clusters.")] = 32,
    temperature: Annotated[
        float, typer.Option(help="--planted: taste's temperature (larger: popularity rules).")
    ] = 0.1,
    popularity_weight: Annotated[
        float, typer.Option(help="--planted: the exponent a of popularity^a in a choice.")
    ] = 0.5,
) -> None:
    """Write a synthetic log (power-law popularity, latent-factor ratings) for benchmarks."""
    start = time.perf_counter()
    if planted:
        log, truth = synthesize_planted(
            interactions,
            users,
            items,
            clusters=clusters,
            temperature=temperature,
            popularity_weight=popularity_weight,
            seed=seed,
        )
    else:
        log = synthesize(interactions, users, items, seed=seed)
    write_parquet(log, output)
    out.print(
        f"wrote {len(log):,} interactions ({users:,} users, {items:,} items) to {output} "
        f"in {time.perf_counter() - start:.1f} s",
        highlight=False,
    )
    if planted:
        report = planted_lists(log, truth)
        oracle, popular = report.oracle, report.popularity
        out.print(
            f"on mtrec train's split (random 0.2, seed 42; {report.users:,} of "
            f"{report.of_users:,} test users sampled): recall@10 oracle "
            f"{oracle['recall']:.4f} (NDCG {oracle['ndcg']:.4f}), popularity "
            f"{popular['recall']:.4f} (NDCG {popular['ndcg']:.4f})",
            highlight=False,
        )
