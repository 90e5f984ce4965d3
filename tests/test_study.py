from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import hubtransfer as ht
from conftest import TINY_DIM, save_tiny_tf1, save_tiny_tf2
from hubtransfer.features import extract_features
from hubtransfer.registry import Backbone
from hubtransfer.storage import read_results
from images import write_colour_folder

SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Backbone]:
    root = tmp_path_factory.mktemp("study_models")
    return {
        "tf2": Backbone("tiny_a", str(save_tiny_tf2(root / "a", SIZE)), SIZE, 8, "tf2", True),
        "tf2_b": Backbone(
            "tiny_b", str(save_tiny_tf2(root / "b", SIZE, seed=1)), SIZE, 8, "tf2", True
        ),
        "tf1": Backbone("tiny_tf1", str(save_tiny_tf1(root / "t1", SIZE)), SIZE, 8, "tf1", False),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ht.ImageData:
    root = tmp_path_factory.mktemp("colours")
    write_colour_folder(root, per_class=48, size=(40, 48))
    return ht.load_image_folder(root, validation_fraction=0.25, seed=0)


def test_study_with_both_modes(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    report = ht.benchmark(
        [models["tf2"], models["tf1"]],
        data,
        epochs=4,
        fine_tune="both",
        warmup_epochs=1,
        output_dir=tmp_path,
        learning_rate=1e-2,
    )
    keys = [r.key for r in report.results]
    assert keys == [
        ("tiny_a", "frozen"),
        ("tiny_a", "fine_tuned"),
        ("tiny_tf1", "frozen"),
        ("tiny_tf1", "fine_tuned"),
    ]
    frozen = report.get("tiny_a", "frozen")
    assert frozen.status == "ok" and frozen.best_val_accuracy is not None
    assert frozen.best_val_accuracy >= 0.8  # chance is 0.5
    assert [h.phase for h in frozen.history] == ["head"] * 4
    assert frozen.feature_seconds is not None and frozen.head_seconds is not None
    assert frozen.train_seconds == pytest.approx(frozen.feature_seconds + frozen.head_seconds)
    assert frozen.model_bytes and frozen.model_bytes > 0
    assert (
        frozen.params_total
        and frozen.params_trainable
        and frozen.params_trainable < frozen.params_total
    )
    assert (
        frozen.latency_ms and frozen.latency_ms > 0 and frozen.throughput and frozen.throughput > 0
    )
    assert frozen.environment["tensorflow"] == tf.__version__ and frozen.environment["device"]
    assert frozen.environment["pillow"] == __import__("PIL").__version__  # decoded the folder
    tuned = report.get("tiny_a", "fine_tuned")
    assert tuned.status == "ok"
    assert [h.phase for h in tuned.history] == ["warmup"] + ["fine_tune"] * 4
    assert tuned.params_trainable == tuned.params_total - 16  # BN moving stats stay frozen
    skipped = report.get("tiny_tf1", "fine_tuned")
    assert skipped.status == "skipped" and "TF1 Hub module" in (skipped.error or "")
    assert report.get("tiny_tf1", "frozen").status == "ok"

    logged = read_results(tmp_path / "results.jsonl")
    assert [r.key for r in logged] == keys
    assert {"results.json", "results.csv", "results.md"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "results.json").read_text())[0]["backbone"] == "tiny_a"
    table = report.to_markdown()
    assert "| tiny_a | frozen | ok |" in table and "tiny_tf1 / fine_tuned skipped" in table


def test_cached_model_is_the_full_classifier(
    models: dict[str, Backbone], data: ht.ImageData
) -> None:
    report = ht.benchmark(
        models["tf2"],
        data,
        epochs=3,
        keep_models=True,
        measure_latency=False,
        fine_tune="both",
        warmup_epochs=0,
    )
    result = report.results[0]
    model = report.models[result.key]
    assert model.get_layer("backbone") is not None
    _, accuracy = model.evaluate(ht.prepare(data.validation, models["tf2"]), verbose=0)
    assert accuracy == pytest.approx(result.final_val_accuracy, abs=1e-6)
    # Each model's train step was traced once: its optimizer's slots were made before
    # training (else the first step traces it twice).
    head = model.get_layer("head")
    assert head.train_function.experimental_get_tracing_count() == 1
    tuned = report.models[report.results[1].key]
    assert report.results[1].mode == "fine_tuned"
    assert tuned.train_function.experimental_get_tracing_count() == 1


def test_cached_and_uncached_agree(models: dict[str, Backbone], data: ht.ImageData) -> None:
    kwargs = {"epochs": 5, "measure_latency": False, "learning_rate": 1e-2}
    cached = ht.benchmark(models["tf2"], data, cache_features=True, **kwargs).results[0]
    uncached = ht.benchmark(models["tf2"], data, cache_features=False, **kwargs).results[0]
    assert uncached.feature_seconds is None and cached.feature_seconds is not None
    assert cached.best_val_accuracy is not None and uncached.best_val_accuracy is not None
    assert min(cached.best_val_accuracy, uncached.best_val_accuracy) >= 0.8
    assert abs(cached.best_val_accuracy - uncached.best_val_accuracy) <= 0.15


def test_failures_are_isolated(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    missing = Backbone("missing", str(tmp_path / "nope"), SIZE, 8, "tf2", True)
    nan_dir = tmp_path / "nan_model"

    class NaNBackbone(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, images: tf.Tensor) -> tf.Tensor:
            return tf.math.log(-tf.reduce_mean(images, axis=[1, 2]) - 1.0)  # NaN features

    tf.saved_model.save(NaNBackbone(), str(nan_dir))
    nan = Backbone("nan", str(nan_dir), SIZE, 3, "tf2", True)
    report = ht.benchmark([missing, nan, models["tf2"]], data, epochs=2, measure_latency=False)
    statuses = {r.backbone: (r.status, r.error or "") for r in report.results}
    assert statuses["missing"][0] == "failed" and "BackboneLoadError" in statuses["missing"][1]
    assert statuses["nan"][0] == "failed" and "loss became nan" in statuses["nan"][1]
    assert statuses["tiny_a"][0] == "ok"
    assert "missing / frozen failed" in report.to_markdown()


def test_resume_keeps_finished_results(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    class Crash(tf_keras.callbacks.Callback):  # simulates Ctrl-C in the second backbone
        calls = 0

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            Crash.calls += 1
            if Crash.calls > 2:
                raise KeyboardInterrupt

    specs = [models["tf2"], models["tf2_b"]]
    with pytest.raises(KeyboardInterrupt):
        ht.benchmark(
            specs, data, epochs=2, output_dir=tmp_path, callbacks=[Crash()], measure_latency=False
        )
    first = read_results(tmp_path / "results.jsonl")
    assert [r.backbone for r in first] == ["tiny_a"]
    report = ht.benchmark(specs, data, epochs=2, output_dir=tmp_path, measure_latency=False)
    assert report.results[0] == first[0]  # kept untouched, not rerun
    assert report.results[1].backbone == "tiny_b" and report.results[1].status == "ok"
    assert len(read_results(tmp_path / "results.jsonl")) == 2
    # A different configuration is not a match: everything runs again.
    again = ht.benchmark(specs, data, epochs=3, output_dir=tmp_path, measure_latency=False)
    assert all(len(r.history) == 3 for r in again.results)


def test_resume_false_moves_old_log_aside(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    ht.benchmark(models["tf2"], data, epochs=1, output_dir=tmp_path, measure_latency=False)
    ht.benchmark(
        models["tf2"], data, epochs=1, output_dir=tmp_path, resume=False, measure_latency=False
    )
    assert len(read_results(tmp_path / "results.jsonl")) == 1
    assert len(list(tmp_path.glob("results-*.jsonl"))) == 1


@pytest.mark.slow  # starts a process or builds a real architecture
def test_sigkill_mid_study_loses_no_finished_result(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import tf_keras, hubtransfer as ht
        from hubtransfer.registry import Backbone
        data = ht.load_image_folder({str(Path(data.source))!r}, validation_fraction=0.25)
        specs = [Backbone("tiny_a", {models["tf2"].handle!r}, {SIZE}, 8, "tf2", True),
                 Backbone("tiny_b", {models["tf2_b"].handle!r}, {SIZE}, 8, "tf2", True)]
        class Kill(tf_keras.callbacks.Callback):
            n = 0
            def on_epoch_end(self, epoch, logs=None):
                Kill.n += 1
                if Kill.n > 2:
                    os.kill(os.getpid(), signal.SIGKILL)
        ht.benchmark(specs, data, epochs=2, output_dir={str(tmp_path)!r}, callbacks=[Kill()],
                     measure_latency=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    kept = read_results(tmp_path / "results.jsonl")
    assert [r.backbone for r in kept] == ["tiny_a"] and kept[0].status == "ok"
    specs = [
        Backbone("tiny_a", models["tf2"].handle, SIZE, 8, "tf2", True),
        Backbone("tiny_b", models["tf2_b"].handle, SIZE, 8, "tf2", True),
    ]
    fresh = ht.load_image_folder(data.source, validation_fraction=0.25)
    report = ht.benchmark(specs, fresh, epochs=2, output_dir=tmp_path, measure_latency=False)
    assert report.results[0] == kept[0]
    assert report.results[1].status == "ok"


def test_feature_cache_spills_to_disk_identically(
    models: dict[str, Backbone], data: ht.ImageData
) -> None:
    layer = ht.load_backbone_layer(models["tf2"])
    batches = ht.prepare(data.validation, models["tf2"], batch_size=16)  # a fixed order
    memory = extract_features(layer, batches)
    disk = extract_features(layer, batches, memory_limit_bytes=100)
    assert memory.path is None and disk.path is not None and disk.path.exists()
    np.testing.assert_allclose(np.asarray(disk.features), memory.features, rtol=1e-6)
    np.testing.assert_array_equal(disk.labels, memory.labels)
    from_disk = np.concatenate([x.numpy() for x, _ in disk.dataset(16)])
    np.testing.assert_allclose(from_disk, memory.features, rtol=1e-6)
    shuffled = [y.numpy() for _, y in disk.dataset(16, shuffle=True, seed=1)]
    assert sorted(np.concatenate(shuffled).tolist()) == sorted(memory.labels.tolist())


@pytest.mark.parametrize("fmt", ["tf2", "tf1"])
def test_features_are_the_layers_own_output_for_every_batch_size(
    models: dict[str, Backbone], data: ht.ImageData, fmt: str
) -> None:
    from hubtransfer.features import _saved_inference

    spec = models[fmt]
    layer = ht.load_backbone_layer(spec)
    batches = ht.prepare(data.validation, spec, batch_size=10)  # 24 images: 10, 10, 4
    images = np.concatenate([x.numpy() for x, _ in batches])
    assert len(images) % 10 != 0
    # A TF2 Hub layer runs its SavedModel's inference function, traced for any batch size
    # (no new trace for the last, smaller batch); a TF1 module its own call.
    fast = _saved_inference(layer, tf.constant(images[:10]))
    assert (fast is not None) == (fmt == "tf2")
    features = extract_features(layer, batches).features
    np.testing.assert_array_equal(features, np.asarray(layer(images, training=False)))
    trainable = ht.load_backbone_layer(spec, trainable=True) if fmt == "tf2" else None
    assert trainable is None or _saved_inference(trainable, tf.constant(images[:10])) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, r"epochs must be a positive integer. Received: epochs=0"),
        ({"fine_tune": "yes"}, r"fine_tune must be False, True or 'both'"),
        ({"batch_size": 1.5}, r"batch_size must be a positive integer"),
    ],
)
def test_bad_benchmark_arguments(
    models: dict[str, Backbone], data: ht.ImageData, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ht.ConfigurationError, match=message):
        ht.benchmark(models["tf2"], data, **kwargs)  # type: ignore[arg-type]


def test_benchmark_refuses_data_without_validation(
    models: dict[str, Backbone], tmp_path: Path
) -> None:
    write_colour_folder(tmp_path, per_class=4)
    data = ht.load_image_folder(tmp_path, validation_fraction=0.0)
    with pytest.raises(ht.ConfigurationError, match="no validation examples"):
        ht.benchmark(models["tf2"], data)
    with pytest.raises(ht.UnknownBackboneError):
        ht.benchmark(["not_a_backbone"], data)


def test_report_roundtrip_and_plot(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    report = ht.benchmark(models["tf2"], data, epochs=2, output_dir=tmp_path, measure_latency=False)
    loaded = ht.BenchmarkReport.load(tmp_path)
    assert loaded.results == report.results
    png = report.plot(tmp_path / "study.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with open(tmp_path / "results.csv") as handle:
        header = handle.readline()
    assert header.startswith("backbone,mode,status,best_val_accuracy")


def test_plot_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ht.MissingDependencyError, match=r"pip install 'hubtransfer\[plot\]'"):
        ht.BenchmarkReport().plot(tmp_path / "x.png")


def test_load_of_empty_directory_explains(tmp_path: Path) -> None:
    with pytest.raises(ht.BenchmarkError, match="No saved study in"):
        ht.BenchmarkReport.load(tmp_path)


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    good = ht.BenchmarkResult("a", "frozen", "ok", best_val_accuracy=0.9)
    from hubtransfer.storage import append_result

    append_result(tmp_path / "results.jsonl", good)
    with open(tmp_path / "results.jsonl", "a") as handle:
        handle.write('{"backbone": "b", "mo')
    assert read_results(tmp_path / "results.jsonl") == [good]
    assert os.path.getsize(tmp_path / "results.jsonl") > 0


def test_seeds_reuse_cached_features_and_are_reproducible(
    models: dict[str, Backbone], data: ht.ImageData
) -> None:
    from unittest import mock

    from hubtransfer import trial

    kwargs = {"epochs": 3, "measure_latency": False, "seeds": 3, "seed": 7}
    with mock.patch.object(trial, "extract_features", wraps=trial.extract_features) as spy:
        first = ht.benchmark(models["tf2"], data, **kwargs).results[0]
    assert spy.call_count == 2  # train + validation, once for all three seeds
    again = ht.benchmark(models["tf2"], data, **kwargs).results[0]
    assert [r.seed for r in first.per_seed] == [7, 8, 9]
    assert [r.best_val_accuracy for r in first.per_seed] == [
        r.best_val_accuracy for r in again.per_seed
    ]
    summary = first.summary()
    assert summary is not None and summary.n == 3
    assert first.best_val_accuracy == pytest.approx(summary.mean)
    # Features were extracted once: later seeds cost only their head training.
    assert first.feature_seconds is not None and first.head_seconds is not None
    assert first.train_seconds == pytest.approx(first.feature_seconds + first.head_seconds)
    assert sum(r.train_seconds for r in first.per_seed) == pytest.approx(first.train_seconds)


def test_second_study_runs_no_forward_pass_for_stored_features(
    models: dict[str, Backbone], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from unittest import mock

    from hubtransfer import trial

    write_colour_folder(tmp_path / "images", per_class=12, size=(40, 48))
    data = ht.load_image_folder(tmp_path / "images", validation_fraction=0.25)
    store = tmp_path / "store"
    kwargs: dict[str, object] = {"measure_latency": False, "feature_store": store}

    def extractions(**more: object) -> tuple[int, ht.BenchmarkResult]:
        with mock.patch.object(trial, "extract_features", wraps=trial.extract_features) as spy:
            result = ht.benchmark(models["tf2"], data, **{**kwargs, **more}).results[0]  # type: ignore[arg-type]
        assert result.status == "ok", result.error
        return spy.call_count, result

    with caplog.at_level(logging.INFO, logger="hubtransfer"):
        calls, first = extractions(epochs=2)
    assert calls == 2 and first.features_from_store is False
    assert "tiny_a: extracting train features: 18 images in" in caplog.text  # progress
    # Another head, learning rate and more seeds: the backbone does not run again.
    calls, second = extractions(epochs=3, head=ht.REPORT_HEAD, learning_rate=1e-2, seeds=2)
    assert calls == 0 and second.features_from_store is True
    assert second.feature_seconds is not None and first.feature_seconds is not None
    assert second.feature_seconds < first.feature_seconds  # a read, not a forward pass
    assert second.train_seconds == pytest.approx(second.feature_seconds + second.head_seconds)
    # The same folder loaded again is the same data.
    data = ht.load_image_folder(tmp_path / "images", validation_fraction=0.25)
    assert extractions(epochs=1)[0] == 0
    # A file changed: new fingerprint, new keys, extracted again.
    touched = Path(data.train_files[0])
    info = touched.stat()
    os.utime(touched, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    data = ht.load_image_folder(tmp_path / "images", validation_fraction=0.25)
    assert extractions(epochs=1)[0] == 2
    assert extractions(epochs=1, feature_store=False)[0] == 2  # off: nothing read
    # Augmentation runs the backbone every step: the store is not used.
    assert extractions(epochs=1, augment=True)[1].features_from_store is None


def test_study_served_from_the_store_never_loads_its_backbone(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    from unittest import mock

    from hubtransfer import model, trial

    kwargs: dict[str, Any] = {"epochs": 2, "measure_latency": False, "feature_store": tmp_path}

    def study(**more: Any) -> tuple[int, ht.BenchmarkResult]:
        load = trial.load_backbone_layer  # the one function both modules call it by
        with (
            mock.patch.object(trial, "load_backbone_layer", wraps=load) as frozen,
            mock.patch.object(model, "load_backbone_layer", wraps=load) as built,
        ):
            result = ht.benchmark(models["tf2"], data, **{**kwargs, **more}).results[0]
        assert result.status == "ok", result.error
        return frozen.call_count + built.call_count, result

    loads, first = study()
    assert loads == 1 and first.features_from_store is False
    # Features and the classifier's size are kept: nothing needs the backbone.
    loads, again = study(learning_rate=1e-2, seeds=2)
    assert loads == 0 and again.features_from_store is True
    assert (again.model_bytes, again.params_total, again.params_trainable) == (
        first.model_bytes,
        first.params_total,
        first.params_trainable,
    )
    # Another head is another architecture: measured around the backbone's kept outline,
    # without loading it; the real classifier, saved, has exactly those bytes.
    loads, wider = study(head=ht.REPORT_HEAD)
    assert loads == 0 and wider.features_from_store is True
    assert wider.model_bytes is not None and first.model_bytes is not None
    assert wider.model_bytes > first.model_bytes
    assert wider.params_trainable == TINY_DIM * 128 + 128 + 128 + 1
    out = tmp_path / "wide"
    loads, saved_wider = study(head=ht.REPORT_HEAD, output_dir=out, save_models=True)
    assert loads == 1  # a saved model is the real one
    saved = out / "models" / f"{first.backbone}_frozen.h5"
    assert saved.stat().st_size == wider.model_bytes == saved_wider.model_bytes
    assert saved_wider.params_total == wider.params_total
    # What needs the whole classifier loads the backbone: latency, a saved model.
    loads, timed = study(measure_latency=True)
    assert loads == 1 and timed.latency_ms is not None
    out = tmp_path / "out"
    assert study(output_dir=out, save_models=True)[0] == 1
    saved = out / "models" / f"{first.backbone}_frozen.h5"
    assert saved.stat().st_size == first.model_bytes


def test_a_backbone_loaded_for_latency_leaves_its_outline_for_a_new_head(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    from unittest import mock

    from hubtransfer import model, trial

    load = trial.load_backbone_layer
    kwargs: dict[str, Any] = {"epochs": 1, "feature_store": tmp_path}
    with mock.patch.object(trial, "load_backbone_layer", wraps=load) as loads:
        first = ht.benchmark(models["tf2"], data, **kwargs).results[0]  # latency on
        assert loads.call_count == 1 and first.latency_ms is not None
        with mock.patch.object(model, "load_backbone_layer", wraps=load) as built:
            new_head = ht.Head(hidden_units=(5,))
            wider = ht.benchmark(
                models["tf2"], data, head=new_head, measure_latency=False, **kwargs
            ).results[0]
        assert loads.call_count + built.call_count == 1  # the first study's load only
    assert wider.status == "ok" and wider.params_trainable == TINY_DIM * 5 + 5 + 5 + 1
    real = ht.benchmark(
        models["tf2"], data, head=new_head, measure_latency=False, keep_models=True, **kwargs
    )
    kept = real.models[real.results[0].key]
    assert kept.count_params() == wider.params_total
    path = tmp_path / "real.h5"
    kept.save(path, save_format="h5", include_optimizer=False)
    assert path.stat().st_size == wider.model_bytes


@pytest.mark.parametrize("cache_features", [True, False])
def test_a_spec_promising_other_features_fails_with_the_fix_and_stores_nothing(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path, cache_features: bool
) -> None:
    import dataclasses

    wrong = dataclasses.replace(models["tf2"], name="wrong_dim", feature_dim=16)  # it gives 8
    result = ht.benchmark(
        wrong,
        data,
        epochs=1,
        measure_latency=False,
        feature_store=tmp_path,
        cache_features=cache_features,
    ).results[0]
    assert result.status == "failed"
    assert result.error is not None
    assert "promises pooled features (batch, 16)" in result.error
    assert "fix feature_dim with dataclasses.replace()" in result.error
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").iterdir())


def test_feature_store_defaults_to_the_cache_dir_and_is_checked(
    models: dict[str, Backbone], data: ht.ImageData, _private_cache_dir: Path
) -> None:
    ht.benchmark(models["tf2"], data, epochs=1, measure_latency=False)
    assert len(list((_private_cache_dir / "features").iterdir())) == 2  # train, validation
    with pytest.raises(ht.ConfigurationError, match=r"feature_store must be True .*Received"):
        ht.benchmark(models["tf2"], data, feature_store=3)  # type: ignore[arg-type]


def test_a_seed_gives_the_same_numbers_every_time_extracted_or_from_the_store(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    # The train split comes in a fresh order each pass; its features must not.
    kwargs: dict[str, Any] = {"epochs": 3, "measure_latency": False, "learning_rate": 1e-2}
    runs = [
        ht.benchmark(models["tf2"], data, feature_store=False, **kwargs).results[0],
        ht.benchmark(models["tf2"], data, feature_store=tmp_path, **kwargs).results[0],
        ht.benchmark(models["tf2"], data, feature_store=tmp_path, **kwargs).results[0],
        ht.benchmark(models["tf2"], data, feature_store=False, **kwargs).results[0],
    ]
    assert [r.features_from_store for r in runs] == [False, False, True, False]
    losses = [[e.val_loss for e in r.history] for r in runs]
    assert losses[1:] == losses[:-1]
    assert len({r.val_accuracy for r in runs}) == 1


def test_an_outline_that_cannot_be_saved_falls_back_to_the_real_classifier(
    models: dict[str, Backbone], data: ht.ImageData, tmp_path: Path
) -> None:
    kwargs: dict[str, Any] = {"epochs": 1, "measure_latency": False, "feature_store": tmp_path}
    ht.benchmark(models["tf2"], data, **kwargs)  # keeps the backbone's outline
    [kept] = [p for p in (tmp_path / "measurements").iterdir() if "class_name" in p.read_text()]
    outline = json.loads(kept.read_text())
    outline["weights"][1] = outline["weights"][0]  # two weights of one name: no .h5 save
    kept.write_text(json.dumps(outline))
    head = ht.Head(hidden_units=(3,))
    result = ht.benchmark(models["tf2"], data, head=head, **kwargs).results[0]
    assert result.status == "ok", result.error
    out = tmp_path / "out"
    real = ht.benchmark(
        models["tf2"], data, head=head, output_dir=out, save_models=True, **kwargs
    ).results[0]
    saved = out / "models" / f"{real.backbone}_frozen.h5"
    assert result.model_bytes == real.model_bytes == saved.stat().st_size


def test_a_study_collects_only_its_own_objects_and_gives_the_rest_back(
    models: dict[str, Backbone], data: ht.ImageData
) -> None:
    # A full collection rescans every object TensorFlow's import made (~0.17 s each on
    # this machine): the study's collections skip what existed before it started.
    import gc

    frozen: list[int] = []

    class Probe(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            frozen.append(gc.get_freeze_count())

    gc.unfreeze()
    ht.benchmark(
        [models["tf2"], models["tf2_b"]],
        data,
        epochs=1,
        measure_latency=False,
        callbacks=[Probe()],
    )
    assert len(frozen) == 2 and min(frozen) > 0
    assert gc.get_freeze_count() == 0
