"""Charts of compare and sweep results (matplotlib's object API: no pyplot global state)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtrec.io import atomic_path
from mtrec.runtime import on_a_spare_core

if TYPE_CHECKING:
    from mtrec.evaluate import ListReport
    from mtrec.experiments import CompareResult, SweepPoint


def preload_plotting() -> None:
    """Import matplotlib on a spare core while the models train (``on_a_spare_core``).

    The import takes about half a second and is mostly Python. Training one model after
    another leaves it the time its kernels spend without the GIL; models side by side
    leave a core idle once the first worker runs out of jobs, and the import fills it.
    """

    def load() -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.backends.backend_agg
        import matplotlib.figure

    on_a_spare_core(load)


def plot_comparison(result: CompareResult, path: str | Path) -> None:
    """Top-10 accuracy and RMSE of each model (the mean and its spread where several seeds
    ran), and with ``--baselines`` the lists a user gets with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state, faster import

    names = [m.name for m in result.models]
    panels = 3 if result.lists else 2
    fig = Figure(figsize=(4.6 * panels, 3.8))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.22, top=0.8, wspace=0.5)
    axes = fig.subplots(1, panels)
    colors = ["#4C72B0", "#DD8452", "#55A868"][: len(names)]
    summary, seeds = result.summary(), 1 + len(result.other_seeds)
    for ax, key, title in zip(
        axes,
        ("top_k_accuracy", "rmse"),
        ("Top-10 accuracy (higher is better)", "RMSE, scaled (lower is better)"),
        strict=False,
    ):
        values = [summary[name][key]["mean"] for name in names]
        spread = [summary[name][key]["std"] for name in names] if seeds > 1 else None
        bars = ax.bar(names, values, color=colors, yerr=spread, capsize=4)
        ax.bar_label(bars, fmt="%.4f", fontsize=8, padding=6 if spread else 2)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(y=0.2)
    if result.lists:
        _plot_lists(axes[2], result.lists)
    spread_said = f"mean and standard deviation over {seeds} seeds" if seeds > 1 else "one seed"
    fig.suptitle(
        f"{result.dataset}, {result.protocol} protocol, seed {result.seed}: {spread_said}",
        fontsize=10,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_sweep(points: list[SweepPoint], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    front = sorted((p for p in points if p.pareto), key=lambda p: p.rmse)
    ax.plot(
        [p.rmse for p in front],
        [p.honest_top_k_accuracy for p in front],
        "-",
        color="#999",
        zorder=1,
        label="Pareto front",
    )
    for p in points:
        color = "#DD8452" if p.retrieval_weight is None else ("#4C72B0" if p.pareto else "#9bb0d3")
        ax.scatter(p.rmse, p.honest_top_k_accuracy, color=color, zorder=2)
        ax.annotate(
            "learned" if p.retrieval_weight is None else f"{p.retrieval_weight:g}",
            (p.rmse, p.honest_top_k_accuracy),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("RMSE, scaled (lower is better)")
    ax.set_ylabel("top-10 accuracy, honest (higher is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_training(
    epochs: list[dict[str, float]], lists: list[ListReport], path: str | Path, title: str
) -> None:
    """What ``mtrec train`` did, in two panels: each task's loss per epoch (retrieval per
    row, rating on its own axis), and each list's recall@k and NDCG@k on the held-out
    users with their 95% intervals (served, each stage alone, popularity, EASE)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.86, wspace=0.75)
    losses, quality = fig.subplots(1, 2, width_ratios=(1, 1.4))
    _plot_losses(losses, epochs)
    if lists:
        _plot_lists(quality, lists)
    else:  # every row trained: nothing held out to measure
        quality.set_axis_off()
        quality.text(0.5, 0.5, "every row trained:\nno held-out lists", ha="center")
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _plot_lists(ax: Any, lists: list[ListReport]) -> None:
    """Each list's recall@k and NDCG@k as bars with their 95% intervals, the first on top."""
    shown = lists[::-1]
    names = [r.name for r in shown]
    for offset, metric, color in ((-0.2, "recall", "#4C72B0"), (0.2, "ndcg", "#DD8452")):
        values = [getattr(r, metric) for r in shown]
        intervals = [getattr(r, f"{metric}_ci") for r in shown]
        low = [v - ci[0] for v, ci in zip(values, intervals, strict=True)]
        high = [ci[1] - v for v, ci in zip(values, intervals, strict=True)]
        rows = [i + offset for i in range(len(names))]
        label = f"{'NDCG' if metric == 'ndcg' else 'recall'}@{lists[0].k if lists else 10}"
        ax.barh(rows, values, height=0.4, color=color, label=label)
        ax.errorbar(values, rows, xerr=[low, high], fmt="none", ecolor="#333", capsize=3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("Held-out lists, 95% intervals over users", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)


def _plot_losses(ax: Any, epochs: list[dict[str, float]]) -> None:
    """Retrieval loss per row on ``ax``, rating loss on a twin axis, by epoch."""
    x = [e["epoch"] for e in epochs]
    ax.set_title("Training loss per epoch", fontsize=10)
    ax.set_xlabel("epoch")
    lines = []
    if epochs and epochs[0].get("retrieval_loss") is not None:
        rows = [e.get("retrieval_rows", 1.0) for e in epochs]
        y = [e["retrieval_loss"] / n for e, n in zip(epochs, rows, strict=True)]
        lines += ax.plot(x, y, "o-", color="#4C72B0", label="retrieval (per row)")
        ax.set_ylabel("retrieval loss")
    if epochs and epochs[0].get("rating_loss") is not None:
        twin = ax.twinx() if lines else ax
        y = [e["rating_loss"] for e in epochs]
        lines += twin.plot(x, y, "s-", color="#55A868", label="rating (MSE, 0-1 scale)")
        twin.set_ylabel("rating loss")
    if lines:
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8)
