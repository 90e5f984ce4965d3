"""TensorBoard runs of a study: per-epoch scalars and the hyperparameters of each trial.

``benchmark(..., tensorboard_dir=DIR)`` writes one run per trial and seed,
``DIR/<backbone>_<mode>_seed<seed>``, with ``train`` and ``validation`` subruns holding
``epoch_loss`` and ``epoch_accuracy`` (the names Keras' own TensorBoard callback uses).
Epochs are numbered across phases (a fine-tuned run's warm-up epochs, then its
fine-tuning epochs), as ``selected_epoch`` counts them, so no phase overwrites another.
At the end of the trial the run gets its hyperparameters and final metrics through the
HParams plugin, so ``tensorboard --logdir DIR`` compares the whole study in its HParams
view. A run directory that already exists (an earlier study in the same DIR) is never
written into: the new run gets a ``-2``, ``-3``, ... suffix.

Needs the ``tensorboard`` package (``pip install 'hubtransfer[tensorboard]'``).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from pathlib import Path
from typing import Any

from hubtransfer._fs import check_writable_dir
from hubtransfer._tf import tf, tf_keras
from hubtransfer.errors import MissingDependencyError
from hubtransfer.records import BenchmarkResult

__all__ = ["METRICS", "TrialBoard", "check_tensorboard_dir", "write_experiment"]

logger = logging.getLogger(__name__)

#: Final metrics written per run for the HParams view: tag -> what it is.
METRICS = {
    "final/val_accuracy": "validation accuracy of the kept epoch",
    "final/val_balanced_accuracy": "validation balanced accuracy of the kept epoch",
    "final/test_accuracy": "held-out test accuracy of the kept epoch",
    "final/test_balanced_accuracy": "held-out test balanced accuracy of the kept epoch",
    "final/best_val_accuracy": "highest validation accuracy over the epochs",
    "final/selected_epoch": "the kept epoch (1-based over all phases)",
    "final/train_seconds": "training time of this seed",
    "final/model_mb": "size of the classifier saved as .h5, MB",
    "final/latency_ms": "inference ms per image at batch size 1",
}
#: Settings written as hyperparameters (with backbone, mode, seed and image size).
_SETTINGS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "warmup_epochs",
    "fine_tune_learning_rate",
    "augment",
    "cache_features",
    "monitor",
    "patience",
    "class_weight",
    "mixed_precision",
)


def _hparams_api() -> Any:
    try:
        return importlib.import_module("tensorboard.plugins.hparams.api")
    except ImportError as exc:
        raise MissingDependencyError(
            "tensorboard_dir (CLI: --tensorboard) needs the tensorboard package, which is not "
            "installed. Run `pip install 'hubtransfer[tensorboard]'` (or `pip install "
            "tensorboard`), or leave tensorboard_dir unset."
        ) from exc


def check_tensorboard_dir(directory: str | os.PathLike[str]) -> Path:
    """Checks up front that TensorBoard runs can be written to ``directory``.

    Raises:
        MissingDependencyError: tensorboard is not installed.
        OutputDirectoryError: ``directory`` is a file or not writable.
    """
    _hparams_api()
    return check_writable_dir(directory, "tensorboard_dir (--tensorboard)")


def _unique_dir(root: Path, name: str) -> Path:
    candidate, n = root / name, 2
    while candidate.exists():
        candidate, n = root / f"{name}-{n}", n + 1
    return candidate


def write_experiment(root: Path) -> None:
    """The HParams experiment summary at the top of ``root``: which metrics to show."""
    hp = _hparams_api()
    names = ("backbone", "mode", "seed", "image_size", *_SETTINGS)
    with tf.summary.create_file_writer(str(root)).as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name) for name in names],
            metrics=[hp.Metric(tag, description=what) for tag, what in METRICS.items()],
        )


class TrialBoard(tf_keras.callbacks.Callback):
    """Writes every fit of one trial (backbone x mode) to one run per seed.

    Call :meth:`begin_seed` before each seed's fits, and :meth:`finish` with the result.
    """

    def __init__(self, root: Path, backbone: str, mode: str) -> None:
        super().__init__()
        self.root = root
        self.name = f"{backbone}_{mode}"
        self.runs: dict[int, Path] = {}
        self._writers: dict[str, Any] = {}
        self._step = 0

    def begin_seed(self, seed: int) -> None:
        self._close()
        run = _unique_dir(self.root, f"{self.name}_seed{seed}")
        self.runs[seed] = run
        self._writers = {
            split: tf.summary.create_file_writer(str(run / split))
            for split in ("train", "validation")
        }
        self._step = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if not self._writers:
            return
        self._step += 1  # across phases: warm-up epochs, then fine-tuning epochs
        for key, value in (logs or {}).items():
            split = "validation" if key.startswith("val_") else "train"
            with self._writers[split].as_default():
                tf.summary.scalar(
                    f"epoch_{key.removeprefix('val_')}", float(value), step=self._step
                )

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.flush()
            writer.close()
        self._writers = {}

    def finish(self, result: BenchmarkResult) -> None:
        """Closes the epoch writers and writes each seed's hyperparameters and metrics."""
        self._close()
        if result.status != "ok":
            return
        hp = _hparams_api()
        config = result.config
        settings = {
            name: config[name]
            for name in _SETTINGS
            if isinstance(config.get(name), (bool, int, float, str))
        }
        for seed_run in result.per_seed:
            run = self.runs.get(seed_run.seed)
            if run is None:
                continue
            hparams = {
                "backbone": result.backbone,
                "mode": result.mode,
                "seed": seed_run.seed,
                "image_size": result.image_size or 0,
                **settings,
            }
            metrics = {
                "final/val_accuracy": seed_run.val_accuracy,
                "final/val_balanced_accuracy": seed_run.val_balanced_accuracy,
                "final/test_accuracy": seed_run.test_accuracy,
                "final/test_balanced_accuracy": seed_run.test_balanced_accuracy,
                "final/best_val_accuracy": seed_run.best_val_accuracy,
                "final/selected_epoch": seed_run.selected_epoch,
                "final/train_seconds": seed_run.train_seconds,
                "final/model_mb": None if result.model_bytes is None else result.model_bytes / 1e6,
                "final/latency_ms": result.latency_ms,
            }
            writer = tf.summary.create_file_writer(str(run))
            with writer.as_default():
                hp.hparams(hparams, trial_id=run.name)
                for tag, value in metrics.items():
                    if value is not None and math.isfinite(value):
                        tf.summary.scalar(tag, float(value), step=seed_run.selected_epoch or 0)
            writer.flush()
            writer.close()
            logger.debug("TensorBoard run %s written", run)
