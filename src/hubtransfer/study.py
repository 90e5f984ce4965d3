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
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, Future, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

from hubtransfer._fs import atomic_write_text, check_writable_dir, exclusive_lock, unique_sibling
from hubtransfer._heap import quiet_heap
from hubtransfer._tf import tf, tf_keras
from hubtransfer.board import TrialBoard, check_tensorboard_dir, write_experiment
from hubtransfer.config import DEFAULTS
from hubtransfer.data import ImageData
from hubtransfer.errors import BenchmarkError, ConfigurationError, OutputDirectoryError
from hubtransfer.fanout import TrialTask, check_executor, run_task
from hubtransfer.features import DEFAULT_MEMORY_LIMIT_BYTES
from hubtransfer.metrics import IMBALANCE_RATIO, SplitMetrics
from hubtransfer.model import (
    Head,
    MixedPrecision,
    OptimizerName,
)
from hubtransfer.records import BenchmarkResult, Mode
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
from hubtransfer.store import FeatureStore
from hubtransfer.trial import Run, environment, label_counts, run_trial
from hubtransfer.validation import check_bool, check_cache_location, check_choice, check_int

__all__ = ["benchmark"]

logger = logging.getLogger(__name__)


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
    executor: Executor | None = None,
) -> BenchmarkReport:
    """Trains a classifier per backbone and mode, and measures accuracy, time and size.

    While it runs in this process, garbage collections skip the objects that existed
    before it started (``gc.freeze``, undone when it ends; see :mod:`hubtransfer._heap`).

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
            and its scores are reported: with one seed ``val_accuracy``, ``test_accuracy``
            and the per-class metrics are that model's; with ``seeds > 1`` the model and
            ``val_metrics``/``test_metrics`` are the first seed's, ``per_seed`` holds each
            seed's kept-model scores, and ``val_accuracy``/``test_accuracy`` are their means.
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
        executor: Run the trials on a ``concurrent.futures.Executor`` instead of in this
            process: a ``ProcessPoolExecutor`` with a spawn context
            (:func:`hubtransfer.fanout.local_executor`) or a Dask client's
            ``client.get_executor()``. Each backbone x mode is one picklable task; workers
            load the data again from ``data.recipe`` (same paths; the fingerprint must
            match) and share frozen features through ``feature_store``. Results arrive in
            any order and are logged by this process alone; a trial whose worker dies is
            retried once, then recorded ``failed``. The numbers equal an in-process run's
            with the same seeds. Not with ``callbacks``, ``keep_models``, ``strategy`` or
            ``tensorboard_dir``.

    Returns:
        A :class:`BenchmarkReport`, one :class:`BenchmarkResult` per backbone x mode.
        A backbone that fails (load error, NaN loss, out of memory) is recorded
        ``failed`` and the study goes on; fine-tuning a TF1 module is ``skipped``.
    """
    # Every argument is checked here, before anything is loaded, trained or written.
    settings = make_settings(
        epochs=epochs,
        batch_size=batch_size,
        cache_features=cache_features,
        head=head,
        optimizer=optimizer,
        learning_rate=learning_rate,
        warmup_epochs=warmup_epochs,
        fine_tune_learning_rate=fine_tune_learning_rate,
        augment=augment,
        seed=seed,
        seeds=seeds,
        export=export,
        mixed_precision=mixed_precision,
        strategy=None if strategy is None else type(strategy).__name__,
        monitor=monitor,
        patience=patience,
        class_weight=class_weight,
    )
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
    check_bool("resume", resume)
    check_bool("measure_latency", measure_latency)
    check_bool("save_models", save_models)
    check_bool("keep_models", keep_models)
    if save_models and output_dir is None:
        raise ConfigurationError(
            "save_models=True writes each model to output_dir/models/, but output_dir is None. "
            "Pass output_dir='results/' (CLI: --out), or use keep_models=True to get the "
            "models in memory."
        )
    runtime = _Runtime(
        callbacks=tuple(callbacks or ()),
        verbose=verbose,
        measure_latency=measure_latency,
        save_models=save_models,
        keep_models=keep_models,
        memory_limit_bytes=memory_limit_bytes,
        strategy=strategy,
        registry=registry,
        tensorboard=board,
        store=store,
        executor=None
        if executor is None
        else _check_fanout(
            executor,
            data,
            runtime_args={
                "callbacks": callbacks,
                "keep_models": keep_models,
                "strategy": strategy,
                "tensorboard_dir": tensorboard_dir,
            },
        ),
    )
    if output_dir is None:
        return _run_study(specs, modes, data, settings, None, runtime, resume=resume)
    out = check_writable_dir(output_dir, "output_dir").absolute()  # workers may run elsewhere
    _check_output_is_ours(out)
    with exclusive_lock(out, "output_dir"):
        return _run_study(specs, modes, data, settings, out, runtime, resume=resume)


def _check_output_is_ours(out: Path) -> None:
    """Refuses a folder whose report files hubtransfer did not write (it would replace them)."""
    ours = (out / RESULTS_FILE).exists() or (out / ".hubtransfer.lock").exists()
    theirs = [n for n in ("results.json", "results.csv", "results.md") if (out / n).exists()]
    if theirs and not ours:
        raise OutputDirectoryError(
            f"output_dir {out} already holds {', '.join(theirs)}, which no hubtransfer study "
            "wrote there (no results.jsonl); a study would replace them. Choose another "
            "folder, or move those files."
        )


def _check_fanout(executor: object, data: ImageData, runtime_args: dict[str, object]) -> Executor:
    """The executor, if this study can run on it: what a worker cannot receive is refused."""
    checked = check_executor(executor)
    unsupported = {
        "callbacks": "callbacks (they stay in this process; workers cannot run them)",
        "keep_models": "keep_models=True (models stay on the workers; use save_models=True "
        "with an output_dir on a shared filesystem)",
        "strategy": "a tf.distribute strategy (each worker trains on its own devices)",
        "tensorboard_dir": "tensorboard_dir (TensorBoard runs are written in-process only)",
    }
    for name, why in unsupported.items():
        if runtime_args[name]:
            raise ConfigurationError(
                f"executor= cannot be combined with {why}. Drop {name}, or run without an executor."
            )
    if data.recipe is None:
        raise ConfigurationError(
            "executor= needs data that workers can load again: load it with "
            "load_image_folder() or load_tfds() (ImageData.recipe), not built by hand."
        )
    return checked


def _feature_store(feature_store: object) -> FeatureStore | None:
    on, root = check_cache_location("feature_store", feature_store, off="store nothing")
    return FeatureStore(root) if on else None


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


def _previous_results(
    log: Path, resume: bool
) -> tuple[dict[str, BenchmarkResult], dict[tuple[str, str], str]]:
    """Results to keep from an earlier run (resume), and the config id each key's last
    line has (what ``BenchmarkReport.load`` shows); or the old log moved aside."""
    if not log.exists():
        return {}, {}
    if resume:
        logged = read_results(log)
        latest = {r.key: r.config_id for r in logged}
        return {r.config_id: r for r in logged if r.status in ("ok", "skipped")}, latest
    aside = unique_sibling(log, f"-{time.strftime('%Y%m%d-%H%M%S')}{log.suffix}")
    os.replace(log, aside)
    logger.info("resume=False: previous results moved to %s", aside)
    return {}, {}


def _model_config(model_path: Path) -> Path:
    # Beside each saved model: the config id of the result it belongs to.
    return model_path.with_suffix(".json")


def _saved_model_matches(model_path: Path, config_id: str) -> bool:
    try:
        record = json.loads(_model_config(model_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return model_path.exists() and isinstance(record, dict) and record.get("config_id") == config_id


@dataclass(frozen=True)
class _Runtime:
    """How a study runs (not what it computes: that is :class:`StudySettings`)."""

    callbacks: tuple[tf_keras.callbacks.Callback, ...]
    verbose: int
    measure_latency: bool
    save_models: bool
    keep_models: bool
    memory_limit_bytes: int
    strategy: tf.distribute.Strategy | None
    registry: BackboneRegistry | None
    tensorboard: Path | None
    store: FeatureStore | None
    executor: Executor | None


@dataclass(frozen=True)
class _Planned:
    """One trial of the plan: a backbone in one mode (all seeds)."""

    index: int
    spec: Backbone
    mode: Mode
    config: dict[str, Any]
    config_id: str
    model_path: Path | None


class _Collector:
    """Takes each finished result in the driver: logs it, appends it to the results log
    (the driver alone writes it), keeps its model if asked."""

    def __init__(
        self, plan: list[_Planned], log: Path | None, settings: StudySettings, keep: bool
    ) -> None:
        self.results: list[BenchmarkResult | None] = [None] * len(plan)
        self.models: dict[tuple[str, str], tf_keras.Model] = {}
        self.progress = _Progress(len(plan), settings)
        self.log = log
        self.settings = settings
        self.keep = keep
        self.warned_imbalance = False

    def kept(self, trial: _Planned, result: BenchmarkResult, *, relog: bool) -> None:
        logger.info("%s: kept from %s (resume)", self.progress.label(trial), self.log)
        if relog and self.log is not None:
            # Another configuration's line came later: log this one again, so the log's
            # last line per backbone and mode (what a saved study shows) is this study's.
            append_result(self.log, result)
        self.results[trial.index] = result

    def finish(
        self, trial: _Planned, result: BenchmarkResult, model: tf_keras.Model | None = None
    ) -> None:
        self.progress.end(trial, result)
        if self.log is not None:
            try:
                append_result(self.log, result)
                if trial.model_path is not None and result.status == "ok":
                    atomic_write_text(
                        _model_config(trial.model_path),
                        json.dumps({"config_id": result.config_id, "key": list(result.key)}),
                    )
            except OSError as exc:
                raise OutputDirectoryError(
                    f"Could not append to {self.log}: {exc.strerror or exc}. Finished results "
                    "so far are in it; free space or fix permissions, then rerun with "
                    "resume=True to run only what is missing."
                ) from exc
        self.results[trial.index] = result
        if not self.warned_imbalance and result.val_metrics is not None:
            self.warned_imbalance = _warn_if_imbalanced(result, self.settings)
        if self.keep and model is not None:
            self.models[result.key] = model

    def report(self) -> BenchmarkReport:
        report = BenchmarkReport([r for r in self.results if r is not None])
        report.models = self.models
        return report


def _run_study(
    specs: list[Backbone],
    modes: list[Mode],
    data: ImageData,
    settings: StudySettings,
    out: Path | None,
    runtime: _Runtime,
    *,
    resume: bool,
) -> BenchmarkReport:
    """settings -> plan -> in-process or executor -> results log -> report."""
    log = out / RESULTS_FILE if out is not None else None
    previous, latest = _previous_results(log, resume) if log is not None else ({}, {})
    if previous and not data.fingerprint:
        logger.warning(
            "The data has no fingerprint (built by hand, not by load_image_folder or "
            "load_tfds), so resume cannot tell it from other data with the same counts: "
            "the %d logged result(s) are not kept and everything runs again.",
            len(previous),
        )
        previous = {}
    weights = (
        resolve_class_weight("balanced", data.class_names, label_counts(data))
        if settings.class_weight == "balanced"
        else cast(tuple[float, ...] | None, settings.class_weight)
    )
    plan: list[_Planned] = []
    for spec in specs:
        for mode in modes:
            config = _config(spec, mode, data, settings)
            model_path = (
                out / "models" / f"{spec.name}_{mode}.h5" if runtime.save_models and out else None
            )
            plan.append(_Planned(len(plan), spec, mode, config, _config_id(config), model_path))
    collector = _Collector(plan, log, settings, runtime.keep_models)
    todo = []
    for trial in plan:
        kept = previous.get(trial.config_id)
        if kept is not None and (
            trial.model_path is None
            or kept.status != "ok"
            or _saved_model_matches(trial.model_path, trial.config_id)
        ):
            collector.kept(trial, kept, relog=latest.get(kept.key) != kept.config_id)
        else:
            todo.append(trial)
    if runtime.tensorboard is not None:
        write_experiment(runtime.tensorboard)
    if runtime.executor is None:
        _run_in_process(todo, data, settings, runtime, weights, collector)
    else:
        _run_on_executor(todo, data, settings, runtime, weights, collector, runtime.executor)
    report = collector.report()
    if out is not None:
        report.save(out)
    return report


def _run_in_process(
    todo: list[_Planned],
    data: ImageData,
    settings: StudySettings,
    runtime: _Runtime,
    weights: tuple[float, ...] | None,
    collector: _Collector,
) -> None:
    machine = environment()
    # quiet_heap: the collections between backbones skip TensorFlow's own objects.
    with quiet_heap(), tempfile.TemporaryDirectory(prefix="hubtransfer-features-") as spill:
        specs = list(dict.fromkeys(t.spec for t in todo))
        for spec in specs:  # a backbone's modes share a Run
            run = Run(
                spec,
                data,
                settings,
                callbacks=list(runtime.callbacks),
                verbose=runtime.verbose,
                memory_limit_bytes=runtime.memory_limit_bytes,
                spill_dir=Path(spill),
                registry=runtime.registry,
                strategy=runtime.strategy,
                store=runtime.store,
            )
            run.class_weight = None if weights is None else dict(enumerate(weights))
            for trial in (t for t in todo if t.spec == spec):
                collector.progress.start(trial)
                board = (
                    None
                    if runtime.tensorboard is None
                    else TrialBoard(runtime.tensorboard, spec.name, trial.mode)
                )
                run.callbacks = [*runtime.callbacks, *([board] if board else [])]
                result, model = run_trial(
                    run,
                    trial.mode,
                    trial.config,
                    trial.config_id,
                    machine,
                    runtime.measure_latency,
                    trial.model_path,
                    on_seed=None if board is None else board.begin_seed,
                    keep_model=runtime.keep_models,
                )
                collector.finish(trial, result, model)  # logged first: nothing finished is lost
                if board is not None:
                    try:
                        board.finish(result)
                    except Exception as exc:  # a full disk must not cost the result
                        logger.warning(
                            "TensorBoard: could not write %s's summary: %s", trial.spec.name, exc
                        )
                del model
            loaded = run.loaded_backbone
            del run
            if loaded and spec != specs[-1]:  # its graph and weights sit in reference cycles
                gc.collect()


def _run_on_executor(
    todo: list[_Planned],
    data: ImageData,
    settings: StudySettings,
    runtime: _Runtime,
    weights: tuple[float, ...] | None,
    collector: _Collector,
    executor: Executor,
) -> None:
    """Submits every trial; results are logged as they arrive. A trial whose worker
    failed (died, lost) is submitted once more, then recorded ``failed`` with the reason."""
    if data.recipe is None:  # checked up front; kept for the type checker
        raise ConfigurationError("executor= needs data loaded with load_image_folder/load_tfds")
    tasks = {
        trial.index: TrialTask(
            spec=trial.spec,
            mode=trial.mode,
            settings=settings,
            config=trial.config,
            config_id=trial.config_id,
            recipe=data.recipe,
            fingerprint=data.fingerprint,
            class_weight=weights,
            measure_latency=runtime.measure_latency,
            model_path=None if trial.model_path is None else str(trial.model_path),
            memory_limit_bytes=runtime.memory_limit_bytes,
            store=None if runtime.store is None else str(runtime.store.directory),
        )
        for trial in todo
    }
    pending: dict[Future[BenchmarkResult], tuple[_Planned, int]] = {}
    for trial in todo:
        collector.progress.start(trial)
        pending[executor.submit(run_task, tasks[trial.index])] = (trial, 1)
    broken: list[_Planned] = []
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                trial, attempt = pending.pop(future)
                try:
                    result = future.result()
                except BrokenExecutor as exc:  # the pool itself is gone: nothing more runs
                    logger.warning("%s: %s", collector.progress.label(trial), exc)
                    broken.append(trial)
                    continue
                except Exception as exc:  # the worker died or the task could not run
                    failure = _retry(executor, tasks[trial.index], trial, attempt, exc, pending)
                    if failure is None:
                        continue
                    result = failure
                collector.finish(trial, result)
    finally:
        for future in pending:
            future.cancel()
    if broken:
        names = ", ".join(f"{t.spec.name}/{t.mode}" for t in broken)
        raise BenchmarkError(
            f"The executor broke (a worker process died, e.g. out of memory), so {len(broken)} "
            f"trial(s) did not run: {names}. Every finished result is in the results log; "
            "rerun with resume=True (a new executor) to run only these."
        )


def _retry(
    executor: Executor,
    task: TrialTask,
    trial: _Planned,
    attempt: int,
    error: BaseException,
    pending: dict[Future[BenchmarkResult], tuple[_Planned, int]],
) -> BenchmarkResult | None:
    """Submits a failed trial once more (None: it is pending again), else its failure."""
    if attempt == 1:
        logger.warning(
            "The worker running %s/%s failed (%s: %s); trying once more",
            trial.spec.name,
            trial.mode,
            type(error).__name__,
            error,
        )
        try:
            pending[executor.submit(run_task, task)] = (trial, 2)
            return None
        except Exception as exc:  # e.g. a broken process pool
            error = exc
    return _worker_failure(trial, error, attempt)


def _worker_failure(trial: _Planned, error: BaseException, attempts: int) -> BenchmarkResult:
    return BenchmarkResult(
        trial.spec.name,
        trial.mode,
        "failed",
        error=f"the worker failed {attempts} time(s): {type(error).__name__}: {error}",
        image_size=trial.spec.image_size,
        handle=trial.spec.handle,
        config=trial.config,
        config_id=trial.config_id,
        seed=int(trial.config.get("seed", 0)),
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


class _Progress:
    """Logs each trial's start and end: i of N, elapsed time and an estimate of what is left.

    The estimate is the mean time of the trials finished so far (resumed ones cost
    nothing) times the trials still to come; with an executor, trials overlap, so it is
    an upper bound.
    """

    def __init__(self, total: int, settings: StudySettings) -> None:
        self.total = total
        self.finished = 0
        first, last = settings.seed, settings.seed + settings.seeds - 1
        self.seeds = f"seed {first}" if first == last else f"seeds {first}-{last}"
        self.began = time.perf_counter()
        self.started: dict[int, float] = {}
        self.durations: list[float] = []

    def label(self, trial: _Planned) -> str:
        return f"Trial {trial.index + 1}/{self.total}: {trial.spec.name} / {trial.mode}"

    def start(self, trial: _Planned) -> None:
        self.started[trial.index] = time.perf_counter()
        logger.info("%s, %s: starting", self.label(trial), self.seeds)

    def end(self, trial: _Planned, result: BenchmarkResult) -> None:
        now = time.perf_counter()
        took = now - self.started.get(trial.index, now)
        self.durations.append(took)
        self.finished += 1
        left = self.total - self.finished
        estimate = (
            f"about {_duration(left * sum(self.durations) / len(self.durations))} left"
            if left > 0
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
            "%s: %s in %s, %s; elapsed %s, %s",
            self.label(trial),
            result.status,
            _duration(took),
            score,
            _duration(now - self.began),
            estimate,
        )


def _warn_if_imbalanced(result: BenchmarkResult, settings: StudySettings) -> bool:
    metrics = SplitMetrics.from_dict(result.val_metrics or {})
    if not metrics.is_imbalanced:
        return False
    supports = ", ".join(f"{c.name} {c.support}" for c in metrics.per_class)
    logger.warning(
        "The classes are imbalanced: validation has %s (largest %.1fx the smallest, over %gx). "
        "Plain accuracy rewards always answering the majority class; results are ranked by "
        "balanced accuracy.%s",
        supports,
        metrics.imbalance,
        IMBALANCE_RATIO,
        ""
        if settings.class_weight
        else " Consider class_weight='balanced' (CLI: --class-weight balanced).",
    )
    return True
