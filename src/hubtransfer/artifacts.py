"""What a study leaves on disk to deploy: the classifiers in ``models/`` and their records.

``benchmark(save_models=True, output_dir=DIR)`` writes each kept classifier to
``DIR/models/<backbone>_<mode>.h5`` next to ``DIR/results.jsonl``, whose records say how
the classifier was built (backbone handle, image size, input range) and on what data
(class names, source). This module joins the two: it finds the model a recommendation
picked, loads a saved classifier, and rebuilds the preprocessing contract of its backbone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args

import numpy as np

from hubtransfer._tf import hub, tf, tf_keras
from hubtransfer.config import DEFAULTS
from hubtransfer.data import ImageData, load_image_folder
from hubtransfer.errors import BenchmarkError, ConfigurationError, ExportError, HubTransferError
from hubtransfer.metrics import predicted_classes
from hubtransfer.preprocessing import preprocess_image
from hubtransfer.records import BenchmarkResult, Mode, Recommendation
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone
from hubtransfer.results import BenchmarkReport
from hubtransfer.sampling import sample_split
from hubtransfer.storage import RESULTS_FILE

__all__ = [
    "MODELS_DIR",
    "StudyModel",
    "agreement_data",
    "backbone_of",
    "best_model",
    "check_class_names",
    "load_classifier",
    "model_file",
    "serving_agreement",
    "study_model",
]

#: Subfolder of a study's output_dir where ``save_models=True`` writes the classifiers.
MODELS_DIR = "models"


@dataclass(frozen=True)
class StudyModel:
    """A classifier saved by a study, with the record that describes it.

    Attributes:
        path: The ``.h5`` file.
        result: Its :class:`~hubtransfer.BenchmarkResult` (scores, config, handle).
        class_names: The classes in output order, from the record's data config.
    """

    path: Path
    result: BenchmarkResult
    class_names: tuple[str, ...]


def model_file(study_dir: str | os.PathLike[str], backbone: str, mode: str) -> Path:
    """Where a study saves the classifier of ``(backbone, mode)``."""
    return Path(study_dir) / MODELS_DIR / f"{backbone}_{mode}.h5"


def _class_names(result: BenchmarkResult) -> tuple[str, ...]:
    names = result.config.get("data", {}).get("class_names")
    if not isinstance(names, list) or len(names) < 2:
        raise BenchmarkError(
            f"The record of {result.label} has no class names (config.data.class_names). "
            "It was saved by an older hubtransfer; rerun the study with --save-models."
        )
    return tuple(str(n) for n in names)


def best_model(
    study_dir: str | os.PathLike[str],
    *,
    max_model_mb: float | None = None,
    max_latency_ms: float | None = None,
) -> tuple[Recommendation, StudyModel]:
    """The classifier ``report --recommend`` picks under a budget, and the recommendation.

    Raises:
        BenchmarkError: No saved study in ``study_dir``, nothing fits the budget (the
            message is the recommendation's reason), or the study saved no models.
    """
    root = Path(study_dir).expanduser()
    report = BenchmarkReport.load(root)
    advice = report.recommend(max_model_mb=max_model_mb, max_latency_ms=max_latency_ms)
    if advice.result is None:
        raise BenchmarkError(advice.reason)
    path = model_file(root, advice.result.backbone, advice.result.mode)
    if not path.is_file():
        raise BenchmarkError(
            f"The study in {root} recommends {advice.result.label}, but its model file {path} "
            "does not exist: the study was run without --save-models (save_models=True), or "
            f"the file was moved. Rerun the same `hubtransfer benchmark ... --out {root}` with "
            "--save-models: finished results are kept, and only runs whose model file is "
            "missing are trained again."
        )
    return advice, StudyModel(path, advice.result, _class_names(advice.result))


def study_model(path: str | os.PathLike[str]) -> StudyModel | None:
    """The record of a classifier that sits in a study's ``models/`` folder, else None.

    A file named ``<backbone>_<mode>.h5`` in ``DIR/models/`` with ``DIR/results.jsonl``
    (or ``results.json``) beside it is looked up there; anything else gives None.
    """
    file = Path(path).expanduser()
    study = file.parent.parent
    if file.parent.name != MODELS_DIR or file.suffix != ".h5":
        return None
    if not ((study / RESULTS_FILE).exists() or (study / "results.json").exists()):
        return None
    for mode in get_args(Mode):
        suffix = f"_{mode}"
        if file.stem.endswith(suffix):
            backbone = file.stem[: -len(suffix)]
            for result in BenchmarkReport.load(study).results:
                if result.key == (backbone, mode) and result.status == "ok":
                    return StudyModel(file, result, _class_names(result))
    return None


def backbone_of(
    result: BenchmarkResult,
    *,
    feature_dim: int | None = None,
    registry: BackboneRegistry | None = None,
) -> Backbone:
    """The backbone a recorded classifier was built on: handle, image size, input range.

    A registered name keeps its registry metadata, with the record's handle, size and
    range (a local stand-in keeps its path). A name no longer registered gets a spec
    rebuilt from the record; its ``feature_dim`` (not recorded) comes from the argument,
    its format is taken as TF2. Only the preprocessing fields matter for exporting and
    predicting.
    """
    low, high = result.config.get("input_range", (0.0, 1.0))
    size = result.image_size or result.config.get("image_size")
    try:
        base: Backbone | None = resolve_backbone(result.backbone, registry)
    except LookupError:
        base = None
    if base is not None:
        return replace(
            base,
            handle=result.handle or base.handle,
            image_size=int(size or base.image_size),
            input_range=(float(low), float(high)),
        )
    if not size or not result.handle:
        raise BenchmarkError(
            f"The record of {result.label} lacks the backbone's handle or image size, and "
            f"{result.backbone!r} is not registered. Pass the backbone explicitly "
            "(CLI: --backbone NAME)."
        )
    return Backbone(
        result.backbone,
        result.handle,
        int(size),
        feature_dim or 1,
        "tf2",
        False,
        input_range=(float(low), float(high)),
    )


def load_classifier(path: str | os.PathLike[str]) -> Any:
    """Loads a classifier saved as ``.h5`` (or ``.keras``) with its Hub layer.

    The Hub layer reloads from the handle saved in the file (a local stand-in must still
    be at its path; a Hub URL is fetched or read from the TF Hub cache).

    Raises:
        ConfigurationError: The file does not exist.
        ExportError: It is not a Keras classifier that can be read.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigurationError(
            f"Model file {file} does not exist. Pass a classifier saved with "
            "model.save('model.h5') or benchmark(save_models=True)."
        )
    try:
        return tf_keras.models.load_model(
            file, custom_objects={"KerasLayer": hub.KerasLayer}, compile=False
        )
    except Exception as exc:  # h5py, Keras and OS errors for a file that is not a model
        raise ExportError(
            f"Could not read {file} as a Keras classifier ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Pass a model saved "
            "with model.save('model.h5') or by `hubtransfer benchmark --save-models`."
        ) from exc


def check_class_names(model: Any, class_names: tuple[str, ...], where: str) -> None:
    """Raises when ``class_names`` does not fit the classifier's logits."""
    outputs = int(model.output_shape[-1])
    if len(class_names) < 2 or outputs != (1 if len(class_names) == 2 else len(class_names)):
        raise ConfigurationError(
            f"{where} has {len(class_names)} class name(s) but the model outputs {outputs} "
            "logit(s) (1 for two classes, else one per class). Pass the class names it was "
            "trained on, in training order."
        )


def agreement_data(
    result: BenchmarkResult, class_names: tuple[str, ...], folder: str | os.PathLike[str] | None
) -> tuple[ImageData | None, str]:
    """Images to measure an export's agreement on: ``folder`` if given, else the study's
    image folder (``config.data.source``) when it is still readable.

    Returns:
        The data and where it came from, or None and why agreement cannot be measured.
    """
    if folder is not None:
        source = Path(folder).expanduser()
    else:
        recorded = str(result.config.get("data", {}).get("source", ""))
        if not recorded:
            return None, "the record does not say where the study's images are"
        if recorded.startswith("tfds:"):
            return None, (
                f"the study's data is {recorded}, not an image folder; pass --calibration-data "
                "FOLDER (one subfolder per class) to measure it"
            )
        source = Path(recorded)
        if not source.is_dir():
            return None, (
                f"the study's image folder {source} is no longer readable; pass "
                "--calibration-data FOLDER (one subfolder per class) to measure it"
            )
    try:
        data = load_image_folder(source, validation_fraction=0.0)
    except HubTransferError as exc:
        return None, f"{source} could not be read as an image folder ({exc})"
    if tuple(data.class_names) != class_names:
        return None, (
            f"the classes of {source} ({', '.join(data.class_names)}) are not the model's "
            f"({', '.join(class_names)})"
        )
    return data, str(source)


def serving_agreement(
    path: str | os.PathLike[str], model: Any, data: ImageData, backbone: Backbone, samples: int
) -> tuple[float, int]:
    """Share of sampled training images where a serving SavedModel predicts the class the
    Keras ``model`` predicts, and how many images were compared."""
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    agree = seen = 0
    for image, _ in sample_split(data, "train", samples, seed=DEFAULTS.seed):
        served = int(serve(images=image[None])["class_index"].numpy()[0])
        logits = np.asarray(model(preprocess_image(image, backbone)[None], training=False))
        keras = int(predicted_classes(logits)[0])
        agree += int(served == keras)
        seen += 1
    return (agree / seen if seen else float("nan")), seen
