"""Fan-out: one study in-process vs on 1 and 2 local worker processes.

Four small backbones (offline stand-ins: same architectures as the Hub models, random
weights), frozen, on a generated JPEG folder. Prints wall times and ratios in one run:

- 1 worker / in-process: the executor's overhead (spawn, TensorFlow import, data reload
  in the worker, pickling results);
- 2 workers / in-process: the speed-up from running two trials at once, each worker
  limited to its share of the cores (intra-op threads = cores / workers).

Each configuration uses its own empty feature store, so every run extracts its features.

    python benchmarks/fanout.py --workdir /tmp/htfan
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, write_jpeg_folder

BACKBONES = ("mobilenet_v3_small", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "htfan")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    import hubtransfer as ht
    from hubtransfer.fanout import local_executor

    print(f"machine: {machine()}")
    folder = write_jpeg_folder(args.workdir / "images", args.images)
    specs = [ht.offline.export_backbone(n, args.workdir / "standins" / n) for n in BACKBONES]
    data = ht.load_image_folder(folder)
    print(
        f"data: {data.counts.train} train / {data.counts.validation} validation JPEGs; "
        f"backbones: {', '.join(BACKBONES)}; frozen, {args.epochs} epochs"
    )
    walls: dict[str, float] = {}
    accuracies: dict[str, list[float | None]] = {}
    for label, workers in (("in-process", 0), ("1 worker", 1), ("2 workers", 2)):
        store = args.workdir / f"store-{workers}-{time.time_ns()}"
        start = time.perf_counter()
        if workers:
            with local_executor(workers) as pool:
                report = ht.benchmark(
                    specs,
                    data,
                    epochs=args.epochs,
                    feature_store=store,
                    measure_latency=False,
                    executor=pool,
                )
        else:
            report = ht.benchmark(
                specs, data, epochs=args.epochs, feature_store=store, measure_latency=False
            )
        walls[label] = time.perf_counter() - start
        accuracies[label] = [r.val_accuracy for r in report.results]
        print(f"{label:>11}: {walls[label]:6.1f} s wall")
    base = walls["in-process"]
    print(
        f"1 worker / in-process: {walls['1 worker'] / base:.2f} "
        f"(executor overhead {walls['1 worker'] - base:+.1f} s)"
    )
    print(f"2 workers / in-process: {walls['2 workers'] / base:.2f}")
    same = accuracies["in-process"] == accuracies["1 worker"] == accuracies["2 workers"]
    print(f"same per-trial validation accuracies in all three: {same}")


if __name__ == "__main__":
    main()
