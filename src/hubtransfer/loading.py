"""Turns a :class:`~hubtransfer.Backbone` into a ``hub.KerasLayer``.

All TensorFlow Hub and I/O failures are translated here, once, into
:class:`BackboneLoadError` or :class:`NotFineTunableError` with a next step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

from hubtransfer._tf import hub, tf
from hubtransfer.config import hub_cache_dir
from hubtransfer.errors import BackboneLoadError, NotFineTunableError
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone, suggest_fine_tunable

__all__ = ["DEFAULT_TIMEOUT_S", "is_tf1_module", "load_backbone_layer", "resolve_handle"]

logger = logging.getLogger(__name__)

#: Seconds a single network operation may block before a remote load gives up.
DEFAULT_TIMEOUT_S = 30.0
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_TF1_MARKER = "tfhub_module.pb"


def is_tf1_module(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a TF1 Hub module directory (it holds ``tfhub_module.pb``)."""
    return bool(tf.io.gfile.exists(os.path.join(os.fspath(path), _TF1_MARKER)))


def _offline_hint(spec: Backbone) -> str:
    return (
        f"Downloads are cached in TFHUB_CACHE_DIR (now {hub_cache_dir()}). To work offline, "
        "download the model where there is network and point the backbone at the "
        f"directory: dataclasses.replace(get_backbone({spec.name!r}), handle='/path/to/model'); "
        "or set TFHUB_CACHE_DIR to a cache filled on another machine; or build an untrained "
        f"stand-in with hubtransfer.offline.export_backbone({spec.name!r}, DIR)."
    )


def _fine_tune_error(
    spec: Backbone, what: str, registry: BackboneRegistry | None
) -> NotFineTunableError:
    alternative = suggest_fine_tunable(spec, registry)
    return NotFineTunableError(
        f"{spec.name!r} {what} and cannot be fine-tuned (trainable=True). "
        f"Use it frozen (trainable=False), or pick a fine-tunable TF2 backbone such as "
        f"{alternative!r}."
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # tensorflow_hub calls urlopen() without a timeout; a blackholed route would then
    # hang for minutes. The default timeout is process-wide, so restore it afterwards.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def resolve_handle(spec: Backbone, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The local directory holding ``spec``'s SavedModel, downloading it if remote.

    Raises:
        BackboneLoadError: The handle cannot be fetched, or the directory holds no SavedModel.
    """
    if spec.is_remote:
        try:
            with _socket_timeout(timeout):
                path = str(hub.resolve(spec.handle))
        except Exception as exc:  # every transport error: URLError, HTTPError 403, timeout...
            raise BackboneLoadError(
                f"Could not fetch backbone {spec.name!r} from {spec.handle}: "
                f"{type(exc).__name__}: {exc}. {_offline_hint(spec)}"
            ) from exc
        where = "cached download"
        fix = (
            f"The download is incomplete or stale: delete {path} (inside TFHUB_CACHE_DIR) "
            "and load again."
        )
    else:
        path = os.fspath(os.path.expanduser(spec.handle))
        if not tf.io.gfile.isdir(path):
            raise BackboneLoadError(
                f"Backbone {spec.name!r} points at {path}, which is not a directory. A local "
                "handle must be a SavedModel directory. " + _offline_hint(spec)
            )
        where = "directory"
        fix = "Point the handle at the folder that holds saved_model.pb."
    if not any(tf.io.gfile.exists(os.path.join(path, f)) for f in _SAVED_MODEL_FILES):
        raise BackboneLoadError(
            f"The {where} {path} for backbone {spec.name!r} (handle {spec.handle}) contains "
            f"neither saved_model.pb nor saved_model.pbtxt. {fix} {_offline_hint(spec)}"
        )
    return path


def load_backbone_layer(
    backbone: str | Backbone,
    *,
    trainable: bool = False,
    registry: BackboneRegistry | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    name: str = "backbone",
) -> hub.KerasLayer:
    """A ``hub.KerasLayer`` for ``backbone``, frozen unless ``trainable``.

    A TF1 module asked for ``trainable=True`` is refused before anything is downloaded
    when its spec says ``hub_format="tf1"``, and before it is loaded when the resolved
    directory holds ``tfhub_module.pb`` (a mislabelled spec or a raw path).

    Raises:
        NotFineTunableError: ``trainable=True`` on a TF1 module.
        BackboneLoadError: The model cannot be fetched or loaded.
    """
    spec = resolve_backbone(backbone, registry)
    if trainable and spec.hub_format == "tf1":
        raise _fine_tune_error(spec, "is a TF1 Hub module", registry)
    if trainable and not spec.fine_tunable:
        raise _fine_tune_error(spec, "is registered with fine_tunable=False", registry)
    path = resolve_handle(spec, timeout=timeout)
    if trainable and is_tf1_module(path):
        raise _fine_tune_error(
            spec,
            f"is a TF1 Hub module (its directory {path} holds {_TF1_MARKER}, although the "
            f"spec says hub_format={spec.hub_format!r})",
            registry,
        )
    logger.debug("Loading backbone %s from %s (trainable=%s)", spec.name, path, trainable)
    try:
        return hub.KerasLayer(path, trainable=trainable, name=name)
    except Exception as exc:
        raise BackboneLoadError(
            f"Could not load backbone {spec.name!r} from {path}: {type(exc).__name__}: {exc}. "
            "The directory must hold a TF2 SavedModel or a TF1 Hub module whose call maps "
            f"images to features. {_offline_hint(spec)}"
        ) from exc
