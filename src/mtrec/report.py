"""Results as files and tables: results.json, Markdown reports, the cells the CLI prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mtrec.evaluate import ListReport
from mtrec.experiments import CompareResult, SweepPoint
from mtrec.io import atomic_path, json_safe, write_json
from mtrec.plots import plot_comparison, plot_sweep, plot_training


def write_outputs(result: CompareResult, output_dir: str | Path) -> list[Path]:
    """Write ``results.json``, ``report.md`` and ``compare.png`` (each atomically)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result.to_dict())
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_markdown(result), encoding="utf-8")
    plot_comparison(result, out / "compare.png")
    return [out / "results.json", out / "report.md", out / "compare.png"]


TOP_K_REFERENCE = "top-10 reference"
TOP_K_UNSEEN = "top-10 unseen"
PROTOCOLS_NOTE = (
    "weights: retrieval : rating. top-10: the share of 5-star test ratings whose movie is "
    "in the user's top 10; reference: the tutorial's protocol, where the user's training "
    "movies may be recommended again; unseen, recall@10 and NDCG@10: they are left out, as "
    "a served list does (relevant: test ratings of 4+ stars). RMSE on the 0-1 scale the "
    "reference reports (0.25 = one star)."
)
"""What the comparison's columns mean, said under the table wherever it is shown."""


def table_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The comparison table (models, then baselines) as text cells, for any renderer."""

    def num(value: float | None, digits: int) -> str:
        return "-" if value is None or value != value else f"{value:.{digits}f}"

    headers = [
        "model",
        "weights",
        TOP_K_REFERENCE,
        TOP_K_UNSEEN,
        "recall@10",
        "NDCG@10",
        "RMSE",
        "training s",
    ]
    rows = []
    for m in [*result.models, *result.baselines]:
        weights = (
            "-" if m.retrieval_weight is None else f"{m.retrieval_weight:g} : {m.rating_weight:g}"
        )
        rows.append(
            [
                m.name,
                weights,
                num(m.top_k_accuracy, 4),
                num(m.honest.get("top_k_accuracy"), 4),
                num(m.honest.get("recall"), 4),
                num(m.honest.get("ndcg"), 4),
                num(m.rmse, 4),
                num(m.train_seconds, 2),
            ]
        )
    return headers, rows


def _ci(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"


def _with_ci(value: float, interval: tuple[float, float]) -> str:
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def _mean_std(stat: dict[str, float]) -> str:
    mean, std = stat["mean"], stat["std"]
    return "-" if mean != mean else f"{mean:.4f} ± {std:.4f}"


def list_rows(lists: list[ListReport]) -> tuple[list[str], list[list[str]]]:
    """The lists table (served, each stage alone, baselines) as text cells: each metric
    with its 95% interval, then paired differences to EASE and to retrieval alone."""
    k = lists[0].k if lists else 10
    headers = [
        "list (honest)",
        f"recall@{k} [95% CI]",
        f"NDCG@{k} [95% CI]",
        "recall - EASE",
        "NDCG - EASE",
        "recall - retrieval",
        "NDCG - retrieval",
    ]

    def diff(r: ListReport, other: str, key: str) -> str:
        return _ci(r.differences[other][key]) if other in r.differences else "-"

    rows = [
        [
            r.name,
            _with_ci(r.recall, r.recall_ci),
            _with_ci(r.ndcg, r.ndcg_ci),
            diff(r, "EASE", "recall"),
            diff(r, "EASE", "ndcg"),
            diff(r, "retrieval", "recall"),
            diff(r, "retrieval", "ndcg"),
        ]
        for r in lists
    ]
    return headers, rows


def lists_summary_lines(result: CompareResult) -> list[str]:
    """Each list's recall and NDCG over the seeds, and on how many seeds its paired
    interval lay above zero against EASE and against retrieval alone."""
    seeds = ", ".join(str(s) for s in [result.seed, *(r.seed for r in result.other_seeds)])
    lines = [
        f"Over seeds {seeds} (mean ± std; seeds with the paired 95% interval above zero):",
        "",
        "| list | recall@k | NDCG@k | recall > EASE | NDCG > EASE | recall > retrieval "
        "| NDCG > retrieval |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, stats in result.lists_summary().items():
        cells = [_mean_std(stats["recall"]), _mean_std(stats["ndcg"])]
        for key in ("recall_above_EASE", "ndcg_above_EASE", "recall_above_retrieval",
                    "ndcg_above_retrieval"):  # fmt: skip
            count = stats.get(key)
            cells.append("-" if count is None else f"{count['seeds']:.0f} of {count['of']:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(result: CompareResult) -> str:
    """A self-contained report: setup, the table, per-epoch losses, one user's list."""
    lines = _setup_lines(result)
    if result.other_seeds:
        lines += _seeds_lines(result)
    headers, rows = table_rows(result)
    lines += _markdown_table(headers, rows, left=2)
    if result.lists:
        lines += _lists_lines(result)
    lines += _epoch_lines(result)
    lines += _section(f"Retrieve, then rank: user {result.user_id} (multi-task model)")
    user_rows = [
        [str(n), f"{r.title or r.item_id}", f"{r.retrieval_score:.3f}", f"{r.stars:.2f}"]
        for n, r in enumerate(result.recommendations, start=1)
    ]
    headers = ["#", "title", "retrieval score", "predicted stars"]
    lines += _markdown_table(headers, user_rows, left=(1,))
    lines += ["", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def _section(title: str, *paragraphs: str) -> list[str]:
    """A level-two heading (after a blank line) and its paragraphs, each followed by one."""
    lines = ["", f"## {title}", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    return lines


def _markdown_table(
    headers: list[str], rows: list[list[str]], left: int | tuple[int, ...]
) -> list[str]:
    """A Markdown table whose first ``left`` columns (or the columns numbered in it) align
    left, the others right."""
    at_left = set(range(left)) if isinstance(left, int) else set(left)
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "".join("---|" if c in at_left else "---:|" for c in range(len(headers))))
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _setup_lines(result: CompareResult) -> list[str]:
    """The report's title, data, split, model and training, and what the metrics mean."""
    tc, mc = result.train_config, result.model_config
    return [
        f"# mtrec compare: {result.dataset}, seed {result.seed}, reference and honest protocols",
        "",
        f"Data: {result.dataset} from {result.data_source or 'memory'}.",
        "",
        f"Split: {result.n_train:,} train / {result.n_test:,} test rows (one seeded shuffle). "
        f"Model: {mc.embedding_dim}-d towers, rating head {list(mc.head_layers)} -> 1. "
        f"Training: {tc.optimizer} lr {tc.learning_rate}, {tc.epochs} epochs, "
        f"batch {tc.batch_size}, {result.models[0].precision} matmuls. "
        f"Retrieval loss {'summed over' if tc.retrieval_reduction == 'sum' else 'averaged over'} "
        "the batch (the reference sums it), rating loss averaged.",
        "",
        "Top-10 accuracy: share of 5-star test rows whose movie is in the user's top 10 over "
        "the whole catalogue; under the reference protocol the movies the user rated in "
        "training are not excluded; everywhere else (the honest protocol) they are left out, "
        "as a served list does. Recall@10 and NDCG@10: per user, relevant = test ratings of "
        "4+ stars. RMSE on the scaled rating (0.25 = one star).",
        "",
    ]


def _seeds_lines(result: CompareResult) -> list[str]:
    """Each model's mean and standard deviation over the seeds, then the first seed's head."""
    seeds = ", ".join(str(s) for s in [result.seed, *(r.seed for r in result.other_seeds)])
    lines = [
        f"## Mean and standard deviation over seeds {seeds}",
        "",
        f"| model | {TOP_K_REFERENCE} | {TOP_K_UNSEEN} | recall@10 | NDCG@10 | RMSE | training s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("top_k_accuracy", "honest_top_k_accuracy", "honest_recall", "honest_ndcg", "rmse")
    for name, stats in result.summary().items():
        cells = [_mean_std(stats[key]) for key in keys]
        seconds = stats["train_seconds"]["mean"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.1f} |")
    lines += ["", f"## Seed {result.seed}", ""]
    return lines


def _lists_lines(result: CompareResult) -> list[str]:
    """The lists a user gets, with their intervals (and their summary over the seeds)."""
    lines = _section(
        "The lists a user gets (multi-task model, honest protocol)",
        "`served`: what `mtrec recommend` serves for this preset (the ranking stage over "
        "two-tower and item-item candidates where the preset has one; otherwise the top "
        "100 by retrieval re-sorted by predicted rating). 95% bootstrap intervals over "
        "users; the last four columns are paired differences to EASE and to retrieval "
        "alone (an interval above zero: better on these users).",
    )
    lines += _markdown_table(*list_rows(result.lists), left=1)
    if result.other_seeds:
        lines += ["", *lists_summary_lines(result)]
    return lines


def _epoch_lines(result: CompareResult) -> list[str]:
    """Each model's loss per epoch."""
    headers = ["model", *(f"epoch {e.epoch}" for e in result.models[0].epochs)]
    rows = [[m.name, *(f"{e.loss:.4g}" for e in m.epochs)] for m in result.models]
    return _section("Loss per epoch (mean over batches)") + _markdown_table(headers, rows, left=1)


def write_sweep(points: list[SweepPoint], output_dir: str | Path, title: str) -> list[Path]:
    """``sweep.json``, ``sweep.md`` and ``sweep.png`` (the trade-off, Pareto front marked)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "sweep.json",
        json_safe({"title": title, "points": [dataclasses.asdict(p) for p in points]}),
    )
    lines = [
        f"# mtrec sweep: {title}",
        "",
        f"| model | retrieval weight | {TOP_K_REFERENCE} | {TOP_K_UNSEEN} | RMSE | Pareto | "
        "training s |",
        "|---|---:|---:|---:|---:|:---:|---:|",
    ]
    for p in points:
        weight = "learned" if p.retrieval_weight is None else f"{p.retrieval_weight:g}"
        if p.learned_weights:
            weight += f" (ended at {p.learned_weights[0]:.3g} : {p.learned_weights[1]:.3g})"
        lines.append(
            f"| {p.name} | {weight} | {p.top_k_accuracy:.4f} | {p.honest_top_k_accuracy:.4f} "
            f"| {p.rmse:.4f} | {'yes' if p.pareto else ''} | {p.train_seconds:.1f} |"
        )
    fixed = [p for p in points if p.retrieval_weight is not None]
    learned = [p for p in points if p.retrieval_weight is None]
    if fixed and learned:
        best = max(fixed, key=lambda p: p.honest_top_k_accuracy - 4 * p.rmse)
        lines += [
            "",
            f"Learned weighting against the best fixed weight ({best.name}, by honest top-10 "
            f"minus 4 x RMSE): honest top-10 {learned[0].honest_top_k_accuracy:.4f} vs "
            f"{best.honest_top_k_accuracy:.4f}, RMSE {learned[0].rmse:.4f} vs {best.rmse:.4f}.",
        ]
    lines += ["", "![trade-off](sweep.png)", ""]
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    plot_sweep(points, out / "sweep.png", title)
    return [out / "sweep.json", out / "sweep.md", out / "sweep.png"]


TRAIN_REPORT = ("report.md", "report.png")
"""What ``write_train_report`` writes (``mtrec train`` puts them in the model directory)."""


def write_train_report(metrics: dict[str, Any], out_dir: Path, title: str) -> list[Path]:
    """``report.md`` and ``report.png`` of a training run from its ``metrics.json``: the
    held-out lists with their intervals and paired differences, and each task's loss per
    epoch (a run that held nothing out shows its losses alone)."""
    lists = [_list_report(r) for r in metrics.get("lists", [])]
    epochs = metrics.get("history", [])
    md, png = (out_dir / name for name in TRAIN_REPORT)
    plot_training(epochs, lists, png, title)
    lines = [f"# mtrec train: {title}", "", f"![training and lists]({png.name})", ""]
    if lists:
        lines += ["## The lists a user gets (held-out users)", ""]
        lines += _markdown_table(*list_rows(lists), left=1)
        lines += [""]
    lines += ["## Loss per epoch (retrieval per row)", ""]
    lines += _markdown_table(["epoch", "retrieval", "rating", "s"], _loss_rows(epochs), left=0)
    with atomic_path(md) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [md, png]


def _loss_rows(epochs: list[dict[str, Any]]) -> list[list[str]]:
    """Each epoch's retrieval loss per row, rating loss and seconds (``-``: not trained)."""
    rows = []
    for e in epochs:
        retrieval = e.get("retrieval_loss")
        per_row = "-" if retrieval is None else f"{retrieval / e.get('retrieval_rows', 1.0):.4g}"
        rating = "-" if e.get("rating_loss") is None else f"{e['rating_loss']:.4g}"
        rows.append([str(e["epoch"]), per_row, rating, f"{e['seconds']:.1f}"])
    return rows


def _list_report(data: dict[str, Any]) -> ListReport:
    """A list's record as ``metrics.json`` holds it (intervals as JSON arrays)."""
    return ListReport(
        **{
            **data,
            "recall_ci": tuple(data["recall_ci"]),
            "ndcg_ci": tuple(data["ndcg_ci"]),
        }
    )
