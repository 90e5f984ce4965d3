"""Deployable models: TFLite (float32, dynamic-range, float16, full-integer int8) and a
serving SavedModel that takes raw uint8 images.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from hubtransfer._tf import tf, tf_keras
from hubtransfer.data import ImageData
from hubtransfer.errors import ConfigurationError, DatasetError, ExportError
from hubtransfer.preprocessing import prepare, preprocess_image
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone

__all__ = [
    "Quantization",
    "TFLiteEvaluation",
    "evaluate_tflite",
    "export_saved_model",
    "export_tflite",
]

logger = logging.getLogger(__name__)

Quantization = Literal["dynamic", "float16", "int8"]
_QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
#: What benchmark(export=...) accepts: float32 (no quantization) and every Quantization.
TFLITE_MODES: tuple[str, ...] = ("float32", *_QUANTIZATIONS)
#: Calibration samples drawn for int8 when none is said (the peers use a few hundred).
DEFAULT_CALIBRATION_SAMPLES = 200


def _input_shape(model: tf_keras.Model) -> tuple[int, int, int]:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or None in shape:
        raise ExportError(
            f"export needs a model with a fixed image input (height, width, channels); this "
            f"model's input shape is {model.input_shape}. Build it with build_classifier()."
        )
    return shape


def _calibration_images(
    representative_data: tf.data.Dataset | ImageData,
    backbone: str | Backbone | None,
    samples: int,
    shape: tuple[int, int, int],
    registry: BackboneRegistry | None,
) -> Iterator[list[np.ndarray]]:
    if isinstance(representative_data, ImageData):
        if backbone is None:
            raise ConfigurationError(
                "int8 calibration from an ImageData needs the backbone it was trained for, to "
                "resize and scale the images: export_tflite(..., representative_data=data, "
                "backbone='mobilenet_v2')."
            )
        spec = resolve_backbone(backbone, registry)
        dataset = prepare(representative_data.train, spec, batch_size=1)
    elif isinstance(representative_data, tf.data.Dataset):
        dataset = representative_data
    else:
        raise ConfigurationError(
            "representative_data must be a tf.data.Dataset of preprocessed float32 images (or "
            "(image, label) pairs), or an ImageData with backbone=. Received: "
            f"{type(representative_data).__name__}."
        )
    seen = 0
    for element in dataset:
        images = element[0] if isinstance(element, (tuple, list)) else element
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[None]
        if images.shape[1:] != shape:
            raise DatasetError(
                f"Calibration images must be preprocessed to the model's input {shape}; got "
                f"{images.shape[1:]}. Use hubtransfer.prepare(dataset, backbone) first."
            )
        for image in images:
            yield [image[None]]
            seen += 1
            if seen >= samples:
                return
    if seen == 0:
        raise DatasetError("representative_data yielded no images; int8 calibration needs some.")


def export_tflite(
    model: tf_keras.Model,
    path: str | os.PathLike[str],
    *,
    quantization: Quantization | None = None,
    representative_data: tf.data.Dataset | ImageData | None = None,
    backbone: str | Backbone | None = None,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    uint8_io: bool = False,
    registry: BackboneRegistry | None = None,
) -> Path:
    """Converts a classifier to a ``.tflite`` file and returns its path.

    The TFLite model takes the same input as ``model`` (float32 images preprocessed for
    the backbone, any batch size) and returns its logits.

    Args:
        model: A classifier from :func:`build_classifier` (or any ``tf_keras`` model with a
            fixed image input).
        path: The ``.tflite`` file to write (replaced atomically).
        quantization: None (float32), ``"dynamic"`` (int8 weights, float activations),
            ``"float16"`` (float16 weights) or ``"int8"`` (full integer, calibrated).
        representative_data: For int8: a tf.data of preprocessed images or
            ``(image, label)`` pairs, or an ImageData together with ``backbone``.
        backbone: The backbone ``representative_data`` (an ImageData) is prepared for.
        calibration_samples: How many images calibrate int8.
        uint8_io: For int8: take uint8 input and give uint8 output (quantized with the
            scales in the model's tensor details) instead of float32.
        registry: Where a backbone name is looked up.

    Raises:
        ConfigurationError: Unknown quantization, or int8 without calibration data.
        ExportError: The converter failed.
    """
    if quantization is not None and quantization not in _QUANTIZATIONS:
        raise ConfigurationError(
            f"Unknown quantization {quantization!r}. Allowed: None (float32), "
            f"{', '.join(map(repr, _QUANTIZATIONS))}."
        )
    if quantization == "int8" and representative_data is None:
        raise ConfigurationError(
            "quantization='int8' needs calibration data: pass representative_data= (a few "
            "hundred training images, e.g. an ImageData with backbone=, or a prepared "
            "tf.data), or use quantization='dynamic', which needs none."
        )
    if uint8_io and quantization != "int8":
        raise ConfigurationError(
            f"uint8_io=True needs quantization='int8'. Received: quantization={quantization!r}."
        )
    shape = _input_shape(model)

    @tf.function  # type: ignore[untyped-decorator]
    def serve(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    concrete = serve.get_concrete_function(tf.TensorSpec([None, *shape], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        data = representative_data
        converter.representative_dataset = lambda: _calibration_images(
            data, backbone, calibration_samples, shape, registry
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if uint8_io:
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    try:
        flatbuffer = converter.convert()
    except (ConfigurationError, DatasetError):
        raise
    except Exception as exc:
        raise ExportError(
            f"TFLite conversion ({quantization or 'float32'}) failed: {type(exc).__name__}: "
            f"{exc}. A backbone loaded from a TF1 Hub module may hold ops TFLite lacks; try "
            "quantization=None or a TF2 backbone."
        ) from exc
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(flatbuffer)
    os.replace(tmp, target)
    logger.info("Wrote %s (%s, %d bytes)", target, quantization or "float32", len(flatbuffer))
    return target


class _Serving(tf.Module):  # type: ignore[misc]
    """uint8 images of any size -> resize/scale for the backbone -> probabilities."""

    def __init__(self, model: tf_keras.Model, spec: Backbone, class_names: tuple[str, ...]):
        super().__init__()
        # Track the variables only: saving the Keras model object itself is much slower.
        self.model_variables = list(model.variables)
        object.__setattr__(self, "_model", model)  # not tracked: see above
        self._spec = spec
        self.class_names = tf.constant(list(class_names))
        self.binary = len(class_names) == 2

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])  # type: ignore[untyped-decorator]
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        size = self._spec.image_size
        resized = tf.image.resize(tf.cast(images, tf.float32), (size, size))
        low, high = self._spec.input_range
        scaled = tf.clip_by_value(resized, 0.0, 255.0) * ((high - low) / 255.0) + low
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
    registry: BackboneRegistry | None = None,
) -> Path:
    """Writes a serving SavedModel, plus ``labels.txt`` beside it (one class per line).

    Its ``serving_default`` signature takes a batch of uint8 RGB images of any (uniform)
    size, ``images: uint8[batch, height, width, 3]``, resizes and scales them as the
    backbone needs, and returns ``probabilities`` (float32 ``[batch, classes]``),
    ``class_index`` (int32) and ``class_name`` (string). It reloads with plain
    ``tf.saved_model.load``; no hubtransfer import and no custom objects are needed.

    Raises:
        ConfigurationError: ``class_names`` does not match the model's outputs.
        ExportError: Saving failed.
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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        module = _Serving(model, spec, names)
        tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
        (staging / "labels.txt").write_text("\n".join(names) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(
            f"Could not write the serving SavedModel to {target}: {type(exc).__name__}: {exc}."
        ) from exc
    return target


@dataclass(frozen=True)
class TFLiteEvaluation:
    """How a .tflite model does on a split.

    Attributes:
        accuracy: Top-1 accuracy against the labels.
        agreement: Share of examples where it predicts the same class as the Keras model
            (None without one).
        examples: How many examples were scored.
        bytes: Size of the .tflite file.
        ms_per_image: Mean interpreter latency per image at batch size 1.
    """

    accuracy: float
    agreement: float | None
    examples: int
    bytes: int
    ms_per_image: float


def _predict_class(logits: np.ndarray) -> np.ndarray:
    return (logits[:, 0] > 0).astype(np.int64) if logits.shape[-1] == 1 else logits.argmax(-1)


def evaluate_tflite(
    path: str | os.PathLike[str],
    data: ImageData | tf.data.Dataset,
    *,
    backbone: str | Backbone,
    model: tf_keras.Model | None = None,
    split: Literal["train", "validation"] = "validation",
    max_examples: int | None = None,
    registry: BackboneRegistry | None = None,
) -> TFLiteEvaluation:
    """Accuracy of a ``.tflite`` classifier on a split, and agreement with a Keras model.

    Args:
        path: The ``.tflite`` file (from :func:`export_tflite`).
        data: An ImageData (``split`` is used) or a tf.data of unbatched
            ``(uint8 image, label)`` pairs.
        backbone: The backbone the model was built on (for resize and scale).
        model: The Keras model the file came from, to measure agreement.
        split: Which split of an ImageData.
        max_examples: Score at most this many examples.
        registry: Where a backbone name is looked up.
    """
    import time

    spec = resolve_backbone(backbone, registry)
    dataset = getattr(data, split) if isinstance(data, ImageData) else data
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    with warnings.catch_warnings():  # deprecated in favour of ai_edge_litert, still shipped
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    predictions: list[np.ndarray] = []
    labels: list[int] = []
    images_for_keras: list[np.ndarray] = []
    seconds = 0.0
    for image, label in dataset:
        x = preprocess_image(image, spec)[None].numpy()
        if inp["dtype"] != np.float32:
            info = np.iinfo(inp["dtype"])
            x_in: np.ndarray = np.clip(np.round(x / in_scale + in_zero), info.min, info.max).astype(
                inp["dtype"]
            )
        else:
            x_in = x
        interpreter.set_tensor(inp["index"], x_in)
        start = time.perf_counter()
        interpreter.invoke()
        seconds += time.perf_counter() - start
        logits = interpreter.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            logits = (logits - out_zero) * out_scale
        predictions.append(_predict_class(logits))
        labels.append(int(label))
        if model is not None:
            images_for_keras.append(x[0])
    if not labels:
        raise DatasetError("evaluate_tflite() got no examples to score.")
    predicted = np.concatenate(predictions)
    accuracy = float(np.mean(predicted == np.asarray(labels)))
    agreement = None
    if model is not None:
        keras_logits = model.predict(np.stack(images_for_keras), verbose=0, batch_size=32)
        agreement = float(np.mean(predicted == _predict_class(np.asarray(keras_logits))))
    return TFLiteEvaluation(
        accuracy=accuracy,
        agreement=agreement,
        examples=len(labels),
        bytes=Path(path).stat().st_size,
        ms_per_image=seconds * 1000.0 / len(labels),
    )
