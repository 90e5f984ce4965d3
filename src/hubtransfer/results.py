"""A study's report: the results in run order, as tables, files, analysis and a plot.

The records live in :mod:`hubtransfer.records`, the analysis (compare, Pareto front,
recommendation) in :mod:`hubtransfer.analysis`, the files in :mod:`hubtransfer.storage`;
:class:`BenchmarkReport` puts them behind one object. This module does not import
TensorFlow, so saved studies can be read anywhere.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubtransfer.analysis import _pm, compare, get_result, pareto, recommend
from hubtransfer.metrics import SplitMetrics
from hubtransfer.records import BenchmarkResult, Comparison, Mode, Recommendation
from hubtransfer.storage import load_results, save_results

__all__ = ["BenchmarkReport"]


def _acc(result: BenchmarkResult, metric: str) -> str:
    summary = result.summary(metric) if result.status == "ok" else None
    return "-" if summary is None else _pm(summary)


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


@dataclass
class BenchmarkReport:
    """The results of a study, in the order they were run."""

    results: list[BenchmarkResult] = field(default_factory=list)
    #: Trained classifiers by ``(backbone, mode)``, when ``benchmark(keep_models=True)``.
    models: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[BenchmarkResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def get(self, backbone: str, mode: Mode = "frozen") -> BenchmarkResult:
        """The result for ``(backbone, mode)``."""
        return get_result(self.results, backbone, mode)

    def to_markdown(self, *, per_class: bool = False) -> str:
        """A table like the report's, with notes for skipped and failed runs.

        "val acc (kept)" and "test acc" are the returned model's: the epoch each run kept
        (see ``monitor``). "best" is the maximum over epochs, optimistic because the same
        split picks it. With ``per_class``, each result's per-class precision, recall,
        F1, support and confusion matrix follow the table.
        """
        lines = [
            "| backbone | mode | status | val acc (best) | val acc (final) | val acc (kept) | "
            "test acc | train s | features s | size MB | params | ms/img (b=1) | "
            "img/s (b=32) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        seeded = any(len(r.per_seed) > 1 for r in self.results)
        for r in self.results:
            size = r.model_bytes / 1e6 if r.model_bytes is not None else None
            lines.append(
                f"| {r.backbone} | {r.mode} | {r.status} | {_acc(r, 'best_val_accuracy')} | "
                f"{_acc(r, 'final_val_accuracy')} | {_acc(r, 'val_accuracy')} | "
                f"{_acc(r, 'test_accuracy')} | {_fmt(r.train_seconds, '.1f')} | "
                f"{_fmt(r.feature_seconds, '.1f')} | {_fmt(size, '.1f')} | "
                f"{_fmt(r.params_total, ',')} | {_fmt(r.latency_ms, '.1f')} | "
                f"{_fmt(r.throughput, '.1f')} |"
            )
            if r.status != "ok" and r.error:
                notes.append(f"- {r.backbone} / {r.mode} {r.status}: {r.error}")
        if seeded:
            notes.insert(0, "Accuracies: mean ± half-width of the 95% t-interval over seeds.")
        if any(r.val_accuracy is not None for r in self.results):
            notes.insert(
                0,
                "Validation accuracies picked the kept epoch, so they are optimistic; test "
                "accuracy (when there is a test split) is the honest estimate.",
            )
        text = "\n".join(lines + (["", *notes] if notes else [])) + "\n"
        if per_class:
            for r in self.results:
                for split, metrics in (("validation", r.val_metrics), ("test", r.test_metrics)):
                    if metrics is None:
                        continue
                    scored = SplitMetrics.from_dict(metrics)
                    text += (
                        f"\n### {r.label}: {split} (kept epoch {r.selected_epoch}, balanced "
                        f"accuracy {scored.balanced_accuracy:.3f})\n\n" + scored.to_markdown()
                    )
        return text

    def compare(
        self,
        a: str | tuple[str, str],
        b: str | tuple[str, str],
        *,
        metric: str | None = None,
        level: float = 0.95,
    ) -> Comparison:
        """How ``a`` and ``b`` differ, with a Welch interval: see
        :func:`hubtransfer.analysis.compare`."""
        return compare(self.results, a, b, metric=metric, level=level)

    def pareto(
        self, objectives: Sequence[str] = ("accuracy", "train_seconds", "model_bytes")
    ) -> list[BenchmarkResult]:
        """The Pareto front over ``objectives``: see :func:`hubtransfer.analysis.pareto`."""
        return pareto(self.results, objectives)

    def recommend(
        self,
        *,
        max_model_mb: float | None = None,
        max_latency_ms: float | None = None,
        max_train_seconds: float | None = None,
        metric: str | None = None,
    ) -> Recommendation:
        """The best result within a budget, and why: see
        :func:`hubtransfer.analysis.recommend`."""
        return recommend(
            self.results,
            max_model_mb=max_model_mb,
            max_latency_ms=max_latency_ms,
            max_train_seconds=max_train_seconds,
            metric=metric,
        )

    def to_records(self) -> list[dict[str, Any]]:
        """Every result as a JSON-ready dict."""
        return [r.to_dict() for r in self.results]

    def save(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Writes ``results.json``, ``results.csv`` and ``results.md`` into ``directory``."""
        return save_results(self.results, self.to_markdown(), directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> BenchmarkReport:
        """Reads a saved study: ``results.jsonl`` (as the study wrote it) or ``results.json``."""
        return cls(load_results(directory))

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Writes a PNG (see :func:`hubtransfer.plotting.plot_report`): accuracy curves,
        time and size bars, accuracy vs time and size, and the recommended model's
        confusion matrix. ``path``: a file, or a directory for ``study.png`` in it.

        Needs matplotlib (``pip install 'hubtransfer[plot]'``).
        """
        from hubtransfer.plotting import plot_report

        return plot_report(self, Path(path))
