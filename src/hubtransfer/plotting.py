"""The study's figure: curves, time and size bars, trade-offs, and a confusion matrix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtransfer._fs import atomic_write_bytes
from hubtransfer.errors import MissingDependencyError

if TYPE_CHECKING:
    from hubtransfer.results import BenchmarkReport

__all__ = ["plot_report"]


_CAPTION = (
    "Accuracy-vs-time and -size panels: {metric} of each result, mean over seeds; error bars: "
    "95% t-interval over seeds (when seeds > 1); ringed markers: the Pareto front "
    "(accuracy vs time vs size). Colours match the legend below."
)


def _tradeoff(
    axis: Any,
    report: BenchmarkReport,
    colours: dict[tuple[str, str], Any],
    attr: str,
    xlabel: str,
    scale: float = 1.0,
) -> None:
    from hubtransfer.analysis import ranking_metric

    metric = ranking_metric(report.results)
    front = {r.key for r in report.pareto()}
    for r in report.results:
        summary = r.summary(metric) if r.status == "ok" else None
        x = getattr(r, attr)
        if summary is None or x is None:
            continue
        on_front = r.key in front
        axis.errorbar(
            x * scale,
            summary.mean,
            yerr=summary.half_width or 0.0,
            fmt="o",
            capsize=3,
            color=colours[r.key],
            markersize=10 if on_front else 7,
            markeredgecolor="black" if on_front else colours[r.key],
            markeredgewidth=2 if on_front else 1,
        )
    axis.set(title=f"Accuracy vs {xlabel.split(' (')[0]}", xlabel=xlabel, ylabel="accuracy")
    axis.margins(0.15)  # keeps markers clear of the title and the frame
    axis.grid(alpha=0.3)


def _confusion(axis: Any, report: BenchmarkReport) -> None:
    from hubtransfer.metrics import SplitMetrics

    best = report.recommend().result
    record = None if best is None else (best.test_metrics or best.val_metrics)
    if best is None or record is None:
        axis.axis("off")
        axis.set_title("Confusion matrix: no per-class metrics recorded")
        return
    metrics = SplitMetrics.from_dict(record)
    split = "test" if best.test_metrics else "validation"
    names = [c.name for c in metrics.per_class]
    axis.imshow(metrics.confusion, cmap="Blues")
    k = len(names)
    if k <= 20:
        axis.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(k), names, fontsize=7)
    if k <= 10:
        peak = max(max(row) for row in metrics.confusion) or 1
        for i, row in enumerate(metrics.confusion):
            for j, count in enumerate(row):
                axis.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if count > peak / 2 else "black",
                )
    axis.set(xlabel="predicted", ylabel="true")
    axis.set_title(f"Recommended: {best.label}\n{split} confusion matrix", fontsize=10)


def _figure(report: BenchmarkReport) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from hubtransfer.analysis import ranking_metric

    ok = [r for r in report.results if r.status == "ok"]
    palette = plt.get_cmap("tab20" if len(ok) > 10 else "tab10")
    colours = {r.key: palette(i % palette.N) for i, r in enumerate(ok)}
    labels = [f"{r.backbone}\n{r.mode}" for r in ok]
    fig, axes = plt.subplots(2, 3, figsize=(18, 11))
    (curves, times, sizes), (vs_time, vs_size, confusion) = axes
    for r in ok:
        values = [h.val_accuracy for h in r.history if h.val_accuracy is not None]
        curves.plot(range(1, len(values) + 1), values, marker="o", color=colours[r.key])
    curves.set(
        title="Validation accuracy per epoch", xlabel="epoch (all phases)", ylabel="accuracy"
    )
    curves.margins(0.1)
    curves.grid(alpha=0.3)
    feature = [r.feature_seconds or 0.0 for r in ok]
    rest = [max((r.train_seconds or 0.0) - f, 0.0) for r, f in zip(ok, feature, strict=True)]
    times.barh(labels, feature, label="feature extraction")
    times.barh(labels, rest, left=feature, label="training")
    times.set(title="Training time", xlabel="seconds")
    times.legend(fontsize=8, loc="best")
    sizes.barh(labels, [(r.model_bytes or 0) / 1e6 for r in ok], color="tab:green")
    sizes.set(title="Saved model size (.h5)", xlabel="MB")
    for axis in (times, sizes):
        axis.tick_params(axis="y", labelsize=7 if len(ok) > 6 else 8)
        axis.invert_yaxis()
    _tradeoff(vs_time, report, colours, "train_seconds", "training time (s)")
    _tradeoff(vs_size, report, colours, "model_bytes", "saved size (MB)", scale=1e-6)
    _confusion(confusion, report)
    for axis in (curves, vs_time, vs_size):  # the lowest y tick would touch the x ticks
        axis.yaxis.set_major_locator(MaxNLocator(prune="lower"))
    handles = [
        Line2D([], [], color=colours[r.key], marker="o", linestyle="-", label=r.label) for r in ok
    ]
    skipped = [f"{r.label}: {r.status}" for r in report.results if r.status != "ok"]
    caption = _CAPTION.format(metric=ranking_metric(report.results).replace("_", " "))
    if skipped:
        caption += " Not shown: " + "; ".join(skipped) + "."
    columns = min(5, max(1, len(handles)))
    legend_rows = -(-len(handles) // columns)
    bottom = 0.06 + 0.025 * legend_rows
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=columns,
            fontsize=8,
            bbox_to_anchor=(0.5, 0.035),
            frameon=False,
        )
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def plot_report(report: BenchmarkReport, path: Path) -> Path:
    """Writes ``report`` as a PNG (written atomically) and returns where it went.

    Six panels: validation accuracy per epoch, training time, saved size, accuracy vs
    time and vs size (Pareto front ringed), and the confusion matrix of the recommended
    model. A legend maps colours to results; the caption below explains the panels.
    ``path`` may be a file name (``.png`` is added when it has no suffix) or an existing
    directory (``study.png`` inside it).
    """
    path = png_path(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            "Plotting needs matplotlib, which is not installed. Install it with "
            "`pip install 'hubtransfer[plot]'`, or use report.to_markdown() / report.save()."
        ) from exc
    fig = _figure(report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def png_path(path: Path) -> Path:
    """Where a plot asked for at ``path`` goes: ``DIR/study.png`` for a directory,
    ``name.png`` for a name without a suffix, else ``path`` itself."""
    if path.is_dir():
        return path / "study.png"
    return path if path.suffix else path.with_suffix(".png")
