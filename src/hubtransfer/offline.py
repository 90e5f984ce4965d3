"""Local stand-ins for Hub backbones, built with ``tf_keras.applications``.

:func:`export_backbone` writes a TF2 SavedModel with the Hub contract (float32 images in
[0, 1] at the backbone's size in, pooled features of ``feature_dim`` out) from the same
architecture, so parameter counts, FLOPs, sizes and speed match the Hub model. With
``weights=None`` the weights are random: accuracy is not representative.

Randomly initialised BatchNorm statistics make activations vanish through a deep
network (pooled features with a standard deviation near 1e-12), so a frozen stand-in
carries no signal at all. ``calibration_images`` re-estimates every BatchNorm layer's
moving mean and variance on one batch (a training-mode forward pass with momentum 0, no
gradient step), which restores features with a usable spread.

The stand-in directory is written through :func:`hubtransfer._fs.write_directory`: built
aside, marked ``.hubtransfer.json`` (kind "backbone stand-in", with the recipe that made
it), and swapped in. A directory hubtransfer did not write is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast

import numpy as np

from hubtransfer._fs import MARKER, atomic_write_text, read_marker, write_directory
from hubtransfer._tf import tf, tf_keras
from hubtransfer.errors import BackboneLoadError, ConfigurationError, ExportError
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone

__all__ = ["export_backbone", "exportable_backbones"]

logger = logging.getLogger(__name__)

#: Marker kind of a stand-in directory (see hubtransfer._fs); its metadata holds the recipe.
STAND_IN_KIND = "backbone stand-in"
#: The recipe file of stand-ins written before the shared marker (still recognised).
_LEGACY_MARKER = "hubtransfer_backbone.json"


@dataclass(frozen=True)
class _Arch:
    builder: str  # attribute of tf_keras.applications
    scale: float  # [0, 1] input -> what the Keras architecture expects: x * scale + offset
    offset: float
    # MobileNetV3's pooled features come after a 1x1 conv that Keras puts in the "top".
    top_features: bool = False


_MINUS_ONE_ONE = (2.0, -1.0)
_ZERO_255 = (255.0, 0.0)
_ARCHITECTURES: dict[str, _Arch] = {
    "mobilenet_v2": _Arch("MobileNetV2", *_MINUS_ONE_ONE),
    "mobilenet_v3_small": _Arch("MobileNetV3Small", *_ZERO_255, top_features=True),
    "mobilenet_v3_large": _Arch("MobileNetV3Large", *_ZERO_255, top_features=True),
    "resnet50_v2": _Arch("ResNet50V2", *_MINUS_ONE_ONE),
    "inception_v3": _Arch("InceptionV3", *_MINUS_ONE_ONE),
}
for _i in range(8):
    _ARCHITECTURES[f"efficientnet_b{_i}"] = _Arch(f"EfficientNetB{_i}", *_ZERO_255)
    _ARCHITECTURES[f"efficientnet_b{_i}_tf2"] = _Arch(f"EfficientNetB{_i}", *_ZERO_255)
for _v in ("b0", "b1", "b2", "b3", "s", "m", "l"):
    _ARCHITECTURES[f"efficientnetv2_{_v}"] = _Arch(f"EfficientNetV2{_v.upper()}", *_ZERO_255)


def exportable_backbones() -> list[str]:
    """Names of registered backbones that :func:`export_backbone` can build."""
    return sorted(_ARCHITECTURES)


def _build(spec: Backbone, arch: _Arch, weights: Literal["imagenet"] | None) -> tf_keras.Model:
    factory: Callable[..., tf_keras.Model] = getattr(tf_keras.applications, arch.builder)
    size = spec.image_size
    inputs = tf_keras.Input(shape=(size, size, 3), name="images")
    x = tf_keras.layers.Rescaling(arch.scale, offset=arch.offset, name="to_keras_range")(inputs)
    if arch.top_features:
        full = factory(input_shape=(size, size, 3), weights=weights, include_top=True)
        base = tf_keras.Model(full.input, full.get_layer("Logits").input, name=arch.builder)
        x = tf_keras.layers.Flatten(name="features")(base(x))
    else:
        base = factory(
            input_shape=(size, size, 3), weights=weights, include_top=False, pooling="avg"
        )
        x = base(x)
    return tf_keras.Model(inputs, x, name=spec.name)


def _calibrate_batchnorm(model: tf_keras.Model, images: np.ndarray) -> None:
    layers = [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, tf_keras.layers.BatchNormalization)
    ]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # moving stats := this batch's stats
    try:
        model(tf.convert_to_tensor(images, tf.float32), training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum


def _all_layers(model: tf_keras.Model) -> list[tf_keras.layers.Layer]:
    found: list[tf_keras.layers.Layer] = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, tf_keras.Model):
            found.extend(_all_layers(layer))
    return found


def _save_reusable(model: tf_keras.Model, size: int, directory: Path) -> None:
    """Writes a Hub "reusable SavedModel": ``__call__(images, training)``, variables.

    Only the traced function and its variables are saved, not the Keras model object:
    Keras's own SavedModel serialisation traces every layer and takes several times longer.
    """

    @tf.function
    def call(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return model(images, training=training)

    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    for training in (False, True):
        call.get_concrete_function(spec, training=training)
    root = tf.train.Checkpoint()
    root.__call__ = call
    root.variables = list(model.variables)
    root.trainable_variables = list(model.trainable_variables)
    root.regularization_losses = []
    tf.saved_model.save(root, str(directory))


def _stand_in_recipe(directory: Path) -> dict[str, object] | None:
    """The recipe of the stand-in hubtransfer wrote in ``directory``, or None.

    A stand-in from before the shared marker keeps its recipe in ``_LEGACY_MARKER``; it
    gets the shared marker here, so that it can be replaced like any other stand-in.
    """
    marker = read_marker(directory)
    if marker is not None:
        recipe = marker.get("recipe")
        is_ours = marker.get("kind") == STAND_IN_KIND and isinstance(recipe, dict)
        return cast(dict[str, object], recipe) if is_ours else None
    if not (directory / "saved_model.pb").is_file():
        return None
    try:
        legacy = json.loads((directory / _LEGACY_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(legacy, dict) and "name" in legacy):
        return None
    with contextlib.suppress(OSError):  # read-only: still reusable, just not replaceable
        marker = {"kind": STAND_IN_KIND, "recipe": legacy}
        atomic_write_text(directory / MARKER, json.dumps(marker))
    return legacy


def export_backbone(
    name: str | Backbone,
    directory: str | os.PathLike[str],
    *,
    weights: Literal["imagenet"] | None = None,
    calibration_images: np.ndarray | None = None,
    rebuild: bool = False,
    overwrite: bool = False,
    registry: BackboneRegistry | None = None,
) -> Backbone:
    """Writes a local TF2 SavedModel stand-in for a registered backbone.

    The SavedModel takes float32 images in [0, 1] of shape ``(image_size, image_size,
    3)`` and returns pooled features of ``feature_dim``, like the Hub model.

    What happens to ``directory``:

    - missing or empty: the stand-in is written there;
    - holds the same stand-in (same name, image size, weights, calibration): reused, not
      rebuilt, unless ``rebuild=True``;
    - holds another stand-in from hubtransfer (other recipe): replaced only with
      ``overwrite=True`` or ``rebuild=True``, else ExportError;
    - holds anything else (your files, a serving SavedModel): ExportError, and it is left
      untouched, whatever the flags.

    Args:
        name: Registered name (or Backbone) whose architecture Keras provides; see
            :func:`exportable_backbones`.
        directory: Where the SavedModel is written (created; built aside and swapped in,
            so a failed export leaves what was there).
        weights: None for random weights, ``"imagenet"`` for Keras's pretrained file
            (downloaded by Keras, so it needs network or a filled ``~/.keras`` cache).
        calibration_images: Optional ``(n, size, size, 3)`` images in [0, 1] used once to
            re-estimate BatchNorm statistics, so a random-weight stand-in gives features
            with a usable spread. ``n`` of 32 or more is plenty.
        rebuild: Export again even if ``directory`` already holds this export; this is
            also permission to replace a stand-in hubtransfer wrote there (never anything
            else).
        overwrite: Replace a stand-in of another recipe in ``directory`` (never anything
            hubtransfer did not write); the same recipe is still reused.
        registry: Where to look ``name`` up; the default registry if None.

    Returns:
        The registry's Backbone with ``handle`` pointing at ``directory``, marked TF2 and
        fine-tunable (the stand-in is a TF2 SavedModel, whatever the Hub original is).

    Raises:
        ConfigurationError: Unknown architecture, weights or calibration shape.
        BackboneLoadError: Keras could not build the architecture (e.g. no ImageNet file).
        ExportError: ``directory`` is taken (see above), or the SavedModel could not be
            written.
    """
    spec = resolve_backbone(name, registry)
    arch = _ARCHITECTURES.get(spec.name)
    if arch is None:
        raise ConfigurationError(
            f"No Keras architecture is known for backbone {spec.name!r}. Exportable: "
            f"{', '.join(exportable_backbones())}. For other models, download the SavedModel "
            "and set its directory as the handle."
        )
    if weights not in (None, "imagenet"):
        raise ConfigurationError(
            f"weights must be None (random) or 'imagenet'. Received: weights={weights!r}."
        )
    size = spec.image_size
    if calibration_images is not None:
        calibration_images = np.asarray(calibration_images, dtype=np.float32)
        if calibration_images.ndim != 4 or calibration_images.shape[1:] != (size, size, 3):
            raise ConfigurationError(
                f"calibration_images for {spec.name!r} must have shape (n, {size}, {size}, 3) "
                f"with values in [0, 1]. Received shape: {calibration_images.shape}."
            )
    target = Path(directory).expanduser().resolve()
    recipe: dict[str, object] = {
        "name": spec.name,
        "weights": weights,
        "image_size": size,
        "calibrated": calibration_images is not None,
    }
    exported = replace(spec, handle=str(target), hub_format="tf2", fine_tunable=True)
    previous = _stand_in_recipe(target) if target.is_dir() else None
    if not rebuild and previous == recipe and (target / "saved_model.pb").is_file():
        logger.info("Reusing exported backbone %s in %s", spec.name, target)
        return exported
    if previous is not None and not (rebuild or overwrite):
        raise ExportError(
            f"{target} holds another stand-in ({_describe(previous)}); this export is "
            f"{_describe(recipe)}. Pass overwrite=True to replace it, or choose another "
            "directory."
        )
    # Refuse a taken path now rather than after the build, which can take minutes.
    if target.exists() and not target.is_dir():
        raise ExportError(
            f"{target} is a file; a {STAND_IN_KIND} is a directory. Choose a path that does "
            "not exist yet (it is created)."
        )
    if previous is None and target.is_dir() and any(target.iterdir()):
        raise ExportError(
            f"{target} already exists and holds files hubtransfer did not write as a "
            f"{STAND_IN_KIND}; it is left untouched. Choose a new directory, or empty that "
            "one first."
        )

    logger.info("Exporting %s (%s, weights=%s) to %s", spec.name, arch.builder, weights, target)
    try:
        model = _build(spec, arch, weights)
    except Exception as exc:  # Keras downloads ImageNet weights over the network
        raise BackboneLoadError(
            f"Could not build {arch.builder} for {spec.name!r} with weights={weights!r}: "
            f"{type(exc).__name__}: {exc}. Without network, use weights=None, or put the "
            "Keras weights file in ~/.keras/models first."
        ) from exc
    if calibration_images is not None:
        _calibrate_batchnorm(model, calibration_images)
    if model.output_shape[-1] != spec.feature_dim:  # pragma: no cover - registry bug
        raise ConfigurationError(
            f"{arch.builder} gives {model.output_shape[-1]} features but {spec.name!r} is "
            f"registered with feature_dim={spec.feature_dim}; fix the registry entry."
        )

    def fill(staging: Path) -> None:
        try:
            _save_reusable(model, size, staging)
        except Exception as exc:
            raise ExportError(
                f"Could not save the {spec.name!r} stand-in to {target}: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())}. Nothing was written there."
            ) from exc

    try:
        write_directory(
            target,
            STAND_IN_KIND,
            fill,
            overwrite=True,
            error=ExportError,
            metadata={"recipe": recipe},
        )
    except OSError as exc:  # creating the parent or the staging directory
        raise ExportError(
            f"Could not write the {spec.name!r} stand-in to {target}: {exc.strerror or exc}. "
            "Choose a directory you can write to."
        ) from exc
    return exported


def _describe(recipe: dict[str, object]) -> str:
    calibrated = "calibrated" if recipe.get("calibrated") else "uncalibrated"
    return (
        f"{recipe.get('name')!s} at {recipe.get('image_size')!s} px, "
        f"weights={recipe.get('weights')!r}, {calibrated}"
    )
