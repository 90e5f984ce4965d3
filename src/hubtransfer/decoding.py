"""Decode image files the way the field's reference loaders do: with Pillow.

timm (``ImageDataset``), torchvision (``datasets.folder.pil_loader``) and Hugging Face
``datasets`` (its ``Image`` feature) all decode with Pillow and ``convert("RGB")``; a model
fine-tuned here should see the same pixels a model trained with them would.
``tf.io.decode_image``, used until now, gets real files wrong. What this module fixes:

- **EXIF orientation** (phone photos, JPEG and WebP): TF ignores it, so a portrait photo
  arrives lying on its side. Here it is applied as ``ImageOps.exif_transpose`` applies
  it (orientations 5-8 swap height and width), to the pixels only.
- **BMP variants**: TF decodes 8-bit palette BMPs as grey palette indices, reads the
  channels of 32-bit ``BI_BITFIELDS`` BMPs in the wrong order, and refuses 1-, 4- and
  16-bit and RLE-compressed BMPs as corrupt. Pillow's BMP reader handles all of them.
- **Alpha**: TF refuses RGBA WebP. Here alpha is *dropped*, exactly as Pillow's
  ``convert("RGB")`` does (the colour under a transparent pixel is kept), not composited
  on white: that is what timm, torchvision and HF datasets feed their models, and what
  ``tf.io.decode_png(channels=3)`` does too, so features match theirs.
- **GIF and animated WebP**: the first frame is placed on the full canvas (TF returns a
  GIF's first frame cropped to its own rectangle when it is smaller than the canvas).
- **16-bit grey PNG and TIFF** (every file Pillow opens in an ``I;16`` mode): Pillow's
  own ``convert("RGB")`` clips 16-bit values to 255 (an almost white image); here the
  high byte is kept, which is how Pillow already reads 16-bit RGB PNGs. Files Pillow
  opens as 32-bit ``I`` instead (16-bit PGM, signed 16-bit or 32-bit TIFF) are
  converted as the reference loaders convert them, clipped.
- **CMYK JPEG, grey, grey + alpha, palette**: converted to RGB by Pillow.
- **Speed on large JPEGs**: with ``min_size``, ``Image.draft`` decodes a JPEG at 1/2, 1/4
  or 1/8 scale in the DCT domain (the trick of ``tf.io.decode_jpeg(ratio=...)``), then a
  bicubic resize brings the shorter side to ``min_size`` exactly, from the part of the
  reduced image that holds the whole picture (``draft``'s box, as ``Image.thumbnail``
  does), so the aspect ratio is the file's.
- **Decompression bombs**: the pixel count is checked from the header, before any pixel
  is decoded; files over the cap are refused. Pillow's global ``MAX_IMAGE_PIXELS`` is
  never modified.

ICC colour profiles are not applied (neither do the reference loaders). Every file that
cannot be decoded raises :class:`UnreadableImageError` with a short, stable ``reason``
(see :data:`REASONS`) that a loader can put in its list of skipped files.

Pure functions, no TensorFlow: usable from a ``tf.data`` pipeline (``tf.numpy_function``),
a precomputed cache, or any other framework.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from hubtransfer.errors import DatasetError
from hubtransfer.validation import check_int, check_optional_int

__all__ = [
    "DECODING_VERSION",
    "MAX_PIXELS",
    "over_pixel_cap",
    "REASONS",
    "UnreadableImageError",
    "decode_image",
    "decode_many",
]

#: Default cap on width x height, read from the header before decoding. It is Pillow's
#: own error threshold at its default settings (2 x ``Image.MAX_IMAGE_PIXELS``): a 108 MP
#: phone photo passes, a 200 MP one (or a forged header) is refused. At the cap, decoding
#: takes ~0.7 GB (Pillow stores RGB in 4 bytes a pixel) plus 0.54 GB for the array, unless
#: ``min_size`` lets a JPEG be decoded at reduced scale. A larger ``max_pixels`` has no
#: effect unless the user raises Pillow's global limit: Pillow refuses first. Pillow also
#: warns (``DecompressionBombWarning``) above ``Image.MAX_IMAGE_PIXELS``; that warning is
#: not silenced here, since warning filters are process-wide and not thread-safe.
MAX_PIXELS: Final = 178_956_970

#: Version of what this module makes of a file (pixels and failure reasons). Bump it
#: whenever decoding output changes (orientation, conversion, resizing, reasons), so no
#: image store entry made by the old code is read (:mod:`hubtransfer.imagestore`).
DECODING_VERSION: Final = 2  # 2: a JPEG decoded at reduced scale keeps its aspect ratio

#: Every ``reason`` an :class:`UnreadableImageError` can carry. The last two are followed
#: by a detail: ``"unsupported image mode (F)"``, ``"over the pixel cap (20000 x 20000)"``.
REASONS: Final = (
    "empty file",
    "missing file",
    "cannot read file",
    "not an image",
    "truncated",
    "corrupt",
    "unsupported image mode",
    "over the pixel cap",
)

# The resampling filter that brings the shorter side to min_size: bicubic, as
# Image.thumbnail and timm's default eval transform use.
_RESAMPLE: Final = Image.Resampling.BICUBIC
_SIXTEEN_BIT_GREY: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# EXIF orientation -> the transpose ImageOps.exif_transpose applies for it.
_ORIENTATIONS: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES: Final = frozenset({_ORIENTATIONS[o] for o in (5, 6, 7, 8)})
Box = tuple[float, float, float, float]

_logger = logging.getLogger(__name__)


class UnreadableImageError(DatasetError):
    """A file cannot be decoded as an image: not an image, truncated, empty, over the cap.

    Attributes:
        path: The file, as given.
        reason: One of :data:`REASONS`, possibly followed by a detail in parentheses.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(
            f"Cannot decode '{self.path}' as an image: {reason}. Image folders skip such "
            "files; re-save the file as JPEG or PNG, or remove it."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from (path, reason) so the error survives pickling to and from workers.
        return (type(self), (self.path, self.reason))


def decode_image(
    path: str | os.PathLike[str],
    *,
    min_size: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> NDArray[np.uint8]:
    """Decode one image file to RGB, upright, as Pillow-based loaders do.

    Args:
        path: The image file (JPEG, PNG, BMP, GIF, WebP, TIFF, ... anything Pillow reads).
        min_size: If given, the shorter side of the result is ``min_size`` exactly when the
            image is larger (aspect ratio kept, bicubic resize); smaller images are
            returned at full resolution, never enlarged. Large JPEGs are then decoded at
            1/2, 1/4 or 1/8 scale first (``Image.draft``), as long as the shorter side
            stays >= ``min_size``. ``None`` decodes at full resolution.
        max_pixels: Files whose header declares more than this many pixels (width x
            height) are refused before decoding.

    Returns:
        An array of shape (height, width, 3), dtype uint8, after EXIF orientation.

    Raises:
        UnreadableImageError: The file is missing, empty, not an image, truncated,
            corrupt, in an unsupported mode, or over ``max_pixels``.
        ConfigurationError: ``min_size`` or ``max_pixels`` is not a positive integer.
    """
    check_optional_int("min_size", min_size)
    check_int("max_pixels", max_pixels)
    return _decode(path, min_size, max_pixels)


def decode_many(
    paths: Iterable[str | os.PathLike[str]],
    *,
    min_size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> Iterator[NDArray[np.uint8] | str]:
    """Decode many files in parallel threads, yielding in input order.

    One pass both decodes every file and finds the unreadable ones: for each path, the
    iterator yields the decoded array (as :func:`decode_image` returns it) or, for a file
    that cannot be decoded, the ``reason`` string of its :class:`UnreadableImageError`.
    Pillow releases the GIL while decoding and resizing, so threads run in parallel.

    Memory stays bounded: at most ``2 * workers`` decoded images wait to be consumed.

    Args:
        paths: The image files.
        min_size: As in :func:`decode_image`.
        max_pixels: As in :func:`decode_image`.
        workers: Decoding threads; ``None`` means one per CPU core (``os.cpu_count()``).
        progress: Called as ``progress(done, total)`` after each file, in the thread
            that iterates, before its result is yielded.

    Returns:
        An iterator giving, per path and in order, an RGB uint8 array of shape
        (height, width, 3) or a reason string.

    Raises:
        ConfigurationError: ``min_size``, ``max_pixels`` or ``workers`` is not a positive
            integer (raised by the call; no thread starts before the first ``next()``).
    """
    check_optional_int("min_size", min_size)
    check_int("max_pixels", max_pixels)
    check_optional_int("workers", workers)
    files = list(paths)
    threads = min(workers or os.cpu_count() or 1, max(len(files), 1))
    return _decode_in_order(files, min_size, max_pixels, threads, progress)


def _decode_in_order(
    files: list[str | os.PathLike[str]],
    min_size: int | None,
    max_pixels: int,
    threads: int,
    progress: Callable[[int, int], object] | None,
) -> Iterator[NDArray[np.uint8] | str]:
    # A generator: no thread starts before the first next(). At most `window` futures
    # are queued or done-but-unconsumed, which bounds the decoded images held.
    window = 2 * threads
    pending: deque[Future[NDArray[np.uint8] | str]] = deque()
    queued = iter(files)
    executor = ThreadPoolExecutor(threads, thread_name_prefix="hubtransfer-decode")
    try:
        for path in queued:
            pending.append(executor.submit(_decode_or_reason, path, min_size, max_pixels))
            if len(pending) == window:
                break
        done = 0
        while pending:
            result = pending.popleft().result()
            next_path = next(queued, None)
            if next_path is not None:
                pending.append(executor.submit(_decode_or_reason, next_path, min_size, max_pixels))
            done += 1
            if progress is not None:
                progress(done, len(files))
            yield result
    finally:
        # Also reached when the caller stops iterating early: drop queued work.
        executor.shutdown(wait=True, cancel_futures=True)


def _decode_or_reason(
    path: str | os.PathLike[str], min_size: int | None, max_pixels: int
) -> NDArray[np.uint8] | str:
    try:
        return _decode(path, min_size, max_pixels)
    except UnreadableImageError as exc:
        return exc.reason


def over_pixel_cap(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> str | None:
    """The skip reason when the file's header claims more than ``max_pixels``, else None.

    Reads only the header (no pixel is decoded), so a loader can refuse decompression
    bombs before any decoder allocates them. Files Pillow cannot identify give None: the
    decoding pass finds them.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return f"over the pixel cap (> {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels)"
    except Exception:  # not an image, damaged header, unreadable: the decode pass decides
        return None
    return f"over the pixel cap ({width} x {height})" if width * height > max_pixels else None


def _decode(
    path: str | os.PathLike[str], min_size: int | None, max_pixels: int
) -> NDArray[np.uint8]:
    try:
        image = Image.open(path)
    except FileNotFoundError as exc:
        raise UnreadableImageError(path, "missing file") from exc
    except (IsADirectoryError, PermissionError) as exc:
        raise UnreadableImageError(path, "cannot read file") from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses first when the file is over its own limit, 2 x its (global,
        # never modified here) MAX_IMAGE_PIXELS; the size is only in its message.
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise UnreadableImageError(path, f"over the pixel cap (> {limit} pixels)") from exc
    except MemoryError:
        raise
    except Exception as exc:
        # UnidentifiedImageError, or a plugin that failed on a damaged header.
        raise UnreadableImageError(path, _failure_reason(path, exc)) from exc
    with image:
        width, height = image.size
        # open() has read only the header: refuse before any pixel is decoded.
        if width * height > max_pixels:
            raise UnreadableImageError(path, f"over the pixel cap ({width} x {height})")
        try:
            return _to_rgb_array(path, image, min_size)
        except UnreadableImageError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise UnreadableImageError(path, _failure_reason(path, exc)) from exc


def _to_rgb_array(
    path: str | os.PathLike[str], image: Image.Image, min_size: int | None
) -> NDArray[np.uint8]:
    size = image.size  # the file's own size, before any reduced-scale decoding
    box: Box | None = None
    if min_size is not None:
        # JPEG only (None for other formats). The request is square because draft
        # keeps both sides >= the request: only the shorter side binds, and it is the
        # shorter side after any EXIF rotation too, since a transpose swaps the sides.
        # The reduced image's last row and column may hold only part of a scaled one:
        # draft's box is the extent of the whole picture in it (what Image.thumbnail
        # resizes from), so the aspect ratio is the file's, not the reduced image's.
        drafted = image.draft("RGB", (min_size, min_size))
        if drafted is not None and image.size != size:
            box = drafted[1]
    image.load()  # decoding errors surface here, and only here
    file_format = image.format
    try:
        # The orientation ImageOps.exif_transpose reads (EXIF, else XMP); only the
        # pixels are turned here, the metadata it would rewrite is not returned.
        method = _ORIENTATIONS.get(image.getexif().get(0x0112, 1))
    except Exception:
        # A damaged EXIF block loses the orientation, not the image.
        _logger.debug("Unreadable EXIF in %s; orientation not applied", path, exc_info=True)
        method = None
    if method is not None:
        image = image.transpose(method)
        if box is not None:
            box = _transposed_box(box, image.size, method)
            if method in _SWAPS_SIDES:
                size = (size[1], size[0])
    if box is None:
        size = image.size  # as decoded: the header's size may differ (e.g. ICO)
    # Pillow < 11 reads 16-bit grey PNGs as mode I (int32), later ones as I;16.
    if image.mode in _SIXTEEN_BIT_GREY or (image.mode == "I" and file_format == "PNG"):
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return _shrink_array(np.repeat(grey[..., None], 3, axis=2), min_size)
    rgb = image
    if image.mode != "RGB":
        try:
            # Drops alpha (keeps the colour under it), expands palettes, CMYK, grey.
            rgb = image.convert("RGB")
        except ValueError as exc:
            # Not a decoding failure: Pillow has no conversion from this mode to RGB.
            raise UnreadableImageError(path, f"unsupported image mode ({image.mode})") from exc
    if min_size is not None:
        rgb = _shrink(rgb, min_size, size, box)
    return np.asarray(rgb, dtype=np.uint8)


def _transposed_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """``box`` (from the top left corner of an image) after ``method`` turned the image
    into one of ``size``: the same pixels, wherever the transpose put them."""
    _, _, right, lower = box  # draft's box starts at (0, 0)
    width, height = size  # after the transpose
    return {
        Image.Transpose.FLIP_LEFT_RIGHT: (width - right, 0.0, width, lower),
        Image.Transpose.ROTATE_180: (width - right, height - lower, width, height),
        Image.Transpose.FLIP_TOP_BOTTOM: (0.0, height - lower, right, height),
        Image.Transpose.TRANSPOSE: (0.0, 0.0, lower, right),
        Image.Transpose.ROTATE_270: (width - lower, 0.0, width, right),
        Image.Transpose.TRANSVERSE: (width - lower, height - right, width, height),
        Image.Transpose.ROTATE_90: (0.0, height - right, lower, height),
    }.get(method, box)


def _shrink_array(array: NDArray[np.uint8], min_size: int | None) -> NDArray[np.uint8]:
    if min_size is None:
        return array
    image = Image.fromarray(array)
    return np.asarray(_shrink(image, min_size, image.size, None), dtype=np.uint8)


def _shrink(
    image: Image.Image, min_size: int, size: tuple[int, int], box: Box | None
) -> Image.Image:
    """``image`` with its shorter side brought down to ``min_size``, the aspect ratio of
    ``size`` (the file's picture, which a reduced-scale JPEG covers ``box`` of)."""
    width, height = size
    if min(width, height) <= min_size:  # never a reduced JPEG: draft halves at least
        return image
    if width <= height:
        target = (min_size, max(min_size, round(height * min_size / width)))
    else:
        target = (max(min_size, round(width * min_size / height)), min_size)
    return image.resize(target, _RESAMPLE, box=box)


def _failure_reason(path: str | os.PathLike[str], exc: Exception) -> str:
    """Why a file failed, from its bytes, never from the exception's message.

    A file of a known format that does not reach its end marker is "truncated"; one that
    does is "corrupt"; a file Pillow could not identify is "not an image".
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            head = file.read(16)
            file.seek(max(0, size - 16))
            tail = file.read(16)
    except OSError:
        return "cannot read file"
    if size == 0:
        return "empty file"
    complete = _is_complete(head, tail, size)
    if complete is None:
        return "not an image" if isinstance(exc, UnidentifiedImageError) else "corrupt"
    return "corrupt" if complete else "truncated"


def _is_complete(head: bytes, tail: bytes, size: int) -> bool | None:
    """Whether a file of a known format reaches its end marker; None if unknown format."""
    if head.startswith(b"\xff\xd8\xff"):  # JPEG: ends with the EOI marker
        return tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):  # PNG: ends with the IEND chunk
        return tail.endswith(b"IEND\xaeB`\x82")
    if head[:6] in (b"GIF87a", b"GIF89a"):  # GIF: ends with the trailer byte
        return tail.endswith(b";")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":  # WebP: RIFF size in the header
        return int.from_bytes(head[4:8], "little") + 8 <= size
    if head[:2] == b"BM" and len(head) >= 6:  # BMP: file size in the header
        return int.from_bytes(head[2:6], "little") <= size
    return None
