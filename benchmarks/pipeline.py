"""Is prepare() fast enough to keep a frozen-backbone model fed?

Writes JPEGs of varied size (about 500x375, like cats_vs_dogs), then measures training
throughput (images/s) of a frozen mobilenet_v2 classifier (exported with
offline.export_backbone, random weights) fed two ways, in one run:

- from the files, through load_image_folder() + prepare() (decode, resize, scale);
- from in-memory float32 tensors of the same shape (no input pipeline work at all).

The ratio files/memory is what the pipeline costs; the target is >= 0.85.

    python benchmarks/pipeline.py [--images 1024] [--epochs 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from _common import machine, timed, write_jpeg_folder

import hubtransfer as ht


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ht-pipeline-"))

    images = write_jpeg_folder(workdir / "images", args.images)
    data = ht.load_image_folder(images, validation_fraction=0.0)
    spec = ht.offline.export_backbone("mobilenet_v2", workdir / "mobilenet_v2")
    model = ht.build_classifier(spec, data.num_classes)

    from_files = ht.prepare(data.train, spec, batch_size=args.batch_size, training=True)
    size = spec.image_size
    n = data.counts.train or args.images
    rng = np.random.default_rng(0)
    tensors = rng.uniform(0, 1, (n, size, size, 3)).astype("float32")
    labels = rng.integers(0, 2, n)
    import tensorflow as tf

    in_memory = (
        tf.data.Dataset.from_tensor_slices((tensors, labels))
        .shuffle(1024, seed=0)
        .batch(args.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

    # Warm-up epoch each (tracing, thread pools), then the timed epochs.
    model.fit(in_memory.take(2), epochs=1, verbose=0)
    model.fit(from_files.take(2), epochs=1, verbose=0)
    memory_s = timed(lambda: model.fit(in_memory, epochs=args.epochs, verbose=0))
    files_s = timed(lambda: model.fit(from_files, epochs=args.epochs, verbose=0))
    memory_ips = n * args.epochs / memory_s
    files_ips = n * args.epochs / files_s

    print(f"machine: {machine()}")
    print(f"images: {n} JPEGs (~500x375), epochs: {args.epochs}, batch: {args.batch_size}")
    print(f"backbone: mobilenet_v2 stand-in at {size} px, frozen")
    print(f"in-memory tensors: {memory_ips:8.1f} images/s ({memory_s:.1f} s)")
    print(f"files + prepare(): {files_ips:8.1f} images/s ({files_s:.1f} s)")
    print(f"ratio files/memory: {files_ips / memory_ips:.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
