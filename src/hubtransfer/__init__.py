"""hubtransfer: transfer learning of image classifiers on TensorFlow Hub backbones.

``import hubtransfer`` is light: the registry and errors load eagerly, everything that
needs TensorFlow loads on first use.

Example::

    import hubtransfer as ht

    data = ht.load_image_folder("photos/")
    report = ht.benchmark(["mobilenet_v2", "efficientnetv2_b0"], data, epochs=5)
    print(report.to_markdown())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hubtransfer import errors
from hubtransfer._version import __version__
from hubtransfer.errors import (
    BackboneLoadError,
    BenchmarkError,
    ConfigurationError,
    DatasetError,
    ExportError,
    HubTransferError,
    MissingDependencyError,
    NotFineTunableError,
    OutputDirectoryError,
    UnknownBackboneError,
)
from hubtransfer.registry import (
    Backbone,
    BackboneRegistry,
    get_backbone,
    list_backbones,
    register_backbone,
)

if TYPE_CHECKING:
    from hubtransfer import offline
    from hubtransfer.data import ImageCounts, ImageData, load_image_folder, load_tfds
    from hubtransfer.loading import load_backbone_layer
    from hubtransfer.model import REPORT_HEAD, Head, build_classifier
    from hubtransfer.prediction import ClassProbability, Prediction, predict
    from hubtransfer.preprocessing import prepare
    from hubtransfer.records import (
        BenchmarkResult,
        Comparison,
        EpochRecord,
        Recommendation,
        SeedRun,
    )
    from hubtransfer.results import BenchmarkReport
    from hubtransfer.serving import export_saved_model
    from hubtransfer.study import benchmark
    from hubtransfer.tflite import TFLiteEvaluation, evaluate_tflite, export_tflite

# Public name -> module that defines it, imported on first attribute access.
# Submodules are named after concepts, never after the function they export, so that
# importing one never rebinds a function name on the package.
_LAZY = {
    "build_classifier": "hubtransfer.model",
    "Head": "hubtransfer.model",
    "REPORT_HEAD": "hubtransfer.model",
    "load_backbone_layer": "hubtransfer.loading",
    "ImageCounts": "hubtransfer.data",
    "ImageData": "hubtransfer.data",
    "load_image_folder": "hubtransfer.data",
    "load_tfds": "hubtransfer.data",
    "prepare": "hubtransfer.preprocessing",
    "benchmark": "hubtransfer.study",
    "BenchmarkReport": "hubtransfer.results",
    "BenchmarkResult": "hubtransfer.records",
    "EpochRecord": "hubtransfer.records",
    "SeedRun": "hubtransfer.records",
    "Comparison": "hubtransfer.records",
    "Recommendation": "hubtransfer.records",
    "export_tflite": "hubtransfer.tflite",
    "export_saved_model": "hubtransfer.serving",
    "evaluate_tflite": "hubtransfer.tflite",
    "TFLiteEvaluation": "hubtransfer.tflite",
    "predict": "hubtransfer.prediction",
    "Prediction": "hubtransfer.prediction",
    "ClassProbability": "hubtransfer.prediction",
}
_LAZY_MODULES = {"offline"}

__all__ = [
    "REPORT_HEAD",
    "Backbone",
    "BackboneLoadError",
    "BackboneRegistry",
    "BenchmarkError",
    "BenchmarkReport",
    "BenchmarkResult",
    "ClassProbability",
    "Comparison",
    "ConfigurationError",
    "DatasetError",
    "EpochRecord",
    "ExportError",
    "Head",
    "HubTransferError",
    "ImageCounts",
    "ImageData",
    "MissingDependencyError",
    "NotFineTunableError",
    "OutputDirectoryError",
    "Prediction",
    "Recommendation",
    "SeedRun",
    "TFLiteEvaluation",
    "UnknownBackboneError",
    "__version__",
    "benchmark",
    "build_classifier",
    "errors",
    "evaluate_tflite",
    "export_saved_model",
    "export_tflite",
    "get_backbone",
    "list_backbones",
    "load_backbone_layer",
    "load_image_folder",
    "load_tfds",
    "offline",
    "predict",
    "prepare",
    "register_backbone",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"hubtransfer.{name}")
    else:
        raise AttributeError(f"module 'hubtransfer' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
