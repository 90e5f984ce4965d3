from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import hubtransfer as ht
from conftest import colour_images, save_tiny_tf2
from hubtransfer._fs import MARKER
from hubtransfer.registry import Backbone
from images import write_colour_folder

SIZE = 32


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    root = tmp_path_factory.mktemp("export_models")
    return Backbone("tiny", str(save_tiny_tf2(root / "tiny", SIZE)), SIZE, 8, "tf2", True)


@pytest.fixture(scope="module")
def trained(spec: Backbone) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(0)
    x, y = colour_images(256, SIZE)
    y3 = np.where(x[..., 1].mean(axis=(1, 2)) > 0.35, 2, y)  # a third class
    model = ht.build_classifier(spec, 3, learning_rate=1e-2)
    model.fit(x, y3, epochs=5, verbose=0)
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ht.ImageData:
    root = tmp_path_factory.mktemp("export_data")
    write_colour_folder(root, per_class=12, classes=("blue", "green", "red"), size=(40, 48))
    return ht.load_image_folder(root, validation_fraction=0.5)


@pytest.mark.parametrize("quantization", [None, "dynamic", "float16", "int8"])
def test_each_mode_converts_and_agrees(
    quantization: str | None,
    trained: tf_keras.Model,
    spec: Backbone,
    data: ht.ImageData,
    tmp_path: Path,
) -> None:
    path = ht.export_tflite(
        trained,
        tmp_path / "m.tflite",
        quantization=quantization,  # type: ignore[arg-type]
        representative_data=data if quantization == "int8" else None,
        backbone=spec,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]  # no temporary left
    scored = ht.evaluate_tflite(path, data, backbone=spec, model=trained)
    assert scored.examples == data.counts.validation
    assert scored.agreement is not None and scored.agreement >= 0.9
    assert scored.bytes == path.stat().st_size and scored.ms_per_image > 0
    tensors = tf.lite.Interpreter(model_path=str(path)).get_tensor_details()
    has_int8 = any(t["dtype"] == np.int8 for t in tensors)
    # Dynamic-range quantization skips weights this small (< 1024 values): no int8 here.
    assert has_int8 == (quantization == "int8")


def test_int8_with_uint8_io(
    trained: tf_keras.Model, spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    path = ht.export_tflite(
        trained,
        tmp_path / "u8.tflite",
        quantization="int8",
        representative_data=data,
        backbone=spec,
        uint8_io=True,
    )
    details = tf.lite.Interpreter(model_path=str(path)).get_input_details()[0]
    assert details["dtype"] == np.uint8
    scored = ht.evaluate_tflite(path, data, backbone=spec, model=trained)
    assert scored.agreement is not None and scored.agreement >= 0.9


def test_int8_calibrates_from_prepared_tf_data(
    trained: tf_keras.Model, spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    prepared = ht.prepare(data.train, spec, batch_size=4)
    path = ht.export_tflite(
        trained, tmp_path / "m.tflite", quantization="int8", representative_data=prepared
    )
    inputs = tf.lite.Interpreter(model_path=str(path)).get_tensor_details()
    assert any(d["dtype"] == np.int8 for d in inputs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"quantization": "int4"},
            r"Unknown quantization 'int4'. Allowed: None \(float32\), 'dynamic'",
        ),
        ({"quantization": "int8"}, r"needs calibration data: pass representative_data="),
        ({"uint8_io": True}, r"uint8_io=True needs quantization='int8'"),
        ({"quantization": "int8", "representative_data": [1, 2]}, r"representative_data must be"),
    ],
)
def test_bad_export_arguments(
    trained: tf_keras.Model, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ht.HubTransferError, match=message):
        ht.export_tflite(trained, tmp_path / "x.tflite", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x.tflite").exists()


def test_int8_from_image_data_needs_backbone(
    trained: tf_keras.Model, data: ht.ImageData, tmp_path: Path
) -> None:
    with pytest.raises(ht.ConfigurationError, match="needs the backbone it was trained for"):
        ht.export_tflite(
            trained, tmp_path / "x.tflite", quantization="int8", representative_data=data
        )


@pytest.mark.slow  # starts a process or builds a real architecture
def test_serving_saved_model_takes_raw_uint8_of_any_size(
    trained: tf_keras.Model, spec: Backbone, tmp_path: Path
) -> None:
    path = ht.export_saved_model(
        trained, tmp_path / "serving", backbone=spec, class_names=("blue", "green", "red")
    )
    assert (path / "labels.txt").read_text().split() == ["blue", "green", "red"]
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 37, 53, 3)).astype("uint8")
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tensorflow as tf
        model = tf.saved_model.load({str(path)!r})
        out = model.signatures["serving_default"](images=tf.constant(np.load(sys.argv[1])))
        assert "hubtransfer" not in sys.modules
        np.save(sys.argv[2], out["probabilities"].numpy())
        print(out["class_name"].numpy().tolist(), out["class_index"].numpy().tolist())
        """
    )
    np.save(tmp_path / "in.npy", batch)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    probabilities = np.load(tmp_path / "out.npy")
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # What training feeds the model: each image through the training preprocessing.
    from hubtransfer.preprocessing import preprocess_image

    prepared = tf.stack([preprocess_image(tf.constant(image), spec) for image in batch])
    expected = tf.nn.softmax(trained(prepared, training=False)).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_binary_serving_outputs_two_probabilities(spec: Backbone, tmp_path: Path) -> None:
    model = ht.build_classifier(spec, 2)
    path = ht.export_saved_model(model, tmp_path / "s", backbone=spec, class_names=["no", "yes"])
    out = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.zeros((2, 20, 30, 3), tf.uint8)
    )
    assert out["probabilities"].shape == (2, 2)
    with pytest.raises(
        ht.ConfigurationError, match="class_names has 3 entries but the model outputs 1"
    ):
        ht.export_saved_model(model, tmp_path / "t", backbone=spec, class_names=["a", "b", "c"])


def test_benchmark_records_tflite_exports(spec: Backbone, data: ht.ImageData) -> None:
    report = ht.benchmark(spec, data, epochs=2, measure_latency=False, export=("dynamic", "int8"))
    exports = report.results[0].exports
    assert set(exports) == {"float32", "dynamic", "int8"}
    for measured in exports.values():
        assert measured["bytes"] and measured["val_accuracy"] is not None
        assert measured["agreement"] is not None
    with pytest.raises(ht.ConfigurationError, match="export must be a sequence of TFLite modes"):
        ht.benchmark(spec, data, export=("int4",))


@pytest.mark.slow
def test_mobilenet_v2_quantized_sizes(tmp_path: Path, data: ht.ImageData) -> None:
    """Real MobileNetV2 weights (at 32 px: the weight count, hence size, is the same)."""
    registry = ht.registry.default_registry().copy()
    small = dataclasses.replace(registry.get("mobilenet_v2"), image_size=SIZE)
    registry.register(small, overwrite=True)
    images = np.random.default_rng(0).uniform(size=(32, SIZE, SIZE, 3)).astype("float32")
    local = ht.offline.export_backbone(
        "mobilenet_v2", tmp_path / "mnv2", registry=registry, calibration_images=images
    )
    model = ht.build_classifier(local, 3)
    sizes = {}
    for mode in (None, "dynamic", "float16", "int8"):
        path = ht.export_tflite(
            model,
            tmp_path / f"{mode}.tflite",
            quantization=mode,  # type: ignore[arg-type]
            representative_data=data,
            backbone=local,
        )
        sizes[mode] = path.stat().st_size
    assert sizes["dynamic"] / sizes[None] <= 0.30
    assert sizes["int8"] / sizes[None] <= 0.32
    assert sizes["float16"] / sizes[None] <= 0.55


# --- Writers never lose data ----------------------------------------------------------


@pytest.fixture(scope="module")
def float_tflite(trained: tf_keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ht.export_tflite(trained, tmp_path_factory.mktemp("tflite") / "m.tflite")


def _user_folder(root: Path) -> tuple[Path, bytes]:
    folder = root / "mine"
    folder.mkdir()
    content = b"my notes \x00\x01, not hubtransfer's"
    (folder / "notes.txt").write_bytes(content)
    return folder, content


def test_tflite_into_a_directory_is_refused_and_leaves_nothing(
    trained: tf_keras.Model, tmp_path: Path
) -> None:
    folder, content = _user_folder(tmp_path)
    with pytest.raises(ht.ExportError, match=r"mine is a directory; .* Pass a file path, e\.g\."):
        ht.export_tflite(trained, folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no stray temporary
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_bytes() == content


def test_tflite_over_a_file_needs_overwrite(trained: tf_keras.Model, tmp_path: Path) -> None:
    target = tmp_path / "m.tflite"
    target.write_bytes(b"an older model")
    with pytest.raises(ht.ExportError, match=r"already exists .* Pass overwrite=True"):
        ht.export_tflite(trained, target)
    assert target.read_bytes() == b"an older model"
    old_umask = os.umask(0o022)
    try:
        ht.export_tflite(trained, target, overwrite=True)
    finally:
        os.umask(old_umask)
    assert target.read_bytes()[4:8] == b"TFL3"  # the flatbuffer identifier
    assert target.stat().st_mode & 0o777 == 0o644  # readable like any file, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_tflite_bad_calibration_samples(trained: tf_keras.Model, tmp_path: Path) -> None:
    with pytest.raises(ht.ConfigurationError, match="calibration_samples must be a positive"):
        ht.export_tflite(trained, tmp_path / "x.tflite", calibration_samples=0)


@pytest.mark.parametrize("kind", [None, "backbone stand-in"])
def test_saved_model_never_replaces_what_is_not_a_serving_export(
    trained: tf_keras.Model, spec: Backbone, tmp_path: Path, kind: str | None
) -> None:
    folder, content = _user_folder(tmp_path)
    if kind is not None:  # another kind of hubtransfer directory: still not replaceable
        (folder / MARKER).write_text(json.dumps({"kind": kind}))
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(
        ht.ExportError, match=r"holds files hubtransfer did not write .* left untouched. Choose"
    ):
        ht.export_saved_model(
            trained, folder, backbone=spec, class_names=("a", "b", "c"), overwrite=True
        )
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (folder / "notes.txt").read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging left


def test_saved_model_replaces_its_own_export_only_with_overwrite(
    trained: tf_keras.Model, spec: Backbone, tmp_path: Path
) -> None:
    target = tmp_path / "serving"
    target.mkdir()  # an empty directory is fine
    ht.export_saved_model(trained, target, backbone=spec, class_names=("a", "b", "c"))
    with pytest.raises(
        ht.ExportError, match=r"already holds a serving SavedModel .* overwrite=True"
    ):
        ht.export_saved_model(trained, target, backbone=spec, class_names=("x", "y", "z"))
    assert (target / "labels.txt").read_text().split() == ["a", "b", "c"]
    ht.export_saved_model(
        trained, target, backbone=spec, class_names=("x", "y", "z"), overwrite=True
    )
    assert (target / "labels.txt").read_text().split() == ["x", "y", "z"]
    assert json.loads((target / MARKER).read_text())["kind"] == "serving SavedModel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]  # no staging, no old copy
    out = tf.saved_model.load(str(target)).signatures["serving_default"](
        images=tf.zeros((1, 20, 30, 3), tf.uint8)
    )
    assert out["probabilities"].shape == (1, 3)


def test_saved_model_onto_a_file_is_refused(
    trained: tf_keras.Model, spec: Backbone, tmp_path: Path
) -> None:
    (tmp_path / "serving").write_bytes(b"x")
    with pytest.raises(ht.ExportError, match="is a file, not a directory; .* Choose a path"):
        ht.export_saved_model(
            trained, tmp_path / "serving", backbone=spec, class_names=("a", "b", "c")
        )
    assert (tmp_path / "serving").read_bytes() == b"x"


# --- evaluate_tflite: every failure is a hubtransfer error that says what to do --------


@pytest.fixture(scope="module")
def binary_tflite(spec: Backbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = ht.build_classifier(spec, 2)
    return ht.export_tflite(model, tmp_path_factory.mktemp("binary") / "b.tflite")


def test_evaluate_missing_directory_or_garbage_file(
    spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    (tmp_path / "garbage.tflite").write_bytes(b"this is not a flatbuffer at all")
    cases = [
        (tmp_path / "missing.tflite", r"missing.tflite does not exist; .* Pass the path"),
        (tmp_path, r"is a directory; evaluate_tflite needs a .tflite file. Pass the path"),
        (tmp_path / "garbage.tflite", r"is not a TFLite model .* Export it again"),
    ]
    for path, message in cases:
        with pytest.raises(ht.ExportError, match=message):
            ht.evaluate_tflite(path, data, backbone=spec)


def test_evaluate_with_another_backbone_size(
    float_tflite: Path, spec: Backbone, data: ht.ImageData
) -> None:
    other = dataclasses.replace(spec, image_size=16)
    with pytest.raises(
        ht.ConfigurationError,
        match=r"takes 32x32 images but backbone 'tiny' uses 16x16. Pass the backbone",
    ):
        ht.evaluate_tflite(float_tflite, data, backbone=other)


def test_evaluate_with_another_class_count(
    binary_tflite: Path, float_tflite: Path, spec: Backbone, data: ht.ImageData
) -> None:
    with pytest.raises(
        ht.ConfigurationError,
        match=r"predicts 2 classes \(1 logit.* but the data has 3 classes. Evaluate on the data",
    ):
        ht.evaluate_tflite(binary_tflite, data, backbone=spec)
    pairs = tf.data.Dataset.from_tensor_slices(
        (tf.zeros((2, 8, 8, 3), tf.uint8), tf.constant([0, 3], tf.int64))
    )
    with pytest.raises(
        ht.ConfigurationError, match=r"predicts 3 classes .* but the data has label 3, so more"
    ):
        ht.evaluate_tflite(float_tflite, pairs, backbone=spec)
    with pytest.raises(ht.DatasetError, match=r"needs unbatched .* Call dataset.unbatch\(\)"):
        ht.evaluate_tflite(float_tflite, pairs.batch(2), backbone=spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_examples": 0}, r"max_examples must be a positive integer. Received: max_exam"),
        ({"max_examples": 2.5}, r"max_examples must be a positive integer"),
        ({"max_examples": True}, r"max_examples must be a positive integer"),
        ({"split": "holdout"}, r"split must be one of 'train', 'validation', 'test'. Received"),
        (
            {"split": "test"},
            r"split='test', but the data has no test split. Load it with "
            r"test_fraction=",
        ),
        ({"data": [1, 2]}, r"data must be an ImageData or a tf.data.Dataset .* Received: list"),
    ],
)
def test_evaluate_bad_arguments(
    float_tflite: Path,
    spec: Backbone,
    data: ht.ImageData,
    kwargs: dict[str, object],
    message: str,
) -> None:
    args: dict[str, object] = {"data": data, **kwargs}
    with pytest.raises(ht.ConfigurationError, match=message):
        ht.evaluate_tflite(float_tflite, backbone=spec, **args)  # type: ignore[arg-type]


def test_evaluate_max_examples(float_tflite: Path, spec: Backbone, data: ht.ImageData) -> None:
    assert ht.evaluate_tflite(float_tflite, data, backbone=spec, max_examples=3).examples == 3


# --- evaluate_tflite picks LiteRT when installed, tf.lite otherwise ---------------------


def test_evaluate_runs_on_litert_when_installed(
    float_tflite: Path, spec: Backbone, data: ht.ImageData, trained: tf_keras.Model
) -> None:
    import ai_edge_litert.interpreter as litert  # in the dev extra: this test always runs

    with (
        mock.patch.object(litert, "Interpreter", wraps=litert.Interpreter) as used,
        mock.patch.object(tf.lite, "Interpreter", wraps=tf.lite.Interpreter) as fallback,
    ):
        scored = ht.evaluate_tflite(float_tflite, data, backbone=spec, model=trained)
    used.assert_called_once_with(model_path=str(float_tflite))
    fallback.assert_not_called()
    assert scored.agreement == 1.0  # a float32 model agrees with Keras on every image


def test_evaluate_falls_back_to_tf_lite(
    float_tflite: Path,
    spec: Backbone,
    data: ht.ImageData,
    trained: tf_keras.Model,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes "import ai_edge_litert..." raise ImportError, as if absent.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with mock.patch.object(tf.lite, "Interpreter", wraps=tf.lite.Interpreter) as used:
        scored = ht.evaluate_tflite(float_tflite, data, backbone=spec, model=trained)
    used.assert_called_once_with(model_path=str(float_tflite))
    assert scored.agreement == 1.0
