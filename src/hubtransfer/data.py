"""Datasets: TFDS and image folders as :class:`ImageData` (uint8 RGB images, int labels).

TFDS images stay at their stored size. An image folder is decoded once, at load time,
into an :class:`~hubtransfer.imagecache.ImageCache` (shorter side at most
``max_image_size``); :func:`hubtransfer.prepare` resizes and scales either for a
particular backbone.

An image folder's splits are lists of indices into that cache. The ``train`` split
shuffles its whole list (cheap integers) before reading any image, afresh each epoch, so
any stretch of an epoch is a random sample of every class, whatever the dataset's size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import unicodedata
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hubtransfer._tf import as_written, tf
from hubtransfer.config import DEFAULTS
from hubtransfer.decoding import DECODING_VERSION
from hubtransfer.errors import ConfigurationError, DatasetError
from hubtransfer.imagecache import (
    DEFAULT_IMAGE_MEMORY_BYTES,
    DEFAULT_MAX_IMAGE_SIZE,
    ImageCache,
    build_image_cache,
)
from hubtransfer.imagestore import ImageStore
from hubtransfer.validation import check_cache_location, check_fraction, check_int

__all__ = ["DataRecipe", "ImageCounts", "ImageData", "load_image_folder", "load_tfds"]

logger = logging.getLogger(__name__)

_AUTOTUNE = tf.data.AUTOTUNE

#: Folders and files that operating systems and NAS boxes write next to photos, compared
#: case-insensitively. Names starting with "." (.DS_Store, ._AppleDouble, .git) are
#: ignored too.
_METADATA_NAMES = frozenset(
    name.casefold()
    for name in (
        "__MACOSX",  # macOS zip resource forks
        "@eaDir",  # Synology thumbnails
        "$RECYCLE.BIN",  # Windows recycle bin on removable drives
        "System Volume Information",
        "Thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
    )
)


@dataclass(frozen=True)
class ImageCounts:
    """How many examples each split holds, and how many files were skipped.

    Attributes:
        train: Training examples (None when the source cannot tell without a full pass).
        validation: Validation examples (None likewise).
        skipped: Files left out: unreadable, duplicates, or reachable under two classes.
        skipped_files: Paths of the skipped files (image folders only).
        skip_reasons: ``(path, reason)`` for each skipped file, in the order of
            ``skipped_files``: ``"unreadable (<reason>)"`` with a reason of
            :data:`hubtransfer.decoding.REASONS` (``"unreadable (truncated)"``),
            ``"over the pixel cap (...)"``, ``"duplicate of <path>"``, or
            ``"under two classes: ..."``.
        test: Test examples; None without a test split (or when unknown, as above).
    """

    train: int | None
    validation: int | None
    skipped: int = 0
    skipped_files: tuple[str, ...] = field(default=(), repr=False)
    skip_reasons: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    test: int | None = None


@dataclass(frozen=True)
class DataRecipe:
    """How to load an :class:`ImageData` again: which loader, with which arguments.

    Plain data, so it pickles: a worker process or machine rebuilds the same data from it
    (the folder or TFDS data must be reachable there under the same path).
    """

    loader: Literal["image_folder", "tfds"]
    arguments: tuple[tuple[str, Any], ...]

    def load(self) -> ImageData:
        """Loads the data again with the same loader and arguments."""
        kwargs = dict(self.arguments)
        if self.loader == "image_folder":
            return load_image_folder(**kwargs)
        return load_tfds(**kwargs)


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset split into train, validation and (optionally) test.

    Attributes:
        train: ``tf.data.Dataset`` of ``(image, label)``: uint8 ``(H, W, 3)``, int64 scalar.
            For image folders it is reshuffled at file level every epoch (seeded).
        validation: The same for validation, in a fixed order.
        class_names: Label ``i`` is ``class_names[i]``.
        counts: Example counts and skipped files.
        source: Where the data came from, e.g. ``"tfds:cats_vs_dogs"`` or a folder path.
        train_files: For image folders, the files of the training split, grouped by
            class. This is the split's content, not the order ``train`` yields them in.
        validation_files: For image folders, the validation files, in dataset order.
        test: The held-out test split, like ``validation``; None if none was asked for.
        test_files: For image folders, the test files, in dataset order.
        fingerprint: Hex digest of what the data is, for resuming work on the same data.
            Image folders: every split's files (path relative to the folder, size,
            modification time in ns, label), the class names, the seed, the
            fractions, the cached image size and the decoding version
            (:data:`~hubtransfer.decoding.DECODING_VERSION`); touching, adding or
            removing a file changes it. TFDS: the name,
            the prepared version, the split expressions, data_dir and the features used.
        recipe: How to load this data again (the loader and its arguments): a study on
            other processes or machines rebuilds it from this. None for hand-made data.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: tuple[str, ...]
    counts: ImageCounts
    source: str = ""
    train_files: tuple[str, ...] = field(default=(), repr=False)
    validation_files: tuple[str, ...] = field(default=(), repr=False)
    test: tf.data.Dataset | None = field(default=None, repr=False)
    test_files: tuple[str, ...] = field(default=(), repr=False)
    fingerprint: str = ""
    recipe: DataRecipe | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def missing_files(self) -> tuple[str, ...]:
        """Files of any split that no longer exist or cannot be read now.

        An image folder's splits read the images decoded at load time, so a file
        deleted, moved or changed afterwards no longer affects them (the split keeps the
        image as it was loaded); this tells whether the folder still matches what was
        loaded. Reload the folder to pick up changes. Always empty for TFDS data.
        """
        return _unreadable_now(self.train_files + self.validation_files + self.test_files)


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


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def load_tfds(
    name: str,
    *,
    splits: tuple[str, str] = ("train[:80%]", "train[80%:]"),
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_key: str | None = None,
    label_key: str | None = None,
    test_split: str | None = None,
) -> ImageData:
    """Loads an image classification dataset from TensorFlow Datasets.

    The default split is the report's: the first 80% of ``train`` for training and the
    last 20% for validation. Class names come from the builder's ``ClassLabel`` feature.

    TFDS writes examples to disk in a shuffled order when it prepares a dataset, so the
    splits are not grouped by class; :func:`hubtransfer.prepare` shuffles them further
    with a buffer when training.

    Args:
        name: TFDS name, e.g. ``"cats_vs_dogs"`` (a version may follow: ``"name:4.0.1"``).
        splits: (train, validation) split expressions.
        data_dir: Where prepared TFDS data lives; TFDS's default (``~/tensorflow_datasets``)
            if None.
        download: Download and prepare the dataset if it is not prepared yet. Off by default
            so that a machine without network fails at once instead of retrying for minutes.
        image_key: Feature holding the image; found from the builder's metadata if None.
        label_key: Feature holding the class label; found likewise if None.
        test_split: A third split expression held out for a final test, e.g. ``"test"``
            or ``"train[90%:]"`` (then narrow ``splits`` so they do not overlap it).

    Raises:
        DatasetError: Unknown dataset, data not prepared (and not downloadable), or no
            image/label features.
    """
    import tensorflow_datasets as tfds

    if isinstance(splits, str) or len(splits) != 2:
        raise ConfigurationError(
            f"splits must be a (train, validation) pair, e.g. ('train[:80%]', 'train[80%:]'). "
            f"Received: splits={splits!r}."
        )
    if test_split is not None and not (isinstance(test_split, str) and test_split.strip()):
        raise ConfigurationError(
            "test_split must be a TFDS split expression, e.g. 'test' or 'train[90%:]', or "
            f"None for no test split. Received: test_split={test_split!r}."
        )
    wanted = [*splits, *([test_split] if test_split is not None else [])]
    where = os.fspath(data_dir) if data_dir is not None else "TFDS's default data_dir"
    try:
        loaded, info = tfds.load(
            name, split=wanted, data_dir=data_dir, download=download, with_info=True
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
            f"Could not load TFDS dataset {name!r} (splits {wanted}) from {where}: "
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

    train, validation, *rest = (
        ds.map(as_written(select), num_parallel_calls=_AUTOTUNE) for ds in loaded
    )
    test = rest[0] if rest else None
    counts = ImageCounts(
        _known_count(train),
        _known_count(validation),
        test=_known_count(test) if test is not None else None,
    )
    fingerprint = _digest(
        {
            "kind": "tfds",
            "name": name,
            "version": str(info.version),
            "splits": list(splits),
            "test_split": test_split,
            "data_dir": os.fspath(data_dir) if data_dir is not None else None,
            "features": [image_key, label_key],
        }
    )
    logger.info(
        "Loaded tfds:%s: %s train, %s validation, %s test, classes %s",
        name,
        counts.train,
        counts.validation,
        counts.test if test is not None else "no",
        class_names,
    )
    return ImageData(
        train,
        validation,
        class_names,
        counts,
        source=f"tfds:{name}",
        test=test,
        fingerprint=fingerprint,
        recipe=DataRecipe(
            "tfds",
            (
                ("name", name),
                ("splits", tuple(splits)),
                ("data_dir", None if data_dir is None else str(Path(data_dir).absolute())),
                ("image_key", image_key),
                ("label_key", label_key),
                ("test_split", test_split),
            ),
        ),
    )


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


# --- image folders: datasets built from file lists ---------------------------------------


def _unreadable_now(paths: Iterable[str]) -> tuple[str, ...]:
    lost = []
    for path in paths:
        try:
            is_file = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            is_file = False
        if not (is_file and os.access(path, os.R_OK)):
            lost.append(path)
    return tuple(lost)


@dataclass(frozen=True)
class _FileSplit:
    """What a split of an image folder is made of, kept so it can be reshuffled or sampled."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    name: str  # "train", "validation", "test"
    source: str
    cache: ImageCache = field(repr=False)
    indices: tuple[int, ...] = field(repr=False)  # paths[i] is cache.images[indices[i]]


# Datasets built by _file_dataset -> their file list. Weak keys: a dataset dropped by
# its user takes its entry with it.
_FILE_SPLITS: weakref.WeakKeyDictionary[tf.data.Dataset, _FileSplit] = weakref.WeakKeyDictionary()


def file_split(dataset: tf.data.Dataset) -> _FileSplit | None:
    """The file list behind an image folder's split dataset; None for other datasets."""
    return _FILE_SPLITS.get(dataset)


def _file_dataset(files: _FileSplit, *, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Cached ``(image, label)`` pairs of ``files``; with a seed, in a fresh order per pass."""
    dataset = files.cache.dataset(files.indices, files.labels, shuffle_seed=shuffle_seed)
    _FILE_SPLITS[dataset] = files
    return dataset


def in_file_order(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """An image folder's split in its file order, the same on every pass (``train``
    comes in a fresh order each pass); any other dataset as it is."""
    files = file_split(dataset)
    return dataset if files is None else _file_dataset(files)


def reshuffled(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset | None:
    """An image folder's split, its whole file list shuffled with ``seed`` every epoch.

    None if ``dataset`` is not a split built by :func:`load_image_folder` (for example
    a ``.map()`` of one); callers then shuffle with a buffer instead.
    """
    files = file_split(dataset)
    return None if files is None else _file_dataset(files, shuffle_seed=seed)


# --- image folders: scanning --------------------------------------------------------------


def _is_metadata(name: str) -> bool:
    return name.startswith(".") or name.casefold() in _METADATA_NAMES


def _class_name_problem(name: str) -> str | None:
    if name != name.strip():
        return "it starts or ends with whitespace"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "it holds a control character (a newline, tab or similar)"
    if "\\" in name:
        return "it holds a backslash, a path separator on Windows"
    return None


def _suggest_name(name: str) -> str:
    cleaned = "".join(
        "_" if c == "\\" or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in name
    ).strip()
    return cleaned or "class_1"


def _check_class_folders(root: Path, class_dirs: Sequence[Path]) -> None:
    for folder in class_dirs:
        problem = _class_name_problem(folder.name)
        if problem:
            raise DatasetError(
                f"Class folder {folder.name!r} in {root} cannot be a class name: {problem}. "
                "Class names become labels, lines of labels.txt and cells of CSV files. "
                f"Rename the folder, e.g. to {_suggest_name(folder.name)!r}."
            )
    seen: dict[str, str] = {}
    for folder in class_dirs:
        key = unicodedata.normalize("NFC", folder.name).casefold()
        if key in seen:
            raise DatasetError(
                f"Class folders {seen[key]!r} and {folder.name!r} in {root} differ only in "
                "letter case or Unicode form: on macOS and Windows they are one folder, and "
                "per-class output files would overwrite each other. Merge them into one "
                "folder or rename one of them."
            )
        seen[key] = folder.name
    real: dict[str, str] = {}
    for folder in class_dirs:
        target = os.path.realpath(folder)
        if target in real:
            raise DatasetError(
                f"Class folders {real[target]!r} and {folder.name!r} in {root} are the same "
                f"folder ({target}; one is a link to the other), so every image would have "
                "two labels. Remove the link, or copy the images if both classes are meant."
            )
        real[target] = folder.name


def _walk_class(folder: Path, ignored: list[str]) -> list[str]:
    """Every file under ``folder``, links followed, each directory visited once."""
    files: list[str] = []
    visited: set[str] = set()

    def unreadable_dir(error: OSError) -> None:
        logger.warning("Could not list %s (%s); its images are left out.", error.filename, error)

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a link back up the tree, or to a folder already read
            dirnames[:] = []
            continue
        visited.add(real)
        ignored.extend(os.path.join(dirpath, d) for d in dirnames if _is_metadata(d))
        dirnames[:] = sorted(d for d in dirnames if not _is_metadata(d))
        for name in filenames:
            (ignored if _is_metadata(name) else files).append(os.path.join(dirpath, name))
    return sorted(files)


@dataclass
class _Scan:
    """Files of each class after removing duplicates and files under two classes."""

    files: dict[str, list[str]]  # class name -> kept paths, sorted
    skipped: list[tuple[str, str]]  # (path, reason), in listing order
    stats: dict[str, os.stat_result]  # kept path -> its stat
    listed: list[str]  # every path found, in class then path order


def _scan(class_dirs: Sequence[Path], ignored: list[str]) -> _Scan:
    listed = {d.name: _walk_class(d, ignored) for d in class_dirs}
    skipped: dict[str, str] = {}
    stats: dict[str, os.stat_result] = {}
    # The same file (same device and inode: links, hard links, linked folders) may be
    # reachable by several paths: keep it once, and never under two labels.
    where: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for name, paths in listed.items():
        for path in paths:
            try:
                info = os.stat(path)
            except OSError as exc:
                skipped[path] = f"unreadable ({exc.strerror or exc}; a broken link?)"
                continue
            if not stat.S_ISREG(info.st_mode):
                skipped[path] = "not a regular file"
                continue
            stats[path] = info
            where.setdefault((info.st_dev, info.st_ino), []).append((name, path))
    for places in where.values():
        if len(places) == 1:
            continue
        classes = sorted({name for name, _ in places})
        if len(classes) > 1:
            for _, path in places:
                others = ", ".join(p for _, p in places if p != path)
                skipped[path] = (
                    f"under two classes: {' and '.join(map(repr, classes))} (also {others})"
                )
            continue
        # One class: keep the path that is not a link if there is one, else the first.
        keep = min((p for _, p in places), key=lambda p: (os.path.islink(p), p))
        for _, path in places:
            if path != keep:
                skipped[path] = f"duplicate of {keep}"
    files = {name: [p for p in paths if p not in skipped] for name, paths in listed.items()}
    order = [p for paths in listed.values() for p in paths]
    return _Scan(files, [(p, skipped[p]) for p in order if p in skipped], stats, order)


def _held_out_counts(n: int, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(validation, test) images of a class of ``n``; at least one stays for training."""
    n_val = min(round(n * validation_fraction), n - 1)
    n_test = min(round(n * test_fraction), n - 1 - n_val)
    return n_val, n_test


def _smallest_class(validation_fraction: float, test_fraction: float) -> int:
    """Fewest images a class needs to give every non-zero fraction at least one."""
    n = 2
    while n < 100_000:
        n_val, n_test = _held_out_counts(n, validation_fraction, test_fraction)
        if (n_val or not validation_fraction) and (n_test or not test_fraction):
            return n
        n += 1
    return n


_Splits = dict[str, tuple[list[str], list[int]]]


def _split(
    files: dict[str, list[str]], validation_fraction: float, test_fraction: float, seed: int
) -> _Splits:
    """Stratified, seeded split; a class too small to hold images out trains on all."""
    rng = np.random.default_rng(seed)
    splits: _Splits = {name: ([], []) for name in ("train", "validation", "test")}
    too_small = []
    for label, (name, paths) in enumerate(files.items()):
        order = rng.permutation(len(paths))
        n_val, n_test = _held_out_counts(len(paths), validation_fraction, test_fraction)
        if (validation_fraction > 0 and n_val == 0) or (test_fraction > 0 and n_test == 0):
            too_small.append(f"{name!r} ({len(paths)})")
        for rank, i in enumerate(order):
            target = "validation" if rank < n_val else "test" if rank < n_val + n_test else "train"
            splits[target][0].append(paths[i])
            splits[target][1].append(label)
    if too_small:
        logger.warning(
            "Class(es) %s have too few images to hold out validation/test images at "
            "validation_fraction=%s, test_fraction=%s; what could not be held out trains. "
            "Add images to these classes (at least %d each), or lower the fractions.",
            ", ".join(too_small),
            validation_fraction,
            test_fraction,
            _smallest_class(validation_fraction, test_fraction),
        )
    return splits


def _log_skipped(root: Path, reasons: dict[str, str], undecodable: Iterable[str]) -> None:
    unreadable = [p for p in undecodable if p in reasons]
    if unreadable:
        logger.warning(
            "Skipped %d unreadable file(s) in %s (corrupt, truncated, empty, not images or "
            "over the pixel cap), e.g. %s: %s",
            len(unreadable),
            root,
            unreadable[0],
            reasons[unreadable[0]],
        )
    conflicts = sorted(p for p, why in reasons.items() if why.startswith("under two classes"))
    if conflicts:
        logger.warning(
            "Left out %d file(s) of %s reachable under two classes (through links), which "
            "would carry two labels: %s. Keep each image in one class folder.",
            len(conflicts),
            root,
            ", ".join(conflicts[:10]) + (", ..." if len(conflicts) > 10 else ""),
        )
    others = {p: why for p, why in reasons.items() if p not in unreadable and p not in conflicts}
    if others:
        logger.info(
            "Skipped %d more file(s) of %s: %s",
            len(others),
            root,
            "; ".join(f"{p}: {why}" for p, why in list(others.items())[:10]),
        )


def _image_store(image_store: object) -> ImageStore | None:
    on, root = check_cache_location(
        "image_store", image_store, off="keep decoded images for this process only"
    )
    return ImageStore(root) if on else None


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    validation_fraction: float = DEFAULTS.validation_fraction,
    seed: int = DEFAULTS.seed,
    test_fraction: float = 0.0,
    max_image_size: int | None = DEFAULT_MAX_IMAGE_SIZE,
    memory_limit_bytes: int = DEFAULT_IMAGE_MEMORY_BYTES,
    cache_dir: str | os.PathLike[str] | None = None,
    image_store: bool | str | os.PathLike[str] = True,
) -> ImageData:
    """Loads images laid out one subfolder per class: ``path/<class>/<image>``.

    Every file is decoded once, here, in one parallel pass with Pillow, the field's
    reference decoder (see :mod:`hubtransfer.decoding`): JPEG, PNG (RGBA, palette,
    grayscale, 16-bit), BMP (palette, bitfields, 1/4/16-bit, RLE), GIF (first frame on
    its canvas), WebP, TIFF..., read by content whatever the extension, EXIF orientation
    applied, alpha dropped, converted to 3-channel RGB. The same pass finds the files
    that do not decode (corrupt, truncated, empty, not images, over the pixel cap): they
    are skipped, counted in ``counts.skipped`` with a reason in ``counts.skip_reasons``,
    and logged. Progress (images done, rate, time left) goes to the ``hubtransfer``
    logger at INFO.

    The decoded images are kept in a compact cache (see :mod:`hubtransfer.imagecache`),
    each resized so that its shorter side is at most ``max_image_size`` (aspect ratio
    kept, never enlarged; a large JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT
    domain first). Every epoch, backbone and validation pass reads that cache;
    :func:`hubtransfer.prepare` crops, flips and resizes from it to each backbone's size.

    The decoded images are also kept in the image store (:mod:`hubtransfer.imagestore`,
    ``<cache root>/images/``), keyed by every file's path, size, modification and change
    times and inode and by the decoding settings. Loading the same folder again, in this
    process or any later one (another study, another head or learning rate), decodes
    nothing: the stored pixels are memory-mapped. After files are added or changed, only those are
    decoded; the unchanged ones come from the store. Data, splits, fingerprint and
    skipped files are the same whether the images were decoded or read from the store.

    What a real folder holds besides images is handled too:

    - Hidden entries (names starting with "."), and what macOS, Windows and NAS boxes
      write next to photos (``__MACOSX``, ``@eaDir``, ``$RECYCLE.BIN``,
      ``System Volume Information``, ``Thumbs.db``, ``desktop.ini``) are ignored and
      logged at debug level.
    - Subfolders of a class folder belong to that class. Links are followed, each folder
      once (a link loop cannot hang the scan). A file reachable by several paths in one
      class is used once (the others are skipped as duplicates); one reachable under
      two classes would carry two labels, so it is left out of both, with a warning.
    - Class folder names become labels, lines of ``labels.txt`` and CSV cells: names
      with leading/trailing whitespace, control characters (newlines) or backslashes,
      names differing only in letter case, and two class folders that are one folder
      are rejected with the fix.

    The splits are stratified per class and deterministic for a given ``seed``; no file
    is in two splits, and every class keeps at least one training image. ``train``
    yields its files in a new random order each epoch (seeded), reshuffling the whole
    list of paths, so a batch mixes classes even when the folder is sorted by class.
    Files deleted, moved or changed after loading no longer matter to the splits: they
    yield the images as loaded (:meth:`ImageData.missing_files` tells which files are
    gone; reload the folder to pick up changes).

    Args:
        path: The root folder.
        validation_fraction: Share of each class held out for validation, in [0, 1).
        seed: Seed of the split and of the training order.
        test_fraction: Share of each class held out for a final test, in [0, 1); with
            ``validation_fraction`` it must leave something to train on (sum < 1).
        max_image_size: Shorter side of the cached images, in pixels; larger images are
            downscaled (bicubic) to it, smaller ones kept. The default, 256, is what a
            224-px backbone needs with a 0.875 centre crop (224 / 0.875). For larger
            backbones pass at least ``image_size / 0.875`` of the largest one (e.g. 343
            for EfficientNet-B3 at 300 px), or ``prepare()`` enlarges the cached images.
            None keeps full resolution (memory: 36 MB per 12 MP photo).
        memory_limit_bytes: Decoded images past this many bytes go to a memory-mapped
            file in ``cache_dir`` instead of memory (1 GiB: ~4,000 photos at 256 px).
        cache_dir: Where that file goes; ``$HUBTRANSFER_CACHE_DIR/images`` (the user's
            cache directory when unset) if None. On POSIX the file is unlinked once
            mapped, so it never outlives the process.
        image_store: True keeps the decoded images in the image store under the cache
            root (``$HUBTRANSFER_CACHE_DIR``, else the user's cache directory), a
            directory path keeps them under that root instead, False keeps them only for
            this process (nothing is written to the cache directory but the spill file
            above). A store that cannot be written costs a warning, not the load.

    Raises:
        ConfigurationError: A fraction or the seed is out of range, or ``image_store`` is
            not True, False or a path.
        DatasetError: ``path`` is missing, has fewer than two class folders, a class
            folder name cannot be a label, or a class has no valid image.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"Image folder {root} does not exist or is not a directory. Expected one "
            "subfolder per class, e.g. photos/cat/*.jpg and photos/dog/*.jpg."
        )
    check_fraction("validation_fraction", validation_fraction)
    check_fraction("test_fraction", test_fraction, example="0.1")
    check_int("seed", seed, minimum=0)
    if max_image_size is not None:
        check_int("max_image_size", max_image_size)
    check_int("memory_limit_bytes", memory_limit_bytes, minimum=0)
    store = _image_store(image_store)
    if validation_fraction + test_fraction >= 1:
        raise ConfigurationError(
            "validation_fraction + test_fraction must be below 1, to leave images to train "
            "on, e.g. 0.2 and 0.1. Received: "
            f"validation_fraction={validation_fraction!r}, test_fraction={test_fraction!r}."
        )
    ignored: list[str] = []
    class_dirs = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        if _is_metadata(entry.name):
            ignored.append(str(entry))
        else:
            class_dirs.append(entry)
    if len(class_dirs) < 2:
        raise DatasetError(
            f"Image folder {root} has {len(class_dirs)} class subfolder(s) "
            f"({', '.join(d.name for d in class_dirs) or 'none'}); at least 2 are needed. "
            "Put each class's images in its own subfolder: root/<class_name>/<image>."
        )
    _check_class_folders(root, class_dirs)
    scan = _scan(class_dirs, ignored)
    if ignored:
        logger.debug("Ignored %d metadata/hidden entr(ies) in %s: %s", len(ignored), root, ignored)
    listed = [p for paths in scan.files.values() for p in paths]
    # One pass decodes every file and finds the unreadable ones; decompression bombs are
    # refused from their headers, before any pixel is decoded.
    cache, index, failures = build_image_cache(
        listed,
        max_image_size=max_image_size,
        memory_limit_bytes=memory_limit_bytes,
        spill_dir=cache_dir,
        what=f" of {root}",
        store=store,
        stamps=scan.stats,
        folder=root.absolute(),
    )
    reasons = dict(scan.skipped)
    reasons.update(
        (p, why if why.startswith("over the pixel cap") else f"unreadable ({why})")
        for p, why in failures.items()
    )
    files = {name: [p for p in paths if p in index] for name, paths in scan.files.items()}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        why = (
            f"{len(reasons)} file(s) in the folder were skipped as unreadable, duplicates or "
            "under two classes; see the log"
            if reasons
            else "they are empty"
        )
        raise DatasetError(
            f"Class folder(s) {', '.join(map(repr, empty))} in {root} hold no readable image "
            f"({why}). Add JPEG, PNG, BMP or GIF images, or remove the folder."
        )
    splits = _split(files, validation_fraction, test_fraction, seed)
    skipped = tuple(p for p in scan.listed if p in reasons)
    _log_skipped(root, reasons, failures)
    class_names = tuple(files)
    counts = ImageCounts(
        len(splits["train"][0]),
        len(splits["validation"][0]),
        len(skipped),
        skipped,
        tuple((p, reasons[p]) for p in skipped),
        test=len(splits["test"][0]) if test_fraction > 0 else None,
    )
    fingerprint = _digest(
        {
            "kind": "image_folder",
            "class_names": list(class_names),
            "seed": seed,
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
            # What the cached pixels are: the decoder and the size they were cached at.
            # Not Pillow's version: a patch release must not cost every resumed result
            # (the image store, which keeps pixels, does key on it).
            "decoding": {
                "decoder": "pillow",
                "version": DECODING_VERSION,
                "max_image_size": max_image_size,
            },
            "splits": {
                name: sorted(
                    [
                        Path(p).relative_to(root).as_posix(),
                        scan.stats[p].st_size,
                        scan.stats[p].st_mtime_ns,
                        label,
                    ]
                    for p, label in zip(*split, strict=True)
                )
                for name, split in splits.items()
            },
        }
    )
    logger.info(
        "Loaded %s: %d train, %d validation, %s test, %d skipped, classes %s; %d images "
        "cached (%.1f MB, %s)",
        root,
        counts.train,
        counts.validation,
        counts.test if counts.test is not None else "no",
        counts.skipped,
        list(class_names),
        len(cache),
        cache.nbytes / 1e6,
        "in memory"
        if cache.path is None
        else "memory-mapped from the image store"
        if store is not None and cache.path.parent.parent == store.directory
        else "memory-mapped",
    )

    def dataset(name: str, shuffle_seed: int | None = None) -> tf.data.Dataset:
        paths, labels = splits[name]
        files = _FileSplit(
            tuple(paths), tuple(labels), name, str(root), cache, tuple(index[p] for p in paths)
        )
        return _file_dataset(files, shuffle_seed=shuffle_seed)

    return ImageData(
        dataset("train", seed),
        dataset("validation"),
        class_names,
        counts,
        source=str(root),
        train_files=tuple(splits["train"][0]),
        validation_files=tuple(splits["validation"][0]),
        test=dataset("test") if test_fraction > 0 else None,
        test_files=tuple(splits["test"][0]),
        fingerprint=fingerprint,
        recipe=DataRecipe(
            "image_folder",
            (
                ("path", str(root)),
                ("validation_fraction", validation_fraction),
                ("seed", seed),
                ("test_fraction", test_fraction),
                ("max_image_size", max_image_size),
                ("memory_limit_bytes", memory_limit_bytes),
                ("cache_dir", None if cache_dir is None else os.fspath(cache_dir)),
                (
                    "image_store",
                    image_store
                    if isinstance(image_store, bool)
                    else str(Path(image_store).expanduser().absolute()),
                ),
            ),
        ),
    )
