from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import hubtransfer as ht
from conftest import colour_images, save_tiny_tf2
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
    quantization: str | None, trained: tf_keras.Model, spec: Backbone, data: ht.ImageData,
    tmp_path: Path,
) -> None:  # fmt: skip
    path = ht.export_tflite(
        trained, tmp_path / "m.tflite", quantization=quantization,  # type: ignore[arg-type]
        representative_data=data if quantization == "int8" else None, backbone=spec,
    )  # fmt: skip
    assert path.exists() and not path.with_name("m.tflite.tmp").exists()
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
        trained, tmp_path / "u8.tflite", quantization="int8", representative_data=data,
        backbone=spec, uint8_io=True,
    )  # fmt: skip
    details = tf.lite.Interpreter(model_path=str(path)).get_input_details()[0]
    assert details["dtype"] == np.uint8
    scored = ht.evaluate_tflite(path, data, backbone=spec, model=trained)
    assert scored.agreement is not None and scored.agreement >= 0.9


def test_int8_calibrates_from_prepared_tf_data(
    trained: tf_keras.Model, spec: Backbone, data: ht.ImageData, tmp_path: Path
) -> None:
    prepared = ht.prepare(data.train, spec, batch_size=4)
    path = ht.export_tflite(trained, tmp_path / "m.tflite", quantization="int8",
                            representative_data=prepared)  # fmt: skip
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
        ht.export_tflite(trained, tmp_path / "x.tflite", quantization="int8",
                         representative_data=data)  # fmt: skip


def test_serving_saved_model_takes_raw_uint8_of_any_size(
    trained: tf_keras.Model, spec: Backbone, tmp_path: Path
) -> None:
    path = ht.export_saved_model(trained, tmp_path / "serving", backbone=spec,
                                 class_names=("blue", "green", "red"))  # fmt: skip
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
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    probabilities = np.load(tmp_path / "out.npy")
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    resized = tf.image.resize(tf.cast(batch, tf.float32), (SIZE, SIZE)) / 255.0
    expected = tf.nn.softmax(trained(resized, training=False)).numpy()
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
    local = ht.offline.export_backbone("mobilenet_v2", tmp_path / "mnv2", registry=registry,
                                       calibration_images=images)  # fmt: skip
    model = ht.build_classifier(local, 3)
    sizes = {}
    for mode in (None, "dynamic", "float16", "int8"):
        path = ht.export_tflite(model, tmp_path / f"{mode}.tflite", quantization=mode,  # type: ignore[arg-type]
                                representative_data=data, backbone=local)  # fmt: skip
        sizes[mode] = path.stat().st_size
    assert sizes["dynamic"] / sizes[None] <= 0.30
    assert sizes["int8"] / sizes[None] <= 0.32
    assert sizes["float16"] / sizes[None] <= 0.55
