"""How results look in a terminal: progress bars, tables, one-line summaries."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from mtrec.cli.program import out
from mtrec.evaluate import ListReport
from mtrec.experiments import CompareResult
from mtrec.report import list_rows, lists_summary_lines, table_rows
from mtrec.train import EpochStats


class ModelBar:
    """One model's line in a shared rich progress display, plus a summary line per epoch."""

    def __init__(self, bar: RichBar, name: str) -> None:
        self.bar, self.name = bar, name
        self.task: TaskID | None = None  # shown from its first epoch: a model that never
        self.n = 0  # trains (stage one serving: no second model) shows no line

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task(self.name, total=None, losses="")
        self.bar.reset(
            self.task, total=n_batches, description=f"{self.name} epoch {epoch}/{epochs}"
        )
        self.n = 0

    def step(self, losses: dict[str, float]) -> None:
        self.n += 1
        if self.n % 10 == 0 and self.task is not None:  # every batch: it would cost more
            text = "  ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "loss")
            self.bar.update(self.task, completed=self.n, losses=text)

    def end_epoch(self, stats: EpochStats) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.n)
        parts = [
            f"{task} loss {value:.4g}"
            for task, value in (("retrieval", stats.retrieval_loss), ("rating", stats.rating_loss))
            if value is not None
        ]
        summary = f"{self.name} epoch {stats.epoch}: {', '.join(parts)} ({stats.seconds:.2f} s)"
        self.bar.console.print(f"[dim]{summary}[/dim]")


def progress_bars(console: Console) -> RichBar:
    return RichBar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        console=console,
    )


def print_compare(result: CompareResult) -> None:
    table = Table(title=f"{result.dataset}, seed {result.seed}: reference and honest protocols")
    headers, rows = table_rows(result)
    for col in headers:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        table.add_row(*row)
    # a terminal gets its own width; a pipe or a file gets whole names instead of 80 columns
    wide = out if out.is_terminal else Console(width=132)
    wide.print(table)
    if result.lists:
        print_lists(result.lists, wide)
        if result.other_seeds:
            for line in lists_summary_lines(result):
                wide.print(line, highlight=False)
    recs = Table(title=f"Retrieve, then rank: user {result.user_id} (multi-task)")
    for col in ("#", "title", "retrieval score", "predicted stars"):
        recs.add_column(col, justify="left" if col == "title" else "right")
    for n, r in enumerate(result.recommendations, start=1):
        recs.add_row(str(n), r.title or str(r.item_id), num(r.retrieval_score, 3), num(r.stars, 2))
    out.print(recs)


def print_lists(lists: list[ListReport], console: Console) -> None:
    table = Table(title="The lists a user gets: served, each stage alone, popularity, EASE")
    headers, rows = list_rows(lists)
    for col in headers:
        table.add_column(col, justify="left" if col == headers[0] else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def finite(value: float | None) -> float | None:
    """None for a metric that does not apply (NaN in memory, null in JSON)."""
    return None if value is None or value != value else value


def metrics_line(m: dict[str, Any]) -> str:
    """The served list, top-10 accuracy and RMSE of a metrics.json, in one line."""
    rating = (
        "no rating task"
        if m["rmse"] != m["rmse"]
        else f"RMSE {m['rmse']:.4f} ({m['rmse_stars']:.3f} stars)"
    )
    head = m.get("rating_head", {}).get("rmse")
    if head is not None and head == head and head != m["rmse"]:
        rating += f", the rating head alone {head:.4f}"
    served = m["served"]
    return (
        f"served list: recall@{served['k']} {served['recall']:.4f}, NDCG@{served['k']} "
        f"{served['ndcg']:.4f} (honest); top-10 accuracy {m['top_k_accuracy']:.4f}, {rating}"
    )
