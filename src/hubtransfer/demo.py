"""The report's study with no network: ``hubtransfer demo``.

Local stand-ins for mobilenet_v2 and efficientnet_b0-b3 (built by
:func:`hubtransfer.offline.export_backbone` from the same architectures, random weights),
a generated image folder whose two classes are learnable (reddish vs bluish photos of
noise), a frozen study of every backbone plus fine-tuned mobilenet_v2, with the report's
head. Sizes, parameter counts and speeds are real; accuracies are not the report's,
because the backbones are untrained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubtransfer.results import BenchmarkReport

__all__ = ["DemoSettings", "run_demo", "write_demo_images"]

logger = logging.getLogger(__name__)

DISCLAIMER = (
    "The backbones are untrained stand-ins: the same architectures as the Hub models, with "
    "random weights and BatchNorm statistics re-estimated on one batch of this data (without "
    "that, random-weight features vanish). Accuracies therefore say nothing about pretrained "
    "backbones and are not the report's; parameter counts, model sizes and speeds are real."
)


@dataclass(frozen=True)
class DemoSettings:
    """How big the demo study is.

    Attributes:
        images_per_class: Generated images per class (20% go to validation).
        backbones: Backbones of the frozen study.
        fine_tune: Backbones also fine-tuned.
        epochs: Epochs of the frozen head (the report's 10).
        fine_tune_epochs: Epochs of the fine-tuning phase.
        warmup_epochs: Head warm-up epochs before fine-tuning.
    """

    images_per_class: int = 100
    backbones: tuple[str, ...] = (
        "mobilenet_v2",
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_b2",
        "efficientnet_b3",
    )
    fine_tune: tuple[str, ...] = ("mobilenet_v2",)
    epochs: int = 10
    fine_tune_epochs: int = 2
    warmup_epochs: int = 2


FULL = DemoSettings()
QUICK = DemoSettings(
    images_per_class=32,
    backbones=("mobilenet_v2", "efficientnet_b0"),
    epochs=5,
    fine_tune_epochs=1,
    warmup_epochs=1,
)


def write_demo_images(root: Path, per_class: int, seed: int = 0) -> Path:
    """Writes ``root/red`` and ``root/blue`` JPEGs of varied size; returns ``root``.

    Each image is smooth noise plus texture, tinted towards its class colour: easy for a
    model that sees colour, but not constant images.
    """
    from hubtransfer._tf import tf

    rng = np.random.default_rng(seed)
    for label, name in enumerate(("blue", "red")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{name}_{i:04d}.jpg"
            if path.exists():
                continue
            h, w = int(rng.integers(180, 260)), int(rng.integers(220, 320))
            coarse = rng.uniform(0, 140, (h // 16 + 1, w // 16 + 1, 3))
            image = tf.image.resize(coarse[None], (h, w)).numpy()[0]
            image += rng.uniform(0, 60, (h, w, 3))
            image[..., 2 if label == 0 else 0] += rng.uniform(10, 45)  # a faint tint
            encoded = tf.io.encode_jpeg(np.clip(image, 0, 255).astype("uint8"), quality=90)
            path.write_bytes(encoded.numpy())
    return root


def run_demo(
    out: Path,
    settings: DemoSettings = FULL,
    *,
    say: Callable[[str], None] = logger.info,
) -> BenchmarkReport:
    """Runs the offline study into ``out`` and returns the combined report.

    ``out`` receives ``images/``, ``backbones/`` (exports, reused by later runs),
    ``results.jsonl/.json/.csv/.md`` and ``study.png``.
    """
    import hubtransfer as ht
    from hubtransfer.sampling import sample_split

    data = ht.load_image_folder(write_demo_images(out / "images", settings.images_per_class))
    say(
        f"Data: {data.counts.train} train / {data.counts.validation} validation images "
        f"in {out / 'images'}"
    )
    specs = {}
    for name in dict.fromkeys(settings.backbones + settings.fine_tune):
        say(f"Preparing stand-in backbone {name} (reused if already exported)")
        # A seeded, class-stratified sample re-estimates BatchNorm: not the first images.
        sample = sample_split(data, "train", 32, seed=0)
        batch = next(iter(ht.prepare(sample, name, batch_size=32)))[0].numpy()
        specs[name] = ht.offline.export_backbone(
            name, out / "backbones" / name, calibration_images=batch
        )
    say(f"Frozen study: {', '.join(settings.backbones)}, {settings.epochs} epochs")
    frozen = ht.benchmark(
        [specs[n] for n in settings.backbones],
        data,
        epochs=settings.epochs,
        head=ht.REPORT_HEAD,
        output_dir=out,
    )
    say(
        f"Fine-tuning: {', '.join(settings.fine_tune)}, {settings.warmup_epochs} warm-up + "
        f"{settings.fine_tune_epochs} epochs"
    )
    tuned = ht.benchmark(
        [specs[n] for n in settings.fine_tune],
        data,
        epochs=settings.fine_tune_epochs,
        warmup_epochs=settings.warmup_epochs,
        fine_tune=True,
        head=ht.REPORT_HEAD,
        output_dir=out,
    )
    report = BenchmarkReport(frozen.results + tuned.results)
    report.save(out)
    try:
        report.plot(out / "study.png")
    except ht.MissingDependencyError as exc:
        say(f"No plot: {exc}")
    return report
