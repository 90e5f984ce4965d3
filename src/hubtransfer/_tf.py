"""The one place that imports TensorFlow, tf_keras and tensorflow_hub.

``tensorflow_hub.KerasLayer`` is a Keras 2 layer. With TF >= 2.16 ``tf.keras`` is Keras 3
and rejects it, so every model in hubtransfer is a ``tf_keras`` model, whatever
``TF_USE_LEGACY_KERAS`` says. tf_keras must match TensorFlow's minor version.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from hubtransfer.errors import MissingDependencyError

__all__ = ["hub", "no_autotune_stalls", "tf", "tf_keras"]

logger = logging.getLogger("hubtransfer")


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


if _minor(tf.__version__) < (2, 16):  # pragma: no cover - guarded by pyproject
    raise MissingDependencyError(
        f"hubtransfer needs TensorFlow >= 2.16. Received: tensorflow {tf.__version__}. "
        "Run `pip install -U hubtransfer` to install matching versions."
    )
if _minor(tf_keras.__version__) != _minor(tf.__version__):
    logger.warning(
        "tf_keras %s does not match TensorFlow %s; Hub layers may fail to load. "
        "Install the matching version: pip install 'tf-keras~=%s.0'.",
        tf_keras.__version__,
        tf.__version__,
        ".".join(str(p) for p in _minor(tf.__version__)),
    )


def no_autotune_stalls(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's model-based autotuning off, for the whole pipeline.

    With it on, dropping an iterator (the end of every epoch, validation pass or feature
    pass) can block until the autotuner's background thread next wakes up, and that
    thread sleeps for doubling periods (10 ms, 20 ms, ... up to a minute): measured
    here, a 3 s pass then took 5.1 s and a 5 s pass 10.2 s
    (``benchmarks/iterator_teardown.py``). Without it, ``AUTOTUNE`` parallelism is the
    number of cores and prefetch buffers still grow as needed.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
