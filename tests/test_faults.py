"""Faults on purpose: torn and junk logs, concurrent writers, bad output folders, bad
arguments. Each must end in a hubtransfer error or a kept result, never a raw exception
or a lost result."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hubtransfer as ht
from conftest import save_tiny_tf2
from hubtransfer._fs import atomic_write_text, exclusive_lock, write_directory
from hubtransfer.records import BenchmarkResult
from hubtransfer.registry import Backbone
from hubtransfer.storage import RESULTS_FILE, append_result, read_results
from images import write_colour_folder

SIZE = 16


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    path = save_tiny_tf2(tmp_path_factory.mktemp("faults") / "tiny", SIZE)
    return Backbone("tiny_f", str(path), SIZE, 8, "tf2", True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ht.ImageData:
    root = tmp_path_factory.mktemp("faults_data")
    write_colour_folder(root, per_class=12, size=(20, 20))
    return ht.load_image_folder(root, validation_fraction=0.25, seed=0)


def _result(name: str) -> BenchmarkResult:
    return BenchmarkResult(name, "frozen", "ok", best_val_accuracy=0.75, config_id=name)


# --- the results log -------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        b'{"backbone": "torn", "mode": "fro',  # killed inside the write
        b"\x00" * 4096,  # a power loss leaves a block of NULs
        b"null",
        b"42",
        b"[1, 2]",
        b"\xff\xfe not utf-8",
        b'{"backbone": "x", "mode": "frozen", "status": "ok", "history": [7]}',
        b'{"backbone": "x", "mode": "sideways", "status": "ok"}',
    ],
)
def test_log_survives_junk_tail(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / RESULTS_FILE
    append_result(log, _result("first"))
    with log.open("ab") as handle:
        handle.write(tail)  # no newline: the next append must not glue onto it
    append_result(log, _result("second"))
    with caplog.at_level(logging.WARNING, logger="hubtransfer"):
        results = read_results(log)
    assert [r.backbone for r in results] == ["first", "second"]
    assert "skipped 1 line(s) that are not results (line 2)" in caplog.text
    report = ht.BenchmarkReport.load(tmp_path)
    assert [r.backbone for r in report.results] == ["first", "second"]


@pytest.mark.parametrize(
    "content",
    [b"{}", b"null", b'{"a": 1}', b"[1, 2]", b"\xff\xfe", b'[{"backbone": 3}]', b"[[]]"],
)
def test_malformed_results_json_is_a_benchmark_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "results.json").write_bytes(content)
    with pytest.raises(ht.BenchmarkError, match=r"results.json is not a saved hubtransfer study"):
        ht.BenchmarkReport.load(tmp_path)


def test_unreadable_log_is_a_benchmark_error(tmp_path: Path) -> None:
    (tmp_path / RESULTS_FILE).mkdir()
    with pytest.raises(ht.BenchmarkError, match="Cannot read the results log"):
        ht.BenchmarkReport.load(tmp_path)


@pytest.mark.slow  # starts a process or builds a real architecture
def test_concurrent_saves_never_corrupt(tmp_path: Path) -> None:
    report = ht.BenchmarkReport([_result(f"b{i}") for i in range(50)])
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_save_many, [(str(tmp_path), report.to_records())] * 4)
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert [r["backbone"] for r in loaded] == [f"b{i}" for i in range(50)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _save_many(args: tuple[str, list[dict[str, object]]]) -> None:
    directory, records = args
    report = ht.BenchmarkReport([BenchmarkResult.from_dict(r) for r in records])
    for _ in range(20):
        report.save(directory)


def test_atomic_write_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "x", "text")
    assert os.listdir(tmp_path) == ["x"]


def test_write_directory_keeps_what_it_did_not_create(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")

    def fill(d: Path) -> None:
        (d / "model.bin").write_bytes(b"m")

    for overwrite in (False, True):
        with pytest.raises(ht.HubTransferError, match="holds files hubtransfer did not write"):
            write_directory(user, "model", fill, overwrite=overwrite)
    assert (user / "thesis.tex").read_text() == "years of work"
    target = write_directory(tmp_path / "out", "model", fill)
    with pytest.raises(ht.HubTransferError, match="Pass overwrite=True"):
        write_directory(target, "model", fill)
    with pytest.raises(ht.HubTransferError, match="holds files hubtransfer did not write as a"):
        write_directory(target, "other kind", fill, overwrite=True)
    write_directory(target, "model", fill, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out"]


# --- benchmark(): resume, output folders, locks ---------------------------------------


def test_torn_log_then_resume_keeps_old_and_new(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    kwargs = {"epochs": 1, "measure_latency": False, "output_dir": tmp_path}
    first = ht.benchmark(spec, data, **kwargs).results[0]  # type: ignore[arg-type]
    with (tmp_path / RESULTS_FILE).open("ab") as handle:
        handle.write(b'{"backbone": "tiny_f", "mo')  # a kill mid-write of a later result
    both = ht.benchmark(spec, data, fine_tune="both", **kwargs)  # type: ignore[arg-type]
    assert both.get("tiny_f", "frozen") == first  # kept, not retrained
    logged = read_results(tmp_path / RESULTS_FILE)
    assert [r.key for r in logged] == [("tiny_f", "frozen"), ("tiny_f", "fine_tuned")]
    again = ht.benchmark(spec, data, fine_tune="both", **kwargs)  # type: ignore[arg-type]
    assert again.results == both.results  # everything kept, nothing retrained


def test_resume_false_twice_keeps_every_old_log(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    kwargs = {"epochs": 1, "measure_latency": False, "output_dir": tmp_path, "resume": False}
    for _ in range(3):
        ht.benchmark(spec, data, **kwargs)  # type: ignore[arg-type]
    logs = sorted(p.name for p in tmp_path.glob("results*.jsonl"))
    assert len(logs) == 3 and RESULTS_FILE in logs
    assert all(len(read_results(tmp_path / name)) == 1 for name in logs)


def test_missing_saved_model_is_run_again(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    kwargs = {"epochs": 1, "measure_latency": False, "output_dir": tmp_path, "save_models": True}
    ht.benchmark(spec, data, **kwargs)  # type: ignore[arg-type]
    model = tmp_path / "models" / "tiny_f_frozen.h5"
    assert model.stat().st_size > 1000
    model.unlink()
    ht.benchmark(spec, data, **kwargs)  # type: ignore[arg-type]
    assert model.exists()
    assert len(read_results(tmp_path / RESULTS_FILE)) == 2


@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_bad_output_dir_fails_before_training(
    spec: Backbone, data: ht.ImageData, tmp_path: Path, where: str
) -> None:
    if where == "file":
        out = tmp_path / "results.txt"
        out.write_text("not a folder")
        message = "output_dir .*results.txt is a file; it must be a directory"
    else:  # root ignores permission bits; /proc refuses new directories even to root
        out = Path("/proc/hubtransfer-test/results")
        message = "output_dir /proc/hubtransfer-test/results is not writable"
    broken = Backbone("never_loaded", str(tmp_path / "no-such-model"), SIZE, 8, "tf2", True)
    with pytest.raises(ht.OutputDirectoryError, match=message):
        ht.benchmark(broken, data, output_dir=out)  # the model would fail to load: not reached


@pytest.mark.slow  # starts a process or builds a real architecture
def test_second_study_on_one_folder_is_refused(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from hubtransfer._fs import exclusive_lock
        with exclusive_lock(Path({str(tmp_path)!r}), "output_dir"):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(ht.OutputDirectoryError, match=r"is in use by process \d+"),
            exclusive_lock(tmp_path, "output_dir"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(tmp_path, "output_dir"):  # a killed holder leaves no stale lock
        pass


# --- arguments, all checked before any work -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, r"epochs must be a positive integer. Received: epochs=0"),
        ({"batch_size": 1.5}, r"batch_size must be a positive integer. Received: batch_size=1.5"),
        ({"seeds": True}, r"seeds must be a positive integer"),
        ({"warmup_epochs": -1}, r"warmup_epochs must be an integer >= 0"),
        ({"fine_tune": "yes"}, r"fine_tune must be False, True or 'both'"),
        ({"optimizer": "adagrad"}, r"optimizer must be one of 'adam', 'adamw', 'sgd', 'rmsprop'"),
        ({"learning_rate": 0}, r"learning_rate must be a finite number > 0, e.g. 1e-3"),
        ({"learning_rate": float("nan")}, r"learning_rate must be a finite number > 0"),
        ({"fine_tune_learning_rate": -1.0}, r"fine_tune_learning_rate must be a finite number"),
        ({"head": {"dropout": 0.5}}, r"head must be a hubtransfer.Head, e.g. Head\("),
        ({"export": "int8"}, r"export must be a sequence of TFLite modes"),
        ({"export": ["int4"]}, r"export must be a sequence of TFLite modes"),
        ({"callbacks": ["early"]}, r"callbacks must be a list of tf_keras.callbacks.Callback"),
        ({"verbose": 3}, r"verbose must be one of 0, 1, 2"),
        ({"mixed_precision": "fp8"}, r"mixed_precision must be one of"),
        ({"resume": "yes"}, r"resume must be True or False"),
        (
            {"save_models": True},
            r"save_models=True writes each model to output_dir/models/.*"
            r"Pass output_dir=",
        ),
        ({"memory_limit_bytes": -5}, r"memory_limit_bytes must be an integer >= 0"),
    ],
)
def test_every_argument_is_checked_before_any_work(
    data: ht.ImageData, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    # A backbone that cannot load: if any work started, the run would be recorded failed.
    broken = Backbone("never_loaded", str(tmp_path / "no-such-model"), SIZE, 8, "tf2", True)
    with pytest.raises(ht.ConfigurationError, match=message):
        ht.benchmark(broken, data, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../evil", "a/b", "", " lead", "new\nline", "x" * 200])
def test_backbone_names_must_be_file_name_safe(name: str) -> None:
    with pytest.raises(ht.ConfigurationError, match="Backbone name must be letters, digits"):
        Backbone(name, "/models/x", 16, 8, "tf2", True)


def test_decompression_bomb_is_skipped_with_its_reason(tmp_path: Path) -> None:
    from photos import write_png_header_only

    write_colour_folder(tmp_path, per_class=4, size=(20, 20))
    first = sorted(p for p in tmp_path.iterdir() if p.is_dir())[0]
    bomb = write_png_header_only(first / "bomb.png", 20000, 20000)  # 400 MP claimed, 100 B
    data = ht.load_image_folder(tmp_path, validation_fraction=0.25)
    assert str(bomb) in data.counts.skipped_files
    assert (str(bomb), "over the pixel cap (20000 x 20000)") in data.counts.skip_reasons or (
        dict(data.counts.skip_reasons)[str(bomb)].startswith("over the pixel cap (> ")
    )
    assert str(bomb) not in data.train_files + data.validation_files


def test_resume_after_another_configuration_shows_this_one(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    """X, then Y, then X again: X is kept (not retrained) and the saved study shows X."""
    x = {"epochs": 1, "measure_latency": False, "output_dir": tmp_path, "save_models": True}
    y = {**x, "learning_rate": 5e-2}
    first = ht.benchmark(spec, data, **x).results[0]  # type: ignore[arg-type]
    ht.benchmark(spec, data, **y)  # type: ignore[arg-type]
    model = tmp_path / "models" / "tiny_f_frozen.h5"
    assert json.loads(model.with_suffix(".json").read_text())["config_id"] != first.config_id
    again = ht.benchmark(spec, data, **x).results[0]  # type: ignore[arg-type]
    # The saved model was Y's: X is trained again so that the model matches the record.
    assert again.config_id == first.config_id and again.train_seconds != first.train_seconds
    assert ht.BenchmarkReport.load(tmp_path).results[0].config_id == first.config_id
    assert json.loads(model.with_suffix(".json").read_text())["config_id"] == first.config_id
    kept = ht.benchmark(spec, data, **x).results[0]  # type: ignore[arg-type]
    assert kept == again  # now kept: record and model agree


def test_output_dir_with_a_users_results_files_is_refused(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    (tmp_path / "results.csv").write_text("my,own,spreadsheet\n")
    with pytest.raises(ht.OutputDirectoryError, match="already holds results.csv, which no"):
        ht.benchmark(spec, data, output_dir=tmp_path, epochs=1)
    assert (tmp_path / "results.csv").read_text() == "my,own,spreadsheet\n"


def test_a_broken_executor_stops_with_the_missing_trials_named(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    from concurrent.futures import BrokenExecutor, Future, ThreadPoolExecutor

    class Broken(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            future: Future[object] = Future()
            future.set_exception(BrokenExecutor("a worker died"))
            return future

    with Broken(1) as pool, pytest.raises(ht.BenchmarkError, match=r"1 trial\(s\) did not run"):
        ht.benchmark(spec, data, executor=pool, output_dir=tmp_path, epochs=1)
    assert not (tmp_path / RESULTS_FILE).exists() or not read_results(tmp_path / RESULTS_FILE)


def test_resume_does_not_keep_results_for_data_without_a_fingerprint(
    spec: Backbone, data: ht.ImageData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handmade = ht.ImageData(data.train, data.validation, data.class_names, data.counts)
    kwargs = {"epochs": 1, "measure_latency": False, "output_dir": tmp_path}
    first = ht.benchmark(spec, handmade, **kwargs).results[0]  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="hubtransfer"):
        second = ht.benchmark(spec, handmade, **kwargs).results[0]  # type: ignore[arg-type]
    assert "has no fingerprint" in caplog.text
    assert second != first and len(read_results(tmp_path / RESULTS_FILE)) == 2
