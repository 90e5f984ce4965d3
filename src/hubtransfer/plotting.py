"""The study's figure: validation-accuracy curves, training time and model size."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtransfer._fs import atomic_write_bytes
from hubtransfer.errors import MissingDependencyError

if TYPE_CHECKING:
    from hubtransfer.results import BenchmarkReport

__all__ = ["plot_report"]


def _tradeoff(
    axis: Any, report: BenchmarkReport, attr: str, xlabel: str, scale: float = 1.0
) -> None:
    front = {r.key for r in report.pareto()}
    for i, r in enumerate(report.results):
        summary = r.summary() if r.status == "ok" else None
        x = getattr(r, attr)
        if summary is None or x is None:
            continue
        error = summary.half_width or 0.0
        on_front = r.key in front
        axis.errorbar(
            x * scale, summary.mean, yerr=error, fmt="o", capsize=3,
            markersize=9 if on_front else 6,
            markeredgecolor="black" if on_front else None,
            markeredgewidth=2 if on_front else 0,
        )  # fmt: skip
        axis.annotate(r.label, (x * scale, summary.mean), fontsize=7,
                      xytext=(4, 4 + 9 * (i % 3)), textcoords="offset points")  # fmt: skip
    axis.set(title=f"Accuracy vs {xlabel.split(' (')[0]}", xlabel=xlabel, ylabel="val accuracy")
    axis.grid(alpha=0.3)


def plot_report(report: BenchmarkReport, path: Path) -> Path:
    """Writes ``report`` as a PNG (written atomically) and returns where it went.

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
    ok = [r for r in report.results if r.status == "ok"]
    labels = [f"{r.backbone}\n{r.mode}" for r in ok]
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    (curves, times, sizes), (vs_time, vs_size, legend_axis) = axes
    for r in ok:
        values = [h.val_accuracy for h in r.history if h.val_accuracy is not None]
        curves.plot(range(1, len(values) + 1), values, marker="o", label=f"{r.backbone} ({r.mode})")
    curves.set(title="Validation accuracy", xlabel="epoch (all phases)", ylabel="accuracy")
    curves.grid(alpha=0.3)
    if ok:
        curves.legend(fontsize=7, loc="best")
    feature = [r.feature_seconds or 0.0 for r in ok]
    rest = [max((r.train_seconds or 0.0) - f, 0.0) for r, f in zip(ok, feature, strict=True)]
    times.barh(labels, feature, label="feature extraction")
    times.barh(labels, rest, left=feature, label="training")
    times.set(title="Training time", xlabel="seconds")
    times.legend(fontsize=8)
    sizes.barh(labels, [(r.model_bytes or 0) / 1e6 for r in ok], color="tab:green")
    sizes.set(title="Saved model size (.h5)", xlabel="MB")
    for axis in (times, sizes):
        axis.tick_params(axis="y", labelsize=8)
        axis.invert_yaxis()
    _tradeoff(vs_time, report, "train_seconds", "training time (s)")
    _tradeoff(vs_size, report, "model_bytes", "saved size (MB)", scale=1e-6)
    legend_axis.axis("off")
    legend_axis.text(
        0.0, 0.9,
        "Lower panels: mean best validation accuracy;\n"
        "error bars: 95% t-interval over seeds (when seeds > 1);\n"
        "ringed points: the Pareto front (accuracy vs time vs size).",
        va="top", fontsize=10,
    )  # fmt: skip
    skipped = [f"{r.backbone}/{r.mode}: {r.status}" for r in report.results if r.status != "ok"]
    if skipped:
        fig.text(0.01, 0.01, "Not shown: " + "; ".join(skipped), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if skipped else 0, 1, 1))
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
