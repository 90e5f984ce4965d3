"""Writes image folders for tests: every awkward file kind a user's folder may hold."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _rgb(rng: np.random.Generator, colour: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    array = rng.integers(0, 90, (h, w, 3)).astype("uint8")
    array[..., colour] += 160
    return array


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# (suffix, PIL format, PIL mode): the valid kinds, with odd extension cases.
VALID_KINDS = [
    (".jpg", "JPEG", None),
    (".JPEG", "JPEG", "L"),
    (".png", "PNG", None),
    (".Png", "PNG", "RGBA"),
    (".png", "PNG", "P"),
    (".png", "PNG", "L"),
    (".bmp", "BMP", None),
    (".GIF", "GIF", None),
]


def write_colour_folder(
    root: Path,
    per_class: int = 8,
    classes: tuple[str, ...] = ("blue", "red"),
    size: tuple[int, int] = (24, 32),
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Class ``i`` is dominated by colour channel ``2 - i``; returns the valid files."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for i in range(per_class):
            suffix, fmt, mode = VALID_KINDS[i % len(VALID_KINDS)]
            path = folder / f"img_{i:03d}{suffix}"
            path.write_bytes(encode(_rgb(rng, 2 - index % 3, size), fmt, mode))
            written[name].append(path)
    return written


def write_junk(folder: Path) -> list[Path]:
    """Corrupt, truncated, empty and non-image files; returns them."""
    rng = np.random.default_rng(1)
    jpeg = encode(_rgb(rng, 0, (24, 32)), "JPEG")
    png = encode(_rgb(rng, 0, (24, 32)), "PNG")
    junk = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "empty.jpg": b"",
        "notes.txt": b"not an image",
        "fake.png": b"\x89PNG but not really",
    }
    paths = []
    for name, content in junk.items():
        path = folder / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def write_sorted_classes(
    root: Path, per_class: int, classes: tuple[str, ...] = ("a", "b"), size: int = 8
) -> dict[str, list[Path]]:
    """Many tiny PNGs, one colour per class: a "large", class-sorted folder in seconds."""
    written: dict[str, list[Path]] = {}
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        png = encode(np.full((size, size, 3), 40 * index, "uint8"), "PNG")
        written[name] = []
        for i in range(per_class):
            path = folder / f"{i:05d}.png"
            path.write_bytes(png)
            written[name].append(path)
    return written
