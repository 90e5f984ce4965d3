"""Safe writes: every file and directory hubtransfer writes goes through here.

Three rules, so that a kill, a full disk or a second process never loses anything:

- files are written to a unique temporary name beside the target, flushed, then renamed
  over it (:func:`atomic_write_bytes`);
- directories are built in a unique staging directory, marked as hubtransfer's with
  :data:`MARKER`, then swapped in; an existing directory is only ever replaced when it
  carries the same kind of marker and the caller said ``overwrite=True``
  (:func:`write_directory`); what hubtransfer did not create is never deleted;
- one writer per output folder at a time (:func:`exclusive_lock`), released by the
  operating system when the process dies;
- the caches' keyed entries are listed, removed and cleaned up after killed writers in
  one way (:func:`marked_entries`, :func:`discard_directory`,
  :func:`remove_stale_staging`).

This module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final

from hubtransfer.errors import HubTransferError, OutputDirectoryError

__all__ = [
    "ENTRY_NAME",
    "MARKER",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_dir",
    "directory_bytes",
    "discard_directory",
    "exclusive_lock",
    "marked_entries",
    "read_marker",
    "remove_stale_staging",
    "unique_sibling",
    "write_directory",
    "write_entry",
]

_logger = logging.getLogger(__name__)

#: File that marks a directory as written by hubtransfer, with its kind.
MARKER = ".hubtransfer.json"


def unique_sibling(path: Path, suffix: str) -> Path:
    """A name beside ``path`` that no file has yet: ``stem-2.suffix``, ``stem-3...``."""
    candidate = path.with_name(f"{path.stem}{suffix}")
    n = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{suffix}")
        n += 1
    return candidate


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_unique(directory: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """Opens a new file under a name no other writer has, with the umask's permissions.

    Unlike ``tempfile.mkstemp`` (always 0600), the file gets the mode a plain ``open``
    would give it, so the renamed result is as readable as any other file the user writes.
    """
    while True:
        name = os.path.join(directory, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def _make_unique_dir(directory: Path, prefix: str) -> Path:
    """A new directory with the umask's permissions (``tempfile.mkdtemp`` makes 0700)."""
    while True:
        candidate = directory / f"{prefix}{secrets.token_hex(8)}"
        try:
            candidate.mkdir()
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        return candidate


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes ``data`` to ``path`` through a unique temporary file and a rename.

    Readers see the old file or the new one, never a mix; two writers never share a
    temporary name. A directory at ``path`` is refused, not replaced.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory; expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_unique(target.parent, f".{target.name}-", ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_marker(directory: Path) -> dict[str, object] | None:
    """The marker of a directory hubtransfer wrote, or None."""
    try:
        data = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_directory(
    target: str | os.PathLike[str],
    kind: str,
    fill: Callable[[Path], None],
    *,
    overwrite: bool = False,
    error: type[HubTransferError] = HubTransferError,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Builds a directory with ``fill(staging)`` and swaps it in at ``target``.

    ``target`` may be missing or an empty directory. A non-empty directory is replaced
    only when it holds a marker of the same ``kind`` and ``overwrite`` is True; the old
    one is renamed aside first and removed only after the new one is in place.

    If the final rename fails, the previous directory is put back and ``error`` is raised.

    Raises:
        error: ``target`` is a file, a directory this call may not replace, or the new
            directory could not be moved into place.
    """
    path = Path(target).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise error(
            f"{path} is a file, not a directory; a {kind} is a directory. Choose a path that "
            "does not exist yet (it is created)."
        )
    replace_old = False
    if path.is_dir() and any(path.iterdir()):
        marker = read_marker(path)
        if marker is None or marker.get("kind") != kind:
            raise error(
                f"{path} already exists and holds files hubtransfer did not write as a {kind}; "
                "it is left untouched. Choose a new path, or empty that directory first."
            )
        if not overwrite:
            raise error(
                f"{path} already holds a {kind} from an earlier export. Pass overwrite=True "
                "(CLI: --overwrite) to replace it, or choose a new path."
            )
        replace_old = True
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _make_unique_dir(path.parent, f".{path.name}-staging-")
    try:
        fill(staging)
        atomic_write_text(staging / MARKER, json.dumps({"kind": kind, **(metadata or {})}))
        try:
            _swap_in(staging, path, replace_old)
        except OSError as exc:
            raise error(
                f"Could not move the new {kind} into {path} ({exc.strerror or exc}); another "
                "process may have written there meanwhile. What was there is left as it was; "
                "try again, or choose a new path."
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    return path


def _swap_in(staging: Path, path: Path, replace_old: bool) -> None:
    if not replace_old:
        if path.is_dir():  # empty: rmdir refuses anything else, so nothing is lost
            path.rmdir()
        os.replace(staging, path)
        return
    old = _make_unique_dir(path.parent, f".{path.name}-old-")
    os.replace(path, old / path.name)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(old / path.name, path)  # put the previous one back before reporting
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


#: Names of keyed entry directories (a SHA-256 in hex), see :func:`marked_entries`.
ENTRY_NAME: Final = re.compile(r"[0-9a-f]{64}")
# Leftovers of a writer killed mid-write: write_directory's staging and set-aside names.
_STALE_NAME: Final = re.compile(r"\.[0-9a-f]{64}-(staging|old)-[0-9a-f]{16}")
_STALE_AFTER_S: Final = 3600.0


def marked_entries(directory: Path, kind: str) -> list[tuple[Path, dict[str, object]]]:
    """The keyed entries of a store: directories named like a key, marked as ``kind``."""
    found: list[tuple[Path, dict[str, object]]] = []
    try:
        names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    except OSError:  # unreadable: a cache that is not there
        return found
    for name in names:
        path = directory / name
        if not ENTRY_NAME.fullmatch(name):
            continue
        marker = read_marker(path)
        if marker is not None and marker.get("kind") == kind:
            found.append((path, marker))
    return found


def write_entry(
    target: Path,
    kind: str,
    fill: Callable[[Path], None],
    *,
    metadata: dict[str, object],
    overwrite: bool = False,
) -> Exception | None:
    """Writes one keyed cache entry with :func:`write_directory` (its parent created).

    Returns:
        None when the entry is in place: written here, or by another process meanwhile
        (which won the race with the same content). Else the error, for the caller to
        warn about: a cache that cannot be written never stops the work.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_directory(target, kind, fill, metadata=metadata, overwrite=overwrite)
    except (HubTransferError, OSError) as exc:
        if read_marker(target) is not None:
            _logger.debug("Cache entry %s was written by another process", target)
            return None
        return exc
    return None


def directory_bytes(directory: Path) -> int:
    """Bytes of the files directly in ``directory`` (0 if it went meanwhile)."""
    try:
        return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    except OSError:
        return 0


def discard_directory(path: Path) -> bool:
    """Removes a directory hubtransfer wrote, renamed aside first so that no reader ever
    sees it half-deleted; False when it could not be (already gone, or not removable)."""
    try:
        aside = _make_unique_dir(path.parent, f".{path.name}-old-")
    except OSError:
        return False
    try:
        os.replace(path, aside / path.name)
    except OSError:
        with contextlib.suppress(OSError):
            aside.rmdir()
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def remove_stale_staging(directory: Path) -> None:
    """Removes what writers killed mid-write left in a store (staging and set-aside
    directories), once over an hour old: a younger one may belong to a live writer."""
    now = time.time()
    try:
        paths = list(directory.iterdir()) if directory.is_dir() else []
    except OSError:  # unreadable: nothing of ours can be cleaned there
        return
    for path in paths:
        if _STALE_NAME.fullmatch(path.name):
            with contextlib.suppress(OSError):
                if path.is_dir() and now - path.stat().st_mtime > _STALE_AFTER_S:
                    shutil.rmtree(path, ignore_errors=True)


def check_writable_dir(directory: str | os.PathLike[str], what: str) -> Path:
    """Creates ``directory`` if needed and proves a file can be written in it.

    Raises:
        OutputDirectoryError: the path is a file, or the directory cannot be created or written.
    """
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirectoryError(
            f"{what} {path} is a file; it must be a directory. Choose another path."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hubtransfer-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirectoryError(
            f"{what} {path} is not writable ({exc.strerror or exc}). Choose a directory you "
            "can write to, or fix its permissions; nothing was run."
        ) from exc
    return path


@contextlib.contextmanager
def exclusive_lock(directory: Path, what: str) -> Iterator[None]:
    """Holds ``directory/.hubtransfer.lock`` for the block; a second holder is refused.

    The operating system releases the lock when the process ends, however it ends, so a
    killed study never leaves a stale lock behind.
    """
    lock_path = directory / ".hubtransfer.lock"
    handle: IO[str] = open(lock_path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            _lock(handle)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputDirectoryError(
                f"{what} {directory} is in use by {holder}. One study writes to a folder at a "
                "time: wait for it to finish, or choose another output folder."
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _lock(handle: IO[str]) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
