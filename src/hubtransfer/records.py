"""Benchmark results as typed records: epochs, seeds, results, comparisons, advice.

This module does not import TensorFlow, so saved studies can be read anywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from hubtransfer.errors import ConfigurationError
from hubtransfer.stats import Summary, summarize

__all__ = [
    "METRICS",
    "BenchmarkResult",
    "Comparison",
    "EpochRecord",
    "Mode",
    "Recommendation",
    "SeedRun",
    "Status",
]

Mode = Literal["frozen", "fine_tuned"]
Status = Literal["ok", "skipped", "failed"]

#: Accuracy metrics a result carries per seed, usable for ranking and comparing.
METRICS = (
    "test_balanced_accuracy",
    "test_accuracy",
    "val_balanced_accuracy",
    "val_accuracy",
    "best_val_accuracy",
    "final_val_accuracy",
)


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
                    self.seed,
                    self.best_val_accuracy,
                    self.final_val_accuracy,
                    0.0,
                    self.selected_epoch,
                    self.val_accuracy,
                    self.val_balanced_accuracy,
                    self.test_accuracy,
                    self.test_balanced_accuracy,
                ),
            )
            if self.status == "ok"
            else ()
        )
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
