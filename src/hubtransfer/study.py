"""The study as one call: :func:`benchmark` trains and measures backbones x modes.

Frozen backbones without augmentation are run once over the data and their features
cached; the head trains on the cache, so epochs after the first cost almost nothing.
The features also go to the feature store (:mod:`hubtransfer.store`), so a later study
of the same backbone on the same data runs no forward pass at all.
Fine-tuning is two-phase: a head warm-up (on the cached features when possible), then
the whole model at a lower learning rate. Each finished result is appended to
``output_dir/results.jsonl`` at once, so an interrupted study loses nothing and
``resume=True`` skips what is done.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from hubtransfer._fs import check_writable_dir, exclusive_lock, unique_sibling
from hubtransfer._tf import hub, tf, tf_keras
from hubtransfer.board import TrialBoard, check_tensorboard_dir, write_experiment
from hubtransfer.config import DEFAULTS
from hubtransfer.data import ImageData
from hubtransfer.errors import BenchmarkError, ConfigurationError, NotFineTunableError
from hubtransfer.features import DEFAULT_MEMORY_LIMIT_BYTES, FeatureSet, extract_features
from hubtransfer.metrics import IMBALANCE_RATIO, SplitMetrics, split_metrics
from hubtransfer.model import (
    Head,
    MixedPrecision,
    OptimizerName,
    build_classifier,
    compile_classifier,
    strategy_scope,
)
from hubtransfer.preprocessing import prepare
from hubtransfer.records import BenchmarkResult, EpochRecord, Mode, SeedRun
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone
from hubtransfer.results import BenchmarkReport
from hubtransfer.settings import (
    FineTune,
    Monitor,
    StudySettings,
    make_settings,
    modes_of,
    resolve_class_weight,
)
from hubtransfer.storage import RESULTS_FILE, append_result, read_results
from hubtransfer.store import FeatureStore, feature_key
from hubtransfer.validation import check_choice, check_int

__all__ = ["benchmark"]

logger = logging.getLogger(__name__)

_LATENCY_RUNS = {1: (2, 10), 32: (1, 3)}  # batch size -> (warm-up runs, timed runs)


def _environment() -> dict[str, str]:
    gpus = tf.config.list_physical_devices("GPU")
    device = "CPU"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tensorflow_hub": hub.__version__,
        "device": device,
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }


class _EpochTimer(tf_keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class _Selector(tf_keras.callbacks.Callback):  # type: ignore[misc]
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


def _model_bytes(model: tf_keras.Model, target: Path | None) -> int:
    """Size of the classifier saved as ``.h5``; written atomically to ``target`` if given."""
    # The report measured `ls -lh model.h5`: the full classifier saved as HDF5.
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".hubtransfer-model-", dir=None if target is None else target.parent
    ) as tmp:
        path = Path(tmp) / "model.h5"
        try:
            with warnings.catch_warnings():  # "HDF5 is legacy": it is what the report measured
                warnings.simplefilter("ignore", UserWarning)
                model.save(path, save_format="h5", include_optimizer=False)
        except Exception:  # a layer that cannot be serialised: weights are the size anyway
            logger.debug("Full .h5 save failed; measuring the weights file", exc_info=True)
            model.save_weights(path, save_format="h5")
        size = path.stat().st_size
        if target is not None:
            os.replace(path, target)
        return size


class _NoRetracingWarning(logging.Filter):
    # A study traces one inference function per trained model, on purpose; TensorFlow
    # counts those as "retracing" of one function and warns after five backbones.
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _latency(model: tf_keras.Model, spec: Backbone) -> tuple[float, float]:
    """Inference ms/image at batch 1 and images/s at batch 32, after warm-up runs."""

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
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
        x = tf.constant(rng.uniform(low, high, (batch, spec.image_size, spec.image_size, 3)),
                        tf.float32)  # fmt: skip
        for _ in range(warmup):
            infer(x).numpy()
        start = time.perf_counter()
        for _ in range(runs):
            infer(x).numpy()
        timings[batch] = (time.perf_counter() - start) / runs
    return timings[1] * 1000.0, 32 / timings[32]


def _config(spec: Backbone, mode: Mode, data: ImageData, settings: StudySettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backbone": spec.name,
        "handle": spec.handle,
        "image_size": spec.image_size,
        "input_range": list(spec.input_range),
        "mode": mode,
        "data": {
            "source": data.source,
            "class_names": list(data.class_names),
            "train": data.counts.train,
            "validation": data.counts.validation,
            "test": data.counts.test,
            # Files, sizes and modification times (folders); name, version, splits (TFDS):
            # resume reruns a backbone when the data changed, not only its counts.
            "fingerprint": data.fingerprint,
        },
        **asdict(settings),
    }
    if mode == "frozen":  # fine-tuning settings do not affect a frozen run
        config.pop("warmup_epochs")
        config.pop("fine_tune_learning_rate")
    # As it will read back from JSON (tuples become lists), so records compare equal.
    loaded: dict[str, Any] = json.loads(json.dumps(config))
    return loaded


def _config_id(config: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


class _Run:
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
        self.class_weight: dict[int, float] | None = None

    @property
    def uses_cache(self) -> bool:
        return self.settings.cache_features and not self.settings.augment

    def _build(self, *, trainable: bool, learning_rate: float, seed: int) -> tf_keras.Model:
        s = self.settings
        tf_keras.utils.set_random_seed(seed)
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

    def _compile(self, model: tf_keras.Model, learning_rate: float) -> None:
        with strategy_scope(self.strategy):
            compile_classifier(
                model, self.data.num_classes, optimizer=self.settings.optimizer,
                learning_rate=learning_rate,
                mixed_precision=self.settings.mixed_precision,
            )  # fmt: skip

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

    def features(self, model: tf_keras.Model) -> dict[str, FeatureSet]:
        """Features of the frozen backbone for every split, once per run.

        Read from the feature store when it holds them (no forward pass), else extracted
        and stored.
        """
        if self._features is None:
            layer = model.get_layer("backbone")
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
                    self._features[name] = stored
                    continue
                features = extract_features(
                    layer,
                    prepare(split, self.spec, batch_size=self.settings.batch_size),
                    memory_limit_bytes=self.memory_limit_bytes,
                    spill_dir=self.spill_dir,
                    total=getattr(self.data.counts, name, None),
                    what=f"{self.spec.name}: extracting {name} features",
                )
                if key is not None and self.store is not None:
                    self.store.put(
                        key, features,
                        metadata={"backbone": self.spec.name, "handle": self.spec.handle,
                                  "split": name, "source": self.data.source},
                    )  # fmt: skip
                self._features[name] = features
            logger.info(
                "%s: features of %s images %s in %.1f s", self.spec.name,
                " + ".join(str(len(f)) for f in self._features.values()),
                "read from the feature store" if self.features_from_store
                else "extracted",
                sum(f.seconds for f in self._features.values()),
            )  # fmt: skip
        return self._features

    @property
    def features_from_store(self) -> bool | None:
        """Whether every split's features came from the store; None before any were used."""
        if self._features is None:
            return None
        return all(f.from_store for f in self._features.values())

    def predictions(
        self, model: tf_keras.Model, split: str, *, on_features: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, predicted classes)`` of the model on a split."""
        batch = self.settings.batch_size
        if on_features and self._features is not None:
            features = self._features[split]
            logits = model.get_layer("head").predict(features.dataset(batch), verbose=0)
            labels = np.asarray(features.labels)
        else:
            batches = prepare(self._splits()[split], self.spec, batch_size=batch)
            labels_list: list[np.ndarray] = []
            logits_list: list[np.ndarray] = []
            for x, y in batches:
                logits_list.append(np.asarray(model(x, training=False), np.float32))
                labels_list.append(y.numpy())
            logits, labels = np.concatenate(logits_list), np.concatenate(labels_list)
        logits = np.asarray(logits, np.float32)
        if logits.shape[-1] == 1:  # binary: one logit, class 1 above 0
            return labels, (logits[:, 0] > 0).astype(np.int64)
        return labels, logits.argmax(-1)

    def _fit_end_to_end(
        self, model: tf_keras.Model, epochs: int, phase: str, seed: int,
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

    def _callbacks(
        self, selector: _Selector, *, final: bool
    ) -> list[tf_keras.callbacks.Callback]:
        """Selection always; early stopping (``patience``) in the final phase only."""
        patience = self.settings.patience
        if not final or patience is None:
            return [selector]
        stop = tf_keras.callbacks.EarlyStopping(
            monitor=self.settings.monitor, patience=patience,
            mode="min" if self.settings.monitor.endswith("loss") else "max",
        )  # fmt: skip
        return [selector, stop]

    def _train_head_on_features(
        self, model: tf_keras.Model, epochs: int, phase: str, learning_rate: float, seed: int,
        extra: Sequence[tf_keras.callbacks.Callback],
    ) -> tuple[list[EpochRecord], float, float]:
        features = self.features(model)
        train, validation = features["train"], features["validation"]
        head = model.get_layer("head")
        s = self.settings
        self._compile(head, learning_rate)
        tf_keras.utils.set_random_seed(seed)
        history, seconds = _fit(
            head,
            train.dataset(s.batch_size, shuffle=True, seed=seed),
            validation.dataset(s.batch_size),
            epochs,
            phase,
            [*self.callbacks, *extra],
            self.verbose,
            self.class_weight,
        )
        return history, seconds, sum(f.seconds for f in features.values())

    def frozen(self, seed: int) -> tuple[tf_keras.Model, dict[str, Any]]:
        s = self.settings
        model = self._build(trainable=False, learning_rate=s.learning_rate, seed=seed)
        selector = _Selector(model, s.monitor)
        extra = self._callbacks(selector, final=True)
        if self.uses_cache:
            history, head_s, feature_s = self._train_head_on_features(
                model, s.epochs, "head", s.learning_rate, seed, extra
            )
            outcome = {
                "history": history,
                "train_seconds": feature_s + head_s,
                "feature_seconds": feature_s,
                "head_seconds": head_s,
                "features_from_store": self.features_from_store,
            }
        else:
            history, seconds = self._fit_end_to_end(model, s.epochs, "head", seed, extra)
            outcome = {"history": history, "train_seconds": seconds}
        selector.restore()
        return model, {**outcome, "selected_epoch": selector.best_epoch,
                       "on_features": self.uses_cache}  # fmt: skip

    def fine_tuned(self, seed: int) -> tuple[tf_keras.Model, dict[str, Any]]:
        s = self.settings
        model = self._build(trainable=True, learning_rate=s.fine_tune_learning_rate, seed=seed)
        selector = _Selector(model, s.monitor)
        history: list[EpochRecord] = []
        extra: dict[str, Any] = {}
        warmup_s = 0.0
        warmup_callbacks = self._callbacks(selector, final=False)
        if s.warmup_epochs and self.uses_cache:
            history, head_s, feature_s = self._train_head_on_features(
                model, s.warmup_epochs, "warmup", s.learning_rate, seed, warmup_callbacks
            )
            warmup_s = head_s + feature_s
            extra = {"feature_seconds": feature_s, "head_seconds": head_s,
                     "features_from_store": self.features_from_store}  # fmt: skip
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
        return model, {"history": history + tuned, "train_seconds": warmup_s + tune_s,
                       "selected_epoch": selector.best_epoch,
                       "on_features": on_features and self.uses_cache, **extra}  # fmt: skip


def benchmark(
    backbones: Sequence[str | Backbone] | str | Backbone,
    data: ImageData,
    *,
    epochs: int = DEFAULTS.epochs,
    batch_size: int = DEFAULTS.batch_size,
    fine_tune: FineTune = False,
    cache_features: bool = True,
    head: Head | None = None,
    optimizer: OptimizerName = "adam",
    learning_rate: float = DEFAULTS.learning_rate,
    warmup_epochs: int = DEFAULTS.warmup_epochs,
    fine_tune_learning_rate: float | None = None,
    augment: bool = False,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    callbacks: Sequence[tf_keras.callbacks.Callback] | None = None,
    seed: int = DEFAULTS.seed,
    seeds: int = 1,
    verbose: int = 0,
    measure_latency: bool = True,
    save_models: bool = False,
    keep_models: bool = False,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    export: Sequence[str] = (),
    strategy: tf.distribute.Strategy | None = None,
    mixed_precision: MixedPrecision | None = None,
    registry: BackboneRegistry | None = None,
    monitor: Monitor = "val_loss",
    patience: int | None = None,
    class_weight: str | dict[str | int, float] | None = None,
    tensorboard_dir: str | os.PathLike[str] | None = None,
    feature_store: bool | str | os.PathLike[str] = True,
) -> BenchmarkReport:
    """Trains a classifier per backbone and mode, and measures accuracy, time and size.

    Args:
        backbones: Names or Backbone specs (one, or a sequence).
        data: The dataset, e.g. from :func:`load_image_folder` or :func:`load_tfds`.
        epochs: Epochs of the frozen head, and of the fine-tuning phase.
        batch_size: Batch size of every phase.
        fine_tune: False (frozen only), True (fine-tuned only) or ``"both"``.
        cache_features: Run a frozen backbone once and train the head on cached features
            (ignored with ``augment``, where the backbone must see new crops every step).
        head: The classification head; ``Head()`` (dropout 0.2 + logits) if None. The
            report's head is :data:`hubtransfer.REPORT_HEAD`.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
        learning_rate: Learning rate of the frozen head and of the warm-up.
        warmup_epochs: Fine-tuning phase 1: epochs of head-only training (on cached
            features when caching) before the backbone is unfrozen. 0 skips it.
        fine_tune_learning_rate: Fine-tuning phase 2 learning rate for the whole model;
            ``learning_rate * DEFAULTS.fine_tune_lr_factor`` (1/10) if None.
        augment: Random resized crop + flip on training images.
        output_dir: Where each result is appended as it finishes (``results.jsonl``), and
            ``results.json/.csv/.md`` are written at the end.
        resume: Keep results in ``output_dir`` that match this configuration (status ok or
            skipped) and run only the rest. With False, an existing log is renamed aside.
        callbacks: Extra ``tf_keras`` callbacks for every ``fit``.
        seed: Seeds weights initialisation, shuffling, dropout and augmentation.
        seeds: Repeat every backbone x mode with seeds ``seed, seed + 1, ...``; results
            carry per-seed values and their mean and t-interval. A frozen cached study
            reuses the features, so extra seeds retrain only the head.
        verbose: Keras progress bars (1) or none (0).
        measure_latency: Time inference at batch 1 and 32 (warm-up, then timed runs).
        save_models: Save each trained classifier to ``output_dir/models/*.h5``.
        keep_models: Keep the trained classifiers on ``report.models``.
        memory_limit_bytes: Cached features past this size (per split) spill to disk.
        export: TFLite modes to export each trained model to and score on the validation
            split: any of ``"float32"``, ``"dynamic"``, ``"float16"``, ``"int8"`` (int8
            calibrates on training images). Float32 is added whenever others are asked,
            as the reference size. Recorded in ``BenchmarkResult.exports``.
        strategy: A ``tf.distribute`` strategy: models, heads and optimizers are created
            under its scope; ``batch_size`` is the global batch.
        mixed_precision: ``"mixed_float16"`` or ``"mixed_bfloat16"`` for the head (the Hub
            layer stays float32; see :func:`build_classifier`).
        registry: Where names are looked up; the default registry if None.
        monitor: What picks the epoch whose weights each run keeps: ``"val_loss"`` or
            ``"val_accuracy"``. The returned, saved and exported model is that epoch's,
            and every reported score (``val_accuracy``, ``test_accuracy``, per-class
            metrics) is that model's.
        patience: Stop a run's final phase after this many epochs without improvement
            in ``monitor``; None trains every epoch.
        class_weight: None, ``"balanced"`` (weights inverse to class frequency, from one
            pass over the training labels), or a dict of class name or index -> weight.
        tensorboard_dir: Write a TensorBoard run per trial and seed there,
            ``<backbone>_<mode>_seed<seed>``: loss and accuracy per epoch (train and
            validation; epochs numbered across a fine-tuned run's phases), then its
            hyperparameters and final metrics for the HParams view (see
            :mod:`hubtransfer.board`). Needs ``pip install 'hubtransfer[tensorboard]'``;
            checked for writability before anything runs. None writes nothing.
        feature_store: Where cached features persist across studies and processes
            (:mod:`hubtransfer.store`): True uses ``$HUBTRANSFER_CACHE_DIR`` (the user's
            cache directory when unset), a path uses that directory, False stores
            nothing. A backbone whose features of this data are stored runs no forward
            pass; its result says ``features_from_store=True`` and ``feature_seconds``
            is the read time. Only used with cached features (``cache_features`` without
            ``augment``) and data with a fingerprint. Not part of the configuration
            ``resume`` compares.

    Returns:
        A :class:`BenchmarkReport`, one :class:`BenchmarkResult` per backbone x mode.
        A backbone that fails (load error, NaN loss, out of memory) is recorded
        ``failed`` and the study goes on; fine-tuning a TF1 module is ``skipped``.
    """
    # Every argument is checked here, before anything is loaded, trained or written.
    settings = make_settings(
        epochs=epochs, batch_size=batch_size, cache_features=cache_features, head=head,
        optimizer=optimizer, learning_rate=learning_rate, warmup_epochs=warmup_epochs,
        fine_tune_learning_rate=fine_tune_learning_rate, augment=augment, seed=seed,
        seeds=seeds, export=export, mixed_precision=mixed_precision,
        strategy=None if strategy is None else type(strategy).__name__,
        monitor=monitor, patience=patience, class_weight=class_weight,
    )  # fmt: skip
    modes = cast(list[Mode], list(modes_of(fine_tune)))
    specs = [
        resolve_backbone(b, registry)
        for b in ([backbones] if isinstance(backbones, (str, Backbone)) else backbones)
    ]
    if not specs:
        raise ConfigurationError("benchmark() needs at least one backbone. Received: [].")
    if not isinstance(data, ImageData):
        raise ConfigurationError(
            "data must be a hubtransfer.ImageData, from load_image_folder() or load_tfds(). "
            f"Received: {type(data).__name__}."
        )
    if data.counts.validation == 0:
        raise ConfigurationError(
            "benchmark() measures validation accuracy, but data has no validation examples. "
            "Load it with validation_fraction > 0 (image folders) or a validation split."
        )
    if isinstance(class_weight, dict):  # names are checked against the data, up front
        settings = replace(
            settings, class_weight=resolve_class_weight(class_weight, data.class_names)
        )
    _check_runtime(callbacks, verbose, memory_limit_bytes, strategy)
    board = None if tensorboard_dir is None else check_tensorboard_dir(tensorboard_dir)
    store = _feature_store(feature_store) if settings.cache_features and not augment else None
    for flag in ("resume", "measure_latency", "save_models", "keep_models"):
        if not isinstance(locals()[flag], bool):
            raise ConfigurationError(
                f"{flag} must be True or False. Received: {flag}={locals()[flag]!r}."
            )
    if save_models and output_dir is None:
        raise ConfigurationError(
            "save_models=True writes each model to output_dir/models/, but output_dir is None. "
            "Pass output_dir='results/' (CLI: --out), or use keep_models=True to get the "
            "models in memory."
        )
    if output_dir is None:
        return _run_study(specs, modes, data, settings, None, resume=resume, callbacks=callbacks,
                          verbose=verbose, measure_latency=measure_latency, save_models=False,
                          keep_models=keep_models, memory_limit_bytes=memory_limit_bytes,
                          strategy=strategy, registry=registry, tensorboard=board,
                          store=store)  # fmt: skip
    out = check_writable_dir(output_dir, "output_dir")
    with exclusive_lock(out, "output_dir"):
        return _run_study(specs, modes, data, settings, out, resume=resume, callbacks=callbacks,
                          verbose=verbose, measure_latency=measure_latency,
                          save_models=save_models, keep_models=keep_models,
                          memory_limit_bytes=memory_limit_bytes, strategy=strategy,
                          registry=registry, tensorboard=board, store=store)  # fmt: skip


def _feature_store(feature_store: object) -> FeatureStore | None:
    if feature_store is True:
        return FeatureStore()
    if feature_store is False:
        return None
    if isinstance(feature_store, (str, os.PathLike)) and os.fspath(feature_store):
        return FeatureStore(feature_store)
    raise ConfigurationError(
        "feature_store must be True (the cache directory: $HUBTRANSFER_CACHE_DIR or the "
        "user's cache), False (store nothing) or a directory path. "
        f"Received: feature_store={feature_store!r}."
    )


def _check_runtime(
    callbacks: object, verbose: object, memory_limit_bytes: object, strategy: object
) -> None:
    if callbacks is not None and (
        isinstance(callbacks, (str, bytes))
        or not isinstance(callbacks, Sequence)
        or not all(isinstance(c, tf_keras.callbacks.Callback) for c in callbacks)
    ):
        raise ConfigurationError(
            "callbacks must be a list of tf_keras.callbacks.Callback instances (Keras 2; "
            f"keras 3 callbacks do not work with tf_keras models). Received: {callbacks!r}."
        )
    check_choice("verbose", verbose, (0, 1, 2))
    check_int("memory_limit_bytes", memory_limit_bytes, minimum=0)
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise ConfigurationError(
            "strategy must be None or a tf.distribute.Strategy, e.g. "
            f"tf.distribute.MirroredStrategy(). Received: strategy={strategy!r}."
        )


def _previous_results(log: Path, resume: bool) -> dict[str, BenchmarkResult]:
    """Results to keep from an earlier run (resume), or the old log moved aside."""
    if not log.exists():
        return {}
    if resume:
        return {r.config_id: r for r in read_results(log) if r.status in ("ok", "skipped")}
    aside = unique_sibling(log, f"-{time.strftime('%Y%m%d-%H%M%S')}{log.suffix}")
    os.replace(log, aside)
    logger.info("resume=False: previous results moved to %s", aside)
    return {}


def _run_study(
    specs: list[Backbone],
    modes: list[Mode],
    data: ImageData,
    settings: StudySettings,
    out: Path | None,
    *,
    resume: bool,
    callbacks: Sequence[tf_keras.callbacks.Callback] | None,
    verbose: int,
    measure_latency: bool,
    save_models: bool,
    keep_models: bool,
    memory_limit_bytes: int,
    strategy: tf.distribute.Strategy | None,
    registry: BackboneRegistry | None,
    tensorboard: Path | None = None,
    store: FeatureStore | None = None,
) -> BenchmarkReport:
    log = out / RESULTS_FILE if out is not None else None
    previous = _previous_results(log, resume) if log is not None else {}
    weights = (
        resolve_class_weight("balanced", data.class_names, _label_counts(data))
        if settings.class_weight == "balanced"
        else cast(tuple[float, ...] | None, settings.class_weight)
    )
    environment = _environment()
    report = BenchmarkReport()
    warned_imbalance = False
    models: dict[tuple[str, str], tf_keras.Model] = {}
    progress = _Progress(len(specs) * len(modes), settings)
    if tensorboard is not None:
        write_experiment(tensorboard)
    with tempfile.TemporaryDirectory(prefix="hubtransfer-features-") as spill:
        for spec in specs:
            run = _Run(
                spec, data, settings, callbacks=list(callbacks or ()), verbose=verbose,
                memory_limit_bytes=memory_limit_bytes, spill_dir=Path(spill), registry=registry,
                strategy=strategy, store=store,
            )  # fmt: skip
            run.class_weight = None if weights is None else dict(enumerate(weights))
            for mode in modes:
                config = _config(spec, mode, data, settings)
                config_id = _config_id(config)
                model_path = (
                    out / "models" / f"{spec.name}_{mode}.h5" if save_models and out else None
                )
                trial = progress.next(spec.name, mode)
                if config_id in previous and (
                    model_path is None or model_path.exists() or previous[config_id].status != "ok"
                ):
                    logger.info("%s: kept from %s (resume)", trial, log)
                    report.results.append(previous[config_id])
                    continue
                progress.start(trial)
                board = None if tensorboard is None else TrialBoard(tensorboard, spec.name, mode)
                run.callbacks = [*(callbacks or ()), *([board] if board else [])]
                result, model = _run_one(
                    run, mode, config, config_id, environment, measure_latency, model_path,
                    on_seed=None if board is None else board.begin_seed,
                )  # fmt: skip
                if board is not None:
                    board.finish(result)
                progress.end(trial, result)
                if log is not None:
                    append_result(log, result)
                report.results.append(result)
                if not warned_imbalance and result.val_metrics is not None:
                    warned_imbalance = _warn_if_imbalanced(result, settings)
                if keep_models and model is not None:
                    models[result.key] = model
                del model
            del run
            gc.collect()
    report.models = models
    if out is not None:
        report.save(out)
    return report


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


class _Progress:
    """Logs each trial's start and end: i of N, elapsed time and an estimate of what is left.

    The estimate is the mean time of the trials run so far (resumed ones cost nothing)
    times the trials still to come.
    """

    def __init__(self, total: int, settings: StudySettings) -> None:
        self.total = total
        self.index = 0
        first, last = settings.seed, settings.seed + settings.seeds - 1
        self.seeds = f"seed {first}" if first == last else f"seeds {first}-{last}"
        self.began = time.perf_counter()
        self.trial_began = self.began
        self.durations: list[float] = []

    def next(self, backbone: str, mode: str) -> str:
        self.index += 1
        return f"Trial {self.index}/{self.total}: {backbone} / {mode}"

    def start(self, trial: str) -> None:
        self.trial_began = time.perf_counter()
        logger.info("%s, %s: starting", trial, self.seeds)

    def end(self, trial: str, result: BenchmarkResult) -> None:
        now = time.perf_counter()
        self.durations.append(now - self.trial_began)
        left = self.total - self.index
        estimate = (
            f"about {_duration(left * sum(self.durations) / len(self.durations))} left"
            if left
            else "study done"
        )
        if result.status == "ok":
            score = (
                f"val acc {result.val_accuracy:.3f} (kept epoch {result.selected_epoch})"
                if result.val_accuracy is not None
                else "no val acc"
            )
        else:
            score = result.error or ""
        logger.info(
            "%s: %s in %s, %s; elapsed %s, %s", trial, result.status,
            _duration(now - self.trial_began), score, _duration(now - self.began), estimate,
        )  # fmt: skip


def _exports(model: tf_keras.Model, run: _Run) -> dict[str, dict[str, float | int | None]]:
    from hubtransfer.export import evaluate_tflite, export_tflite

    measured: dict[str, dict[str, float | int | None]] = {}
    with tempfile.TemporaryDirectory(prefix="hubtransfer-tflite-") as tmp:
        for mode in run.settings.export:
            path = export_tflite(
                model,
                Path(tmp) / f"{mode}.tflite",
                quantization=None if mode == "float32" else mode,  # type: ignore[arg-type]
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


def _label_counts(data: ImageData) -> list[int]:
    """Training examples per class: one pass over the labels (images are decoded)."""
    counts = np.zeros(data.num_classes, dtype=np.int64)
    for labels in data.train.map(lambda x, y: y).batch(4096).as_numpy_iterator():
        counts += np.bincount(labels, minlength=data.num_classes)[: data.num_classes]
    return [int(c) for c in counts]


def _warn_if_imbalanced(result: BenchmarkResult, settings: StudySettings) -> bool:
    metrics = SplitMetrics.from_dict(result.val_metrics or {})
    if not metrics.is_imbalanced:
        return False
    supports = ", ".join(f"{c.name} {c.support}" for c in metrics.per_class)
    logger.warning(
        "The classes are imbalanced: validation has %s (largest %.1fx the smallest, over %gx). "
        "Plain accuracy rewards always answering the majority class; results are ranked by "
        "balanced accuracy.%s",
        supports, metrics.imbalance, IMBALANCE_RATIO,
        "" if settings.class_weight else " Consider class_weight='balanced' (CLI: "
        "--class-weight balanced).",
    )  # fmt: skip
    return True


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _run_one(
    run: _Run,
    mode: Mode,
    config: dict[str, Any],
    config_id: str,
    environment: dict[str, str],
    measure_latency: bool,
    model_path: Path | None,
    on_seed: Callable[[int], None] | None = None,
) -> tuple[BenchmarkResult, tf_keras.Model | None]:
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
    trainer: Callable[[int], tuple[tf_keras.Model, dict[str, Any]]] = (
        run.frozen if mode == "frozen" else run.fine_tuned
    )
    try:
        model: tf_keras.Model | None = None
        measured: dict[str, Any] = {}
        per_seed: list[SeedRun] = []
        total_seconds = 0.0
        head_seconds: float | None = None
        metrics: dict[str, SplitMetrics] = {}
        for i in range(run.settings.seeds):
            seed = run.settings.seed + i
            if on_seed is not None:  # e.g. TensorBoard: a run per seed
                on_seed(seed)
            trained, outcome = trainer(seed)
            history_i: list[EpochRecord] = outcome["history"]
            seconds = outcome["train_seconds"]
            if i > 0:  # the cached features were extracted once, for the first seed
                seconds -= outcome.get("feature_seconds") or 0.0
            total_seconds += seconds
            if outcome.get("head_seconds") is not None:
                head_seconds = (head_seconds or 0.0) + outcome["head_seconds"]
            scored = {
                split: split_metrics(
                    *run.predictions(trained, split, on_features=outcome["on_features"]),
                    run.data.class_names,
                )
                for split in run.scored_splits()
            }
            accuracies_i = [h.val_accuracy for h in history_i if h.val_accuracy is not None]
            last = [h for h in history_i if h.phase == history_i[-1].phase][-1]
            test = scored.get("test")
            per_seed.append(
                SeedRun(
                    seed, max(accuracies_i) if accuracies_i else None, last.val_accuracy, seconds,
                    selected_epoch=outcome["selected_epoch"],
                    val_accuracy=scored["validation"].accuracy,
                    val_balanced_accuracy=scored["validation"].balanced_accuracy,
                    test_accuracy=None if test is None else test.accuracy,
                    test_balanced_accuracy=None if test is None else test.balanced_accuracy,
                )
            )  # fmt: skip
            if model is None:
                model, measured, metrics = trained, outcome, scored
            else:
                del trained
        if model is None:  # pragma: no cover - seeds >= 1 is checked up front
            raise BenchmarkError("no seed ran")
        history: list[EpochRecord] = measured["history"]
        latency_ms, throughput = _latency(model, spec) if measure_latency else (None, None)
        phase_epochs = run.settings.epochs + (
            run.settings.warmup_epochs if mode == "fine_tuned" else 0
        )
        result = BenchmarkResult(
            status="ok",
            history=tuple(history),
            best_val_accuracy=_mean(r.best_val_accuracy for r in per_seed),
            final_val_accuracy=_mean(r.final_val_accuracy for r in per_seed),
            train_seconds=total_seconds,
            feature_seconds=measured.get("feature_seconds"),
            features_from_store=measured.get("features_from_store"),
            head_seconds=head_seconds,
            model_bytes=_model_bytes(model, model_path),
            params_total=int(model.count_params()),
            params_trainable=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            latency_ms=latency_ms,
            throughput=throughput,
            exports=_exports(model, run),
            per_seed=tuple(per_seed),
            monitor=run.settings.monitor,
            selected_epoch=measured["selected_epoch"],
            stopped_early=len(history) < phase_epochs,
            val_accuracy=_mean(r.val_accuracy for r in per_seed),
            val_balanced_accuracy=_mean(r.val_balanced_accuracy for r in per_seed),
            test_accuracy=_mean(r.test_accuracy for r in per_seed),
            test_balanced_accuracy=_mean(r.test_balanced_accuracy for r in per_seed),
            val_metrics=metrics["validation"].to_dict(),
            test_metrics=metrics["test"].to_dict() if "test" in metrics else None,
            **common,
        )
        return result, model
    except NotFineTunableError as exc:
        return BenchmarkResult(status="skipped", error=str(exc), **common), None
    except Exception as exc:  # isolate: one backbone's failure must not end the study
        logger.warning(
            "%s / %s failed: %s", spec.name, mode, exc, exc_info=logger.isEnabledFor(logging.DEBUG)
        )
        return BenchmarkResult(
            status="failed", error=f"{type(exc).__name__}: {exc}", **common
        ), None
