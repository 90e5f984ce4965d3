"""A study's trials on other processes or machines, through any ``concurrent.futures``
executor: a spawn ``ProcessPoolExecutor``, or a Dask client's ``get_executor()`` (a
``LocalCluster``, SLURM/PBS through dask-jobqueue, Kubernetes, one GPU per worker with
dask-cuda).

A :class:`TrialTask` is self-contained and picklable: the backbone spec, the validated
settings, and a :class:`hubtransfer.data.DataRecipe` the worker loads the data again
from (checked against the driver's fingerprint). TensorFlow is imported inside the
worker, never in a process forked after TensorFlow started. Workers return a
:class:`BenchmarkResult`; only the driver writes the results log. Workers that share a
filesystem share frozen features through the feature store.

This module does not import TensorFlow at import time.
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtransfer._heap import quiet_heap
from hubtransfer.errors import ConfigurationError, DatasetError, MissingDependencyError
from hubtransfer.records import BenchmarkResult, Mode
from hubtransfer.registry import Backbone
from hubtransfer.settings import StudySettings

if TYPE_CHECKING:
    from hubtransfer.data import DataRecipe, ImageData

__all__ = ["TrialTask", "check_executor", "dask_executor", "local_executor", "run_task"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialTask:
    """One trial (a backbone in one mode, all its seeds), as a worker receives it.

    Attributes:
        spec: The backbone (its handle must be reachable from the worker).
        mode: ``"frozen"`` or ``"fine_tuned"``.
        settings: The study's settings, validated by the driver.
        config: The configuration record the result carries (resume compares it).
        config_id: Its short hash.
        recipe: How the worker loads the data again.
        fingerprint: The driver's data fingerprint; the worker's must match.
        class_weight: One weight per class index, or None.
        measure_latency: Whether to time inference.
        model_path: Where the worker saves the kept model (``save_models``), or None.
        memory_limit_bytes: Cached features past this size spill to disk.
        store: The feature store directory shared by the workers, or None.
    """

    spec: Backbone
    mode: Mode
    settings: StudySettings
    config: dict[str, Any]
    config_id: str
    recipe: DataRecipe
    fingerprint: str
    class_weight: tuple[float, ...] | None
    measure_latency: bool
    model_path: str | None
    memory_limit_bytes: int
    store: str | None


# Data loaded in this worker process, by fingerprint: a worker running several trials
# of one study loads (and decodes) its data once.
_LOADED: dict[str, ImageData] = {}


def _data(recipe: DataRecipe, fingerprint: str) -> ImageData:
    if fingerprint not in _LOADED:
        data = recipe.load()
        if data.fingerprint != fingerprint:
            raise DatasetError(
                f"The data changed since the study started ({recipe.loader} "
                f"{dict(recipe.arguments).get('path') or dict(recipe.arguments).get('name')}): "
                "this worker sees other files, sizes or modification times than the driver. "
                "Give every worker the same data (a shared filesystem), and rerun."
            )
        _LOADED.clear()  # one study's data at a time
        _LOADED[fingerprint] = data
    return _LOADED[fingerprint]


def run_task(task: TrialTask) -> BenchmarkResult:
    """Runs one trial in this process and returns its result (never writes the log)."""
    from hubtransfer.store import FeatureStore
    from hubtransfer.trial import Run, environment, run_trial

    data = _data(task.recipe, task.fingerprint)
    # quiet_heap: the collection after the trial skips TensorFlow's own objects.
    with quiet_heap(), tempfile.TemporaryDirectory(prefix="hubtransfer-features-") as spill:
        run = Run(
            task.spec,
            data,
            task.settings,
            callbacks=[],
            verbose=0,
            memory_limit_bytes=task.memory_limit_bytes,
            spill_dir=Path(spill),
            registry=None,
            store=None if task.store is None else FeatureStore(task.store),
        )
        run.class_weight = None if task.class_weight is None else dict(enumerate(task.class_weight))
        result, model = run_trial(
            run,
            task.mode,
            task.config,
            task.config_id,
            environment(),
            task.measure_latency,
            None if task.model_path is None else Path(task.model_path),
        )
        loaded = run.loaded_backbone
        del model, run
        if loaded:  # a backbone's graph and weights sit in reference cycles
            gc.collect()
    return result


def check_executor(executor: object) -> Executor:
    """``executor`` if it can run trials: a ``concurrent.futures.Executor`` that does not
    fork a process after TensorFlow started."""
    if not isinstance(executor, Executor):
        raise ConfigurationError(
            "executor must be a concurrent.futures.Executor, e.g. "
            "ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn')) or a Dask "
            f"client's client.get_executor(). Received: executor={executor!r}."
        )
    context = getattr(executor, "_mp_context", None)  # ProcessPoolExecutor's start method
    if (
        isinstance(executor, ProcessPoolExecutor)
        and context is not None
        and context.get_start_method() == "fork"
    ):
        raise ConfigurationError(
            "A ProcessPoolExecutor that forks can hang: TensorFlow does not survive a "
            "fork after it started. Create it with "
            "mp_context=multiprocessing.get_context('spawn') (or 'forkserver')."
        )
    return executor


def _limit_threads(threads: int) -> None:
    # Runs first in each spawned worker: workers sharing a machine split its cores.
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TensorFlow already ran here (the main module started it)
        logger.warning(
            "Could not limit this worker to %d thread(s): TensorFlow was already running "
            "in it. Keep a script's work under `if __name__ == '__main__':` so spawned "
            "workers do not run it.",
            threads,
        )


def local_executor(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes on this machine, each with its share of the cores."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_limit_threads,
        initargs=(threads,),
    )


def dask_executor(address: str) -> tuple[Any, Executor]:
    """``(client, executor)`` for the Dask scheduler at ``address``; close the client after.

    Raises:
        MissingDependencyError: ``distributed`` is not installed.
    """
    try:
        distributed: Any = importlib.import_module("distributed")
    except ImportError as exc:
        raise MissingDependencyError(
            "A Dask scheduler needs the distributed package, which is not installed. "
            "Install it with `pip install 'hubtransfer[dask]'`, or use --workers N for "
            "processes on this machine."
        ) from exc
    client = distributed.Client(address)
    executor: Executor = client.get_executor()
    return client, executor
