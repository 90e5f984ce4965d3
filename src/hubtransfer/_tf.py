"""The one place that imports TensorFlow, tf_keras and tensorflow_hub.

``tensorflow_hub.KerasLayer`` is a Keras 2 layer. With TF >= 2.16 ``tf.keras`` is Keras 3
and rejects it, so every model in hubtransfer is a ``tf_keras`` model, whatever
``TF_USE_LEGACY_KERAS`` says. tf_keras must match TensorFlow's minor version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from hubtransfer.errors import MissingDependencyError

__all__ = ["as_written", "hub", "no_autotune_stalls", "tf", "tf_keras"]

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
    thread sleeps for doubling periods, so a pass ends at the next of 1.27, 2.55, 5.11,
    10.23 s... (``benchmarks/iterator_teardown.py``; in ``benchmarks/photos.py``
    efficientnet_b0's feature pass took twice its floor). Without it, an ``AUTOTUNE``
    parallelism stays at tf.data's starting value, the number of schedulable cores (at
    most 16).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


_F = TypeVar("_F", bound=Callable[..., Any])


def as_written(fn: _F) -> _F:
    """``fn``, for tf.data's ``map``/``filter``, traced as written: AutoGraph does not
    rewrite it. Only for functions without Python control flow on tensors (an ``if`` on
    a static shape or a Python value is fine).

    AutoGraph parses and rewrites each new function's source the first time tf.data
    traces it: the first ``prepare()`` of a new process took 549 ms with it and 257 ms
    without (``python benchmarks/fixed_costs.py``).
    """
    wrapped: _F = tf.autograph.experimental.do_not_convert(fn)
    return wrapped
