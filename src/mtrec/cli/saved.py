"""Commands that read a saved model: ``evaluate``, ``recommend`` and ``similar``."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mtrec import artifact
from mtrec.cli.options import (
    AsJson,
    ModelDir,
    TestInteractions,
    load_data,
    takes_data,
    test_data,
)
from mtrec.cli.program import err, out
from mtrec.cli.render import finite, num, print_lists
from mtrec.data.values import DECIMAL
from mtrec.errors import ConfigError
from mtrec.io import json_safe
from mtrec.pipeline import evaluate_saved_on, evaluate_saved_with_lists
from mtrec.recommend import Recommender, write_all_users


def parse_history(text: str) -> list[tuple[str, float | None]]:
    """``ITEM[:RATING],...`` -> (item id as typed, rating or None); a bad entry is named."""
    entries: list[tuple[str, float | None]] = []
    for position, entry in enumerate(text.split(","), start=1):
        item, sep, rating = entry.strip().partition(":")
        if not item or (sep and not rating.strip()):
            raise ConfigError(
                f"--history entry {position} ({entry!r}): expected ITEM or ITEM:RATING"
            )
        value = _rating(rating) if sep else None
        if sep and value is None:
            raise ConfigError(
                f"--history entry {position} ({entry!r}): rating {rating!r} is not a number"
            )
        entries.append((item, value))
    return entries


_DECIMAL = re.compile(DECIMAL, re.ASCII)
"""A rating as typed: ASCII digits only (``float`` also reads "٥" as 5, and "nan")."""


def _rating(text: str) -> float | None:
    """``text`` as a finite number, or None where it is not one."""
    return float(text) if _DECIMAL.fullmatch(text) else None


@takes_data(after="model")
def evaluate_cmd(
    model: ModelDir,
    data_flags: dict[str, Any],
    test_interactions: TestInteractions = None,
    k: Annotated[int, typer.Option("-k", "--k", help="List length for the lists table.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Re-evaluate a saved model on its own split (rebuilt from the same data and checked),
    or on a test file of its own: its metrics, and the list it serves beside retrieval
    alone, popularity and EASE."""
    saved = artifact.load(model)
    unseen = None
    if test_interactions is not None:
        if data_flags["interactions"] is not None:
            raise ConfigError("evaluate: give --interactions (its split) or --test-interactions")
        test = test_data({**data_flags, "test_interactions": test_interactions})
        evaluation = evaluate_saved_on(saved, test, k=k)
        report, lists, unseen = evaluation.report, evaluation.lists, evaluation.unseen.to_dict()
    else:
        data = load_data(**data_flags)
        report, lists = evaluate_saved_with_lists(saved, data, k=k)
    now = dataclasses.asdict(report)
    if as_json:
        document = {
            "model": str(model),
            "metrics": now,
            "lists": [dataclasses.asdict(r) for r in lists],
            "saved": saved.metrics,
            **({"unseen_test": unseen} if unseen is not None else {}),
        }
        sys.stdout.write(json.dumps(json_safe(document), indent=2) + "\n")
        return
    table = Table(title=f"{model}: {report.protocol} protocol, {report.n_test:,} test rows")
    for col in ("metric", "now", "at training"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in ("top_k_accuracy", "rmse", "rmse_stars"):
        then = saved.metrics.get(key)
        table.add_row(key, num(finite(now[key]), 4), num(finite(then), 4))
    out.print(table)
    print_lists(lists, out)


def recommend_cmd(
    model: ModelDir,
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user's id.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many items to show.")] = 10,
    history: Annotated[
        str | None,
        typer.Option(
            help="A new user's history instead of --user: ITEM[:RATING],... e.g. 50:5,181:4,172."
        ),
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(help="Candidates per source before ranking (default: the model's, 50)."),
    ] = None,
    include_seen: Annotated[
        bool, typer.Option(help="Allow items the user rated in training.")
    ] = False,
    all_users: Annotated[bool, typer.Option(help="Every user, written to --output.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Parquet file for --all-users.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """A user's list: candidates from the two towers (and item-item), ordered by the ranking
    stage (or, for a model without one, by predicted rating); or a new user's, from --history."""
    if sum((all_users, user is not None, history is not None)) != 1:
        raise ConfigError("recommend: give exactly one of --user ID, --history or --all-users")
    if all_users and output is None:
        raise ConfigError("recommend --all-users: --output FILE.parquet is required")
    rec = Recommender.load(model)
    if all_users:
        assert output is not None
        rows = write_all_users(
            rec, output, k=k, candidates=candidates, exclude_seen=not include_seen
        )
        out.print(f"wrote {rows:,} recommendations for {len(rec.vocabs.users):,} users to {output}")
        return
    if history is not None:
        result = rec.recommend_for_history(parse_history(history), k=k, candidates=candidates)
    else:
        assert user is not None
        result = rec.recommend(user, k=k, candidates=candidates, exclude_seen=not include_seen)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    if result.notice:
        err.print(f"[yellow]notice:[/yellow] {result.notice}", highlight=False)
    ranked = any(r.rank_score is not None for r in result.items)
    kind = (
        "most popular (fallback)"
        if result.fallback
        else "retrieved, then ordered by the ranker's score"
        if ranked
        else "retrieved, then ordered by predicted stars"
    )
    who = f"user {user}" if user is not None else "a new user, from their history"
    table = Table(title=f"{who}: {kind}")
    columns = ["#", "title", "genres", "retrieval score", "predicted stars"]
    for col in [*columns, "ranker score"] if ranked else columns:
        table.add_column(col, justify="left" if col in ("title", "genres") else "right")
    for n, r in enumerate(result.items, start=1):
        cells = [str(n), r.title or str(r.item_id), ", ".join(r.genres)]
        cells += [num(r.retrieval_score, 3), num(r.stars, 2)]
        table.add_row(*cells, *([num(r.rank_score, 3)] if ranked else []))
    out.print(table)


def similar_cmd(
    model: ModelDir,
    item: Annotated[str, typer.Option("--item", "-i", help="The item's id.")],
    k: Annotated[int, typer.Option("-k", help="How many items to show.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Items whose embeddings are closest (cosine) to the given item's."""
    rec = Recommender.load(model)
    items = rec.similar(item, k=k)
    if as_json:
        sys.stdout.write(json.dumps([s.to_dict() for s in items], indent=2) + "\n")
        return
    row = rec.item_row(item)
    table = Table(title=f"similar to {rec.saved.items.titles[row] or item}")
    for col in ("#", "title", "genres", "cosine"):
        table.add_column(col, justify="left" if col in ("title", "genres") else "right")
    for n, s in enumerate(items, start=1):
        table.add_row(str(n), s.title or str(s.item_id), ", ".join(s.genres), f"{s.score:.3f}")
    out.print(table)
