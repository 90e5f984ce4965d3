"""The decoded-image cache of an image folder: each file decoded once, kept compact.

:func:`~hubtransfer.load_image_folder` decodes every file in one parallel pass with the
Pillow reference decoder (:mod:`hubtransfer.decoding`: EXIF orientation, palette and
bitfield BMPs, alpha dropped, GIF canvas, JPEGs downscaled in the DCT domain), the same
pass that finds unreadable files. Each image is resized there so that its shorter side
is at most ``max_image_size`` (aspect ratio kept, never enlarged) and kept as uint8 RGB:

- in memory while the cache holds at most ``memory_limit_bytes``;
- past that, in one flat uint8 file in ``spill_dir`` (default
  ``$HUBTRANSFER_CACHE_DIR/images``), memory-mapped read-only. On POSIX systems the file
  is unlinked as soon as it is mapped, so it takes disk space only while the process
  uses it and never outlives the process, however it ends; elsewhere it is deleted when
  the cache is garbage-collected or the interpreter exits.

With an image store (:mod:`hubtransfer.imagestore`, on by default in
``load_image_folder``), what was decoded is also kept on disk across processes: loading
the same unchanged folder again maps the stored pixels read-only (the cache's ``path``
is then the store's ``pixels.u8``, which stays) and decodes nothing, and a folder with
new or changed files decodes only those.

Every backbone, epoch, seed and validation pass then reads the cache (a memory copy per
image) instead of the file: ``prepare()`` crops, flips and resizes from it. Sizing: the
default 256 is what a 224-px backbone needs with the usual 0.875 centre crop (224 /
0.875); a backbone with a larger input (EfficientNet-B3 at 300 px: 343) needs a larger
``max_image_size``, or ``prepare()`` enlarges the cached image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

from hubtransfer._fs import _create_unique
from hubtransfer._progress import Progress
from hubtransfer._tf import as_written, no_autotune_stalls, tf
from hubtransfer.config import cache_root
from hubtransfer.decoding import decode_many
from hubtransfer.imagestore import ImageStore, file_stamps, image_key

__all__ = [
    "DEFAULT_IMAGE_MEMORY_BYTES",
    "DEFAULT_MAX_IMAGE_SIZE",
    "ImageCache",
    "build_image_cache",
]

logger = logging.getLogger(__name__)

#: Shorter side of cached images: 224 / 0.875, a 224-px backbone plus its centre crop.
DEFAULT_MAX_IMAGE_SIZE = 256
#: Decoded images past this many bytes go to a memory-mapped file instead of memory.
#: At the default size a typical photo (4:3) takes ~262 KB: about 4,000 images.
DEFAULT_IMAGE_MEMORY_BYTES = 1 << 30

_SPILL_PREFIX = ".images-"
_SPILL_SUFFIX = ".u8"


@dataclass(frozen=True, eq=False)
class ImageCache:
    """Decoded uint8 RGB images, in memory or views of one memory-mapped file.

    Attributes:
        images: One ``(height, width, 3)`` uint8 array per cached file.
        max_image_size: The cap on the shorter side the images were decoded to (None:
            full resolution).
        path: The backing file when the cache spilled to disk (it may already be
            unlinked, see the module docs) or was read from the image store, else None.
    """

    images: tuple[NDArray[np.uint8], ...] = field(repr=False)
    max_image_size: int | None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        """Bytes of decoded pixels held (in memory or in the file)."""
        return sum(int(image.nbytes) for image in self.images)

    def dataset(
        self,
        indices: Sequence[int],
        labels: Sequence[int],
        *,
        shuffle_seed: int | None = None,
    ) -> tf.data.Dataset:
        """``(image, label)`` pairs of the cached images ``indices``.

        With ``shuffle_seed``, the whole list of indices is shuffled afresh every pass
        (seeded), before any image is read.
        """
        images = self.images

        def read(i: np.int64) -> NDArray[np.uint8]:
            return np.asarray(images[int(i)])

        dataset = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant(list(indices), tf.int64, shape=[len(indices)]),
                tf.constant(list(labels), tf.int64, shape=[len(labels)]),
            )
        )
        if shuffle_seed is not None and len(indices) > 1:
            dataset = dataset.shuffle(
                len(indices), seed=shuffle_seed, reshuffle_each_iteration=True
            )

        def load(i: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.numpy_function(read, [i], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            return image, label

        return no_autotune_stalls(
            dataset.map(as_written(load), num_parallel_calls=tf.data.AUTOTUNE)
        )


def build_image_cache(
    paths: Sequence[str],
    *,
    max_image_size: int | None = DEFAULT_MAX_IMAGE_SIZE,
    memory_limit_bytes: int = DEFAULT_IMAGE_MEMORY_BYTES,
    spill_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    what: str = "",
    store: ImageStore | None = None,
    stamps: Mapping[str, os.stat_result] | None = None,
    folder: str | os.PathLike[str] | None = None,
) -> tuple[ImageCache, dict[str, int], dict[str, str]]:
    """Decodes ``paths`` once, in parallel threads, into an :class:`ImageCache`.

    With a ``store``, the images come from it when it holds these very files (same
    paths, sizes, modification and change times and inodes, same decoding), and nothing
    is decoded; else the files unchanged since an earlier entry of ``folder`` are taken
    from it, the rest are decoded, and the result is stored for the next time (and, when
    it spilled to a file, mapped back from the store instead).

    Args:
        paths: The image files.
        max_image_size: Cap on the shorter side (see :func:`hubtransfer.decoding.decode_image`'s
            ``min_size``); None keeps full resolution.
        memory_limit_bytes: Past this many decoded bytes, the images go to a file.
        spill_dir: Where that file goes; ``cache_root() / "images"`` if None.
        workers: Decoding threads; one per CPU core if None.
        what: How progress records name the pass, e.g. the folder.
        store: The persistent image store to read from and write to; None for neither.
        stamps: Each path's ``os.stat`` when already known (one ``stat`` each otherwise);
            only used with a ``store``.
        folder: The folder ``paths`` were listed from (the store reuses a folder's
            earlier entries); their common parent if None.

    Returns:
        ``(cache, index, failures)``: the cache of the readable files, each readable
        path's index in it, and each unreadable path's reason (from
        :data:`hubtransfer.decoding.REASONS`).
    """
    if store is None:
        return _decode_into_cache(
            paths, {}, max_image_size, memory_limit_bytes, spill_dir, workers, what
        )
    files = file_stamps(paths, stamps or {})
    key = image_key(files, max_image_size)
    stored = store.get(key, files)
    if stored is not None:
        logger.info(
            "Read %d decoded images%s from the image store (%s), decoding nothing",
            len(stored[0]),
            what,
            key[:12],
        )
        return stored
    if folder is None:
        folder = os.path.commonpath([os.path.abspath(p) for p in paths]) if paths else "."
    reused = store.reusable(files, folder=folder, max_image_size=max_image_size)
    if reused:
        logger.info(
            "Image store: %d of %d files%s unchanged since an earlier load, reused; "
            "decoding the other %d",
            len(reused),
            len(paths),
            what,
            len(paths) - len(reused),
        )
    loaded = _decode_into_cache(
        paths, reused, max_image_size, memory_limit_bytes, spill_dir, workers, what
    )
    if store.put(key, files, loaded, folder=folder) and loaded[0].path is not None:
        # Spilled to a file: the entry just written holds the same pixels, map it instead
        # so that the folder takes its disk space once. (Under the memory limit the
        # images stay in memory, as the limit promises.)
        return store.get(key, files) or loaded
    return loaded


def _decode_into_cache(
    paths: Sequence[str],
    known: Mapping[str, NDArray[np.uint8] | str],
    max_image_size: int | None,
    memory_limit_bytes: int,
    spill_dir: str | os.PathLike[str] | None,
    workers: int | None,
    what: str,
) -> tuple[ImageCache, dict[str, int], dict[str, str]]:
    """The cache of ``paths``, decoding those not in ``known`` (images or reasons)."""
    todo = [p for p in paths if p not in known]
    progress = Progress(logger, f"Decoding {len(todo)} images{what}", len(todo))
    decoded = decode_many(
        todo,
        min_size=max_image_size,
        workers=workers,
        progress=lambda done, _total: progress.update(done),
    )

    def results() -> Iterator[NDArray[np.uint8] | str]:
        for path in paths:
            if path in known:
                earlier = known[path]
                # A copy: the view belongs to another store entry, which may be evicted.
                yield earlier if isinstance(earlier, str) else np.array(earlier)
            else:
                yield next(decoded)
        next(decoded, None)  # runs the decoder to its end, which stops its threads

    held: list[NDArray[np.uint8]] = []
    shapes: list[tuple[int, int, int]] = []
    index: dict[str, int] = {}
    failures: dict[str, str] = {}
    total = 0
    spill: IO[bytes] | None = None
    spill_path: Path | None = None
    try:
        for path, result in zip(paths, results(), strict=True):
            if isinstance(result, str):
                failures[path] = result
                continue
            image = np.ascontiguousarray(result, dtype=np.uint8)
            index[path] = len(shapes)
            shapes.append((image.shape[0], image.shape[1], image.shape[2]))
            if spill is None and total + image.nbytes > memory_limit_bytes:
                spill, spill_path = _open_spill(spill_dir, memory_limit_bytes)
                for earlier in held:
                    spill.write(earlier.tobytes())
                held = []
            if spill is not None:
                spill.write(image.tobytes())
            else:
                held.append(image)
            total += image.nbytes
    finally:
        if spill is not None:
            spill.close()
    if todo:
        progress.finish()
    if spill_path is None:
        return ImageCache(tuple(held), max_image_size), index, failures
    return _mapped(spill_path, shapes, total, max_image_size), index, failures


def _open_spill(
    spill_dir: str | os.PathLike[str] | None, memory_limit_bytes: int
) -> tuple[IO[bytes], Path]:
    directory = Path(spill_dir) if spill_dir is not None else cache_root() / "images"
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = _create_unique(directory, _SPILL_PREFIX, _SPILL_SUFFIX)
    logger.info(
        "Decoded images past %d bytes: keeping them in %s (memory-mapped)",
        memory_limit_bytes,
        name,
    )
    return os.fdopen(fd, "wb"), Path(name)


def _mapped(
    path: Path, shapes: list[tuple[int, int, int]], total: int, max_image_size: int | None
) -> ImageCache:
    if total == 0:
        buffer: NDArray[np.uint8] = np.zeros((0,), np.uint8)
    else:
        buffer = np.memmap(path, np.uint8, "r", shape=(total,))
    views = []
    offset = 0
    for shape in shapes:
        size = shape[0] * shape[1] * shape[2]
        views.append(buffer[offset : offset + size].reshape(shape))
        offset += size
    cache = ImageCache(tuple(views), max_image_size, path)
    if sys.platform != "win32":
        # The mapping keeps the data; the name goes now, so nothing is ever left behind.
        with contextlib.suppress(OSError):
            os.unlink(path)
    else:  # pragma: no cover - an open mapping cannot be unlinked on Windows
        weakref.finalize(cache, _remove, path)
    return cache


def _remove(path: Path) -> None:  # pragma: no cover - Windows
    with contextlib.suppress(OSError):
        os.unlink(path)
