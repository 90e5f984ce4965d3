"""Benchmark results as data: typed records, Markdown tables, JSON/CSV, JSON-lines logs.

This module does not import TensorFlow, so saved studies can be read anywhere.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from hubtransfer.errors import BenchmarkError

__all__ = [
    "RESULTS_FILE",
    "BenchmarkReport",
    "BenchmarkResult",
    "EpochRecord",
    "Mode",
    "Status",
    "append_result",
    "read_results",
]

Mode = Literal["frozen", "fine_tuned"]
Status = Literal["ok", "skipped", "failed"]
#: The JSON-lines log a study appends to, one finished result per line.
RESULTS_FILE = "results.jsonl"


@dataclass(frozen=True)
class EpochRecord:
    """One training epoch.

    Attributes:
        epoch: 1-based index within the phase.
        phase: ``"head"`` (frozen study), ``"warmup"`` (head before fine-tuning) or
            ``"fine_tune"`` (whole model).
        loss: Training loss.
        accuracy: Training accuracy.
        val_loss: Validation loss.
        val_accuracy: Validation accuracy.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    phase: str
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class BenchmarkResult:
    """One backbone trained in one mode.

    Attributes:
        backbone: Backbone name.
        mode: ``"frozen"`` or ``"fine_tuned"``.
        status: ``"ok"``, ``"skipped"`` (e.g. TF1 fine-tuning) or ``"failed"``.
        error: Why it was skipped or failed.
        history: Per-epoch records, in order.
        best_val_accuracy: Highest validation accuracy over the epochs.
        final_val_accuracy: Validation accuracy after the last epoch.
        train_seconds: Total training time: feature extraction + head (+ fine-tuning).
        feature_seconds: The feature-extraction part (one forward pass), when cached.
        head_seconds: Time spent training the head on cached features.
        model_bytes: Size of the full classifier saved as ``.h5``, as the report measured.
        params_total: Parameters of the full classifier.
        params_trainable: Trainable parameters in the mode's final phase.
        latency_ms: Inference latency per image at batch size 1, in milliseconds.
        throughput: Inference images per second at batch size 32.
        image_size: Input size the backbone was fed.
        handle: The backbone handle that was loaded.
        exports: Per TFLite quantization mode, ``{"bytes": ..., "val_accuracy": ...}``.
        environment: TF / tf_keras versions, device, platform.
        config: The settings that produced this result (used by ``resume``).
        config_id: Short hash of ``config``.
        seed: Random seed of the run.
    """

    backbone: str
    mode: Mode
    status: Status
    error: str | None = None
    history: tuple[EpochRecord, ...] = ()
    best_val_accuracy: float | None = None
    final_val_accuracy: float | None = None
    train_seconds: float | None = None
    feature_seconds: float | None = None
    head_seconds: float | None = None
    model_bytes: int | None = None
    params_total: int | None = None
    params_trainable: int | None = None
    latency_ms: float | None = None
    throughput: float | None = None
    image_size: int | None = None
    handle: str = ""
    exports: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    config_id: str = ""
    seed: int = 0

    @property
    def key(self) -> tuple[str, str]:
        """``(backbone, mode)``."""
        return (self.backbone, self.mode)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkResult:
        """The inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["history"] = tuple(EpochRecord(**h) for h in values.get("history", ()))
        return cls(**values)


_CSV_COLUMNS = (
    "backbone", "mode", "status", "best_val_accuracy", "final_val_accuracy",
    "train_seconds", "feature_seconds", "head_seconds", "model_bytes", "params_total",
    "params_trainable", "latency_ms", "throughput", "image_size", "seed", "error",
)  # fmt: skip


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
        for result in self.results:
            if result.key == (backbone, mode):
                return result
        have = ", ".join(f"{b}/{m}" for b, m in (r.key for r in self.results)) or "none"
        raise BenchmarkError(
            f"No result for backbone {backbone!r} in mode {mode!r}. Results present: {have}."
        )

    def to_markdown(self) -> str:
        """A table like the report's, with notes for skipped and failed runs."""
        lines = [
            "| backbone | mode | status | val acc (best) | val acc (final) | train s | "
            "features s | size MB | params | ms/img (b=1) | img/s (b=32) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        for r in self.results:
            size = r.model_bytes / 1e6 if r.model_bytes is not None else None
            lines.append(
                f"| {r.backbone} | {r.mode} | {r.status} | {_fmt(r.best_val_accuracy, '.3f')} | "
                f"{_fmt(r.final_val_accuracy, '.3f')} | {_fmt(r.train_seconds, '.1f')} | "
                f"{_fmt(r.feature_seconds, '.1f')} | {_fmt(size, '.1f')} | "
                f"{_fmt(r.params_total, ',')} | {_fmt(r.latency_ms, '.1f')} | "
                f"{_fmt(r.throughput, '.1f')} |"
            )
            if r.status != "ok" and r.error:
                notes.append(f"- {r.backbone} / {r.mode} {r.status}: {r.error}")
        return "\n".join(lines + (["", *notes] if notes else [])) + "\n"

    def to_records(self) -> list[dict[str, Any]]:
        """Every result as a JSON-ready dict."""
        return [r.to_dict() for r in self.results]

    def save(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Writes ``results.json``, ``results.csv`` and ``results.md`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / "results.json",
            "csv": out / "results.csv",
            "markdown": out / "results.md",
        }
        _atomic_write(paths["json"], json.dumps(self.to_records(), indent=2) + "\n")
        _atomic_write(paths["markdown"], self.to_markdown())
        tmp = paths["csv"].with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for record in self.to_records():
                writer.writerow(record)
        os.replace(tmp, paths["csv"])
        return paths

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> BenchmarkReport:
        """Reads a saved study: ``results.jsonl`` (as the study wrote it) or ``results.json``."""
        root = Path(directory)
        if (root / RESULTS_FILE).exists():
            return cls(_latest_per_key(read_results(root / RESULTS_FILE)))
        if (root / "results.json").exists():
            try:
                records = json.loads((root / "results.json").read_text())
                return cls([BenchmarkResult.from_dict(r) for r in records])
            except (ValueError, TypeError) as exc:
                raise BenchmarkError(
                    f"{root / 'results.json'} is not a saved hubtransfer study ({exc}). "
                    "Point at the output_dir of a benchmark() run."
                ) from exc
        raise BenchmarkError(
            f"No saved study in {root}: expected {RESULTS_FILE} or results.json. Point at the "
            "output_dir of a benchmark() run."
        )

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Writes a PNG: validation-accuracy curves, train time and size bars.

        Needs matplotlib (``pip install 'hubtransfer[plot]'``).
        """
        from hubtransfer.plotting import plot_report

        return plot_report(self, Path(path))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_result(path: Path, result: BenchmarkResult) -> None:
    """Appends one result as a JSON line, in one write, flushed to disk.

    A process killed at any point leaves every earlier line intact; a torn last line
    (killed inside the write) is ignored by :func:`read_results`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(result.to_dict()) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> list[BenchmarkResult]:
    """Every complete result line in a JSON-lines log, in order."""
    results = []
    for line in path.read_text().splitlines():
        try:
            results.append(BenchmarkResult.from_dict(json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line torn by a kill mid-write
    return results


def _latest_per_key(results: Sequence[BenchmarkResult]) -> list[BenchmarkResult]:
    latest: dict[tuple[str, str], BenchmarkResult] = {}
    for result in results:
        latest.pop(result.key, None)
        latest[result.key] = result
    return list(latest.values())
