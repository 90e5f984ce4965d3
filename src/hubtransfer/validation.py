"""Argument checks, one helper per kind of value, shared by the library and the CLI.

Every message has one shape: what the parameter must be, what was received, and (where
there is one) an example of a good value. The CLI reports these errors as they are, so
a user sees the same words whether they called Python or the command.

This module does not import TensorFlow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from typing import Any

from hubtransfer.errors import ConfigurationError

__all__ = [
    "check_bool",
    "check_cache_location",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_optional_int",
    "check_optional_positive_number",
    "check_positive_number",
]


def _received(name: str, value: object) -> str:
    return f"Received: {name}={value!r}."


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """An integer (not a bool) >= ``minimum``: epochs, batch sizes, seeds, counts."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigurationError(f"{name} must be {what}. {_received(name, value)}")
    return value


def check_optional_int(name: str, value: object, *, minimum: int = 1) -> int | None:
    """None, or what :func:`check_int` accepts."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigurationError(f"{name} must be {what} or None. {_received(name, value)}")
    return value


def check_bool(name: str, value: object) -> bool:
    """True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False. {_received(name, value)}")
    return value


def check_positive_number(name: str, value: object, *, example: str = "") -> float:
    """A finite number > 0: learning rates, budgets, sizes."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        hint = f", e.g. {example}" if example else ""
        raise ConfigurationError(
            f"{name} must be a finite number > 0{hint}. {_received(name, value)}"
        )
    return float(value)


def check_optional_positive_number(name: str, value: object, *, example: str = "") -> float | None:
    """None, or what :func:`check_positive_number` accepts."""
    return None if value is None else check_positive_number(name, value, example=example)


def check_fraction(
    name: str, value: object, *, allow_zero: bool = True, example: str = "0.2"
) -> float:
    """A share in [0, 1) (or (0, 1) with ``allow_zero=False``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
        or value >= 1
    ):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigurationError(
            f"{name} must be a number in {interval}, e.g. {example}. {_received(name, value)}"
        )
    return float(value)


def check_choice(name: str, value: Any, allowed: Collection[Any]) -> Any:
    """One of ``allowed`` (a ``Literal``'s values, typically)."""
    try:
        ok = value in allowed
    except TypeError:  # unhashable value against a set
        ok = False
    if not ok:
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigurationError(f"{name} must be one of {choices}. {_received(name, value)}")
    return value


def check_cache_location(
    name: str, value: object, *, off: str
) -> tuple[bool, str | os.PathLike[str] | None]:
    """``(on, root)`` of a cache argument: True (the cache directory), False or a path.

    Args:
        name: The parameter.
        value: What was passed.
        off: What False means, for the message, e.g. "store nothing".
    """
    if value is True or value is False:
        return value, None
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        return True, value
    raise ConfigurationError(
        f"{name} must be True (the cache directory: $HUBTRANSFER_CACHE_DIR or the user's "
        f"cache), False ({off}) or a directory path. {_received(name, value)}"
    )
