"""Smoke test for a fresh install: import, build, one training step, one export.

Run by .ci/run in a new venv on the newest CPython on the machine, where the full
suite does not run: it proves the package installs and works there (TensorFlow, hub
and tf_keras import together; no pkg_resources surprise), in about a minute.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tf_keras

import hubtransfer as ht
from hubtransfer.registry import Backbone


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = tf_keras.Input((16, 16, 3))
        x = tf_keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = tf_keras.layers.GlobalAveragePooling2D()(x)
        tf_keras.Model(inputs, x).save(root / "tiny", save_format="tf")
        spec = Backbone("tiny", str(root / "tiny"), 16, 4, "tf2", True)
        model = ht.build_classifier(spec, 3, trainable=True)
        images = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
        loss = model.train_on_batch(images, np.arange(8) % 3)
        path = ht.export_tflite(model, root / "model.tflite", quantization="dynamic")
        print(
            f"smoke ok: Python {sys.version.split()[0]}, hubtransfer {ht.__version__}, "
            f"loss {float(np.ravel(loss)[0]):.3f}, tflite {path.stat().st_size} bytes"
        )


if __name__ == "__main__":
    main()
