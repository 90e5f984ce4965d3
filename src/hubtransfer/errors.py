"""Every exception hubtransfer raises on purpose derives from :class:`HubTransferError`.

Each class also derives from the built-in exception it refines, so code that already
catches ``LookupError`` or ``ValueError`` keeps working. Messages follow one pattern:
what was wrong, what is allowed, what was received, and what to do next.
"""

from __future__ import annotations

__all__ = [
    "BackboneLoadError",
    "BenchmarkError",
    "ConfigurationError",
    "DatasetError",
    "ExportError",
    "HubTransferError",
    "MissingDependencyError",
    "NotFineTunableError",
    "OutputDirectoryError",
    "UnknownBackboneError",
    "one_line",
]


class HubTransferError(Exception):
    """Base class of every error raised by hubtransfer."""


class UnknownBackboneError(HubTransferError, LookupError):
    """A backbone name is not in the registry."""


class NotFineTunableError(HubTransferError, ValueError):
    """Fine-tuning (``trainable=True``) was asked of a backbone that cannot be trained."""


class BackboneLoadError(HubTransferError, OSError):
    """A backbone handle could not be fetched, or what was fetched is not a usable model."""


class ConfigurationError(HubTransferError, ValueError):
    """An argument has a value outside what is allowed."""


class DatasetError(HubTransferError, ValueError):
    """A dataset is missing, empty, or not in the expected layout."""


class BenchmarkError(HubTransferError, RuntimeError):
    """A benchmark could not run or its saved results could not be read."""


class ExportError(HubTransferError, RuntimeError):
    """A model could not be exported in the requested format."""


class MissingDependencyError(HubTransferError, ImportError):
    """An optional dependency needed for this feature is not installed."""


class OutputDirectoryError(HubTransferError, OSError):
    """An output folder is a file, cannot be written, or another study is using it."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (for messages that quote a library's error)."""
    return " ".join(str(exc).split()) or type(exc).__name__
