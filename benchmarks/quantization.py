"""What does TFLite quantization cost? Size, agreement with Keras, and latency.

Exports mobilenet_v2 and efficientnet_b0 with offline.export_backbone (random weights,
BatchNorm statistics re-estimated on the data so features carry signal), trains a 3-class
head on generated JPEGs through benchmark(), then converts each classifier four ways
(float32, dynamic, float16, int8) and scores each .tflite on validation images it was not
trained or calibrated on. Agreement is top-1 agreement with the Keras model.

Targets (size relative to float32 TFLite): dynamic <= 0.30, int8 <= 0.32, float16 <= 0.55;
agreement >= 0.97 (dynamic, float16), >= 0.90 (int8).

    python benchmarks/quantization.py [--images 300] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from _common import machine, write_jpeg_folder

import hubtransfer as ht

BACKBONES = ("mobilenet_v2", "efficientnet_b0")
MODES = ("float32", "dynamic", "float16", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ht-quant-"))

    folder = write_jpeg_folder(workdir / "images", args.images, classes=("a", "b", "c"))
    data = ht.load_image_folder(folder, validation_fraction=0.2)
    specs = []
    for name in BACKBONES:
        size = ht.get_backbone(name).image_size
        calibration = np.concatenate(
            [x.numpy() for x, _ in ht.prepare(data.train, name, batch_size=32).take(2)]
        )
        assert calibration.shape[1] == size
        specs.append(
            ht.offline.export_backbone(
                name, workdir / f"{name}_calibrated", calibration_images=calibration
            )
        )
    report = ht.benchmark(
        specs,
        data,
        epochs=args.epochs,
        learning_rate=1e-2,
        measure_latency=False,
        export=MODES,
    )

    print(f"machine: {machine()}")
    print(
        f"data: 3 classes, {data.counts.train} train / {data.counts.validation} validation "
        "JPEGs (~500x375); int8 calibrated on 200 training images"
    )
    print()
    print(
        "| backbone | mode | size MB | size / float32 | val acc | agreement with Keras | "
        "ms/image (TFLite, 1 thread default) |"
    )
    print("|---|---|---|---|---|---|---|")
    for result in report:
        if result.status != "ok":
            print(f"| {result.backbone} | {result.status}: {result.error} |")
            continue
        reference = result.exports["float32"]["bytes"] or 1
        for mode in MODES:
            m = result.exports[mode]
            print(
                f"| {result.backbone} | {mode} | {(m['bytes'] or 0) / 1e6:.2f} | "
                f"{(m['bytes'] or 0) / reference:.3f} | {m['val_accuracy']:.3f} | "
                f"{m['agreement']:.3f} | {m['ms_per_image']:.1f} |"
            )
        print(
            f"| {result.backbone} | keras | {(result.model_bytes or 0) / 1e6:.2f} (.h5) | - | "
            f"{result.final_val_accuracy:.3f} | 1.000 | - |"
        )


if __name__ == "__main__":
    main()
