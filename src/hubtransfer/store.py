"""The feature store: frozen-backbone features kept on disk across studies and processes.

A frozen backbone maps the same images to the same features, whatever the head,
learning rate, seed or batch size trained on them afterwards. :func:`hubtransfer.benchmark`
therefore keeps every split's features here once extracted, and a later study of the
same backbone on the same data reads them instead of running the backbone again.

**Where**: ``<cache root>/features/``, the cache root being ``$HUBTRANSFER_CACHE_DIR``, or
the user's cache directory (``~/.cache/hubtransfer`` on Linux; see
:func:`hubtransfer.config.cache_root`), or a directory passed as
``benchmark(feature_store=...)``.

**Key** (:func:`feature_key`): a SHA-256 over what determines the features, and nothing
else: the backbone's handle (for a local SavedModel directory also the size and
modification time of its graph and variables files, so a model re-exported in place is
a new key), its format, input size and value range; the preprocessing (bilinear resize
of the whole image, no crop, linear scaling, and a version number bumped whenever that
code changes); the data's :attr:`~hubtransfer.ImageData.fingerprint` and the split name.
The backbone's registry name, the batch size, the head and every training setting are
not part of it. An image folder's fingerprint covers each file's path, size,
modification time and label, the split settings and the cached image size: touching,
adding or removing a file gives new keys, and the old entries are simply no longer read
(``hubtransfer cache clear`` removes them). Data without a fingerprint is never stored.

**Entry**: one directory ``<key>/`` holding ``features.npy`` (float32, n x dim),
``labels.npy`` (int64) and the marker ``.hubtransfer.json`` (kind, key and what was
stored: backbone, split, images, extraction seconds, time). It is built in a staging
directory and renamed into place (:func:`hubtransfer._fs.write_directory`), so a reader
sees a whole entry or none. Two processes filling the same key both succeed: the first
rename wins, the second finds the entry in place and drops its own copy (the features
are the same). An entry that does not read back whole is discarded and extracted again.

**Measurements**: a frozen classifier's saved size and parameter counts depend only on
its architecture (backbone, head, classes), not on its trained weights. They are kept
as small JSON files under ``<cache root>/measurements/`` (key:
:func:`measurement_key`), so a study whose features all come from the store does not
load the backbone just to save the classifier and measure the file again. Next to
them, each backbone's outline (:mod:`hubtransfer.sizing`: its layer's configuration and
weight shapes) measures a classifier with a head never seen before without loading it.

This module does not import TensorFlow until features are read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from hubtransfer._fs import (
    atomic_write_text,
    directory_bytes,
    discard_directory,
    marked_entries,
    read_marker,
    remove_stale_staging,
    write_entry,
)
from hubtransfer.config import cache_root, hub_cache_dir
from hubtransfer.registry import Backbone

if TYPE_CHECKING:
    from hubtransfer.features import FeatureSet

__all__ = [
    "PREPROCESSING_VERSION",
    "STORE_FORMAT",
    "FeatureStore",
    "StoreEntry",
    "feature_key",
    "measurement_key",
]

logger = logging.getLogger(__name__)

#: Layout of an entry; bump when it changes (old entries become unreadable keys).
#: 2: a split's features are in its file order (1 stored ``train`` in a shuffled order).
STORE_FORMAT: Final = 2
#: Version of the feature preprocessing (``prepare()`` without augmentation); bump when
#: its resize, crop or scaling changes, so no entry made by the old code is read.
PREPROCESSING_VERSION: Final = 1
_KIND: Final = "feature-store-entry"
_MEASURED: Final = ("model_bytes", "params_total", "params_trainable")
_MEASUREMENT_NAME: Final = re.compile(r"[0-9a-f]{64}\.json")
# Model files whose size and time identify a local SavedModel's contents.
_MODEL_FILES: Final = (
    "saved_model.pb",
    "saved_model.pbtxt",
    "tfhub_module.pb",
    "variables/variables.index",
)


def _model_stamp(handle: str) -> list[list[Any]] | None:
    """(file, size, mtime_ns) of a local model directory's files; None for a URL."""
    path = Path(handle).expanduser()
    if not path.is_dir():
        return None
    stamp: list[list[Any]] = []
    for name in _MODEL_FILES:
        with contextlib.suppress(OSError):
            info = (path / name).stat()
            stamp.append([name, info.st_size, info.st_mtime_ns])
    return stamp


def key_payload(
    backbone: Backbone, fingerprint: str, split: str, *, crop_fraction: float | None = None
) -> dict[str, Any]:
    """What :func:`feature_key` hashes, as a JSON-ready dict."""
    return {
        "format": STORE_FORMAT,
        "handle": backbone.handle,
        "model_files": _model_stamp(backbone.handle),
        "hub_format": backbone.hub_format,
        "image_size": backbone.image_size,
        "input_range": [float(v) for v in backbone.input_range],
        "preprocessing": {
            "version": PREPROCESSING_VERSION,
            "resize": "bilinear",
            "crop_fraction": crop_fraction,
        },
        "data": fingerprint,
        "split": split,
    }


def feature_key(
    backbone: Backbone, fingerprint: str, split: str, *, crop_fraction: float | None = None
) -> str:
    """The store key of ``backbone``'s features of one split of the data ``fingerprint``.

    Args:
        backbone: The backbone (its handle, format, image size and input range count).
        fingerprint: :attr:`hubtransfer.ImageData.fingerprint` of the data.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        crop_fraction: The centre crop of the preprocessing (None: whole image).

    Returns:
        64 hex digits.
    """
    text = json.dumps(
        key_payload(backbone, fingerprint, split, crop_fraction=crop_fraction),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def measurement_key(backbone: Backbone, architecture: dict[str, Any]) -> str:
    """The key of what a classifier of this architecture measures (see the module docs).

    Args:
        backbone: The backbone (its name, handle and model files, format, sizes count:
            the name is saved in the classifier's configuration).
        architecture: Everything else that shapes the saved file, JSON-ready: the head,
            the class count, the precision policy, whether the backbone is trainable.

    Returns:
        64 hex digits. The tf_keras, h5py and tensorflow_hub versions are part of it:
        they write the file.
    """
    payload = {
        "format": STORE_FORMAT,
        "name": backbone.name,
        "handle": backbone.handle,
        "model_files": _model_stamp(backbone.handle),
        # A downloaded model is loaded from (and its layer's saved configuration names)
        # its directory in TensorFlow Hub's cache.
        "hub_cache": hub_cache_dir() if backbone.is_remote else None,
        "hub_format": backbone.hub_format,
        "image_size": backbone.image_size,
        "feature_dim": backbone.feature_dim,
        "architecture": architecture,
        "writers": {
            "tf_keras": _version("tf-keras"),
            "h5py": _version("h5py"),
            "tensorflow_hub": _version("tensorflow-hub"),  # its layer's config is saved
        },
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoreEntry:
    """One stored split's features, as ``hubtransfer cache info`` lists it.

    Attributes:
        key: The entry's key (its directory name).
        path: The entry's directory.
        bytes: Bytes on disk.
        metadata: What the marker says: backbone, split, images, feature_dim,
            extraction_seconds, created.
    """

    key: str
    path: Path
    bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)


class FeatureStore:
    """Frozen features under ``root/features/``, one directory per key.

    Args:
        root: The cache root; :func:`hubtransfer.config.cache_root` if None.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else cache_root()
        self.directory = self.root / "features"
        self.measurements = self.root / "measurements"

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def get(self, key: str, *, memory_limit_bytes: int) -> FeatureSet | None:
        """The stored features of ``key``, or None when there are none (or unreadable ones).

        Features up to ``memory_limit_bytes`` are read into memory; larger ones are
        memory-mapped from the entry. ``seconds`` is the time this read took.
        """
        from hubtransfer.features import FeatureSet

        path = self.directory / key
        if not path.is_dir():
            return None
        start = time.perf_counter()
        try:
            marker = read_marker(path)
            if marker is None or marker.get("kind") != _KIND or marker.get("key") != key:
                raise ValueError("no matching marker")
            mapped = np.load(path / "features.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(path / "labels.npy", allow_pickle=False)
            if mapped.dtype != np.float32 or mapped.ndim != 2 or labels.shape != mapped.shape[:1]:
                raise ValueError(f"shapes {mapped.shape} and {labels.shape} do not match")
        except (OSError, ValueError) as exc:
            logger.warning(
                "Feature store entry %s is unreadable (%s); it is removed and the features "
                "are extracted again.",
                path,
                exc,
            )
            discard_directory(path)
            return None
        if mapped.nbytes <= memory_limit_bytes:
            features = FeatureSet(np.array(mapped), labels.astype(np.int64), 0.0, from_store=True)
        else:
            features = FeatureSet(
                mapped, labels.astype(np.int64), 0.0, path / "features.npy", from_store=True
            )
        return _with_seconds(features, time.perf_counter() - start)

    def put(self, key: str, features: FeatureSet, *, metadata: dict[str, Any]) -> bool:
        """Stores ``features`` under ``key``; False when it could not (logged, not raised).

        When another process stored the same key meanwhile, its entry is kept and this
        returns True: the features are the same.
        """

        def fill(staging: Path) -> None:
            arrays = {"features.npy": features.features, "labels.npy": features.labels}
            for name, array in arrays.items():
                with open(staging / name, "wb") as handle:
                    np.save(handle, np.asarray(array), allow_pickle=False)
                    handle.flush()
                    os.fsync(handle.fileno())

        target = self.directory / key
        info = {
            "key": key,
            "format": STORE_FORMAT,
            "images": len(features),
            "feature_dim": int(features.features.shape[1]) if features.features.ndim == 2 else 0,
            "extraction_seconds": round(features.seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **metadata,
        }
        error = write_entry(target, _KIND, fill, metadata=info)
        if error is not None:
            logger.warning(
                "Could not write features to the feature store at %s (%s); the study goes "
                "on without storing them. Set HUBTRANSFER_CACHE_DIR to a writable directory.",
                target,
                error,
            )
        return error is None

    def get_measurement(self, key: str) -> dict[str, int] | None:
        """What :meth:`put_measurement` kept under ``key``; None if nothing (readable) is."""
        values = self.get_record(key)
        if values is None or not all(isinstance(values.get(k), int) for k in _MEASURED):
            return None
        return {k: int(values[k]) for k in _MEASURED}

    def put_measurement(self, key: str, values: dict[str, int]) -> None:
        """Keeps ``values`` (``model_bytes``, ``params_total``, ``params_trainable``);
        a failure to write is logged, not raised: it costs a measurement next time."""
        self.put_record(key, {k: int(values[k]) for k in _MEASURED})

    def get_record(self, key: str) -> dict[str, Any] | None:
        """The JSON object :meth:`put_record` kept under ``key``; None if nothing
        (readable, and written for this key) is."""
        try:
            values = json.loads((self.measurements / f"{key}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(values, dict) or values.get("key") != key:
            return None
        return values

    def put_record(self, key: str, values: dict[str, Any]) -> None:
        """Keeps a small JSON object under ``key`` with the measurements (a backbone's
        outline, see :mod:`hubtransfer.sizing`); a failure to write is logged, not
        raised."""
        try:
            self.measurements.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.measurements / f"{key}.json", json.dumps({**values, "key": key}))
        except OSError as exc:
            logger.debug("Could not keep a measurement in %s: %s", self.measurements, exc)

    def entries(self) -> list[StoreEntry]:
        """Every entry of the store, oldest first."""
        found = [
            StoreEntry(path.name, path, directory_bytes(path), dict(marker))
            for path, marker in marked_entries(self.directory, _KIND)
        ]
        return sorted(found, key=lambda e: (str(e.metadata.get("created", "")), e.key))

    def clear(self) -> tuple[int, int]:
        """Removes every entry (and leftovers of killed writers); ``(entries, bytes)``.

        Only directories named like an entry and marked as one by hubtransfer are
        removed, with the staging directories of writers killed over an hour ago and
        the kept measurements (their bytes count, not as entries); anything else in the
        cache directory is left alone.
        """
        removed, freed = 0, 0
        for entry in self.entries():
            if discard_directory(entry.path):
                removed += 1
                freed += entry.bytes
        if self.measurements.is_dir():
            for path in self.measurements.iterdir():
                if _MEASUREMENT_NAME.fullmatch(path.name):
                    with contextlib.suppress(OSError):
                        freed += path.stat().st_size
                        path.unlink()
        remove_stale_staging(self.directory)
        return removed, freed


def _with_seconds(features: FeatureSet, seconds: float) -> FeatureSet:
    from dataclasses import replace

    return replace(features, seconds=seconds)
