"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def machine() -> str:
    """A one-line description of this machine, for the figures' provenance."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU" if gpus else "CPU only"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, "
        f"TF {tf.__version__}, Python {platform.python_version()}"
    )


def write_jpeg_folder(
    root: Path, n: int, seed: int = 0, classes: tuple[str, ...] = ("cat", "dog")
) -> Path:
    """``n`` JPEGs of varied size around 500x375 (like cats_vs_dogs), learnable classes.

    Class ``i`` is tinted towards colour channel ``i % 3``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % len(classes)
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.jpg"
        if path.exists():
            continue
        h, w = int(rng.integers(300, 450)), int(rng.integers(400, 600))
        base = rng.integers(0, 120, (h // 8, w // 8, 3), dtype=np.uint8)
        base[..., label % 3] += 120
        image = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        noise = rng.integers(0, 30, (h, w, 3), dtype=np.uint8)
        array = np.asarray(image, dtype=np.uint8) // 2 + noise
        Image.fromarray(array).save(path, quality=90)
    return root


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
