"""The study figure is readable: no label overlaps another, at ten results."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.text import Text

import hubtransfer as ht
from hubtransfer.metrics import split_metrics
from hubtransfer.plotting import _figure
from hubtransfer.records import BenchmarkResult, EpochRecord, SeedRun


def _study(n: int) -> ht.BenchmarkReport:
    results = []
    for i in range(n):
        acc = 0.80 + 0.01 * (i % 4)  # several results share accuracy, time or size
        m = split_metrics([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2], ["cat", "dog", "bird"])
        history = tuple(EpochRecord(e, "head", 0.5, 0.8, 0.5, acc, 1.0) for e in range(1, 6))
        results.append(
            BenchmarkResult(
                f"efficientnetv2_b{i}_long_name",
                "frozen" if i % 2 else "fine_tuned",
                "ok",
                history=history,
                best_val_accuracy=acc,
                final_val_accuracy=acc,
                val_accuracy=acc,
                val_balanced_accuracy=acc,
                val_metrics=m.to_dict(),
                train_seconds=10.0 * (1 + i % 3),
                feature_seconds=5.0,
                model_bytes=int(1e6 * (10 + i % 2)),
                latency_ms=3.0,
                per_seed=(SeedRun(0, acc, acc, 10.0, 5, acc, acc),),
            )
        )
    results.append(BenchmarkResult("tf1_module", "fine_tuned", "skipped", error="TF1"))
    return ht.BenchmarkReport(results)


def test_ten_results_have_no_overlapping_labels() -> None:
    fig = _figure(_study(10))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    overlaps = [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]
    assert not overlaps, overlaps[:5]
    legend_labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "efficientnetv2_b9_long_name (frozen)" in legend_labels
    captions = [t.get_text() for t in fig.texts]
    assert any("Not shown: tf1_module (fine_tuned): skipped" in c for c in captions)
    titles = [a.get_title() for a in fig.axes]
    assert any(t.startswith("Recommended: ") for t in titles)
    # Axes titles stay clear of the data: every title sits above its axes' frame.
    for axis in fig.axes:
        if axis.get_title():
            assert (
                axis.title.get_window_extent(renderer).y0 >= axis.get_window_extent(renderer).y1 - 1
            )


def test_plot_writes_png(tmp_path: Path) -> None:
    written = _study(3).plot(tmp_path / "figure")
    assert written == tmp_path / "figure.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
