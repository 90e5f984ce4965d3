"""The image store: an image folder's decoded pixels kept on disk across processes.

Decoding a folder is the slow part of loading it (200 phone photos: ~4.5 s; thousands:
minutes), and its result depends only on the files and the decoding settings.
:func:`hubtransfer.load_image_folder` therefore keeps what it decoded here, and loading
the same folder again, in any later process, reads it back instead of decoding: a
listing, a ``stat`` per file, an index and a memory map.

**Where**: ``<cache root>/images/``, the cache root being ``$HUBTRANSFER_CACHE_DIR``, or
the user's cache directory (``~/.cache/hubtransfer`` on Linux; see
:func:`hubtransfer.config.cache_root`), or a directory passed as
``load_image_folder(image_store=...)``.

**Key** (:func:`image_key`): a SHA-256 over the store format, the decoder (Pillow, its
version, :data:`hubtransfer.decoding.DECODING_VERSION`, the pixel caps, Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES``), the cached
image size (``max_image_size``) and the listed files as [absolute path, [size,
modification time, status-change time (ns), inode]], in listing order. Touching,
adding, removing or rewriting a file gives a new key, even a rewrite that keeps the size
and modification time (``cp -p``, ``rsync -a``): no tool sets the change time back.

**Entry**: one directory ``<key>/`` holding ``pixels.u8`` (every readable image's uint8
RGB pixels, flat, one after the other), ``index.json`` (per listed file: its path and
stamp, then its shape and offset in ``pixels.u8``, or the reason it could not be
decoded, one of :data:`hubtransfer.decoding.REASONS`) and the marker
``.hubtransfer.json`` (kind, key, format, root folder, images, bytes, max_image_size,
decoder, time). It is built in a staging directory and renamed into place
(:func:`hubtransfer._fs.write_directory`), so a reader sees a whole entry or none; two
processes storing the same key both succeed. An entry that does not read back whole is
discarded (with a warning) and the folder decoded again; one that cannot be read now
(permissions, I/O) is left in place, with a warning. A file that could not be read
("missing file", "cannot read file": a moment's trouble, not the file's) is tried again
at the next load; the others still come from the entry.

**Incremental**: a folder whose key is missing (files added, changed or removed) takes
the images of files still unchanged (same path and stamp) from the folder's earlier
entries with the same decoder and size; only the new or changed files are decoded, and
the new entry replaces the folder's earlier ones.

**Bounded**: after each write, the least recently used entries (reading an entry counts
as a use) are removed until the store holds at most ``max_bytes``
(:data:`DEFAULT_IMAGE_STORE_BYTES`); the entry just written is always kept, and what
writers killed over an hour ago left is removed. Only directories hubtransfer marked as
entries (or named as its staging ones) are ever removed, by eviction or by
``hubtransfer cache clear``.

This module does not import TensorFlow until an entry is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import PIL
from numpy.typing import NDArray
from PIL import Image, ImageFile

from hubtransfer._fs import (
    MARKER,
    directory_bytes,
    discard_directory,
    marked_entries,
    read_marker,
    remove_stale_staging,
    write_entry,
)
from hubtransfer.config import cache_root
from hubtransfer.decoding import DECODING_VERSION, MAX_PIXELS, REASONS
from hubtransfer.validation import check_int

if TYPE_CHECKING:
    from hubtransfer.imagecache import ImageCache

__all__ = [
    "DEFAULT_IMAGE_STORE_BYTES",
    "IMAGE_STORE_FORMAT",
    "ImageStore",
    "ImageStoreEntry",
    "file_stamps",
    "image_key",
]

logger = logging.getLogger(__name__)

#: Layout of an entry; bump when it changes (old entries become unreadable keys).
IMAGE_STORE_FORMAT: Final = 2
#: Default cap on the store's size: least recently used entries go past it.
DEFAULT_IMAGE_STORE_BYTES: Final = 8 << 30
_KIND: Final = "image-store-entry"
_PIXELS: Final = "pixels.u8"
_INDEX: Final = "index.json"

#: A listed file: (path as the caller lists it, its stamp). The stamp is the file's size,
#: modification and status-change times (ns) and inode: a file replaced with one of the
#: same size and modification time (``cp -p``, ``rsync -a``, an in-place EXIF edit that
#: keeps the time) still has a new change time or inode, which no tool sets back.
FileStamp = tuple[str, tuple[int, int, int, int]]
#: Failures that say something about the moment, not the file: never taken as final.
_TRANSIENT: Final = ("missing file", "cannot read file")
#: What a load of a folder is: the images, each path's index in them, each failure's reason.
Loaded = tuple["ImageCache", dict[str, int], dict[str, str]]


def _decoder() -> dict[str, Any]:
    """What decides the pixels besides the files and the size: the decoder and its caps."""
    return {
        "name": "pillow",
        "pillow": PIL.__version__,
        "version": DECODING_VERSION,
        "max_pixels": MAX_PIXELS,
        "pillow_max_image_pixels": Image.MAX_IMAGE_PIXELS,
        # Set (as timm and torchvision users do) to keep truncated files: decoded then.
        "pillow_load_truncated_images": bool(ImageFile.LOAD_TRUNCATED_IMAGES),
    }


def image_key(files: Sequence[FileStamp], max_image_size: int | None) -> str:
    """The store key of a folder's decoded images.

    Args:
        files: Every listed file as (path, stamp) (see :data:`FileStamp`), in listing
            order; paths are made absolute.
        max_image_size: The cap on the shorter side the images are decoded to.

    Returns:
        64 hex digits.
    """
    payload = {
        "format": IMAGE_STORE_FORMAT,
        "decoder": _decoder(),
        "max_image_size": max_image_size,
        "files": [[os.path.abspath(p), list(stamp)] for p, stamp in files],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class ImageStoreEntry:
    """One stored folder, as ``hubtransfer cache info`` lists it.

    Attributes:
        key: The entry's key (its directory name).
        path: The entry's directory.
        bytes: Bytes on disk.
        last_used: When it was written or last read (seconds since the epoch).
        metadata: What the marker says: root, images, failures, bytes, max_image_size,
            decoder, created.
    """

    key: str
    path: Path
    bytes: int
    last_used: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Opened:
    """An entry checked whole: its index and its pixels, mapped."""

    marker: dict[str, object]
    files: list[dict[str, Any]]
    pixels: NDArray[np.uint8]

    def image(self, item: dict[str, Any]) -> NDArray[np.uint8]:
        shape = tuple(item["shape"])
        size = shape[0] * shape[1] * shape[2]
        return self.pixels[item["offset"] : item["offset"] + size].reshape(shape)


class ImageStore:
    """Decoded image folders under ``root/images/``, one directory per key.

    Args:
        root: The cache root; :func:`hubtransfer.config.cache_root` if None.
        max_bytes: Least recently used entries are removed past this many bytes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = DEFAULT_IMAGE_STORE_BYTES,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else cache_root()
        self.directory = self.root / "images"
        self.max_bytes = check_int("max_bytes", max_bytes, minimum=0)

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r}, max_bytes={self.max_bytes})"

    def get(self, key: str, files: Sequence[FileStamp]) -> Loaded | None:
        """The stored images of ``key``, or None when there are none (or unreadable ones).

        Args:
            key: :func:`image_key` of ``files``.
            files: The listed files, as given to :func:`image_key`.

        Returns:
            ``(cache, index, failures)`` as :func:`hubtransfer.imagecache.build_image_cache`
            returns them, keyed by the paths of ``files``; the cache's images are
            read-only views of the entry's memory-mapped ``pixels.u8``.
        """
        from hubtransfer.imagecache import ImageCache

        path = self.directory / key
        try:
            if not path.is_dir():
                return None
            opened = _open(path, key)
            listed = [[os.path.abspath(p), list(stamp)] for p, stamp in files]
            stored = [[i["path"], i["stamp"]] for i in opened.files]
            if stored != listed:
                raise ValueError("its index lists other files than the folder")
        except ValueError as exc:
            if not path.exists():  # evicted or cleared by another process meanwhile
                return None
            removed = discard_directory(path)
            logger.warning(
                "Image store entry %s is not what was written (%s); %s the folder's images "
                "are decoded again.",
                path,
                exc,
                "it is removed and" if removed else "it could not be removed;",
            )
            return None
        except OSError as exc:  # unreadable now (permissions, I/O): kept for later
            logger.warning(
                "Could not read image store entry %s (%s); the folder's images are decoded "
                "again. Check the permissions of %s, or set HUBTRANSFER_CACHE_DIR.",
                path,
                exc,
                self.directory,
            )
            return None
        if any(_transient(item) for item in opened.files):
            # Tried again: those files may read now; the others come from this entry.
            return None
        images: list[NDArray[np.uint8]] = []
        index: dict[str, int] = {}
        failures: dict[str, str] = {}
        for (name, _), item in zip(files, opened.files, strict=True):
            if "failure" in item:
                failures[name] = item["failure"]
            else:
                index[name] = len(images)
                images.append(opened.image(item))
        with contextlib.suppress(OSError):  # a read-only store still reads
            os.utime(path / MARKER)  # a use, for least-recently-used eviction
        max_image_size = opened.marker.get("max_image_size")
        cache = ImageCache(
            tuple(images),
            max_image_size if isinstance(max_image_size, int) else None,
            path / _PIXELS,
        )
        return cache, index, failures

    def reusable(
        self,
        files: Sequence[FileStamp],
        *,
        folder: str | os.PathLike[str],
        max_image_size: int | None,
    ) -> dict[str, NDArray[np.uint8] | str]:
        """What earlier entries of ``folder`` hold of ``files``, unchanged since.

        Only entries of the same folder, decoder and ``max_image_size`` are read, most
        recently used first. A file counts as unchanged when its absolute path and stamp
        (size, modification and change times, inode) are those of the stored one; a
        file that could not be read then is not taken.

        Returns:
            Per path of ``files`` found: its image (a read-only view of that entry's
            pixels; copy it to keep it) or the reason it could not be decoded.
        """
        wanted = {os.path.abspath(p): (p, list(stamp)) for p, stamp in files}
        found: dict[str, NDArray[np.uint8] | str] = {}
        root = os.path.abspath(folder)
        candidates = [
            e
            for e in self.entries()
            if e.metadata.get("root") == root
            and e.metadata.get("max_image_size") == max_image_size
            and e.metadata.get("decoder") == _decoder()
        ]
        for entry in sorted(candidates, key=lambda e: e.last_used, reverse=True):
            if len(found) == len(wanted):
                break
            try:
                opened = _open(entry.path, entry.key)
            except (OSError, ValueError) as exc:
                logger.debug("Image store entry %s not reused: %s", entry.path, exc)
                continue
            for item in opened.files:
                listed = wanted.get(item["path"])
                if listed is None or listed[0] in found or _transient(item):
                    continue
                if item["stamp"] != listed[1]:
                    continue
                found[listed[0]] = item["failure"] if "failure" in item else opened.image(item)
        return found

    def put(
        self,
        key: str,
        files: Sequence[FileStamp],
        loaded: Loaded,
        *,
        folder: str | os.PathLike[str],
    ) -> bool:
        """Stores a folder's decoded images under ``key``; False when it could not.

        A failure (read-only directory, full disk) is one warning, never an exception:
        the caller goes on with the images it has. An entry of the same key (one that
        holds files that could not be read then) is replaced. Afterwards the folder's
        older entries (same decoding and size) are removed, then least recently used
        entries other than this one until the store holds at most ``max_bytes``, and
        what writers killed over an hour ago left.

        Args:
            key: :func:`image_key` of ``files``.
            files: The listed files, as given to :func:`image_key`.
            loaded: ``(cache, index, failures)`` of those files.
            folder: The folder they were listed from (later loads of it reuse them).
        """
        cache, index, failures = loaded
        root = os.path.abspath(folder)
        items: list[dict[str, Any]] = []
        offset = 0
        for name, stamp in files:
            item: dict[str, Any] = {"path": os.path.abspath(name), "stamp": list(stamp)}
            if name in index:
                shape = cache.images[index[name]].shape
                item.update(shape=list(shape), offset=offset)
                offset += int(np.prod(shape))
            else:
                item["failure"] = failures[name]
            items.append(item)

        def fill(staging: Path) -> None:
            with open(staging / _PIXELS, "wb") as handle:
                for name, _ in files:
                    if name in index:
                        handle.write(np.ascontiguousarray(cache.images[index[name]]).data)
                handle.flush()
                os.fsync(handle.fileno())
            with open(staging / _INDEX, "w", encoding="utf-8") as handle:
                json.dump({"format": IMAGE_STORE_FORMAT, "files": items}, handle)
                handle.flush()
                os.fsync(handle.fileno())

        target = self.directory / key
        info = {
            "key": key,
            "format": IMAGE_STORE_FORMAT,
            "root": root,
            "images": len(index),
            "failures": len(failures),
            "bytes": offset,
            "max_image_size": cache.max_image_size,
            "decoder": _decoder(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        error = write_entry(target, _KIND, fill, metadata=info, overwrite=True)
        if error is not None:
            logger.warning(
                "Could not keep the decoded images of %s in the image store at %s (%s); the "
                "folder will be decoded again next time. Set HUBTRANSFER_CACHE_DIR to a "
                "writable directory, or pass image_store=False to keep nothing.",
                root,
                self.directory,
                error,
            )
            return False
        logger.info(
            "Kept %d decoded images of %s (%.1f MB) in the image store: %s",
            len(index),
            root,
            offset / 1e6,
            target,
        )
        self._evict(keep=key, superseded=(root, cache.max_image_size))
        return True

    def entries(self) -> list[ImageStoreEntry]:
        """Every entry of the store, oldest first."""
        found: list[ImageStoreEntry] = []
        for path, marker in marked_entries(self.directory, _KIND):
            try:
                used = (path / MARKER).stat().st_mtime
            except OSError:  # removed meanwhile by another process
                continue
            found.append(
                ImageStoreEntry(path.name, path, directory_bytes(path), used, dict(marker))
            )
        return sorted(found, key=lambda e: (str(e.metadata.get("created", "")), e.key))

    def clear(self) -> tuple[int, int]:
        """Removes every entry (and leftovers of killed writers); ``(entries, bytes)``.

        Only directories named like an entry and marked as one by hubtransfer are
        removed, with the staging directories of writers killed over an hour ago;
        anything else in the directory is left alone.
        """
        removed = [e for e in self.entries() if discard_directory(e.path)]
        remove_stale_staging(self.directory)
        return len(removed), sum(e.bytes for e in removed)

    def _evict(self, *, keep: str, superseded: tuple[str, int | None]) -> None:
        """Removes the older entries of ``superseded`` (root folder, max_image_size), then
        least recently used entries past ``max_bytes``; never ``keep``."""
        listed = self.entries()
        total = sum(e.bytes for e in listed)
        entries: list[ImageStoreEntry] = []
        for entry in listed:
            if entry.key == keep:
                continue
            older = (
                entry.metadata.get("root"),
                entry.metadata.get("max_image_size"),
            ) == superseded and entry.metadata.get("decoder") == _decoder()
            if older:  # what it holds of the folder now is in the new entry
                if discard_directory(entry.path):
                    total -= entry.bytes
            else:
                entries.append(entry)
        evicted: list[str] = []
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total <= self.max_bytes:
                break
            if discard_directory(entry.path):
                total -= entry.bytes
                evicted.append(
                    f"{entry.metadata.get('root', '?')} ({entry.bytes / 1e6:.1f} MB, "
                    f"{entry.key[:12]})"
                )
        if evicted:
            logger.info(
                "Image store over its cap of %.1f GiB: removed %d least recently used "
                "entr(ies): %s",
                self.max_bytes / 2**30,
                len(evicted),
                "; ".join(evicted),
            )
        remove_stale_staging(self.directory)


def _open(path: Path, key: str) -> _Opened:
    """An entry's marker, index and mapped pixels, each checked.

    Raises:
        ValueError: the marker, the index or the pixel file is not what was written.
        OSError: a file cannot be read.
    """
    marker = read_marker(path)
    if marker is None or marker.get("kind") != _KIND or marker.get("key") != key:
        raise ValueError("no matching marker")
    if marker.get("format") != IMAGE_STORE_FORMAT:
        raise ValueError(f"format {marker.get('format')!r}, expected {IMAGE_STORE_FORMAT}")
    data = json.loads((path / _INDEX).read_text(encoding="utf-8"))
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise ValueError("index.json has no list of files")
    total = 0
    for item in files:
        _check_item(item, total)
        if "shape" in item:
            height, width, channels = item["shape"]
            total += height * width * channels
    size = (path / _PIXELS).stat().st_size
    if size != total:
        raise ValueError(f"{_PIXELS} holds {size} bytes, the index {total}")
    pixels: NDArray[np.uint8] = (
        np.memmap(path / _PIXELS, np.uint8, "r", shape=(total,)) if total else np.zeros(0, np.uint8)
    )
    return _Opened(marker, files, pixels)


def _check_item(item: object, offset: int) -> None:
    """One index record: path, stamp, then a shape at ``offset`` or a reason."""
    if not (
        isinstance(item, dict)
        and isinstance(item.get("path"), str)
        and isinstance(item.get("stamp"), list)
        and len(item["stamp"]) == 4
        and all(isinstance(n, int) for n in item["stamp"])
    ):
        raise ValueError(f"index.json holds a malformed record: {str(item)[:100]}")
    if "shape" in item:
        shape = item["shape"]
        if not (
            isinstance(shape, list)
            and len(shape) == 3
            and all(isinstance(n, int) and n > 0 for n in shape)
            and shape[2] == 3
            and item.get("offset") == offset
        ):
            raise ValueError(f"index.json holds a malformed image record: {str(item)[:100]}")
    elif not (
        isinstance(item.get("failure"), str)
        and any(item["failure"].startswith(reason) for reason in REASONS)
    ):
        raise ValueError(f"index.json holds a record with neither shape nor reason: {item}")


def _transient(item: dict[str, Any]) -> bool:
    return any(str(item.get("failure", "")).startswith(reason) for reason in _TRANSIENT)


def file_stamps(paths: Sequence[str], known: Mapping[str, os.stat_result]) -> list[FileStamp]:
    """(path, stamp) of each path, from ``known`` stats or a ``stat`` (-1s if none)."""
    found: list[FileStamp] = []
    for path in paths:
        info = known.get(path)
        if info is None:
            try:
                info = os.stat(path)
            except OSError:  # decoding reports it ("missing file")
                found.append((path, (-1, -1, -1, -1)))
                continue
        found.append((path, (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)))
    return found
