"""The settings of a study, validated once, before anything is downloaded or trained.

:func:`make_settings` is the one place that checks the values :func:`hubtransfer.benchmark`
takes; the CLI calls it too, before it exports a backbone or loads a dataset, so a bad
``--epochs`` fails in a second, not after minutes of work. A :class:`StudySettings` is
plain data (picklable, JSON-ready through ``dataclasses.asdict``): it is what a result's
``config`` records and what ``resume`` compares.

This module does not import TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from hubtransfer.config import DEFAULTS
from hubtransfer.errors import ConfigurationError
from hubtransfer.validation import check_bool, check_choice, check_int, check_positive_number

if TYPE_CHECKING:
    from hubtransfer.model import Head

__all__ = [
    "FineTune",
    "MixedPrecision",
    "OptimizerName",
    "StudySettings",
    "TFLiteMode",
    "Monitor",
    "make_settings",
    "resolve_class_weight",
    "modes_of",
]

OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop"]
MixedPrecision = Literal["mixed_float16", "mixed_bfloat16"]
FineTune = Literal[False, True, "both"]
#: What picks the epoch whose weights a run keeps.
Monitor = Literal["val_loss", "val_accuracy"]
#: What benchmark(export=...) accepts: float32 (no quantization) and the quantized modes.
TFLiteMode = Literal["float32", "dynamic", "float16", "int8"]
TFLITE_MODES: tuple[str, ...] = get_args(TFLiteMode)


@dataclass(frozen=True)
class StudySettings:
    """Everything that decides a study's numbers (recorded in each result's ``config``).

    Field order is part of the record: it is the order of ``config`` in saved results.
    """

    epochs: int
    batch_size: int
    cache_features: bool
    head: Head
    optimizer: OptimizerName
    learning_rate: float
    warmup_epochs: int
    fine_tune_learning_rate: float
    augment: bool
    seed: int
    export: tuple[str, ...] = ()
    seeds: int = 1
    mixed_precision: MixedPrecision | None = None
    strategy: str | None = None  # the strategy's class name, for the config record
    # Which epoch's weights a run keeps, and when it stops.
    monitor: Monitor = "val_loss"
    patience: int | None = None
    # None, "balanced", or one weight per class index (resolved against the data).
    class_weight: str | tuple[float, ...] | None = None


def modes_of(fine_tune: object) -> tuple[str, ...]:
    """The modes a ``fine_tune`` value asks for, in run order."""
    if not (isinstance(fine_tune, bool) or fine_tune == "both"):
        raise ConfigurationError(
            f"fine_tune must be False, True or 'both'. Received: fine_tune={fine_tune!r}."
        )
    if fine_tune == "both":
        return ("frozen", "fine_tuned")
    return ("fine_tuned",) if fine_tune else ("frozen",)


def make_settings(
    *,
    epochs: int = DEFAULTS.epochs,
    batch_size: int = DEFAULTS.batch_size,
    cache_features: bool = True,
    head: Head | None = None,
    optimizer: OptimizerName = "adam",
    learning_rate: float = DEFAULTS.learning_rate,
    warmup_epochs: int = DEFAULTS.warmup_epochs,
    fine_tune_learning_rate: float | None = None,
    augment: bool = False,
    seed: int = DEFAULTS.seed,
    seeds: int = 1,
    export: Any = (),
    mixed_precision: MixedPrecision | None = None,
    strategy: str | None = None,
    monitor: Monitor = "val_loss",
    patience: int | None = None,
    class_weight: Any = None,
) -> StudySettings:
    """Checks every value and returns the settings; the first bad one raises.

    Raises:
        ConfigurationError: naming the parameter, what it allows and what it received.
    """
    from hubtransfer.model import Head  # Head's module imports TensorFlow

    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_int("warmup_epochs", warmup_epochs, minimum=0)
    check_int("seed", seed, minimum=0)
    check_int("seeds", seeds)
    check_bool("cache_features", cache_features)
    check_bool("augment", augment)
    check_choice("optimizer", optimizer, get_args(OptimizerName))
    check_positive_number("learning_rate", learning_rate, example="1e-3")
    if fine_tune_learning_rate is None:
        fine_tune_learning_rate = learning_rate * DEFAULTS.fine_tune_lr_factor
    check_positive_number("fine_tune_learning_rate", fine_tune_learning_rate, example="1e-4")
    if head is None:
        head = Head()
    if not isinstance(head, Head):
        raise ConfigurationError(
            "head must be a hubtransfer.Head, e.g. Head(hidden_units=(128,), dropout=0.5) or "
            f"hubtransfer.REPORT_HEAD. Received: head={head!r}."
        )
    if mixed_precision is not None:
        check_choice("mixed_precision", mixed_precision, get_args(MixedPrecision))
    if isinstance(export, str) or not all(
        isinstance(e, str) and e in TFLITE_MODES for e in _iterable(export)
    ):
        raise ConfigurationError(
            f"export must be a sequence of TFLite modes from {TFLITE_MODES}, e.g. "
            f"('dynamic', 'int8'). Received: export={export!r}."
        )
    check_choice("monitor", monitor, get_args(Monitor))
    if patience is not None:
        check_int("patience", patience)
    _check_class_weight(class_weight)
    # float32 is the reference size whenever a quantized mode is asked for.
    exports = tuple(m for m in TFLITE_MODES if m in export or (export and m == "float32"))
    return StudySettings(
        epochs=epochs,
        batch_size=batch_size,
        cache_features=cache_features,
        head=head,
        optimizer=optimizer,
        learning_rate=float(learning_rate),
        warmup_epochs=warmup_epochs,
        fine_tune_learning_rate=float(fine_tune_learning_rate),
        augment=augment,
        seed=seed,
        export=exports,
        seeds=seeds,
        mixed_precision=mixed_precision,
        strategy=strategy,
        monitor=monitor,
        patience=patience,
        # A mapping is resolved to one weight per class index once the data is known.
        class_weight=class_weight if class_weight in (None, "balanced") else None,
    )


def _check_class_weight(class_weight: object) -> None:
    if class_weight is None or class_weight == "balanced":
        return
    if (
        isinstance(class_weight, dict)
        and class_weight
        and all(
            isinstance(k, (str, int))
            and not isinstance(k, bool)
            and not isinstance(v, bool)
            and isinstance(v, (int, float))
            and math.isfinite(v)
            and v > 0
            for k, v in class_weight.items()
        )
    ):
        return
    raise ConfigurationError(
        "class_weight must be None, 'balanced' (weights inverse to class frequency), or a "
        "dict of class name or index -> weight > 0, e.g. {'cat': 1.0, 'dog': 3.0}. "
        f"Received: class_weight={class_weight!r}."
    )


def resolve_class_weight(
    class_weight: object, class_names: tuple[str, ...], counts: list[int] | None = None
) -> tuple[float, ...] | None:
    """One weight per class index, from ``"balanced"`` (needs ``counts``) or a mapping.

    Classes a mapping does not name get weight 1.
    """
    if class_weight is None:
        return None
    if class_weight == "balanced":
        if counts is None or min(counts) == 0:
            raise ConfigurationError(
                "class_weight='balanced' needs at least one training example of every class. "
                f"Received class counts: {counts}. Add images to the empty classes."
            )
        total = sum(counts)
        return tuple(total / (len(counts) * c) for c in counts)
    _check_class_weight(class_weight)
    weights = [1.0] * len(class_names)
    for key, value in cast(dict[object, float], class_weight).items():
        index = (
            key if isinstance(key, int) else (class_names.index(key) if key in class_names else -1)
        )
        if not 0 <= index < len(class_names):
            raise ConfigurationError(
                f"class_weight names class {key!r}, which the data does not have. Allowed: "
                f"{list(class_names)} or indices 0..{len(class_names) - 1}."
            )
        weights[index] = float(value)
    return tuple(weights)


def _iterable(value: object) -> tuple[object, ...]:
    # Not iterable: one placeholder that fails the membership test above.
    return tuple(value) if isinstance(value, Iterable) else (object(),)
