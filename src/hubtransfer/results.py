"""Benchmark results as data: typed records, Markdown tables, JSON/CSV, JSON-lines logs.

This module does not import TensorFlow, so saved studies can be read anywhere.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from hubtransfer._fs import atomic_write_text
from hubtransfer.errors import BenchmarkError, ConfigurationError
from hubtransfer.metrics import SplitMetrics
from hubtransfer.stats import Summary, summarize, welch_interval

__all__ = [
    "RESULTS_FILE",
    "BenchmarkReport",
    "BenchmarkResult",
    "Comparison",
    "EpochRecord",
    "METRICS",
    "Recommendation",
    "SeedRun",
    "Mode",
    "Status",
    "append_result",
    "ranking_metric",
    "read_results",
]

logger = logging.getLogger(__name__)

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
class SeedRun:
    """One seed's outcome within a result.

    Attributes:
        seed: The seed.
        best_val_accuracy: Highest validation accuracy over its epochs.
        final_val_accuracy: Validation accuracy after its last epoch.
        train_seconds: Its training time (feature extraction counted in the first seed only).
        selected_epoch: The epoch (1-based, over all phases) whose weights were kept.
        val_accuracy: The kept model's validation accuracy. It picked the epoch, so it is
            optimistic; ``test_accuracy`` is not.
        val_balanced_accuracy: The kept model's mean per-class recall on validation.
        test_accuracy: The kept model's accuracy on the held-out test split, if any.
        test_balanced_accuracy: Its mean per-class recall on the test split.
    """

    seed: int
    best_val_accuracy: float | None
    final_val_accuracy: float | None
    train_seconds: float
    selected_epoch: int | None = None
    val_accuracy: float | None = None
    val_balanced_accuracy: float | None = None
    test_accuracy: float | None = None
    test_balanced_accuracy: float | None = None


@dataclass(frozen=True)
class BenchmarkResult:
    """One backbone trained in one mode.

    Attributes:
        backbone: Backbone name.
        mode: ``"frozen"`` or ``"fine_tuned"``.
        status: ``"ok"``, ``"skipped"`` (e.g. TF1 fine-tuning) or ``"failed"``.
        error: Why it was skipped or failed.
        history: Per-epoch records, in order.
        best_val_accuracy: Highest validation accuracy over the epochs (mean over seeds).
        final_val_accuracy: Validation accuracy after the last epoch (mean over seeds).
        train_seconds: Total training time of all seeds: feature extraction (once) + head
            (+ fine-tuning).
        feature_seconds: The feature part, when cached: the forward pass over every
            split, or, when ``features_from_store``, the time spent reading the stored
            features (the original extraction time is in the store entry's marker).
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
        seed: Random seed of the (first) run; seed ``seed + i`` ran the i-th repeat.
        per_seed: One :class:`SeedRun` per seed (``history`` is the first seed's).
        monitor: What picked the kept epoch (``"val_loss"`` or ``"val_accuracy"``).
        selected_epoch: The kept epoch of the first seed (1-based over ``history``): the
            returned, saved and exported model is that epoch's.
        stopped_early: Whether ``patience`` stopped the first seed before its last epoch.
        val_accuracy: The kept model's validation accuracy (mean over seeds). Optimistic:
            the same split picked the epoch.
        val_balanced_accuracy: Its mean per-class recall on validation (mean over seeds).
        test_accuracy: The kept model's held-out test accuracy (mean over seeds), when the
            data has a test split: the honest estimate.
        test_balanced_accuracy: Its mean per-class recall on the test split.
        val_metrics: Per-class precision/recall/F1/support and the confusion matrix of the
            returned model on validation (:class:`hubtransfer.metrics.SplitMetrics` as a dict).
        test_metrics: The same on the test split.
        features_from_store: Whether the features were read from the feature store
            (:mod:`hubtransfer.store`) instead of extracted: no forward pass ran. None
            when no cached features were used.
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
    per_seed: tuple[SeedRun, ...] = ()
    monitor: str | None = None
    selected_epoch: int | None = None
    stopped_early: bool = False
    val_accuracy: float | None = None
    val_balanced_accuracy: float | None = None
    test_accuracy: float | None = None
    test_balanced_accuracy: float | None = None
    val_metrics: dict[str, Any] | None = None
    test_metrics: dict[str, Any] | None = None
    features_from_store: bool | None = None

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
        values["per_seed"] = tuple(SeedRun(**r) for r in values.get("per_seed", ()))
        return cls(**values)

    def summary(self, metric: str = "best_val_accuracy", level: float = 0.95) -> Summary | None:
        """Mean, std and t-interval of ``metric`` over the seeds (None without values)."""
        values = self.seed_values(metric)
        return summarize(values, level) if values else None

    def seed_values(self, metric: str = "best_val_accuracy") -> list[float]:
        """The per-seed values of one of :data:`METRICS`."""
        if metric not in METRICS:
            raise ConfigurationError(
                f"metric must be one of {', '.join(map(repr, METRICS))}. "
                f"Received: metric={metric!r}."
            )
        runs = self.per_seed or (
            (
                SeedRun(
                    self.seed, self.best_val_accuracy, self.final_val_accuracy, 0.0,
                    self.selected_epoch, self.val_accuracy, self.val_balanced_accuracy,
                    self.test_accuracy, self.test_balanced_accuracy,
                ),
            )
            if self.status == "ok"
            else ()
        )  # fmt: skip
        return [v for r in runs if (v := getattr(r, metric)) is not None]

    @property
    def label(self) -> str:
        """``"backbone (mode)"``."""
        return f"{self.backbone} ({self.mode})"


@dataclass(frozen=True)
class Comparison:
    """The difference between two results, with its confidence interval.

    Attributes:
        a: The first result's label.
        b: The second result's label.
        metric: What was compared.
        difference: ``mean(a) - mean(b)``.
        ci_low: Lower end of the interval (None with fewer than 2 seeds each).
        ci_high: Upper end.
        level: Confidence level.
        distinguishable: Whether the interval excludes zero.
        text: The finding in words.
    """

    a: str
    b: str
    metric: str
    difference: float
    ci_low: float | None
    ci_high: float | None
    level: float
    distinguishable: bool
    text: str


@dataclass(frozen=True)
class Recommendation:
    """The best result within a budget, and why.

    Attributes:
        result: The recommended result, or None when nothing fits the budget.
        reason: One paragraph: what it beat, by how much, what the budget excluded.
        excluded: Labels of the results the budget ruled out, with the reason.
    """

    result: BenchmarkResult | None
    reason: str
    excluded: tuple[str, ...] = ()


#: Accuracy metrics a result carries per seed, usable for ranking and comparing.
METRICS = (
    "test_balanced_accuracy", "test_accuracy", "val_balanced_accuracy", "val_accuracy",
    "best_val_accuracy", "final_val_accuracy",
)  # fmt: skip


def ranking_metric(results: Sequence[BenchmarkResult]) -> str:
    """The metric a study is ranked by: held-out test over validation, balanced accuracy
    when the classes are imbalanced (largest > 3x smallest), and for results saved before
    the kept-epoch fields existed, the best validation accuracy."""
    ok = [r for r in results if r.status == "ok"]
    imbalanced = any(
        m is not None and SplitMetrics.from_dict(m).is_imbalanced
        for r in ok
        for m in (r.val_metrics, r.test_metrics)
    )
    if ok and all(r.test_accuracy is not None for r in ok):
        return "test_balanced_accuracy" if imbalanced else "test_accuracy"
    if ok and all(r.val_accuracy is not None for r in ok):
        return "val_balanced_accuracy" if imbalanced else "val_accuracy"
    return "best_val_accuracy"


_CSV_COLUMNS = (
    "backbone", "mode", "status", "best_val_accuracy", "final_val_accuracy",
    "train_seconds", "feature_seconds", "head_seconds", "model_bytes", "params_total",
    "params_trainable", "latency_ms", "throughput", "image_size", "seed", "error",
    "selected_epoch", "val_accuracy", "val_balanced_accuracy", "test_accuracy",
    "test_balanced_accuracy", "features_from_store",
)  # fmt: skip


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
        for result in self.results:
            if result.key == (backbone, mode):
                return result
        have = ", ".join(f"{b}/{m}" for b, m in (r.key for r in self.results)) or "none"
        raise BenchmarkError(
            f"No result for backbone {backbone!r} in mode {mode!r}. Results present: {have}."
        )

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

    def _find(self, which: str | tuple[str, str]) -> BenchmarkResult:
        if isinstance(which, tuple):
            return self.get(*which)  # type: ignore[arg-type]
        backbone, _, mode = which.partition("/")
        if mode:
            return self.get(backbone, mode)  # type: ignore[arg-type]
        matches = [r for r in self.results if r.backbone == backbone]
        if len(matches) != 1:
            raise BenchmarkError(
                f"{which!r} names {len(matches)} results; say which mode, e.g. "
                f"'{backbone}/frozen' or ('{backbone}', 'fine_tuned')."
            )
        return matches[0]

    def compare(
        self,
        a: str | tuple[str, str],
        b: str | tuple[str, str],
        *,
        metric: str | None = None,
        level: float = 0.95,
    ) -> Comparison:
        """How ``a`` and ``b`` differ in ``metric``, and whether seeds' noise can explain it.

        ``a`` and ``b`` are ``"backbone"``, ``"backbone/mode"`` or ``(backbone, mode)``.
        The interval is Welch's t-interval over the seeds (needs 2+ seeds each).
        ``metric`` defaults to :func:`ranking_metric` (held-out test accuracy when there is
        a test split; balanced accuracy when classes are imbalanced).
        """
        metric = metric or ranking_metric(self.results)
        ra, rb = self._find(a), self._find(b)
        va, vb = ra.seed_values(metric), rb.seed_values(metric)
        if not va or not vb:
            raise BenchmarkError(
                f"Cannot compare {ra.label} ({ra.status}) and {rb.label} ({rb.status}): "
                f"both need {metric} values. Compare results whose status is 'ok'."
            )
        interval = welch_interval(va, vb, level)
        sa, sb = summarize(va, level), summarize(vb, level)
        what = metric.replace("_", " ")
        pct = f"{level:.0%}"
        head = (
            f"{ra.label} scores {_pm(sa)} and {rb.label} {_pm(sb)} ({what}, mean"
            f"{' ± ' + pct + ' t-interval half-width' if sa.n > 1 or sb.n > 1 else ''} over "
            f"{sa.n} and {sb.n} seed(s))."
        )
        if interval.low is None or interval.high is None:
            text = (
                f"{head} The difference is {interval.difference:+.3f}, but with fewer than two "
                "seeds each it cannot be told from seed noise: rerun with seeds >= 3."
            )
        else:
            verdict = (
                "distinguishable from seed noise"
                if interval.excludes_zero
                else "not distinguishable from seed noise"
            )
            text = (
                f"{head} The difference, {interval.difference:+.3f} ({pct} CI "
                f"{interval.low:+.3f} to {interval.high:+.3f}), is {verdict} at the {pct} level."
            )
        return Comparison(
            ra.label, rb.label, metric, interval.difference, interval.low, interval.high,
            level, interval.excludes_zero, text,
        )  # fmt: skip

    def pareto(
        self, objectives: Sequence[str] = ("accuracy", "train_seconds", "model_bytes")
    ) -> list[BenchmarkResult]:
        """The results no other result beats on every objective (the Pareto front).

        Objectives: ``"accuracy"`` (the :func:`ranking_metric`, maximised),
        ``"final_accuracy"`` (maximised), and ``"train_seconds"``, ``"model_bytes"``,
        ``"latency_ms"``, ``"params_total"`` (minimised). Only ``ok`` results with every
        objective measured take part. Equal results do not dominate each other.
        """
        unknown = [o for o in objectives if o not in _OBJECTIVES]
        if unknown or not objectives:
            raise ConfigurationError(
                f"Unknown Pareto objective(s) {unknown}. Allowed: {sorted(_OBJECTIVES)}."
            )
        metric = ranking_metric(self.results)

        def value(r: BenchmarkResult, objective: str) -> Any:
            if objective == "accuracy":
                return s.mean if (s := r.summary(metric)) else None
            return _OBJECTIVES[objective](r)

        points = [(r, [value(r, o) for o in objectives]) for r in self.results if r.status == "ok"]
        scored = [(r, vals) for r, vals in points if None not in vals]

        def dominates(p: list[Any], q: list[Any]) -> bool:
            return all(x >= y for x, y in zip(p, q, strict=True)) and any(
                x > y for x, y in zip(p, q, strict=True)
            )

        return [r for r, p in scored if not any(dominates(q, p) for _, q in scored)]

    def recommend(
        self,
        *,
        max_model_mb: float | None = None,
        max_latency_ms: float | None = None,
        max_train_seconds: float | None = None,
        metric: str | None = None,
    ) -> Recommendation:
        """The most accurate result that fits the budget, with a one-paragraph reason.

        ``metric`` defaults to :func:`ranking_metric`: held-out test accuracy when the data
        has a test split, balanced accuracy when the classes are imbalanced (a model that
        always answers the majority class cannot win). A budget nothing fits returns
        ``Recommendation(None, reason)``, not an exception.
        """
        metric = metric or ranking_metric(self.results)
        max_bytes = None if max_model_mb is None else max_model_mb * 1e6
        limits = [
            ("size", "model_bytes", max_bytes, "MB", 1e6),
            ("latency", "latency_ms", max_latency_ms, "ms", 1.0),
            ("train time", "train_seconds", max_train_seconds, "s", 1.0),
        ]  # fmt: skip
        fits: list[BenchmarkResult] = []
        excluded: list[str] = []
        for r in self.results:
            if r.status != "ok" or not r.seed_values(metric):
                excluded.append(f"{r.label}: {r.status}")
                continue
            over = []
            for name, attr, limit, unit, scale in limits:
                if limit is None:
                    continue
                value = getattr(r, attr)
                if value is None:
                    over.append(f"{name} not measured")
                elif value > limit:
                    over.append(f"{name} {value / scale:.1f} {unit} > {limit / scale:.1f} {unit}")
            if over:
                excluded.append(f"{r.label}: {', '.join(over)}")
            else:
                fits.append(r)
        budget = (
            ", ".join(
                f"{name} <= {limit / scale:g} {unit}"
                for name, _, limit, unit, scale in limits
                if limit is not None
            )
            or "no budget"
        )
        if not fits:
            return Recommendation(
                None,
                f"No result fits the budget ({budget}). "
                + ("Excluded: " + "; ".join(excluded) + ". " if excluded else "")
                + "Relax the budget, or benchmark smaller backbones (e.g. mobilenet_v3_small).",
                tuple(excluded),
            )
        ranked = sorted(fits, key=lambda r: -summarize(r.seed_values(metric)).mean)
        best = ranked[0]
        what = metric.replace("_", " ")
        reason = [
            f"Use {best.label}: the highest {what} ({_pm(summarize(best.seed_values(metric)))}) "
            f"of the {len(fits)} result(s) within the budget ({budget})."
        ]
        if "balanced" in metric:
            reason.append(
                "The classes are imbalanced (largest more than 3x the smallest), so results are "
                "ranked by balanced accuracy (mean per-class recall), which a model answering "
                "only the majority class cannot win."
            )
        if "val" in metric:
            reason.append(
                "Validation accuracy also picked each run's epoch, so it is optimistic; load "
                "the data with a test split (test_fraction= or test_split=) for an honest score."
            )
        if len(ranked) > 1:
            runner = ranked[1]
            comparison = self.compare(best.key, runner.key, metric=metric)
            noise = (
                "a difference seed noise cannot explain"
                if comparison.distinguishable
                else "a difference within seed noise"
                if comparison.ci_low is not None
                else "untested against seed noise (one seed each)"
            )
            reason.append(
                f"It beat the runner-up, {runner.label}, by {comparison.difference:.3f} ({noise})."
            )
        if best.model_bytes is not None:
            reason.append(
                f"It saves to {best.model_bytes / 1e6:.1f} MB and trained in "
                f"{best.train_seconds or 0:.0f} s."
            )
        if excluded:
            reason.append("Excluded: " + "; ".join(excluded) + ".")
        return Recommendation(best, " ".join(reason), tuple(excluded))

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
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.to_records())
        atomic_write_text(paths["json"], json.dumps(self.to_records(), indent=2) + "\n")
        atomic_write_text(paths["markdown"], self.to_markdown())
        atomic_write_text(paths["csv"], buffer.getvalue())
        return paths

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> BenchmarkReport:
        """Reads a saved study: ``results.jsonl`` (as the study wrote it) or ``results.json``."""
        root = Path(directory)
        if (root / RESULTS_FILE).exists():
            return cls(_latest_per_key(read_results(root / RESULTS_FILE)))
        if (root / "results.json").exists():
            path = root / "results.json"
            try:
                records = json.loads(path.read_bytes().decode("utf-8"))
                if not isinstance(records, list):
                    raise ValueError(f"a list of records, not {type(records).__name__}")
                return cls([_record(r) for r in records])
            except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise BenchmarkError(
                    f"{path} is not a saved hubtransfer study ({exc}). Point at the "
                    f"output_dir of a benchmark() run; if {RESULTS_FILE} is there, it is read "
                    "first."
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


def _pm(summary: Summary) -> str:
    if summary.half_width is None:
        return f"{summary.mean:.3f}"
    return f"{summary.mean:.3f} ± {summary.half_width:.3f}"


_OBJECTIVES: dict[str, Any] = {
    "accuracy": None,  # the ranking metric, computed per report
    "final_accuracy": lambda r: s.mean if (s := r.summary("final_val_accuracy")) else None,
    "train_seconds": lambda r: None if r.train_seconds is None else -r.train_seconds,
    "model_bytes": lambda r: None if r.model_bytes is None else -r.model_bytes,
    "latency_ms": lambda r: None if r.latency_ms is None else -r.latency_ms,
    "params_total": lambda r: None if r.params_total is None else -r.params_total,
}


def append_result(path: Path, result: BenchmarkResult) -> None:
    """Appends one result as a JSON line, in one write, flushed to disk.

    A process killed at any point leaves every earlier line intact. A log whose last line
    was torn (killed inside the write, or NUL bytes left by a power loss) is first ended
    with a newline, so the fragment stays a bad line of its own and the new result is
    readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(result.to_dict()) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(data: object) -> BenchmarkResult:
    if not isinstance(data, dict):
        raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
    if not isinstance(data.get("backbone"), str) or data.get("mode") not in get_args(Mode):
        raise ValueError("a record needs a 'backbone' name and a 'mode' (frozen or fine_tuned)")
    if data.get("status") not in get_args(Status):
        raise ValueError(f"status must be one of {get_args(Status)}")
    try:
        return BenchmarkResult.from_dict(data)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ValueError(f"fields do not match a result ({exc})") from exc


def read_results(path: Path) -> list[BenchmarkResult]:
    """Every readable result line in a JSON-lines log, in order.

    Lines that are not results (torn by a kill, NUL bytes, junk, another format) are
    skipped and logged as a warning with their line numbers; they never stop a read.

    Raises:
        BenchmarkError: The log cannot be read at all (permissions, a directory).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchmarkError(
            f"Cannot read the results log {path}: {exc.strerror or exc}. Check that it is a "
            "readable file, or point at another study folder."
        ) from exc
    results = []
    bad: list[int] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            results.append(_record(json.loads(line.decode("utf-8"))))
        except (ValueError, UnicodeDecodeError, RecursionError):
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        logger.warning(
            "%s: skipped %d line(s) that are not results (line %s): torn by an interrupted "
            "write or edited by hand. Their runs are redone on resume.",
            path, len(bad), shown,
        )  # fmt: skip
    return results


def _latest_per_key(results: Sequence[BenchmarkResult]) -> list[BenchmarkResult]:
    latest: dict[tuple[str, str], BenchmarkResult] = {}
    for result in results:
        latest.pop(result.key, None)
        latest[result.key] = result
    return list(latest.values())
