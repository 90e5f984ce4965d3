"""A study on other processes (spawn pool) and on a Dask LocalCluster: the same numbers as
in-process, the driver alone logging, a killed worker's trial redone, resume after the
driver is killed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import hubtransfer as ht
from conftest import save_tiny_tf2
from hubtransfer.fanout import local_executor
from hubtransfer.registry import Backbone
from hubtransfer.storage import RESULTS_FILE, read_results
from images import write_colour_folder

SIZE = 16


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[Backbone]:
    root = tmp_path_factory.mktemp("fan_models")
    return [
        Backbone(f"fan_{i}", str(save_tiny_tf2(root / f"m{i}", SIZE, seed=i)), SIZE, 8, "tf2", True)
        for i in range(2)
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ht.ImageData:
    root = tmp_path_factory.mktemp("fan_data")
    write_colour_folder(root, per_class=16, size=(20, 20))
    return ht.load_image_folder(root, validation_fraction=0.25, test_fraction=0.25, seed=0)


KWARGS = {
    "epochs": 2,
    "seeds": 2,
    "fine_tune": "both",
    "warmup_epochs": 1,
    "measure_latency": False,
    "learning_rate": 1e-2,
}


def _numbers(report: ht.BenchmarkReport) -> list[tuple[object, ...]]:
    return [
        (
            r.backbone,
            r.mode,
            r.status,
            r.selected_epoch,
            r.val_accuracy,
            r.test_accuracy,
            tuple((s.seed, s.val_accuracy, s.best_val_accuracy) for s in r.per_seed),
        )
        for r in report.results
    ]


# --- up-front checks (fast) -------------------------------------------------------------


def test_executor_arguments_are_checked(specs: list[Backbone], data: ht.ImageData) -> None:
    import tf_keras

    with ThreadPoolExecutor(1) as pool:
        for kwargs, message in [
            ({"keep_models": True}, "keep_models=True .models stay on the workers"),
            ({"callbacks": [tf_keras.callbacks.History()]}, "callbacks .they stay in this"),
        ]:
            with pytest.raises(ht.ConfigurationError, match=message):
                ht.benchmark(specs[0], data, executor=pool, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ht.ConfigurationError, match="executor must be a concurrent.futures"):
        ht.benchmark(specs[0], data, executor="dask")  # type: ignore[arg-type]
    forking = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with forking, pytest.raises(ht.ConfigurationError, match="get_context.'spawn'"):
        ht.benchmark(specs[0], data, executor=forking)
    handmade = ht.ImageData(data.train, data.validation, data.class_names, data.counts)
    with ThreadPoolExecutor(1) as pool, pytest.raises(ht.ConfigurationError, match="recipe"):
        ht.benchmark(specs[0], handmade, executor=pool)


def test_thread_executor_gives_the_in_process_numbers(
    specs: list[Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    inline = ht.benchmark(specs, data, **KWARGS)  # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool:
        fanned = ht.benchmark(specs, data, executor=pool, output_dir=tmp_path, **KWARGS)  # type: ignore[arg-type]
    assert _numbers(fanned) == _numbers(inline)
    assert [r.key for r in read_results(tmp_path / RESULTS_FILE)] == [r.key for r in inline]


class _Broken(ThreadPoolExecutor):
    """An executor whose first task for fan_0 dies, as a killed worker's would."""

    def __init__(self) -> None:
        super().__init__(1)
        self.failed: set[str] = set()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        name = args[0].spec.name
        if name == "fan_0" and name not in self.failed:
            self.failed.add(name)
            future = super().submit(_die)
            return future
        return super().submit(fn, *args, **kwargs)


def _die() -> None:
    raise ConnectionResetError("worker lost")


def test_a_failed_worker_is_retried_once(specs: list[Backbone], data: ht.ImageData) -> None:
    kwargs = {**KWARGS, "fine_tune": False, "seeds": 1}
    with _Broken() as pool:
        report = ht.benchmark(specs, data, executor=pool, **kwargs)  # type: ignore[arg-type]
    assert [r.status for r in report.results] == ["ok", "ok"]
    assert pool.failed == {"fan_0"}


# --- real processes and a Dask cluster (slow: workers import TensorFlow) -------------------


@pytest.mark.slow
def test_spawn_pool_gives_the_in_process_numbers(
    specs: list[Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    inline = ht.benchmark(specs, data, **KWARGS)  # type: ignore[arg-type]
    with local_executor(2) as pool:
        fanned = ht.benchmark(
            specs, data, executor=pool, output_dir=tmp_path, save_models=True, **KWARGS
        )  # type: ignore[arg-type]
    assert _numbers(fanned) == _numbers(inline)
    assert sorted(p.name for p in (tmp_path / "models").glob("*.h5")) == [
        "fan_0_fine_tuned.h5",
        "fan_0_frozen.h5",
        "fan_1_fine_tuned.h5",
        "fan_1_frozen.h5",
    ]


@pytest.mark.slow
def test_dask_cluster_gives_the_in_process_numbers_and_survives_a_killed_worker(
    specs: list[Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    inline = ht.benchmark(specs, data, **KWARGS)  # type: ignore[arg-type]
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        killed: list[int] = []

        def kill_one_busy_worker() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(3)  # well inside the trial: TensorFlow imported, data loading
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.2)

        killer = threading.Thread(target=kill_one_busy_worker)
        killer.start()
        fanned = ht.benchmark(
            specs, data, executor=client.get_executor(), output_dir=tmp_path, **KWARGS
        )  # type: ignore[arg-type]
        killer.join()
    assert killed, "no worker was busy to kill"
    assert _numbers(fanned) == _numbers(inline)
    assert len(read_results(tmp_path / RESULTS_FILE)) == 4


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(
    specs: list[Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    folder = data.source
    handles = [s.handle for s in specs]
    script = textwrap.dedent(
        f"""
        import sys
        import hubtransfer as ht
        from hubtransfer.fanout import local_executor
        from hubtransfer.registry import Backbone
        if __name__ == "__main__":  # spawned workers import this module: no work above
            specs = [Backbone(f"fan_{{i}}", h, {SIZE}, 8, "tf2", True)
                     for i, h in enumerate({handles!r})]
            data = ht.load_image_folder({folder!r}, validation_fraction=0.25,
                                        test_fraction=0.25)
            with local_executor(1) as pool:
                ht.benchmark(specs, data, executor=pool, output_dir={str(tmp_path)!r},
                             epochs=2, measure_latency=False, fine_tune="both")
        """
    )
    (tmp_path / "driver.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py")], env=env, start_new_session=True
    )
    log = tmp_path / RESULTS_FILE
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (log.exists() and read_results(log)):
            time.sleep(0.5)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers
    finally:
        driver.wait()
    done = read_results(log)
    assert 1 <= len(done) < 4
    resumed = ht.benchmark(
        specs, data, output_dir=tmp_path, epochs=2, measure_latency=False, fine_tune="both"
    )
    assert [r.key for r in resumed.results] == [
        ("fan_0", "frozen"),
        ("fan_0", "fine_tuned"),
        ("fan_1", "frozen"),
        ("fan_1", "fine_tuned"),
    ]
    for kept in done:
        assert resumed.get(*kept.key) == kept  # not trained again
    assert len(read_results(log)) == 4
