"""How fast are 12 MP phone JPEGs decoded: Pillow full vs draft, and TensorFlow?

Writes ~20 JPEGs of 4000 x 3000 (12 MP, ~3-4 MB, EXIF orientation 6 on every other one,
as phones write portrait shots), then prints images/s for:

- Pillow, full resolution (``decode_image(path)``), and full decode + bicubic resize to
  the ``--min-size`` short side (what ``min_size`` would cost without ``Image.draft``);
- Pillow with ``min_size`` (``Image.draft`` DCT-domain reduction, then the resize);
- the same through ``decode_many`` with one thread per core;
- ``tf.io.decode_jpeg`` at full size and at ``ratio=8``, each alone and followed by
  ``tf.image.resize(antialias=True)`` to the same short side (TF ignores EXIF
  orientation, so its portrait photos come out on their side).

Single-threaded unless stated; best of ``--repeat`` runs, after a warm-up.

    python benchmarks/decoding.py [--images 20] [--min-size 256 600] [--repeat 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import machine, timed

from hubtransfer.decoding import decode_image, decode_many


def write_phone_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 4000 x 3000 JPEGs with photo-like content and EXIF, quality 92."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"IMG_{i:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        base = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        smooth = np.asarray(base.resize((4000, 3000), Image.Resampling.BICUBIC))
        noise = rng.integers(0, 24, smooth.shape, dtype=np.uint8)
        array = smooth // 2 + 60 + noise
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 2 else 1  # orientation: rotate 90 degrees to display
        Image.fromarray(array).save(path, quality=92, exif=exif.tobytes())
    return paths


def best_rate(n: int, fn: Callable[[], object], repeat: int) -> float:
    """Images/s of the best of ``repeat`` runs (the machine is shared: best is least noisy)."""
    return n / min(timed(fn) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--min-size", type=int, nargs="+", default=[256, 600])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from PIL import Image, ImageOps

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ht-decoding-"))
    paths = write_phone_jpegs(workdir / "jpegs", args.images)
    n = len(paths)
    megabytes = sum(p.stat().st_size for p in paths) / n / 1e6
    print(f"machine: {machine()}")
    print(f"{n} JPEGs, 4000 x 3000, {megabytes:.1f} MB each on average, in {workdir}")
    decode_image(paths[0])  # warm-up: imports, first allocation

    def pillow_full_then_resize(path: Path, min_size: int) -> np.ndarray:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
        w, h = rgb.size
        scale = min_size / min(w, h)
        size = (round(w * scale), round(h * scale))
        return np.asarray(rgb.resize(size, Image.Resampling.BICUBIC))

    def tf_decode(path: Path, ratio: int, min_size: int | None) -> np.ndarray:
        image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3, ratio=ratio)
        if min_size is not None:
            h, w = image.shape[0], image.shape[1]
            scale = min_size / min(h, w)
            size = (round(h * scale), round(w * scale))
            image = tf.cast(tf.image.resize(image, size, antialias=True), tf.uint8)
        return image.numpy()

    for ratio in (1, 4, 8):  # warm-up: TF's first eager ops build their kernels
        tf_decode(paths[0], ratio, 256)

    def rate(n: int, fn: Callable[[], object]) -> float:
        return best_rate(n, fn, args.repeat)

    rows: list[tuple[str, float]] = []
    rows.append(("pillow full decode", rate(n, lambda: [decode_image(p) for p in paths])))
    rows.append(("tf decode_jpeg full", rate(n, lambda: [tf_decode(p, 1, None) for p in paths])))
    rows.append(("tf decode_jpeg ratio=8", rate(n, lambda: [tf_decode(p, 8, None) for p in paths])))
    cores = os.cpu_count() or 1
    rows.append(
        (
            f"pillow full decode, decode_many {cores} threads",
            rate(n, lambda: list(decode_many(paths))),
        )
    )
    for m in args.min_size:
        ratio = 2 ** min(3, int(math.log2(3000 // m))) if m <= 3000 else 1
        rows += [
            (
                f"pillow full + resize to {m}",
                rate(n, lambda m=m: [pillow_full_then_resize(p, m) for p in paths]),
            ),
            (
                f"pillow draft + resize to {m} (min_size={m})",
                rate(n, lambda m=m: [decode_image(p, min_size=m) for p in paths]),
            ),
            (
                f"pillow min_size={m}, decode_many {cores} threads",
                rate(n, lambda m=m: list(decode_many(paths, min_size=m))),
            ),
            (
                f"tf decode_jpeg full + resize to {m}",
                rate(n, lambda m=m: [tf_decode(p, 1, m) for p in paths]),
            ),
            (
                f"tf decode_jpeg ratio={ratio} + resize to {m}",
                rate(n, lambda m=m, r=ratio: [tf_decode(p, r, m) for p in paths]),
            ),
        ]
    width = max(len(name) for name, _ in rows)
    for name, images_per_second in rows:
        print(f"{name:<{width}}  {images_per_second:7.1f} img/s")


if __name__ == "__main__":
    main()
