"""The settings of a study, validated once, before anything is downloaded or trained.

:func:`make_settings` is the one place that checks the values :func:`hubtransfer.benchmark`
takes; the CLI calls it too, before it exports a backbone or loads a dataset, so a bad
``--epochs`` fails in a second, not after minutes of work. A :class:`StudySettings` is
plain data (picklable, JSON-ready through ``dataclasses.asdict``): it is what a result's
``config`` records and what ``resume`` compares.

This module does not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from hubtransfer.config import DEFAULTS
from hubtransfer.errors import ConfigurationError
from hubtransfer.validation import check_choice, check_int, check_positive_number

if TYPE_CHECKING:
    from hubtransfer.model import Head

__all__ = [
    "FineTune",
    "MixedPrecision",
    "OptimizerName",
    "StudySettings",
    "TFLiteMode",
    "make_settings",
    "modes_of",
]

OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop"]
MixedPrecision = Literal["mixed_float16", "mixed_bfloat16"]
FineTune = Literal[False, True, "both"]
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


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False. Received: {name}={value!r}.")
    return value


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
    _check_bool("cache_features", cache_features)
    _check_bool("augment", augment)
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
    )


def _iterable(value: object) -> tuple[object, ...]:
    # Not iterable: one placeholder that fails the membership test above.
    return tuple(value) if isinstance(value, Iterable) else (object(),)
