"""The report's study, with hubtransfer: EfficientNet B0-B3 vs MobileNetV2 on cats_vs_dogs.

Same five TF Hub backbones, the report's 80/20 split of TFDS `train`, its head
(Dense(128, relu) -> Dropout(0.5) -> logits), 10 epochs, batch 32: a frozen study of all
five, then MobileNetV2 fine-tuned (two-phase: head warm-up, then the whole model at 1/10
of the learning rate). The EfficientNets are TF1 Hub modules, so they run frozen only.

Unlike the report, each backbone is fed at its own size (B1 240 px, B2 260, B3 300) and in
the [0, 1] range TF Hub image models expect; the report fed 224 px in [-1, 1].

    python examples/cats_vs_dogs.py                      # needs tfhub.dev + TFDS downloads
    python examples/cats_vs_dogs.py --offline-dir models # untrained local stand-ins
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import hubtransfer as ht

REPORT_BACKBONES = "efficientnet_b0,efficientnet_b1,efficientnet_b2,efficientnet_b3,mobilenet_v2"


def main(argv: list[str] | None = None) -> ht.BenchmarkReport:
    parser = argparse.ArgumentParser(description="The report's study on cats_vs_dogs.")
    parser.add_argument("--backbones", default=REPORT_BACKBONES)
    parser.add_argument("--fine-tune", default="mobilenet_v2", help="backbones to fine-tune")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("cats_vs_dogs-results"))
    parser.add_argument("--offline-dir", type=Path, help="export untrained stand-ins here")
    parser.add_argument("--data-dir", type=Path, help="TFDS data_dir")
    parser.add_argument("--download", action="store_true", help="let TFDS download the data")
    parser.add_argument("--image-size", type=int, help="override every size (smoke tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = ht.load_tfds("cats_vs_dogs", data_dir=args.data_dir, download=args.download)
    registry = ht.registry.default_registry().copy()
    tuned_names = [n for n in args.fine_tune.split(",") if n]
    specs = {}
    for name in dict.fromkeys(args.backbones.split(",") + tuned_names):
        spec = registry.get(name)
        if args.image_size:
            spec = dataclasses.replace(spec, image_size=args.image_size)
            registry.register(spec, overwrite=True)
        if args.offline_dir:
            spec = ht.offline.export_backbone(name, args.offline_dir / name, registry=registry)
        specs[name] = spec

    common = {"epochs": args.epochs, "head": ht.REPORT_HEAD, "output_dir": args.out}
    frozen = ht.benchmark([specs[n] for n in args.backbones.split(",")], data, **common)
    tuned = ht.benchmark([specs[n] for n in tuned_names], data, fine_tune=True, **common)
    report = ht.BenchmarkReport(frozen.results + tuned.results)
    report.save(args.out)
    print(report.to_markdown())
    try:
        print(f"Plot: {report.plot(args.out / 'study.png')}")
    except ht.MissingDependencyError as exc:
        print(exc)
    return report


if __name__ == "__main__":
    main()
