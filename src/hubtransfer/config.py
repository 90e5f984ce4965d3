"""Defaults, defined once. The library's signatures and the CLI both read them.

This module does not import TensorFlow, so ``hubtransfer --help`` can show them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULTS", "Defaults"]


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
