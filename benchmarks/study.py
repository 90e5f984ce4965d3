"""How close does a frozen study come to its floor, and how much faster than the report?

Writes 1,000 JPEGs (~500x375), exports mobilenet_v2 and efficientnet_b0 with
offline.export_backbone (random weights; speed and size are real), then measures in one run:

- the floor: one forward pass per image per backbone (train + validation), through the
  same prepare() pipeline;
- benchmark(cache_features=True): the backbone runs once, the head trains on features;
- benchmark(cache_features=False): the report's recipe, the backbone runs every epoch;
- benchmark(cache_features=True, seeds=5): five seeds on the same cached features.

Targets: cached <= 1.25x the floor, >= 5x faster than the recipe, and 5 seeds <= 1.3x
the cost of one.

    python benchmarks/study.py [--images 1000] [--epochs 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import machine, write_jpeg_folder

import hubtransfer as ht
from hubtransfer.features import extract_features

BACKBONES = ("mobilenet_v2", "efficientnet_b0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ht-study-"))

    data = ht.load_image_folder(write_jpeg_folder(workdir / "images", args.images))
    specs = [ht.offline.export_backbone(name, workdir / name) for name in BACKBONES]

    floor = {}
    for spec in specs:
        layer = ht.load_backbone_layer(spec)
        seconds = 0.0
        for split in (data.train, data.validation):
            batches = ht.prepare(split, spec, batch_size=args.batch_size)
            extract_features(layer, batches.take(1))  # warm-up: tracing
            seconds += extract_features(layer, batches).seconds
        floor[spec.name] = seconds

    runs = {}
    for cached in (True, False):
        start = time.perf_counter()
        report = ht.benchmark(
            specs,
            data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            cache_features=cached,
            measure_latency=False,
        )
        runs[cached] = (report, time.perf_counter() - start)
    start = time.perf_counter()
    seeded = ht.benchmark(
        specs,
        data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seeds=args.seeds,
        measure_latency=False,
    )
    seeded_wall = time.perf_counter() - start

    print(f"machine: {machine()}")
    print(
        f"data: {args.images} JPEGs (~500x375), {data.counts.train} train / "
        f"{data.counts.validation} validation, {args.epochs} epochs, batch {args.batch_size}"
    )
    print("backbones: offline.export_backbone stand-ins (random weights), frozen")
    print()
    print(
        "| backbone | floor s (1 forward pass) | cached train s | recipe train s | "
        "cached / floor | recipe / cached |"
    )
    print("|---|---|---|---|---|---|")
    totals = {"floor": 0.0, True: 0.0, False: 0.0}
    for spec in specs:
        cached_s = runs[True][0].get(spec.name).train_seconds or 0.0
        recipe_s = runs[False][0].get(spec.name).train_seconds or 0.0
        totals["floor"] += floor[spec.name]
        totals[True] += cached_s
        totals[False] += recipe_s
        print(
            f"| {spec.name} | {floor[spec.name]:.1f} | {cached_s:.1f} | {recipe_s:.1f} | "
            f"{cached_s / floor[spec.name]:.2f}x | {recipe_s / cached_s:.1f}x |"
        )
    print(
        f"| total | {totals['floor']:.1f} | {totals[True]:.1f} | {totals[False]:.1f} | "
        f"{totals[True] / totals['floor']:.2f}x | {totals[False] / totals[True]:.1f}x |"
    )
    print()
    print(
        f"wall time of benchmark(): cached {runs[True][1]:.1f} s, recipe {runs[False][1]:.1f} s "
        f"({runs[False][1] / runs[True][1]:.1f}x)"
    )
    print(f"study time / floor: {totals[True] / totals['floor']:.2f} (target <= 1.25)")
    print(f"recipe / cached: {totals[False] / totals[True]:.1f} (target >= 5)")
    one = sum(r.train_seconds or 0.0 for r in runs[True][0])
    many = sum(r.train_seconds or 0.0 for r in seeded)
    print(
        f"{args.seeds} seeds, cached: train {many:.1f} s vs one seed {one:.1f} s: "
        f"{many / one:.2f}x (target <= 1.3); wall {seeded_wall:.1f} s vs {runs[True][1]:.1f} s"
    )
    for r in seeded:
        summary = r.summary()
        assert summary is not None
        print(
            f"val acc {args.seeds} seeds {r.backbone}: best {summary.mean:.3f} "
            f"± {summary.half_width or 0:.3f} (95% t-interval)"
        )
    for cached in (True, False):
        for r in runs[cached][0]:
            print(
                f"val acc {'cached' if cached else 'recipe'} {r.backbone}: "
                f"best {r.best_val_accuracy:.3f} final {r.final_val_accuracy:.3f}"
            )


if __name__ == "__main__":
    main()
