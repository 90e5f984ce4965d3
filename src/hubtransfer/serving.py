"""The serving SavedModel: raw uint8 images of any size in, probabilities, class index and
class name out, with ``labels.txt`` beside it. It reloads with plain TensorFlow: no
hubtransfer import and no custom objects are needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hubtransfer._fs import atomic_write_text, write_directory
from hubtransfer._tf import tf, tf_keras
from hubtransfer.errors import ConfigurationError, ExportError, one_line
from hubtransfer.preprocessing import preprocess_image
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone

__all__ = ["SERVING_KIND", "export_saved_model"]

logger = logging.getLogger(__name__)

#: Marker kind of the directories export_saved_model writes (see hubtransfer._fs).
SERVING_KIND = "serving SavedModel"


class _Serving(tf.Module):
    """uint8 images of any size -> resize/scale for the backbone -> probabilities."""

    def __init__(self, model: tf_keras.Model, spec: Backbone, class_names: tuple[str, ...]):
        super().__init__()
        # Track the variables only: saving the Keras model object itself is much slower.
        self.model_variables = list(model.variables)
        object.__setattr__(self, "_model", model)  # not tracked: see above
        self._spec = spec
        self.class_names = tf.constant(list(class_names))
        self.binary = len(class_names) == 2

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        # The one preprocessing implementation: the same resize, clip and scale as training.
        scaled = preprocess_image(images, self._spec)
        logits = self._model(scaled, training=False)
        if self.binary:
            p = tf.sigmoid(logits[:, 0])
            probabilities = tf.stack([1.0 - p, p], axis=-1)
        else:
            probabilities = tf.nn.softmax(logits, axis=-1)
        index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "class_index": index,
            "class_name": tf.gather(self.class_names, index),
        }


def export_saved_model(
    model: tf_keras.Model,
    path: str | os.PathLike[str],
    *,
    backbone: str | Backbone,
    class_names: tuple[str, ...] | list[str],
    overwrite: bool = False,
    registry: BackboneRegistry | None = None,
) -> Path:
    """Writes a serving SavedModel directory, with ``labels.txt`` in it (one class per line).

    Its ``serving_default`` signature takes a batch of uint8 RGB images of any (uniform)
    size, ``images: uint8[batch, height, width, 3]``, resizes and scales them as the
    backbone needs, and returns ``probabilities`` (float32 ``[batch, classes]``),
    ``class_index`` (int32) and ``class_name`` (string). It reloads with plain
    ``tf.saved_model.load``; no hubtransfer import and no custom objects are needed.

    The directory is built beside ``path`` and renamed into place, with a
    ``.hubtransfer.json`` marker saying it is a serving SavedModel. ``path`` may be
    missing or an empty directory. A non-empty directory is replaced only when it holds
    an earlier serving SavedModel from hubtransfer and ``overwrite=True``; anything else
    (a folder of your files, a backbone stand-in) is refused and left untouched.

    Raises:
        ConfigurationError: ``class_names`` does not match the model's outputs.
        ExportError: ``path`` is taken (see above), or saving failed.
    """
    spec = resolve_backbone(backbone, registry)
    names = tuple(str(c) for c in class_names)
    outputs = model.output_shape[-1]
    if len(names) < 2 or outputs != (1 if len(names) == 2 else len(names)):
        raise ConfigurationError(
            f"class_names has {len(names)} entries but the model outputs {outputs} logit(s) "
            "(1 for two classes, else one per class). Pass the class names it was trained on, "
            "e.g. ImageData.class_names."
        )
    target = Path(path).expanduser()

    def fill(staging: Path) -> None:
        try:
            module = _Serving(model, spec, names)
            tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
            atomic_write_text(staging / "labels.txt", "\n".join(names) + "\n")
        except Exception as exc:
            raise ExportError(
                f"Could not write the serving SavedModel to {target}: {type(exc).__name__}: "
                f"{one_line(exc)}. Nothing was written there."
            ) from exc

    try:
        return write_directory(
            target,
            SERVING_KIND,
            fill,
            overwrite=overwrite,
            error=ExportError,
            metadata={"backbone": spec.name, "classes": len(names)},
        )
    except OSError as exc:  # creating the parent or the staging directory
        raise ExportError(
            f"Could not write the serving SavedModel to {target}: "
            f"{exc.strerror or one_line(exc)}. Choose a directory you can write to."
        ) from exc
