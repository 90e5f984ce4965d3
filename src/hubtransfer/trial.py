"""One trial of a study: a backbone trained in one mode over its seeds, then measured.

:func:`run_trial` is the unit a study runs, in-process or on a worker (see
:mod:`hubtransfer.fanout`). For each seed it trains a model (a frozen backbone's head
alone, on cached features; the whole classifier otherwise, in two phases when
fine-tuning), keeps the weights of the epoch ``monitor`` picks, and scores that model on
validation and test. Then it measures the first seed's model: size and parameters (kept
per architecture in the store; a head trained on cached features is measured around its
backbone's outline, see :mod:`hubtransfer.sizing`), latency, TFLite exports. The backbone
goes in front of a head trained on cached features only when something needs the whole
classifier.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import PIL

from hubtransfer._tf import as_written, hub, tf, tf_keras
from hubtransfer.data import ImageData, in_file_order
from hubtransfer.errors import BenchmarkError, NotFineTunableError
from hubtransfer.features import FeatureSet, extract_features
from hubtransfer.loading import load_backbone_layer
from hubtransfer.metrics import SplitMetrics, predicted_classes, split_metrics
from hubtransfer.model import (
    assemble_classifier,
    build_classifier,
    build_head,
    check_feature_shape,
    compile_classifier,
    strategy_scope,
)
from hubtransfer.preprocessing import prepare
from hubtransfer.records import BenchmarkResult, EpochRecord, Mode, SeedRun
from hubtransfer.registry import Backbone, BackboneRegistry
from hubtransfer.settings import StudySettings
from hubtransfer.sizing import BackboneOutline, frozen_weights, measure_classifier
from hubtransfer.store import FeatureStore, feature_key, measurement_key

__all__ = ["Run", "environment", "label_counts", "run_trial"]

logger = logging.getLogger(__name__)

_LATENCY_RUNS = {1: (2, 10), 32: (1, 3)}  # batch size -> (warm-up runs, timed runs)
_CHUNK = 4096  # cached feature rows per head call when scoring


def environment() -> dict[str, str]:
    gpus = tf.config.list_physical_devices("GPU")
    device = "CPU"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tensorflow_hub": hub.__version__,
        "pillow": PIL.__version__,  # decodes the image folders
        "device": device,
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }


class _EpochTimer(tf_keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class _Selector(tf_keras.callbacks.Callback):
    """Keeps the classifier's weights at its best epoch by ``monitor``, across phases.

    The model handed back (returned, saved, exported and scored) is the one from the
    selected epoch, so the reported numbers are the returned model's numbers.
    """

    def __init__(self, classifier: tf_keras.Model, monitor: str) -> None:
        super().__init__()
        self._classifier = classifier
        self.monitor = monitor
        self.seen = 0
        self.best_epoch: int | None = None  # 1-based over all phases
        self._best: float | None = None
        self._weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.seen += 1
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        lower_is_better = self.monitor.endswith("loss")
        if self._best is None or (value < self._best if lower_is_better else value > self._best):
            self._best, self.best_epoch = float(value), self.seen
            self._weights = self._classifier.get_weights()

    def restore(self) -> None:
        if self._weights is not None:
            self._classifier.set_weights(self._weights)


def _fit(
    model: tf_keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    epochs: int,
    phase: str,
    callbacks: Sequence[tf_keras.callbacks.Callback],
    verbose: int,
    class_weight: dict[int, float] | None = None,
) -> tuple[list[EpochRecord], float]:
    timer = _EpochTimer()
    start = time.perf_counter()
    # Optimizer slots made now, not on the first step: else the train function is traced
    # twice (once creating them), a fixed cost of every model trained.
    build = getattr(model.optimizer, "build", None)
    if callable(build):
        with model.distribute_strategy.scope():  # mirrored slots under a strategy
            build(model.trainable_variables)
    history = model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        verbose=verbose,
        callbacks=[timer, tf_keras.callbacks.TerminateOnNaN(), *callbacks],
        class_weight=class_weight,
    ).history
    seconds = time.perf_counter() - start
    records = []
    for i, loss in enumerate(history.get("loss", [])):
        if not math.isfinite(loss):
            raise BenchmarkError(
                f"The training loss became {loss} in epoch {i + 1} of phase {phase!r}. Lower "
                "the learning rate, or check the data for broken labels."
            )
        val_loss = history.get("val_loss", [None] * (i + 1))[i]
        val_acc = history.get("val_accuracy", [None] * (i + 1))[i]
        records.append(
            EpochRecord(
                epoch=i + 1,
                phase=phase,
                loss=float(loss),
                accuracy=float(history["accuracy"][i]),
                val_loss=None if val_loss is None else float(val_loss),
                val_accuracy=None if val_acc is None else float(val_acc),
                seconds=timer.seconds[i] if i < len(timer.seconds) else float("nan"),
            )
        )
    return records, seconds


def _head_logits(head: tf_keras.Model, features: np.ndarray) -> np.ndarray:
    """The head's logits on cached features, called directly in chunks: ``predict``
    would trace a new function for every head."""
    chunks = [
        np.asarray(head(np.asarray(features[i : i + _CHUNK], np.float32), training=False))
        for i in range(0, len(features), _CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)


class _NoRetracingWarning(logging.Filter):
    # A study traces one inference function per trained model, on purpose; TensorFlow
    # counts those as "retracing" of one function and warns after five backbones.
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _latency(model: tf_keras.Model, spec: Backbone) -> tuple[float, float]:
    """Inference ms/image at batch 1 and images/s at batch 32, after warm-up runs."""

    @tf.function(reduce_retracing=True)
    def infer(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    quiet = _NoRetracingWarning()
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addFilter(quiet)
    try:
        return _time_inference(infer, spec)
    finally:
        tf_logger.removeFilter(quiet)


def _time_inference(infer: Callable[[tf.Tensor], tf.Tensor], spec: Backbone) -> tuple[float, float]:
    low, high = spec.input_range
    rng = np.random.default_rng(0)
    timings = {}
    for batch, (warmup, runs) in _LATENCY_RUNS.items():
        x = tf.constant(
            rng.uniform(low, high, (batch, spec.image_size, spec.image_size, 3)), tf.float32
        )
        for _ in range(warmup):
            infer(x).numpy()
        start = time.perf_counter()
        for _ in range(runs):
            infer(x).numpy()
        timings[batch] = (time.perf_counter() - start) / runs
    return timings[1] * 1000.0, 32 / timings[32]


@dataclass(frozen=True)
class Trained:
    """What training one seed produced, before the model is scored.

    Attributes:
        history: Every epoch, all phases.
        train_seconds: Training time, feature extraction (or store read) included.
        selected_epoch: The kept epoch (1-based over ``history``), None if none scored.
        on_features: Whether the kept model's head can be scored on the cached features
            (the backbone is the untouched frozen one).
        head_only: Whether the kept model is the head alone, trained on cached features;
            :meth:`Run.classifier` puts the frozen backbone in front of it when the
            whole classifier is needed.
        feature_seconds: Extraction (or store read) time, when features were cached.
        head_seconds: Head training time on cached features.
        features_from_store: Whether the cached features came from the feature store.
    """

    history: list[EpochRecord]
    train_seconds: float
    selected_epoch: int | None
    on_features: bool
    head_only: bool = False
    feature_seconds: float | None = None
    head_seconds: float | None = None
    features_from_store: bool | None = None


class Run:
    """One backbone: shared feature cache, and one method per mode."""

    def __init__(
        self,
        spec: Backbone,
        data: ImageData,
        settings: StudySettings,
        *,
        callbacks: Sequence[tf_keras.callbacks.Callback],
        verbose: int,
        memory_limit_bytes: int,
        spill_dir: Path | None,
        registry: BackboneRegistry | None,
        strategy: tf.distribute.Strategy | None = None,
        store: FeatureStore | None = None,
    ) -> None:
        self.strategy = strategy
        self.store = store
        self.spec = spec
        self.data = data
        self.settings = settings
        self.callbacks = callbacks
        self.verbose = verbose
        self.memory_limit_bytes = memory_limit_bytes
        self.spill_dir = spill_dir
        self.registry = registry
        self._features: dict[str, FeatureSet] | None = None
        self._frozen_layer: tf_keras.layers.Layer | None = None
        self._outline: BackboneOutline | None = None
        self.loaded_backbone = False  # whether a backbone was loaded (memory to give back)
        self.class_weight: dict[int, float] | None = None

    @property
    def uses_cache(self) -> bool:
        return self.settings.cache_features and not self.settings.augment

    def _build(self, *, trainable: bool, learning_rate: float, seed: int) -> tf_keras.Model:
        s = self.settings
        tf_keras.utils.set_random_seed(seed)
        self.loaded_backbone = True
        return build_classifier(
            self.spec,
            self.data.num_classes,
            trainable=trainable,
            hidden_units=s.head.hidden_units,
            dropout=s.head.dropout,
            activation=s.head.activation,
            optimizer=s.optimizer,
            learning_rate=learning_rate,
            registry=self.registry,
            strategy=self.strategy,
            mixed_precision=s.mixed_precision,
        )

    def frozen_layer(self) -> tf_keras.layers.Layer:
        """The frozen backbone, loaded on first use and shared by this run's frozen
        models; never loaded when every split's features come from the store, the
        classifier's size or its backbone's outline is kept (:func:`_measure_size`) and
        no whole classifier is asked for. Loaded, it leaves its outline in the store."""
        if self._frozen_layer is None:
            with strategy_scope(self.strategy):
                self._frozen_layer = load_backbone_layer(self.spec, registry=self.registry)
            self.loaded_backbone = True
            self._outline = BackboneOutline.of(self._frozen_layer, self.spec.feature_dim)
            key, store = self._outline_key(), self.store
            outline = self._outline
            if outline and key and store is not None and self._kept_outline() != outline:
                store.put_record(key, outline.to_json())
        return self._frozen_layer

    def _new_head(self, seed: int) -> tf_keras.Model:
        s = self.settings
        tf_keras.utils.set_random_seed(seed)
        with strategy_scope(self.strategy):
            return build_head(
                self.spec.feature_dim,
                self.data.num_classes,
                s.head,
                mixed_precision=s.mixed_precision,
            )

    def classifier(self, head: tf_keras.Model) -> tf_keras.Model:
        """The whole frozen classifier around ``head`` (trained on cached features): the
        backbone the features came from, then ``head`` itself, compiled."""
        return self._assemble(self.frozen_layer(), head)

    def stand_in_size(self, head: tf_keras.Model) -> dict[str, int] | None:
        """The whole frozen classifier's measurements (:func:`measure_classifier`), taken
        around ``head`` with the backbone's stand-in (see :mod:`hubtransfer.sizing`):
        the real classifier's bytes. Its outline comes from the loaded backbone (whose
        variables it then holds), else from the store, else the backbone is loaded for
        it. None when it cannot be outlined, or the stand-in cannot be built or saved
        (an outline edited by hand): the real classifier is measured then."""
        if self._frozen_layer is None:
            self._outline = self._kept_outline()
        if self._outline is None:
            self.frozen_layer()
        if self._outline is None:
            return None
        layer = self._frozen_layer
        try:
            stand_in = self._outline.layer(None if layer is None else frozen_weights(layer))
            return measure_classifier(self._assemble(stand_in, head), weights_only_fallback=False)
        except Exception as exc:  # measured the usual way instead
            logger.debug("No stand-in for %s: %s", self.spec.name, exc, exc_info=True)
            return None

    def _assemble(self, layer: tf_keras.layers.Layer, head: tf_keras.Model) -> tf_keras.Model:
        s = self.settings
        with strategy_scope(self.strategy):
            return assemble_classifier(
                self.spec,
                layer,
                head,
                self.data.num_classes,
                optimizer=s.optimizer,
                learning_rate=s.learning_rate,
                mixed_precision=s.mixed_precision,
            )

    def _kept_outline(self) -> BackboneOutline | None:
        key = self._outline_key()
        kept = None if key is None or self.store is None else self.store.get_record(key)
        if kept is None:
            return None
        try:
            return BackboneOutline.from_json(kept)
        except ValueError as exc:
            logger.debug("Ignoring the kept outline of %s: %s", self.spec.name, exc)
            return None

    def _outline_key(self) -> str | None:
        if self.store is None:
            return None
        # The layer's configuration holds its dtype, from the global precision policy.
        policy = tf_keras.mixed_precision.global_policy().name
        return measurement_key(self.spec, {"outline": True, "policy": policy})

    def measurement_key(self, mode: Mode) -> str | None:
        """Key of this run's classifier size in the store (None without a store)."""
        if self.store is None:
            return None
        s = self.settings
        architecture = {
            "head": dataclasses.asdict(s.head),  # every field: a new one is a new key
            "num_classes": self.data.num_classes,
            "mixed_precision": s.mixed_precision,
            "policy": tf_keras.mixed_precision.global_policy().name,  # the Hub layer's dtype
            "trainable": mode == "fine_tuned",
        }
        return measurement_key(self.spec, architecture)

    def _compile(self, model: tf_keras.Model, learning_rate: float) -> None:
        with strategy_scope(self.strategy):
            compile_classifier(
                model,
                self.data.num_classes,
                optimizer=self.settings.optimizer,
                learning_rate=learning_rate,
                mixed_precision=self.settings.mixed_precision,
            )

    def _pipeline(self, *, training: bool, seed: int = 0) -> tf.data.Dataset:
        s = self.settings
        split = self.data.train if training else self.data.validation
        return prepare(
            split,
            self.spec,
            batch_size=s.batch_size,
            training=training,
            augment=training and s.augment,
            seed=seed,
        )

    def scored_splits(self) -> tuple[str, ...]:
        """The splits every kept model is scored on."""
        return ("validation", "test") if "test" in self._splits() else ("validation",)

    def _splits(self) -> dict[str, tf.data.Dataset]:
        splits = {"train": self.data.train, "validation": self.data.validation}
        if self.data.test is not None:
            splits["test"] = self.data.test
        return splits

    def features(self, layer: Callable[[], tf_keras.layers.Layer]) -> dict[str, FeatureSet]:
        """Features of the frozen backbone for every split, once per run.

        Read from the feature store when it holds them (no forward pass, and ``layer`` is
        not called), else extracted with ``layer()`` and stored.
        """
        if self._features is None:
            self._features = {}
            for name, split in self._splits().items():
                key = (
                    feature_key(self.spec, self.data.fingerprint, name)
                    if self.store is not None and self.data.fingerprint
                    else None
                )
                stored = None
                if key is not None and self.store is not None:
                    stored = self.store.get(key, memory_limit_bytes=self.memory_limit_bytes)
                if stored is not None:
                    check_feature_shape(self.spec, stored.features.shape)
                    self._features[name] = stored
                    continue
                features = extract_features(
                    layer(),
                    # In file order: the same features in the same order every time, so
                    # a seed trains the same head whether they come from here or the store.
                    prepare(in_file_order(split), self.spec, batch_size=self.settings.batch_size),
                    memory_limit_bytes=self.memory_limit_bytes,
                    spill_dir=self.spill_dir,
                    total=getattr(self.data.counts, name, None),
                    what=f"{self.spec.name}: extracting {name} features",
                )
                check_feature_shape(self.spec, features.features.shape)  # before storing
                if key is not None and self.store is not None:
                    self.store.put(
                        key,
                        features,
                        metadata={
                            "backbone": self.spec.name,
                            "handle": self.spec.handle,
                            "split": name,
                            "source": self.data.source,
                        },
                    )
                self._features[name] = features
            logger.info(
                "%s: features of %s images %s in %.1f s",
                self.spec.name,
                " + ".join(str(len(f)) for f in self._features.values()),
                "read from the feature store" if self.features_from_store else "extracted",
                sum(f.seconds for f in self._features.values()),
            )
        return self._features

    @property
    def features_from_store(self) -> bool | None:
        """Whether every split's features came from the store; None before any were used."""
        if self._features is None:
            return None
        return all(f.from_store for f in self._features.values())

    def predictions(
        self, model: tf_keras.Model, split: str, outcome: Trained
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, predicted classes)`` of the kept model on a split."""
        batch = self.settings.batch_size
        if outcome.on_features and self._features is not None:
            features = self._features[split]
            head = model if outcome.head_only else model.get_layer("head")
            logits = _head_logits(head, features.features)
            labels = np.asarray(features.labels)
        else:
            batches = prepare(self._splits()[split], self.spec, batch_size=batch)
            labels_list: list[np.ndarray] = []
            logits_list: list[np.ndarray] = []
            for x, y in batches:
                logits_list.append(np.asarray(model(x, training=False), np.float32))
                labels_list.append(y.numpy())
            logits, labels = np.concatenate(logits_list), np.concatenate(labels_list)
        return labels, predicted_classes(logits)

    def _fit_end_to_end(
        self,
        model: tf_keras.Model,
        epochs: int,
        phase: str,
        seed: int,
        extra: Sequence[tf_keras.callbacks.Callback],
    ) -> tuple[list[EpochRecord], float]:
        """Trains the full model, the backbone running every step."""
        return _fit(
            model,
            self._pipeline(training=True, seed=seed),
            self._pipeline(training=False),
            epochs,
            phase,
            [*self.callbacks, *extra],
            self.verbose,
            self.class_weight,
        )

    def _callbacks(self, selector: _Selector, *, final: bool) -> list[tf_keras.callbacks.Callback]:
        """Selection always; early stopping (``patience``) in the final phase only."""
        patience = self.settings.patience
        if not final or patience is None:
            return [selector]
        stop = tf_keras.callbacks.EarlyStopping(
            monitor=self.settings.monitor,
            patience=patience,
            mode="min" if self.settings.monitor.endswith("loss") else "max",
        )
        return [selector, stop]

    def _train_head_on_features(
        self,
        head: tf_keras.Model,
        layer: Callable[[], tf_keras.layers.Layer],
        epochs: int,
        phase: str,
        learning_rate: float,
        seed: int,
        extra: Sequence[tf_keras.callbacks.Callback],
    ) -> tuple[list[EpochRecord], float, float]:
        features = self.features(layer)
        train, validation = features["train"], features["validation"]
        s = self.settings
        self._compile(head, learning_rate)
        tf_keras.utils.set_random_seed(seed)
        history, seconds = _fit(
            head,
            train.dataset(s.batch_size, shuffle=True, seed=seed),
            # One batch per pass where it fits: fewer steps, no second trace for a
            # smaller last batch (the validation metrics are means over all examples).
            validation.dataset(max(s.batch_size, min(len(validation), _CHUNK))),
            epochs,
            phase,
            [*self.callbacks, *extra],
            self.verbose,
            self.class_weight,
        )
        return history, seconds, sum(f.seconds for f in features.values())

    def frozen(self, seed: int) -> tuple[tf_keras.Model, Trained]:
        """A frozen model: with cached features, the head alone (see ``head_only``)."""
        s = self.settings
        if self.uses_cache:
            head = self._new_head(seed)
            selector = _Selector(head, s.monitor)
            history, head_s, feature_s = self._train_head_on_features(
                head,
                self.frozen_layer,
                s.epochs,
                "head",
                s.learning_rate,
                seed,
                self._callbacks(selector, final=True),
            )
            selector.restore()
            return head, Trained(
                history,
                feature_s + head_s,
                selector.best_epoch,
                on_features=True,
                head_only=True,
                feature_seconds=feature_s,
                head_seconds=head_s,
                features_from_store=self.features_from_store,
            )
        model = self._build(trainable=False, learning_rate=s.learning_rate, seed=seed)
        selector = _Selector(model, s.monitor)
        extra = self._callbacks(selector, final=True)
        history, seconds = self._fit_end_to_end(model, s.epochs, "head", seed, extra)
        selector.restore()
        return model, Trained(history, seconds, selector.best_epoch, on_features=False)

    def fine_tuned(self, seed: int) -> tuple[tf_keras.Model, Trained]:
        s = self.settings
        model = self._build(trainable=True, learning_rate=s.fine_tune_learning_rate, seed=seed)
        selector = _Selector(model, s.monitor)
        history: list[EpochRecord] = []
        feature_s: float | None = None
        head_s: float | None = None
        warmup_s = 0.0
        warmup_callbacks = self._callbacks(selector, final=False)
        if s.warmup_epochs and self.uses_cache:
            history, head_s, feature_s = self._train_head_on_features(
                model.get_layer("head"),
                lambda: model.get_layer("backbone"),
                s.warmup_epochs,
                "warmup",
                s.learning_rate,
                seed,
                warmup_callbacks,
            )
            warmup_s = head_s + feature_s
        elif s.warmup_epochs:
            backbone = model.get_layer("backbone")
            backbone.trainable = False
            self._compile(model, s.learning_rate)
            history, warmup_s = self._fit_end_to_end(
                model, s.warmup_epochs, "warmup", seed, warmup_callbacks
            )
            backbone.trainable = True
        self._compile(model, s.fine_tune_learning_rate)
        tuned, tune_s = self._fit_end_to_end(
            model, s.epochs, "fine_tune", seed, self._callbacks(selector, final=True)
        )
        selector.restore()
        # The backbone changed: a warm-up epoch's features are no longer this model's.
        on_features = selector.best_epoch is not None and selector.best_epoch <= len(history)
        return model, Trained(
            history + tuned,
            warmup_s + tune_s,
            selector.best_epoch,
            on_features=on_features and self.uses_cache,
            feature_seconds=feature_s,
            head_seconds=head_s,
            features_from_store=self.features_from_store if feature_s is not None else None,
        )


def _exports(model: tf_keras.Model, run: Run) -> dict[str, dict[str, float | int | None]]:
    """The whole classifier ``model`` exported to each TFLite mode asked for, scored."""
    from hubtransfer.tflite import Quantization, evaluate_tflite, export_tflite

    measured: dict[str, dict[str, float | int | None]] = {}
    if not run.settings.export:
        return measured
    with tempfile.TemporaryDirectory(prefix="hubtransfer-tflite-") as tmp:
        for mode in run.settings.export:
            path = export_tflite(
                model,
                Path(tmp) / f"{mode}.tflite",
                quantization=None if mode == "float32" else cast(Quantization, mode),
                representative_data=run.data if mode == "int8" else None,
                backbone=run.spec,
            )
            scored = evaluate_tflite(path, run.data, backbone=run.spec, model=model)
            measured[mode] = {
                "bytes": scored.bytes,
                "val_accuracy": scored.accuracy,
                "agreement": scored.agreement,
                "ms_per_image": scored.ms_per_image,
            }
    return measured


def _measure_size(
    run: Run, mode: Mode, model: tf_keras.Model, *, head_only: bool, target: Path | None
) -> dict[str, int]:
    """Saved ``.h5`` bytes and parameters of the whole classifier (``model``, or around
    ``model`` when it is a head trained on cached features, ``head_only``).

    They depend on the architecture only, so they are kept in the store and read back
    for a head. A head is measured in a classifier around its backbone's stand-in (see
    :mod:`hubtransfer.sizing`: the same file, without running or loading the backbone);
    failing that, around the backbone itself. A whole classifier is saved as it is, to
    ``target`` if given.
    """
    key = run.measurement_key(mode)
    store = run.store
    kept = store.get_measurement(key) if head_only and key and store is not None else None
    if kept is not None:
        return kept
    size = run.stand_in_size(model) if head_only else None
    if size is None:
        size = measure_classifier(run.classifier(model) if head_only else model, target)
    if key is not None and store is not None:
        store.put_measurement(key, size)
    return size


def label_counts(data: ImageData) -> list[int]:
    """Training examples per class: one pass over the labels (images are decoded)."""
    counts = np.zeros(data.num_classes, dtype=np.int64)
    for labels in data.train.map(as_written(lambda x, y: y)).batch(4096).as_numpy_iterator():
        counts += np.bincount(labels, minlength=data.num_classes)[: data.num_classes]
    return [int(c) for c in counts]


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def run_trial(
    run: Run,
    mode: Mode,
    config: dict[str, Any],
    config_id: str,
    environment: dict[str, str],
    measure_latency: bool,
    model_path: Path | None,
    on_seed: Callable[[int], None] | None = None,
    keep_model: bool = False,
) -> tuple[BenchmarkResult, tf_keras.Model | None]:
    """Trains ``run``'s backbone in ``mode`` over the settings' seeds and measures it.

    Returns the result and, with ``keep_model``, the first seed's whole classifier (else
    None: a frozen head trained on stored features then needs its backbone loaded only
    when latency, exports or a saved model ask for the whole classifier, or when neither
    this architecture's size nor the backbone's outline is kept yet).
    """
    spec = run.spec
    common: dict[str, Any] = {
        "backbone": spec.name,
        "mode": mode,
        "image_size": spec.image_size,
        "handle": spec.handle,
        "environment": environment,
        "config": config,
        "config_id": config_id,
        "seed": run.settings.seed,
    }
    trainer: Callable[[int], tuple[tf_keras.Model, Trained]] = (
        run.frozen if mode == "frozen" else run.fine_tuned
    )
    try:
        model: tf_keras.Model | None = None
        measured: Trained | None = None
        per_seed: list[SeedRun] = []
        total_seconds = 0.0
        head_seconds: float | None = None
        metrics: dict[str, SplitMetrics] = {}
        for i in range(run.settings.seeds):
            seed = run.settings.seed + i
            if on_seed is not None:  # e.g. TensorBoard: a run per seed
                on_seed(seed)
            trained, outcome = trainer(seed)
            history_i = outcome.history
            seconds = outcome.train_seconds
            if i > 0:  # the cached features were extracted once, for the first seed
                seconds -= outcome.feature_seconds or 0.0
            total_seconds += seconds
            if outcome.head_seconds is not None:
                head_seconds = (head_seconds or 0.0) + outcome.head_seconds
            scored = {
                split: split_metrics(
                    *run.predictions(trained, split, outcome), run.data.class_names
                )
                for split in run.scored_splits()
            }
            accuracies_i = [h.val_accuracy for h in history_i if h.val_accuracy is not None]
            last = [h for h in history_i if h.phase == history_i[-1].phase][-1]
            test = scored.get("test")
            per_seed.append(
                SeedRun(
                    seed,
                    max(accuracies_i) if accuracies_i else None,
                    last.val_accuracy,
                    seconds,
                    selected_epoch=outcome.selected_epoch,
                    val_accuracy=scored["validation"].accuracy,
                    val_balanced_accuracy=scored["validation"].balanced_accuracy,
                    test_accuracy=None if test is None else test.accuracy,
                    test_balanced_accuracy=None if test is None else test.balanced_accuracy,
                )
            )
            if model is None:
                model, measured, metrics = trained, outcome, scored
            else:
                del trained
        if model is None or measured is None:  # pragma: no cover - seeds >= 1 is checked
            raise BenchmarkError("no seed ran")
        history = measured.history
        head_only = measured.head_only
        if head_only and (
            measure_latency or keep_model or run.settings.export or model_path is not None
        ):
            model = run.classifier(model)  # the whole classifier is needed: built once
            head_only = False
        latency_ms, throughput = _latency(model, spec) if measure_latency else (None, None)
        size = _measure_size(run, mode, model, head_only=head_only, target=model_path)
        phase_epochs = run.settings.epochs + (
            run.settings.warmup_epochs if mode == "fine_tuned" else 0
        )
        result = BenchmarkResult(
            status="ok",
            history=tuple(history),
            best_val_accuracy=_mean(r.best_val_accuracy for r in per_seed),
            final_val_accuracy=_mean(r.final_val_accuracy for r in per_seed),
            train_seconds=total_seconds,
            feature_seconds=measured.feature_seconds,
            features_from_store=measured.features_from_store,
            head_seconds=head_seconds,
            model_bytes=size["model_bytes"],
            params_total=size["params_total"],
            params_trainable=size["params_trainable"],
            latency_ms=latency_ms,
            throughput=throughput,
            exports=_exports(model, run),
            per_seed=tuple(per_seed),
            monitor=run.settings.monitor,
            selected_epoch=measured.selected_epoch,
            stopped_early=len(history) < phase_epochs,
            val_accuracy=_mean(r.val_accuracy for r in per_seed),
            val_balanced_accuracy=_mean(r.val_balanced_accuracy for r in per_seed),
            test_accuracy=_mean(r.test_accuracy for r in per_seed),
            test_balanced_accuracy=_mean(r.test_balanced_accuracy for r in per_seed),
            val_metrics=metrics["validation"].to_dict(),
            test_metrics=metrics["test"].to_dict() if "test" in metrics else None,
            **common,
        )
        return result, model if keep_model else None
    except NotFineTunableError as exc:
        return BenchmarkResult(status="skipped", error=str(exc), **common), None
    except Exception as exc:  # isolate: one backbone's failure must not end the study
        logger.warning(
            "%s / %s failed: %s", spec.name, mode, exc, exc_info=logger.isEnabledFor(logging.DEBUG)
        )
        return BenchmarkResult(
            status="failed", error=f"{type(exc).__name__}: {exc}", **common
        ), None
