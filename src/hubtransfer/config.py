"""Defaults, defined once. The library's signatures and the CLI both read them.

This module does not import TensorFlow, so ``hubtransfer --help`` can show them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_DIR_ENV", "DEFAULTS", "Defaults", "cache_root", "hub_cache_dir"]

#: Environment variable naming hubtransfer's cache directory (feature store, spilled
#: image caches). Unset: :func:`cache_root` picks the platform's user cache directory.
CACHE_DIR_ENV = "HUBTRANSFER_CACHE_DIR"


@dataclass(frozen=True)
class Defaults:
    """Default settings of a study.

    Attributes:
        epochs: Epochs of the frozen head and of the fine-tuning phase (the report's 10).
        batch_size: Batch size (the report's 32).
        learning_rate: Adam learning rate of the head (the report's 1e-3).
        warmup_epochs: Head-only epochs before fine-tuning unfreezes the backbone.
        fine_tune_lr_factor: Fine-tuning learning rate = ``learning_rate`` x this (the TF
            transfer-learning tutorial's 1/10).
        dropout: Head dropout (TF Hub's make_image_classifier and the Model Makers: 0.2).
        validation_fraction: Share of each image-folder class held out (the report's 20%).
        seed: Seed of splits, initialisation, shuffling and augmentation.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_epochs: int = 2
    fine_tune_lr_factor: float = 0.1
    dropout: float = 0.2
    validation_fraction: float = 0.2
    seed: int = 0


DEFAULTS = Defaults()


def cache_root() -> Path:
    """hubtransfer's cache directory: ``$HUBTRANSFER_CACHE_DIR``, else the user's cache dir.

    The user's cache directory is ``$XDG_CACHE_HOME/hubtransfer`` (``~/.cache/hubtransfer``
    when unset) on Linux, ``~/Library/Caches/hubtransfer`` on macOS and
    ``%LOCALAPPDATA%\\hubtransfer\\Cache`` on Windows. Nothing is created here.
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "hubtransfer" / "Cache"
    if sys.platform == "darwin":  # pragma: no cover
        return Path.home() / "Library" / "Caches" / "hubtransfer"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hubtransfer"


def hub_cache_dir() -> str:
    """Where tensorflow_hub caches downloaded models, as it decides:
    ``$TFHUB_CACHE_DIR``, else ``tfhub_modules`` in the system's temp directory."""
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
