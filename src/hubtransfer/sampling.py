"""Seeded, class-stratified samples of a split, for every "first N examples" consumer.

int8 calibration, BatchNorm re-estimation and capped evaluations used to take the first
N examples of a split; for an image folder those are one or two classes. They take a
:func:`sample_split` instead: N examples drawn per class in proportion to the split,
in a random order, the same for the same seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from hubtransfer._tf import as_written, tf
from hubtransfer.config import DEFAULTS
from hubtransfer.data import ImageData, _file_dataset, _FileSplit, file_split
from hubtransfer.errors import DatasetError
from hubtransfer.validation import check_choice, check_int

__all__ = ["sample_split", "stratified_indices"]

logger = logging.getLogger(__name__)

Split = Literal["train", "validation", "test"]


def stratified_indices(labels: Sequence[int] | np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Indices of ``n`` of ``labels``, stratified by class, in a random order.

    Each class gets its share of ``n`` (largest remainders round), and at least one index
    when ``n`` allows one per class. All indices, shuffled, when ``n >= len(labels)``.
    Deterministic for a given ``seed``.
    """
    check_int("n", n)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return rng.permutation(len(labels))
    classes, sizes = np.unique(labels, return_counts=True)
    quota = sizes * n / len(labels)
    take = np.floor(quota).astype(int)
    for i in np.argsort(take - quota, kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    if n >= len(classes):
        for i in np.flatnonzero(take == 0):  # a rare class still shows up once
            take[np.argmax(take)] -= 1
            take[i] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return rng.permutation(np.concatenate(chosen))


def sample_split(
    data: ImageData, split: Split, n: int, *, seed: int = DEFAULTS.seed
) -> tf.data.Dataset:
    """``n`` examples of ``data``'s ``split``, stratified by class, in a random order.

    Unbatched ``(uint8 image, int64 label)`` pairs like the split itself; the whole split
    (shuffled) when it holds ``n`` or fewer. The same ``seed`` gives the same sample.

    For an image folder the sample is drawn from the split's file list, at no cost. For
    other sources (TFDS) the labels are read in one pass over the split, and the sample
    is then filtered out of the split in a second pass that stops after the last chosen
    example; such a split must yield its examples in the same order every pass (TFDS
    splits do), and the sample keeps the split's order.

    Args:
        data: From :func:`~hubtransfer.load_image_folder` or :func:`~hubtransfer.load_tfds`.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: How many examples.
        seed: Seed of the sample.

    Raises:
        ConfigurationError: Bad ``split``, ``n`` or ``seed``.
        DatasetError: ``data`` has no such split (no test split was loaded).
    """
    check_choice("split", split, ("train", "validation", "test"))
    check_int("n", n)
    check_int("seed", seed, minimum=0)
    dataset = getattr(data, split)
    if dataset is None:
        raise DatasetError(
            f"{data.source or 'This ImageData'} has no {split} split. Load it with "
            "load_image_folder(..., test_fraction=0.1) or load_tfds(..., test_split='test'), "
            "or sample 'validation'."
        )
    files = file_split(dataset)
    if files is not None:
        chosen = stratified_indices(files.labels, n, seed=seed)
        sample = _FileSplit(
            tuple(files.paths[i] for i in chosen),
            tuple(files.labels[i] for i in chosen),
            f"{split} sample",
            files.source,
            files.cache,
            tuple(files.indices[i] for i in chosen),
        )
        return _file_dataset(sample)
    labels = np.fromiter(
        (int(y) for y in dataset.map(as_written(lambda x, y: y)).as_numpy_iterator()),
        dtype=np.int64,
    )
    chosen = np.sort(stratified_indices(labels, n, seed=seed))
    keep = np.zeros(len(labels), bool)
    keep[chosen] = True
    mask = tf.constant(keep)
    logger.debug("Sampled %d of %d %s examples of %s", len(chosen), len(labels), split, data.source)
    return (
        dataset.enumerate()
        .take(int(chosen[-1]) + 1 if len(chosen) else 0)
        .filter(as_written(lambda i, pair: mask[i]))
        .map(as_written(lambda i, pair: pair))
    )
