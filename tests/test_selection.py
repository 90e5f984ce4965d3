"""The reported model is the returned model; held-out test scores; per-class metrics;
imbalance. (Issue 12.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tf_keras

import hubtransfer as ht
from conftest import save_tiny_tf2
from hubtransfer.analysis import ranking_metric
from hubtransfer.metrics import split_metrics
from hubtransfer.records import BenchmarkResult, SeedRun
from hubtransfer.registry import Backbone
from images import write_colour_folder

SIZE = 16


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    path = save_tiny_tf2(tmp_path_factory.mktemp("sel") / "tiny", SIZE)
    return Backbone("tiny_s", str(path), SIZE, 8, "tf2", True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ht.ImageData:
    root = tmp_path_factory.mktemp("sel_data")
    write_colour_folder(root, per_class=40, size=(20, 20))
    return ht.load_image_folder(root, validation_fraction=0.25, test_fraction=0.25, seed=0)


class Sabotage(tf_keras.callbacks.Callback):  # type: ignore[misc]
    """From epoch ``start`` on, scrambles the weights being trained: accuracy collapses
    after an early peak, as an over-fitting or diverging run's does."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start = start

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if epoch >= self.start:
            rng = np.random.default_rng(epoch)
            names = [layer.name for layer in self.model.layers]
            target = self.model.get_layer("head") if "head" in names else self.model
            target.set_weights(
                [rng.normal(0, 5, w.shape).astype(w.dtype) for w in target.get_weights()]
            )


def _end_to_end_accuracy(model: tf_keras.Model, split: object, spec: Backbone) -> float:
    _, accuracy = model.evaluate(ht.prepare(split, spec), verbose=0)  # type: ignore[arg-type]
    return float(accuracy)


@pytest.mark.parametrize("cache_features", [True, False])
def test_early_peak_returns_the_peak_model(
    spec: Backbone, data: ht.ImageData, cache_features: bool
) -> None:
    report = ht.benchmark(
        spec,
        data,
        epochs=6,
        learning_rate=5e-2,
        monitor="val_accuracy",
        keep_models=True,
        measure_latency=False,
        callbacks=[Sabotage(start=3)],
        cache_features=cache_features,
    )
    result = report.results[0]
    accuracies = [h.val_accuracy for h in result.history]
    assert result.selected_epoch is not None and result.selected_epoch <= 3
    assert result.val_accuracy == pytest.approx(accuracies[result.selected_epoch - 1], abs=1e-6)
    assert result.val_accuracy is not None and result.val_accuracy >= 0.8
    assert result.final_val_accuracy is not None and result.final_val_accuracy < 0.8
    model = report.models[result.key]
    # The returned model is the selected one: its own end-to-end scores are the reported ones.
    assert _end_to_end_accuracy(model, data.validation, spec) == pytest.approx(
        result.val_accuracy, abs=1e-6
    )
    assert data.test is not None
    assert _end_to_end_accuracy(model, data.test, spec) == pytest.approx(
        result.test_accuracy, abs=1e-6
    )
    assert result.val_metrics is not None and result.test_metrics is not None
    assert sum(c["support"] for c in result.test_metrics["per_class"]) == data.counts.test


def test_fine_tuned_selection_spans_phases(spec: Backbone, data: ht.ImageData) -> None:
    report = ht.benchmark(
        spec,
        data,
        epochs=3,
        warmup_epochs=2,
        fine_tune=True,
        learning_rate=5e-2,
        monitor="val_accuracy",
        keep_models=True,
        measure_latency=False,
        callbacks=[Sabotage(start=0)],  # every fine-tuning epoch is scrambled
    )
    result = report.results[0]
    assert result.status == "ok"
    # Warm-up epochs are scrambled too (callbacks apply to every phase), but the kept
    # model must be whichever epoch scored best, and it must be what is returned.
    accuracies = [h.val_accuracy for h in result.history]
    assert result.selected_epoch == 1 + int(np.argmax(accuracies))
    model = report.models[result.key]
    assert _end_to_end_accuracy(model, data.validation, spec) == pytest.approx(
        result.val_accuracy, abs=1e-6
    )


def test_patience_stops_and_says_where(spec: Backbone, data: ht.ImageData) -> None:
    result = ht.benchmark(
        spec,
        data,
        epochs=8,
        learning_rate=5e-2,
        patience=1,
        monitor="val_accuracy",
        measure_latency=False,
        callbacks=[Sabotage(start=2)],
    ).results[0]
    assert result.stopped_early and len(result.history) < 8
    assert result.selected_epoch is not None and result.selected_epoch <= 2


def test_class_weight_balanced_and_bad_mappings(spec: Backbone, data: ht.ImageData) -> None:
    result = ht.benchmark(
        spec, data, epochs=2, class_weight="balanced", measure_latency=False
    ).results[0]
    assert result.status == "ok" and result.config["class_weight"] == "balanced"
    with pytest.raises(ht.ConfigurationError, match="names class 'cow', which the data does not"):
        ht.benchmark(spec, data, epochs=1, class_weight={"cow": 2.0})
    with pytest.raises(ht.ConfigurationError, match=r"class_weight must be None, 'balanced'"):
        ht.benchmark(spec, data, epochs=1, class_weight={"red": -1})
    with pytest.raises(ht.ConfigurationError, match="monitor must be one of 'val_loss'"):
        ht.benchmark(spec, data, epochs=1, monitor="loss")  # type: ignore[arg-type]
    with pytest.raises(ht.ConfigurationError, match="patience must be a positive integer"):
        ht.benchmark(spec, data, epochs=1, patience=0)


def test_imbalanced_folder_warns_and_ranks_by_balanced_accuracy(
    spec: Backbone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_colour_folder(tmp_path, per_class=4, size=(20, 20))
    # Top one class up to 9x the other.
    first = sorted(p for p in tmp_path.iterdir() if p.is_dir())[0]
    for i, image in enumerate(list(first.iterdir()) * 8):
        (first / f"copy{i}{image.suffix}").write_bytes(image.read_bytes())
    data = ht.load_image_folder(tmp_path, validation_fraction=0.3, seed=0)
    with caplog.at_level(logging.WARNING, logger="hubtransfer"):
        report = ht.benchmark(spec, data, epochs=1, measure_latency=False)
    assert "The classes are imbalanced" in caplog.text
    assert ranking_metric(report.results) == "val_balanced_accuracy"


# --- metrics and ranking, no training ----------------------------------------------------


def test_split_metrics_against_a_hand_computed_confusion_matrix() -> None:
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 2, 1, 1, 2, 2, 0, 0]
    m = split_metrics(labels, predicted, ["a", "b", "c"])
    assert m.confusion == ((2, 1, 1), (0, 2, 0), (2, 0, 2))
    assert m.accuracy == pytest.approx(6 / 10)
    assert [c.support for c in m.per_class] == [4, 2, 4]
    assert [c.recall for c in m.per_class] == pytest.approx([0.5, 1.0, 0.5])
    assert [c.precision for c in m.per_class] == pytest.approx([0.5, 2 / 3, 2 / 3])
    assert m.per_class[1].f1 == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert m.balanced_accuracy == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    never = split_metrics([0, 1], [0, 0], ["a", "b"])
    assert never.per_class[1].precision == 0.0 and never.per_class[1].f1 == 0.0


def _scored(name: str, labels: list[int], predicted: list[int]) -> BenchmarkResult:
    m = split_metrics(labels, predicted, ["common", "rare"])
    run = SeedRun(0, m.accuracy, m.accuracy, 1.0, 1, m.accuracy, m.balanced_accuracy)
    return BenchmarkResult(
        name,
        "frozen",
        "ok",
        best_val_accuracy=m.accuracy,
        final_val_accuracy=m.accuracy,
        val_accuracy=m.accuracy,
        val_balanced_accuracy=m.balanced_accuracy,
        val_metrics=m.to_dict(),
        per_seed=(run,),
        model_bytes=1,
        train_seconds=1.0,
    )


def test_majority_class_model_does_not_win() -> None:
    labels = [0] * 90 + [1] * 10
    majority = _scored("majority", labels, [0] * 100)  # accuracy 0.90, balanced 0.50
    real = _scored("real", labels, [0] * 80 + [1] * 10 + [1] * 8 + [0] * 2)  # 0.88, 0.84
    report = ht.BenchmarkReport([majority, real])
    advice = report.recommend()
    assert advice.result is not None and advice.result.backbone == "real"
    assert "imbalanced" in advice.reason and "optimistic" in advice.reason
    assert [r.backbone for r in report.pareto(("accuracy",))] == ["real"]
    table = report.to_markdown(per_class=True)
    assert "### majority (frozen): validation" in table and "| rare | 0.000 | 0.000 |" in table


def test_previous_format_records_still_load(tmp_path: Path) -> None:
    old = {
        "backbone": "mobilenet_v2",
        "mode": "frozen",
        "status": "ok",
        "best_val_accuracy": 0.9,
        "final_val_accuracy": 0.88,
        "per_seed": [
            {"seed": 0, "best_val_accuracy": 0.9, "final_val_accuracy": 0.88, "train_seconds": 3.0}
        ],
    }
    (tmp_path / "results.json").write_text(json.dumps([old]))
    report = ht.BenchmarkReport.load(tmp_path)
    assert report.results[0].val_accuracy is None
    assert ranking_metric(report.results) == "best_val_accuracy"
    assert report.recommend().result is report.results[0]


def test_predicted_classes_from_one_logit_or_many() -> None:
    from hubtransfer.metrics import predicted_classes

    assert predicted_classes(np.array([[0.3], [-0.1], [0.0]])).tolist() == [1, 0, 0]
    assert predicted_classes(np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])).tolist() == [1, 0]


def test_model_from_stored_features_is_the_scored_model(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    kwargs: dict[str, Any] = {
        "epochs": 4,
        "measure_latency": False,
        "feature_store": tmp_path / "store",
        "monitor": "val_accuracy",
    }
    ht.benchmark(spec, data, **kwargs)  # fills the store
    report = ht.benchmark(spec, data, keep_models=True, **kwargs)
    result = report.results[0]
    assert result.features_from_store is True
    # The head trained on stored features, put behind the backbone, scores what was
    # reported, end to end from the images.
    model = report.models[result.key]
    assert [layer.name for layer in model.layers][-2:] == ["backbone", "head"]
    assert _end_to_end_accuracy(model, data.validation, spec) == pytest.approx(
        result.val_accuracy, abs=1e-6
    )
    assert data.test is not None
    assert _end_to_end_accuracy(model, data.test, spec) == pytest.approx(
        result.test_accuracy, abs=1e-6
    )
