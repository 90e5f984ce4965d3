"""Predictions on image files with a saved classifier, a serving SavedModel or a TFLite file.

Images are decoded with :func:`hubtransfer.decoding.decode_image` (Pillow, EXIF
orientation applied), as the training pipeline decodes them, then resized and scaled
for the backbone. A file that cannot be decoded gets a :class:`Prediction` with its
reason instead of classes; it never stops the others.

(The module is not named ``predict``: importing it would rebind ``hubtransfer.predict``,
the function, to the module; see DESIGN.md.)
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hubtransfer._tf import tf, tf_keras
from hubtransfer.decoding import decode_many
from hubtransfer.errors import ConfigurationError, ExportError
from hubtransfer.preprocessing import preprocess_image
from hubtransfer.registry import Backbone, resolve_backbone
from hubtransfer.validation import check_int

__all__ = ["ClassProbability", "Prediction", "image_files", "predict"]

#: How many decoded images are run through a model at once.
_BATCH = 32
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ClassProbability:
    """One class and the model's probability for it.

    Attributes:
        name: The class name.
        probability: Softmax probability (sigmoid for a binary, one-logit model).
    """

    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """What a model says about one image file.

    Attributes:
        path: The file, as found (a folder's files and a glob's matches are listed).
        top: The ``top_k`` most probable classes, most probable first; empty on error.
        error: Why the file could not be predicted (``"truncated"``, ``"not an image"``,
            ``"missing file"``, ...), else None.
    """

    path: str
    top: tuple[ClassProbability, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the image was predicted."""
        return self.error is None

    @property
    def label(self) -> str | None:
        """The most probable class, or None on error."""
        return self.top[0].name if self.top else None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def image_files(
    images: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[tuple[str, str | None]]:
    """Expands files, folders (recursive, hidden entries left out) and glob patterns.

    Returns:
        ``(path, None)`` per file found, in the order given (a folder's and a glob's files
        sorted), each path once; ``(item, reason)`` for an item that names nothing.
    """
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    found: dict[str, str | None] = {}
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
                for name in sorted(filenames):
                    if not _is_hidden(name):
                        found.setdefault(os.path.join(dirpath, name), None)
        elif path.exists():
            found.setdefault(str(path), None)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                found.setdefault(text, "no file matches this pattern")
            for match in matches:
                for inner, reason in image_files(match):
                    found.setdefault(inner, reason)
        else:
            found.setdefault(text, "missing file")
    return list(found.items())


def _probabilities(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    if logits.shape[-1] == 1:  # binary: one logit, sigmoid gives P(class 1)
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p, p], axis=-1)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def _read_labels(file: Path) -> tuple[str, ...]:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"Cannot read the labels file {file} ({exc}). Pass a UTF-8 text file with one "
            "class name per line, in training order."
        ) from exc
    return tuple(line for line in lines if line.strip())


def _labels(labels: Sequence[str] | str | os.PathLike[str] | None) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        return _read_labels(Path(labels).expanduser())
    return tuple(str(n) for n in labels)


def _check_labels(names: tuple[str, ...], classes: int, model: str) -> None:
    if len(names) != classes:
        raise ConfigurationError(
            f"{model} predicts {classes} classes but {len(names)} label(s) were given "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}). Pass the labels "
            "file written with the model (one class per line, in training order)."
        )


def _check_size(spec: Backbone, size: tuple[int, int], model: str) -> None:
    if size != (spec.image_size, spec.image_size):
        raise ConfigurationError(
            f"{model} takes {size[0]}x{size[1]} images but backbone {spec.name!r} uses "
            f"{spec.image_size}x{spec.image_size}. Pass the backbone the model was built on "
            "(backbone=..., CLI: --backbone)."
        )


_Runner = Callable[[list[np.ndarray]], np.ndarray]


def _keras_runner(model: tf_keras.Model, spec: Backbone, where: str) -> tuple[_Runner, int]:
    shape = model.input_shape
    _check_size(spec, (int(shape[1]), int(shape[2])), where)
    outputs = int(model.output_shape[-1])

    def run(batch: list[np.ndarray]) -> np.ndarray:
        x = tf.stack([preprocess_image(image, spec) for image in batch])
        return _probabilities(np.asarray(model(x, training=False), np.float32))

    return run, 2 if outputs == 1 else outputs


def _tflite_runner(file: Path, spec: Backbone) -> tuple[_Runner, int]:
    from hubtransfer.tflite import open_interpreter

    interpreter = open_interpreter(file)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    in_shape = [int(d) for d in inp["shape"]]
    out_shape = [int(d) for d in out["shape"]]
    if len(in_shape) != 4 or in_shape[-1] != 3 or len(out_shape) != 2:
        raise ExportError(
            f"{file} is not an image classifier from export_tflite(): it takes input "
            f"{in_shape} and gives output {out_shape}. Export the classifier with "
            "`hubtransfer export ... --tflite`."
        )
    _check_size(spec, (in_shape[1], in_shape[2]), str(file))
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def run(batch: list[np.ndarray]) -> np.ndarray:
        rows = []
        for image in batch:
            x = preprocess_image(image, spec)[None].numpy()
            if inp["dtype"] != np.float32:  # full-integer model with integer input
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max)
            interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
            interpreter.invoke()
            logits = interpreter.get_tensor(out["index"]).astype(np.float32)
            if out["dtype"] != np.float32:
                logits = (logits - out_zero) * out_scale
            rows.append(_probabilities(logits)[0])
        return np.stack(rows)

    return run, 2 if out_shape[-1] == 1 else out_shape[-1]


def _serving_runner(directory: Path) -> tuple[_Runner, int]:
    try:
        serve = tf.saved_model.load(str(directory)).signatures["serving_default"]
        spec = serve.structured_input_signature[1]["images"]
        classes = int(serve.structured_outputs["probabilities"].shape[-1])
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ExportError(
            f"{directory} is a SavedModel without hubtransfer's serving signature (uint8 "
            "images -> probabilities). Pass a directory written by `hubtransfer export "
            "--saved-model`, a classifier .h5 or a .tflite file."
        ) from exc
    if spec.dtype != tf.uint8:
        raise ExportError(
            f"{directory} takes {spec.dtype.name} images, not uint8: it is not a serving "
            "SavedModel from `hubtransfer export --saved-model`. Pass one, or the .h5."
        )

    def run(batch: list[np.ndarray]) -> np.ndarray:
        # One call per image: the signature takes a batch of one size, photos differ.
        return np.concatenate(
            [serve(images=tf.constant(image[None]))["probabilities"].numpy() for image in batch]
        )

    return run, classes


def _sidecar_backbone(file: Path) -> tuple[Backbone | None, tuple[str, ...] | None]:
    """The backbone (and class names) ``export --best`` wrote beside a ``.tflite``."""
    sidecar = file.with_suffix(".backbone.json")
    if not sidecar.is_file():
        return None, None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        names = record.pop("class_names", None)
        known = {f.name for f in fields(Backbone)}
        record["input_range"] = tuple(record.get("input_range", (0.0, 1.0)))
        spec = Backbone(**{k: v for k, v in record.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(
            f"{sidecar} is not a backbone description from `hubtransfer export --best` "
            f"({exc}). Remove it, or pass the backbone (backbone=..., CLI: --backbone)."
        ) from exc
    return spec, None if names is None else tuple(str(n) for n in names)


def _need_backbone(model: str) -> ConfigurationError:
    return ConfigurationError(
        f"{model} needs its backbone to resize and scale images (size and input range). Pass "
        "backbone='mobilenet_v2' (CLI: --backbone NAME), or use a model saved in a study's "
        "models/ folder (its record names the backbone), a .tflite from `hubtransfer export "
        "--best` (with its .backbone.json), or a serving SavedModel (preprocessing built in)."
    )


def _need_labels(model: str, where: str) -> ConfigurationError:
    return ConfigurationError(
        f"{model} needs class names: none were given and {where}. Pass labels= a list or a "
        "labels file, one class per line in training order (CLI: --labels FILE)."
    )


def _open_model(
    model_or_path: Any,
    backbone: str | Backbone | None,
    labels: tuple[str, ...] | None,
) -> tuple[_Runner, tuple[str, ...]]:
    spec = None if backbone is None else resolve_backbone(backbone)
    if isinstance(model_or_path, tf_keras.Model):
        if spec is None:
            raise _need_backbone("A Keras model")
        if labels is None:
            raise _need_labels("A Keras model", "a model in memory carries none")
        run, classes = _keras_runner(model_or_path, spec, "The model")
        _check_labels(labels, classes, "The model")
        return run, labels
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise ConfigurationError(
            "model_or_path must be a tf_keras.Model or the path of a .h5/.keras classifier, a "
            f"serving SavedModel directory or a .tflite file. Received: "
            f"{type(model_or_path).__name__}."
        )
    path = Path(model_or_path).expanduser()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConfigurationError(
                f"{path} is a directory without saved_model.pb. Pass a serving SavedModel "
                "directory from `hubtransfer export --saved-model`, a .h5 or a .tflite file."
            )
        run, classes = _serving_runner(path)
        if labels is None:
            if not (path / "labels.txt").is_file():
                raise _need_labels(str(path), "it holds no labels.txt")
            labels = _read_labels(path / "labels.txt")
        _check_labels(labels, classes, str(path))
        return run, labels
    if path.suffix.lower() == ".tflite":
        if not path.is_file():
            raise ConfigurationError(
                f"{path} does not exist. Pass a .tflite file from `hubtransfer export --tflite`."
            )
        side_spec, side_names = _sidecar_backbone(path)
        spec = spec or side_spec
        if spec is None:
            raise _need_backbone(str(path))
        if labels is None:
            for candidate in (path.with_suffix(".labels.txt"), path.parent / "labels.txt"):
                if candidate.is_file():
                    labels = _read_labels(candidate)
                    break
            else:
                labels = side_names
        if labels is None:
            raise _need_labels(
                str(path), f"neither {path.stem}.labels.txt nor labels.txt is beside it"
            )
        run, classes = _tflite_runner(path, spec)
        _check_labels(labels, classes, str(path))
        return run, labels
    if path.suffix.lower() not in (".h5", ".keras", ".hdf5"):
        raise ConfigurationError(
            f"{path} is not a model hubtransfer can predict with. Allowed: a classifier .h5 "
            "(or .keras), a serving SavedModel directory, or a .tflite file."
        )
    from hubtransfer.artifacts import backbone_of, load_classifier, study_model

    model = load_classifier(path)
    record = study_model(path)
    if spec is None and record is not None:
        spec = backbone_of(record.result, feature_dim=int(model.get_layer("head").input_shape[-1]))
    if spec is None:
        raise _need_backbone(str(path))
    if labels is None and record is not None:
        labels = record.class_names
    if labels is None:
        raise _need_labels(str(path), "it is not in a study's models/ folder")
    run, classes = _keras_runner(model, spec, str(path))
    _check_labels(labels, classes, str(path))
    return run, labels


def predict(
    model_or_path: Any,
    images: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    backbone: str | Backbone | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    top_k: int = 3,
) -> list[Prediction]:
    """The ``top_k`` classes and probabilities of each image.

    Args:
        model_or_path: A ``tf_keras`` classifier, or the path of a classifier ``.h5``
            (``.keras``), a serving SavedModel directory (``export_saved_model``) or a
            ``.tflite`` file.
        images: A file, folder (searched recursively, hidden entries left out) or glob
            pattern, or a sequence of them.
        backbone: The backbone the model was built on (name or Backbone), for resizing
            and scaling. Not needed for a serving SavedModel (preprocessing is built in),
            a ``.h5`` in a study's ``models/`` folder (its record names it) or a
            ``.tflite`` with the ``<name>.backbone.json`` that ``export --best`` writes.
        labels: Class names in training order, or a labels file (one per line). Found
            by default in a SavedModel's ``labels.txt``, beside a ``.tflite``
            (``<name>.labels.txt`` or ``labels.txt``), or in a study's record.
        top_k: How many classes per image (at most the number of classes).

    Returns:
        One :class:`Prediction` per file, in order: its top classes, or the reason it
        could not be read (missing, not an image, truncated, ...).

    Raises:
        ConfigurationError: No backbone or labels can be found, they do not fit the
            model, or ``top_k`` is not a positive integer.
        ExportError: The model file cannot be read as a classifier.
    """
    check_int("top_k", top_k)
    run, names = _open_model(model_or_path, backbone, _labels(labels))
    k = min(top_k, len(names))
    found = image_files(images)
    readable = [path for path, reason in found if reason is None]
    decoded = decode_many(readable)
    outcome: dict[str, Prediction] = {}
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        probabilities = run([image for _, image in pending])
        for (path, _), row in zip(pending, probabilities, strict=True):
            order = np.argsort(-row, kind="stable")[:k]
            top = tuple(ClassProbability(names[i], float(row[i])) for i in order)
            outcome[path] = Prediction(path, top)
        pending.clear()

    for path, image in zip(readable, decoded, strict=True):
        if isinstance(image, str):
            outcome[path] = Prediction(path, error=image)
            continue
        pending.append((path, image))
        if len(pending) == _BATCH:
            flush()
    if pending:
        flush()
    return [
        outcome[path] if reason is None else Prediction(path, error=reason)
        for path, reason in found
    ]
