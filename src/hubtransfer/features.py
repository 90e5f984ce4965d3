"""The frozen-feature cache: run a frozen backbone once, keep its pooled features.

A frozen backbone gives the same features every epoch, so a head trained on cached
features sees the same inputs as one trained with the backbone running every step, at
the cost of one forward pass per image. (The two runs batch and shuffle differently, so
their weights and accuracies differ as two seeds do: tests allow that difference.)
Features stay in memory up to ``memory_limit_bytes`` and spill to a file past it.
Across studies and processes, :mod:`hubtransfer.store` keeps them on disk.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from hubtransfer._progress import Progress
from hubtransfer._tf import as_written, no_autotune_stalls, tf, tf_keras

__all__ = ["DEFAULT_MEMORY_LIMIT_BYTES", "FeatureSet", "extract_features"]

logger = logging.getLogger(__name__)

#: Features larger than this (per split) are written to disk instead of kept in memory.
DEFAULT_MEMORY_LIMIT_BYTES = 1 << 30


@dataclass(frozen=True)
class FeatureSet:
    """Pooled features and labels of one split.

    Attributes:
        features: ``(n, feature_dim)`` float32, an array or a read-only memmap.
        labels: ``(n,)`` int64.
        seconds: Wall time of getting them: the forward pass over the split, or reading
            them from the feature store.
        path: The file backing ``features`` when it spilled to disk (or is memory-mapped
            from the feature store), else None.
        from_store: Whether they were read from the feature store instead of extracted.
    """

    features: np.ndarray
    labels: np.ndarray
    seconds: float
    path: Path | None = None
    from_store: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """Batches of ``(features, labels)``, reshuffled each epoch when ``shuffle``."""
        n = len(self)
        if self.path is None:
            ds = tf.data.Dataset.from_tensor_slices((self.features, self.labels))
            if shuffle:
                ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
            return no_autotune_stalls(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))
        # Disk-backed: shuffle indices, read rows from the memmap in batches.
        features, labels = self.features, self.labels
        dim = features.shape[1]

        def read(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            order = np.sort(indices)
            return np.asarray(features[order], np.float32), labels[order]

        index = tf.data.Dataset.range(n)
        if shuffle:
            index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = index.batch(batch_size).map(
            as_written(lambda i: tf.numpy_function(read, [i], (tf.float32, tf.int64))),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = ds.map(
            as_written(lambda x, y: (tf.ensure_shape(x, [None, dim]), tf.ensure_shape(y, [None])))
        )
        return no_autotune_stalls(ds.prefetch(tf.data.AUTOTUNE))


def _saved_inference(
    layer: tf_keras.layers.Layer, images: tf.Tensor
) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """A frozen Hub layer's SavedModel inference function (``training=False``) for any
    batch shaped like ``images``; None for any other layer.

    Called eagerly, a Hub layer traces its SavedModel's function again for every new
    batch shape (each split's last, smaller batch), and the new trace is optimised and
    instantiated again: a few batches' worth of time per backbone and split. The
    SavedModel's own concrete function, saved for a batch of any size, is instantiated
    once. Only for what ``hub.KerasLayer`` would call the same way: no signature,
    arguments or output key, a ``training`` argument, frozen.
    """
    if (
        layer.trainable
        or getattr(layer, "_signature", None)
        or getattr(layer, "_arguments", None)
        or getattr(layer, "_output_key", None)
        or not getattr(layer, "_has_training_argument", False)
    ):
        return None
    loaded = getattr(layer, "_callable", None)  # a restored function, or an object with one
    if not hasattr(loaded, "get_concrete_function"):  # a restored object's own __call__
        loaded = getattr(loaded, "__dict__", {}).get("__call__")
    get_concrete = getattr(loaded, "get_concrete_function", None)
    if get_concrete is None:
        return None
    try:
        function = get_concrete(tf.TensorSpec([None, *images.shape[1:]], images.dtype), False)
    except Exception:  # no such saved signature: the layer's own call
        return None
    return cast(Callable[[tf.Tensor], tf.Tensor], function)


def extract_features(
    backbone_layer: tf_keras.layers.Layer,
    batches: tf.data.Dataset,
    *,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    spill_dir: str | os.PathLike[str] | None = None,
    total: int | None = None,
    what: str = "Extracting features",
) -> FeatureSet:
    """One forward pass of ``backbone_layer`` (inference mode) over batched ``(x, y)``.

    A frozen TF2 Hub layer is run through its SavedModel's own inference function, which
    takes any batch size (see :func:`_saved_inference`); any other layer is called
    eagerly. Progress (images done, rate, and with ``total`` the time left) goes to the
    ``hubtransfer`` logger at INFO, named by ``what``.
    """
    start = time.perf_counter()
    progress = Progress(logger, what, total)
    chunks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    held = 0
    spill: IO[bytes] | None = None
    spill_path: Path | None = None
    dim = 0
    forward: Callable[[tf.Tensor], Any] | None = None
    try:
        for images, batch_labels in batches:
            if forward is None:
                forward = _saved_inference(backbone_layer, images) or (
                    lambda x: backbone_layer(x, training=False)
                )
            features = np.asarray(forward(images), np.float32)
            dim = features.shape[1]
            labels.append(np.asarray(batch_labels, np.int64))
            if spill is None and held + features.nbytes > memory_limit_bytes:
                handle, name = tempfile.mkstemp(suffix=".features", dir=spill_dir)
                spill_path = Path(name)
                spill = os.fdopen(handle, "wb")
                for chunk in chunks:
                    spill.write(chunk.tobytes())
                chunks = []
                logger.info("Feature cache past %d bytes: spilling to %s", memory_limit_bytes, name)
            if spill is not None:
                spill.write(features.tobytes())
            else:
                chunks.append(features)
            held += features.nbytes
            progress.advance(len(features))
    finally:
        if spill is not None:
            spill.close()
    all_labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    if spill_path is not None:
        array: np.ndarray = np.memmap(spill_path, np.float32, "r", shape=(len(all_labels), dim))
    else:
        array = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    progress.finish()
    return FeatureSet(array, all_labels, time.perf_counter() - start, spill_path)
