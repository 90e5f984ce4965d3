"""Datasets: TFDS and image folders as :class:`ImageData` (uint8 RGB images, int labels).

Images stay at their stored size here; :func:`hubtransfer.prepare` resizes and scales
them for a particular backbone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubtransfer._tf import tf
from hubtransfer.config import DEFAULTS
from hubtransfer.errors import ConfigurationError, DatasetError

__all__ = ["ImageCounts", "ImageData", "load_image_folder", "load_tfds"]

logger = logging.getLogger(__name__)

_AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class ImageCounts:
    """How many examples each split holds, and how many files were skipped.

    Attributes:
        train: Training examples (None when the source cannot tell without a full pass).
        validation: Validation examples (None likewise).
        skipped: Files skipped as corrupt, truncated, empty or not images.
        skipped_files: Paths of the skipped files (image folders only).
    """

    train: int | None
    validation: int | None
    skipped: int = 0
    skipped_files: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset split into train and validation.

    Attributes:
        train: ``tf.data.Dataset`` of ``(image, label)``: uint8 ``(H, W, 3)``, int64 scalar.
        validation: The same for validation.
        class_names: Label ``i`` is ``class_names[i]``.
        counts: Example counts and skipped files.
        source: Where the data came from, e.g. ``"tfds:cats_vs_dogs"`` or a folder path.
        train_files: For image folders, the files in ``train``, in dataset order.
        validation_files: For image folders, the files in ``validation``, in order.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: tuple[str, ...]
    counts: ImageCounts
    source: str = ""
    train_files: tuple[str, ...] = field(default=(), repr=False)
    validation_files: tuple[str, ...] = field(default=(), repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def _to_rgb_uint8(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 4:
        image = image[..., :3]
    return image, tf.cast(label, tf.int64)


def _known_count(dataset: tf.data.Dataset) -> int | None:
    n = int(dataset.cardinality())
    return n if n >= 0 else None


def load_tfds(
    name: str,
    *,
    splits: tuple[str, str] = ("train[:80%]", "train[80%:]"),
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_key: str | None = None,
    label_key: str | None = None,
) -> ImageData:
    """Loads an image classification dataset from TensorFlow Datasets.

    The default split is the report's: the first 80% of ``train`` for training and the
    last 20% for validation. Class names come from the builder's ``ClassLabel`` feature.

    Args:
        name: TFDS name, e.g. ``"cats_vs_dogs"`` (a version may follow: ``"name:4.0.1"``).
        splits: (train, validation) split expressions.
        data_dir: Where prepared TFDS data lives; TFDS's default (``~/tensorflow_datasets``)
            if None.
        download: Download and prepare the dataset if it is not prepared yet. Off by default
            so that a machine without network fails at once instead of retrying for minutes.
        image_key: Feature holding the image; found from the builder's metadata if None.
        label_key: Feature holding the class label; found likewise if None.

    Raises:
        DatasetError: Unknown dataset, data not prepared (and not downloadable), or no
            image/label features.
    """
    import tensorflow_datasets as tfds

    if len(splits) != 2:
        raise ConfigurationError(
            f"splits must be a (train, validation) pair, e.g. ('train[:80%]', 'train[80%:]'). "
            f"Received: splits={splits!r}."
        )
    where = os.fspath(data_dir) if data_dir is not None else "TFDS's default data_dir"
    try:
        (train, validation), info = tfds.load(
            name, split=list(splits), data_dir=data_dir, download=download, with_info=True
        )
    except tfds.core.registered.DatasetNotFoundError as exc:
        raise DatasetError(
            f"TFDS has no dataset named {name!r}. Check the name in the TFDS catalogue, or "
            "use hubtransfer.load_image_folder() for your own images."
        ) from exc
    except Exception as exc:  # not prepared (AssertionError), network errors, bad splits
        how = (
            "pass download=True on a machine with network"
            if not download
            else "the download failed; check the network"
        )
        raise DatasetError(
            f"Could not load TFDS dataset {name!r} (splits {list(splits)}) from {where}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. To supply "
            f"it: {how}; or point data_dir at a directory where it is already prepared "
            "(copied from another machine); or put the manual download in "
            "<data_dir>/downloads/manual and run tfds.builder(name).download_and_prepare(); "
            "or use hubtransfer.load_image_folder() on the extracted images."
        ) from exc
    image_key, label_key = _find_keys(info, name, image_key, label_key)
    class_names = tuple(info.features[label_key].names)

    def select(example: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
        return _to_rgb_uint8(example[image_key], example[label_key])

    train = train.map(select, num_parallel_calls=_AUTOTUNE)
    validation = validation.map(select, num_parallel_calls=_AUTOTUNE)
    counts = ImageCounts(_known_count(train), _known_count(validation))
    logger.info(
        "Loaded tfds:%s: %s train, %s validation, classes %s",
        name,
        counts.train,
        counts.validation,
        class_names,
    )
    return ImageData(train, validation, class_names, counts, source=f"tfds:{name}")


def _find_keys(
    info: Any, name: str, image_key: str | None, label_key: str | None
) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = info.features
    supervised = info.supervised_keys or (None, None)
    image_key = image_key or (supervised[0] if isinstance(supervised[0], str) else None)
    label_key = label_key or (supervised[1] if isinstance(supervised[1], str) else None)
    image_key = image_key or next(
        (k for k, f in features.items() if isinstance(f, tfds.features.Image)), None
    )
    label_key = label_key or next(
        (k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), None
    )
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        raise DatasetError(
            f"TFDS dataset {name!r} has no image feature {image_key!r}; its features are "
            f"{list(features)}. Pass image_key= naming the image feature."
        )
    if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
        raise DatasetError(
            f"TFDS dataset {name!r} has no class-label feature {label_key!r}; its features are "
            f"{list(features)}. Pass label_key= naming a ClassLabel feature."
        )
    return str(image_key), str(label_key)


def _decode(path: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _valid_files(paths: list[str]) -> set[str]:
    # One parallel decoding pass in tf.data; files that fail to decode are dropped by
    # ignore_errors(), so corrupt files are found once, here, and never crash an epoch.
    checked = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(lambda p: (p, tf.shape(_decode(p))), num_parallel_calls=_AUTOTUNE)
        .ignore_errors()
        .map(lambda p, shape: p)
    )
    return {p.decode() for p in checked.as_numpy_iterator()}


def _image_dataset(paths: list[str], labels: list[int]) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int64))
    )
    # ignore_errors: a file changed or deleted after the scan is skipped, not fatal.
    return dataset.map(lambda p, y: (_decode(p), y), num_parallel_calls=_AUTOTUNE).ignore_errors(
        log_warning=True
    )


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    validation_fraction: float = DEFAULTS.validation_fraction,
    seed: int = DEFAULTS.seed,
) -> ImageData:
    """Loads images laid out one subfolder per class: ``path/<class>/<image>``.

    JPEG, PNG (RGBA, palette, grayscale, 16-bit), BMP, GIF (first frame) and WebP are
    read by content, whatever the extension, and converted to 3-channel RGB. Files that
    do not decode (corrupt, truncated, empty, not images) are skipped, counted in
    ``counts.skipped`` and logged. Hidden entries (names starting with ".") are ignored.

    The split is stratified per class and deterministic for a given ``seed``; no file is
    in both splits.

    Args:
        path: The root folder.
        validation_fraction: Share of each class held out for validation, in [0, 1).
        seed: Seed of the split.

    Raises:
        DatasetError: ``path`` is missing, has fewer than two class folders, or a class has
            no valid image.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"Image folder {root} does not exist or is not a directory. Expected one "
            "subfolder per class, e.g. photos/cat/*.jpg and photos/dog/*.jpg."
        )
    if not (isinstance(validation_fraction, (int, float)) and 0 <= validation_fraction < 1):
        raise ConfigurationError(
            "validation_fraction must be a number in [0, 1), e.g. 0.2. "
            f"Received: validation_fraction={validation_fraction!r}."
        )
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DatasetError(
            f"Image folder {root} has {len(class_dirs)} class subfolder(s) "
            f"({', '.join(d.name for d in class_dirs) or 'none'}); at least 2 are needed. "
            "Put each class's images in its own subfolder: root/<class_name>/<image>."
        )
    files = {
        d.name: sorted(
            str(f)
            for f in d.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(d).parts)
        )
        for d in class_dirs
    }
    all_files = [f for names in files.values() for f in names]
    valid = _valid_files(all_files)
    skipped = tuple(f for f in all_files if f not in valid)
    empty = [name for name, names in files.items() if not any(f in valid for f in names)]
    if empty:
        raise DatasetError(
            f"Class folder(s) {', '.join(map(repr, empty))} in {root} hold no readable image "
            f"({len(skipped)} file(s) in the folder were skipped as unreadable). Add JPEG, "
            "PNG, BMP or GIF images, or remove the folder."
        )
    rng = np.random.default_rng(seed)
    train: tuple[list[str], list[int]] = ([], [])
    validation: tuple[list[str], list[int]] = ([], [])
    for label, name in enumerate(files):
        paths = [f for f in files[name] if f in valid]
        order = rng.permutation(len(paths))
        n_val = round(len(paths) * validation_fraction)
        n_val = min(n_val, len(paths) - 1)  # keep at least one training image per class
        for rank, i in enumerate(order):
            target = validation if rank < n_val else train
            target[0].append(paths[i])
            target[1].append(label)
    if skipped:
        logger.warning(
            "Skipped %d unreadable file(s) in %s (corrupt, truncated, empty or not images), "
            "e.g. %s",
            len(skipped),
            root,
            skipped[0],
        )
    counts = ImageCounts(len(train[0]), len(validation[0]), len(skipped), skipped)
    logger.info(
        "Loaded %s: %d train, %d validation, %d skipped, classes %s",
        root,
        counts.train,
        counts.validation,
        counts.skipped,
        list(files),
    )
    return ImageData(
        _image_dataset(*train),
        _image_dataset(*validation),
        tuple(files),
        counts,
        source=str(root),
        train_files=tuple(train[0]),
        validation_files=tuple(validation[0]),
    )
