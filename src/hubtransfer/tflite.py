"""TFLite: conversion (float32, dynamic-range, float16, full-integer int8) and scoring a
``.tflite`` file (accuracy, agreement with the Keras model, latency) with the LiteRT
interpreter when installed, else ``tf.lite.Interpreter``.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from hubtransfer._fs import atomic_write_bytes
from hubtransfer._tf import tf, tf_keras
from hubtransfer.config import DEFAULTS
from hubtransfer.data import ImageData
from hubtransfer.errors import ConfigurationError, DatasetError, ExportError, one_line
from hubtransfer.metrics import predicted_classes
from hubtransfer.preprocessing import prepare, preprocess_image
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone
from hubtransfer.sampling import Split, sample_split
from hubtransfer.validation import check_choice, check_int

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "Quantization",
    "TFLiteEvaluation",
    "evaluate_tflite",
    "export_tflite",
    "open_interpreter",
]

logger = logging.getLogger(__name__)

Quantization = Literal["dynamic", "float16", "int8"]
_QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
#: Calibration samples drawn for int8 when none is said (the peers use a few hundred).
DEFAULT_CALIBRATION_SAMPLES = 200


def _tflite_target(path: str | os.PathLike[str], overwrite: bool) -> Path:
    target = Path(path).expanduser()
    if target.is_dir():
        raise ExportError(
            f"{target} is a directory; export_tflite writes one file there. Pass a file path, "
            f"e.g. {target / 'model.tflite'}."
        )
    if target.exists() and not overwrite:
        raise ExportError(
            f"{target} already exists and was left untouched. Pass overwrite=True "
            "(CLI: --overwrite) to replace it, or choose a new path."
        )
    return target


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
        # A seeded sample of every class: the first examples of a split may be one class.
        sample = sample_split(representative_data, "train", samples, seed=DEFAULTS.seed)
        dataset = prepare(sample, spec, batch_size=1)
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
    overwrite: bool = False,
    registry: BackboneRegistry | None = None,
) -> Path:
    """Converts a classifier to a ``.tflite`` file and returns its path.

    The TFLite model takes the same input as ``model`` (float32 images preprocessed for
    the backbone, any batch size) and returns its logits.

    Args:
        model: A classifier from :func:`build_classifier` (or any ``tf_keras`` model with a
            fixed image input).
        path: The ``.tflite`` file to write, through a temporary file and a rename, so a
            reader never sees half a model. Its directory is created if needed.
        quantization: None (float32), ``"dynamic"`` (int8 weights, float activations),
            ``"float16"`` (float16 weights) or ``"int8"`` (full integer, calibrated).
        representative_data: For int8: a tf.data of preprocessed images or
            ``(image, label)`` pairs, or an ImageData together with ``backbone``.
        backbone: The backbone ``representative_data`` (an ImageData) is prepared for.
        calibration_samples: How many images calibrate int8.
        uint8_io: For int8: take uint8 input and give uint8 output (quantized with the
            scales in the model's tensor details) instead of float32.
        overwrite: Replace a file already at ``path``; without it, an existing file is
            refused (hubtransfer cannot tell its own ``.tflite`` files from others).
        registry: Where a backbone name is looked up.

    Raises:
        ConfigurationError: Unknown quantization, int8 without calibration data, or a
            ``calibration_samples`` that is not a positive integer.
        ExportError: ``path`` is a directory, or an existing file without
            ``overwrite=True``, or cannot be written; or the converter failed. Nothing is
            written then.
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
    check_int("calibration_samples", calibration_samples)
    target = _tflite_target(path, overwrite)  # before converting: fail in a second, not minutes
    shape = _input_shape(model)

    @tf.function
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
    target = _tflite_target(target, overwrite)  # again: conversion takes a while
    try:
        atomic_write_bytes(target, flatbuffer)
    except OSError as exc:
        raise ExportError(
            f"Could not write {target}: {exc.strerror or one_line(exc)}. Choose a path in a "
            "directory you can write to."
        ) from exc
    logger.info("Wrote %s (%s, %d bytes)", target, quantization or "float32", len(flatbuffer))
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


def _interpreter_class() -> Any:
    """LiteRT's interpreter when ai-edge-litert is installed, else TensorFlow's.

    ``tf.lite.Interpreter`` is deprecated in favour of LiteRT but still ships with TF 2.21;
    both take ``model_path=`` and have the same tensor API.
    """
    try:
        module = importlib.import_module("ai_edge_litert.interpreter")
    except ImportError:
        return tf.lite.Interpreter
    return module.Interpreter


def open_interpreter(file: Path) -> Any:
    if not file.is_file():
        problem = "is a directory" if file.is_dir() else "does not exist"
        raise ExportError(
            f"{file} {problem}; evaluate_tflite needs a .tflite file. Pass the path "
            "export_tflite() returned."
        )
    interpreter_class = _interpreter_class()
    logger.debug("Scoring %s with %s", file, interpreter_class.__module__)
    try:
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
            warnings.simplefilter("ignore", UserWarning)
            interpreter = interpreter_class(model_path=str(file))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(
            f"{file} is not a TFLite model the interpreter can load ({one_line(exc)}). "
            "Export it again with export_tflite()."
        ) from exc
    return interpreter


def _check_classifier(file: Path, inp: dict[str, Any], out: dict[str, Any], spec: Backbone) -> int:
    """Checks the model's input against the backbone; returns how many classes it predicts."""
    in_shape = tuple(int(d) for d in inp["shape"])
    out_shape = tuple(int(d) for d in out["shape"])
    if len(in_shape) != 4 or in_shape[-1] != 3 or len(out_shape) != 2:
        raise ExportError(
            f"{file} is not an image classifier from export_tflite(): it takes input "
            f"{list(in_shape)} and gives output {list(out_shape)}, where (batch, height, width, "
            "3) images in and (batch, logits) out are needed. Export the classifier with "
            "export_tflite()."
        )
    size = spec.image_size
    if in_shape[1:3] != (size, size):
        raise ConfigurationError(
            f"{file} takes {in_shape[1]}x{in_shape[2]} images but backbone {spec.name!r} "
            f"uses {size}x{size}. Pass the backbone the model was built on (backbone=...)."
        )
    logits = out_shape[-1]
    return 2 if logits == 1 else logits


def _class_mismatch(file: Path, model_classes: int, data_classes: str) -> ConfigurationError:
    logits = 1 if model_classes == 2 else model_classes
    return ConfigurationError(
        f"{file} predicts {model_classes} classes ({logits} logit(s): 1 for two classes, else "
        f"one per class) but the data has {data_classes}. Evaluate on the data the model "
        "was trained on, or export the model trained on this data."
    )


def evaluate_tflite(
    path: str | os.PathLike[str],
    data: ImageData | tf.data.Dataset,
    *,
    backbone: str | Backbone,
    model: tf_keras.Model | None = None,
    split: Split = "validation",
    max_examples: int | None = None,
    registry: BackboneRegistry | None = None,
) -> TFLiteEvaluation:
    """Accuracy of a ``.tflite`` classifier on a split, and agreement with a Keras model.

    Runs LiteRT's interpreter when ``ai-edge-litert`` is installed (``pip install
    hubtransfer[litert]``), else ``tf.lite.Interpreter``.

    Args:
        path: The ``.tflite`` file (from :func:`export_tflite`).
        data: An ImageData (``split`` is used) or a tf.data of unbatched
            ``(uint8 image, label)`` pairs.
        backbone: The backbone the model was built on (for resize and scale); its
            ``image_size`` must be the model's input size.
        model: The Keras model the file came from, to measure agreement.
        split: Which split of an ImageData.
        max_examples: Score at most this many examples (a positive integer).
        registry: Where a backbone name is looked up.

    Raises:
        ExportError: ``path`` is missing, a directory, not a TFLite model, or not an image
            classifier; or the interpreter failed.
        ConfigurationError: The model's input size is not the backbone's, its class count
            is not the data's (a label outside its classes, for a tf.data), or an argument
            is out of range.
        DatasetError: ``data`` yielded no examples, or not ``(image, label)`` pairs.
    """
    check_choice("split", split, get_args(Split))
    if max_examples is not None:
        check_int("max_examples", max_examples)
    if not isinstance(data, (ImageData, tf.data.Dataset)):
        raise ConfigurationError(
            "data must be an ImageData or a tf.data.Dataset of (uint8 image, label) pairs. "
            f"Received: {type(data).__name__}."
        )
    spec = resolve_backbone(backbone, registry)
    file = Path(path).expanduser()
    interpreter = open_interpreter(file)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    model_classes = _check_classifier(file, inp, out, spec)
    if isinstance(data, ImageData) and data.num_classes != model_classes:
        raise _class_mismatch(file, model_classes, f"{data.num_classes} classes")
    if isinstance(data, ImageData):
        if getattr(data, split) is None:
            raise ConfigurationError(
                f"split={split!r}, but the data has no {split} split. Load it with "
                "test_fraction= (image folders) or test_split= (TFDS), or score 'validation'."
            )
        dataset = (
            getattr(data, split)
            if max_examples is None  # a seeded, class-stratified sample, not the first n
            else sample_split(data, split, max_examples, seed=DEFAULTS.seed)
        )
    else:
        dataset = data if max_examples is None else data.take(max_examples)
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    predictions: list[np.ndarray] = []
    labels: list[int] = []
    images_for_keras: list[np.ndarray] = []
    seconds = 0.0
    for element in dataset:
        if not isinstance(element, tuple) or len(element) != 2:
            raise DatasetError(
                "evaluate_tflite() needs data of (uint8 image, label) pairs, unbatched; got "
                f"elements of {len(element) if isinstance(element, tuple) else 1} part(s). "
                "Pass an ImageData, or map the dataset to (image, label)."
            )
        image, label = element
        if np.ndim(label) != 0:
            raise DatasetError(
                f"evaluate_tflite() needs unbatched (image, label) pairs; got labels of shape "
                f"{list(np.shape(label))}. Call dataset.unbatch() first, or pass an ImageData."
            )
        if not 0 <= int(label) < model_classes:
            raise _class_mismatch(
                file, model_classes, f"label {int(label)}, so more than {model_classes} classes"
            )
        x = preprocess_image(image, spec)[None].numpy()
        if inp["dtype"] != np.float32:
            info = np.iinfo(inp["dtype"])
            x_in: np.ndarray = np.clip(np.round(x / in_scale + in_zero), info.min, info.max).astype(
                inp["dtype"]
            )
        else:
            x_in = x
        try:
            interpreter.set_tensor(inp["index"], x_in)
            start = time.perf_counter()
            interpreter.invoke()
            seconds += time.perf_counter() - start
        except (ValueError, RuntimeError) as exc:
            raise ExportError(
                f"The interpreter failed on {file}: {one_line(exc)}. Check that the file "
                "came from export_tflite() for this backbone."
            ) from exc
        logits = interpreter.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            logits = (logits - out_zero) * out_scale
        predictions.append(predicted_classes(logits))
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
        agreement = float(np.mean(predicted == predicted_classes(np.asarray(keras_logits))))
    return TFLiteEvaluation(
        accuracy=accuracy,
        agreement=agreement,
        examples=len(labels),
        bytes=file.stat().st_size,
        ms_per_image=seconds * 1000.0 / len(labels),
    )
