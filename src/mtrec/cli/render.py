"""How results look in a terminal: progress bars, tables, one-line summaries."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from mtrec.cli.program import out
from mtrec.evaluate import ListReport
from mtrec.experiments import CompareResult
from mtrec.report import PROTOCOLS_NOTE, list_rows, lists_summary_lines, table_rows
from mtrec.train import EpochStats, TrainingRecord, losses_text


class ModelBar:
    """One model's progress in a shared display: in a terminal a live bar, in a pipe or a
    file none; either way one line when the model has trained, and (where no bar moves)
    a line for each epoch of 5 s or more, so that a long run is never silent and models
    trained side by side do not interleave their epochs."""

    LONG_EPOCH = 5.0
    """Seconds an epoch takes before it gets its own line without a terminal."""

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
        if self.bar.disable and stats.seconds >= self.LONG_EPOCH:
            self._say(f"epoch {stats.epoch}: {losses_text(stats.shown())} ({stats.seconds:.1f} s)")

    def finish(self, record: TrainingRecord) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        last = record.epochs[-1].shown() if record.epochs else {}
        said = f"; last epoch {losses_text(last)}" if last else ""
        self._say(f"trained, {len(record.epochs)} epochs in {record.seconds:.1f} s{said}")

    def _say(self, text: str) -> None:
        self.bar.console.print(f"[dim]{self.name}: {text}[/dim]", highlight=False, soft_wrap=True)


def progress_bars(console: Console) -> RichBar:
    """Live bars in a terminal; nothing drawn where there is none (a pipe, a file, CI),
    where a cut-off time column and leftover bars helped nobody."""
    return RichBar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def print_compare(result: CompareResult, preset: str) -> None:
    """The comparison table, the lists a user gets (with ``--baselines``), and one user's
    list from the multi-task model, each with what its columns mean."""
    table = Table(  # no inner rules: eight columns fit 80 characters
        title=f"{result.dataset}, seed {result.seed}, preset {preset}: the three weightings",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    headers, rows = table_rows(result)
    for i, col in enumerate(headers):  # numbers whole: a narrow terminal folds the words
        widest = max((len(row[i]) for row in rows), default=1)
        table.add_column(
            col, justify="left" if i == 0 else "right", min_width=widest, overflow="fold"
        )
    for row in rows:
        table.add_row(*row)
    out.print(table)  # a pipe or a file: whole names (``program.PIPED_WIDTH``)
    out.print(f"[dim]{PROTOCOLS_NOTE}[/dim]", highlight=False)
    if result.lists:
        print_lists(result.lists, out)
        if result.other_seeds:
            for line in lists_summary_lines(result):
                out.print(line, highlight=False)
    better = (
        ""
        if preset == "default"
        else f"; the default preset's list is better: mtrec train, then mtrec recommend "
        f"-u {result.user_id}"
    )
    recs = Table(
        title=f"Retrieve, then rank: user {result.user_id}, the multi-task model",
        box=box.SIMPLE_HEAD,
        caption="The reference's list: the top 10 by retrieval score over the whole catalogue "
        f"(rated movies included), ordered by predicted stars{better}.",
    )
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
