"""Writes the image files that real folders hold and TensorFlow's decoders get wrong.

Pillow writes most of them. The BMP variants Pillow cannot write (4-bit, RLE8, RLE4,
16-bit and 32-bit BI_BITFIELDS), 16-bit RGB PNG and a GIF whose first frame is smaller
than its canvas are written byte by byte here, following the format specifications.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112


def asymmetric_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB image with no symmetry: every flip or rotation of it differs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    array = np.stack(
        [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 0 * x], axis=-1
    )
    array += rng.normal(0, 4, array.shape)
    array[: height // 3, : width // 4] = (250, 20, 20)  # a red block in one corner
    return np.clip(array, 0, 255).astype(np.uint8)


def save_with_orientation(path: Path, array: np.ndarray, orientation: int, fmt: str) -> Path:
    """Saves ``array`` as stored pixels with an EXIF Orientation tag (JPEG or WebP)."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    options = {"quality": 95} if fmt == "JPEG" else {"lossless": True}
    Image.fromarray(array).save(path, fmt, exif=exif.tobytes(), **options)
    return path


def palette(colours: int, seed: int = 0) -> np.ndarray:
    """``colours`` distinct random RGB colours, shape (colours, 3)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (colours, 3), dtype=np.uint8)


def indices(height: int, width: int, colours: int, seed: int = 0) -> np.ndarray:
    """Palette indices with runs (for RLE) and noise (for absolute mode)."""
    rng = np.random.default_rng(seed)
    array = np.repeat(rng.integers(0, colours, (height, width // 5 + 1)), 5, axis=1)
    array = array[:, :width]
    noisy = rng.random((height, width)) < 0.3
    array[noisy] = rng.integers(0, colours, int(noisy.sum()))
    return array.astype(np.uint8)


# --- BMP ------------------------------------------------------------------------------

_BI_RGB, _BI_RLE8, _BI_RLE4, _BI_BITFIELDS = 0, 1, 2, 3


def _bmp(
    path: Path,
    *,
    width: int,
    height: int,
    bits: int,
    compression: int,
    pixels: bytes,
    colour_table: bytes = b"",
    masks: tuple[int, ...] = (),
) -> Path:
    """A bottom-up BMP; 3 masks go after a 40-byte header, 4 into a 108-byte V4 header."""
    if len(masks) == 4:
        header = struct.pack(
            "<IiiHHIIiiII4I",
            108,
            width,
            height,
            1,
            bits,
            compression,
            len(pixels),
            2835,
            2835,
            0,
            0,
            *masks,
        )
        header += b"sRGB" + bytes(36 + 12)  # colour space type, endpoints, gammas
        extra = b""
    else:
        header = struct.pack(
            "<IiiHHIIiiII",
            40,
            width,
            height,
            1,
            bits,
            compression,
            len(pixels),
            2835,
            2835,
            len(colour_table) // 4,
            0,
        )
        extra = struct.pack(f"<{len(masks)}I", *masks) + colour_table
    offset = 14 + len(header) + len(extra)
    file_header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    path.write_bytes(file_header + header + extra + pixels)
    return path


def _colour_table(colours: np.ndarray) -> bytes:
    return b"".join(bytes((int(b), int(g), int(r), 0)) for r, g, b in colours)


def _pad(row: bytes) -> bytes:
    return row + bytes(-len(row) % 4)


def _pack_nibbles(values: np.ndarray) -> bytes:
    values = list(values) + [0] * (len(values) % 2)
    return bytes((values[i] << 4) | values[i + 1] for i in range(0, len(values), 2))


def write_bmp_4bit(path: Path, index: np.ndarray, colours: np.ndarray) -> Path:
    """Uncompressed 4-bit palette BMP (16 colours)."""
    height, width = index.shape
    rows = b"".join(_pad(_pack_nibbles(index[y])) for y in reversed(range(height)))
    return _bmp(
        path,
        width=width,
        height=height,
        bits=4,
        compression=_BI_RGB,
        pixels=rows,
        colour_table=_colour_table(colours),
    )


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of runs of equal values, each at most 255 long."""
    runs, start = [], 0
    for x in range(1, len(row) + 1):
        if x == len(row) or row[x] != row[start] or x - start == 255:
            runs.append((start, x - start))
            start = x
    return runs


def _rle_row(row: np.ndarray, four_bit: bool) -> bytes:
    """Encoded runs for repeats, absolute mode for stretches of >= 3 single pixels."""
    out = bytearray()
    runs = _runs(row)
    i = 0
    while i < len(runs):
        start, length = runs[i]
        j = i
        while j < len(runs) and runs[j][1] == 1 and j - i < 200:
            j += 1
        if j - i >= 3:  # absolute mode: 0, count, the values, padded to 16 bits
            literal = row[start : start + (j - i)]
            data = _pack_nibbles(literal) if four_bit else bytes(literal.tolist())
            out += bytes((0, len(literal))) + data + bytes(len(data) % 2)
            i = j
            continue
        value = int(row[start])
        out += bytes((length, (value << 4) | value if four_bit else value))
        i += 1
    return bytes(out) + b"\x00\x00"  # end of line


def write_bmp_rle(path: Path, index: np.ndarray, colours: np.ndarray, bits: int) -> Path:
    """RLE8 (``bits=8``) or RLE4 (``bits=4``) compressed palette BMP."""
    height, width = index.shape
    rows = b"".join(_rle_row(index[y], bits == 4) for y in reversed(range(height)))
    return _bmp(
        path,
        width=width,
        height=height,
        bits=bits,
        compression=_BI_RLE4 if bits == 4 else _BI_RLE8,
        pixels=rows + b"\x00\x01",
        colour_table=_colour_table(colours),
    )


# Channel masks, per layout name: the byte order in memory differs from TF's BGRA guess.
BITFIELDS_32 = {
    "XBGR": (0xFF000000, 0x00FF0000, 0x0000FF00),  # 40-byte header + 3 masks
    "RGBA": (0x000000FF, 0x0000FF00, 0x00FF0000, 0xFF000000),  # V4 header
}


def write_bmp_bitfields_32(path: Path, rgb: np.ndarray, layout: str, alpha: int = 255) -> Path:
    """32-bit BI_BITFIELDS BMP with the channel masks of ``layout``."""
    height, width, _ = rgb.shape
    masks = BITFIELDS_32[layout]
    channels = [rgb[..., 0], rgb[..., 1], rgb[..., 2], np.full((height, width), alpha)]
    words = np.zeros((height, width), dtype="<u4")
    for channel, mask in zip(channels, masks if len(masks) == 4 else (*masks, 0), strict=True):
        if mask:
            shift = (mask & -mask).bit_length() - 1
            words |= channel.astype("<u4") << shift
    pixels = words[::-1].tobytes()
    return _bmp(
        path,
        width=width,
        height=height,
        bits=32,
        compression=_BI_BITFIELDS,
        pixels=pixels,
        masks=masks,
    )


def write_bmp_565(path: Path, rgb: np.ndarray) -> Path:
    """16-bit BI_BITFIELDS BMP, 5-6-5 bits per channel."""
    height, width, _ = rgb.shape
    r, g, b = (rgb[..., i].astype("<u2") for i in range(3))
    words = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
    rows = b"".join(_pad(words[y].astype("<u2").tobytes()) for y in reversed(range(height)))
    return _bmp(
        path,
        width=width,
        height=height,
        bits=16,
        compression=_BI_BITFIELDS,
        pixels=rows,
        masks=(0xF800, 0x07E0, 0x001F),
    )


# --- PNG ------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG with one IDAT; ``rows`` are raw scanlines (filter bytes are added here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    stride = len(rows) // height if height else 0
    filtered = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + (_chunk(b"IDAT", zlib.compress(filtered)) if rows else b"")
        + _chunk(b"IEND", b"")
    )


def write_png_rgb16(path: Path, rgb16: np.ndarray) -> Path:
    """48-bit (16 bits per channel) RGB PNG."""
    height, width, _ = rgb16.shape
    path.write_bytes(png_bytes(width, height, 16, 2, rgb16.astype(">u2").tobytes()))
    return path


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` but holds no pixel data at all."""
    path.write_bytes(png_bytes(width, height, 8, 2, b""))
    return path


# --- GIF ------------------------------------------------------------------------------


def write_gif_offset_first_frame(
    path: Path,
    index: np.ndarray,
    colours: np.ndarray,
    canvas: tuple[int, int],
    offset: tuple[int, int],
) -> Path:
    """A 2-frame GIF whose first frame (``index``) sits at ``offset`` on a larger canvas.

    Pillow writes the GIF; then its logical screen (canvas) is enlarged and the first
    image descriptor moved, as editors that crop frames to their content write them.
    ``canvas`` and ``offset`` are (width, height) and (left, top).
    """
    first = Image.fromarray(index, "P")
    first.putpalette(colours.astype(np.uint8).tobytes())
    second = Image.fromarray(np.roll(index, 1, axis=1), "P")
    second.putpalette(colours.astype(np.uint8).tobytes())
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=[second], duration=100)
    data = bytearray(buffer.getvalue())
    flags = data[10]
    position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[position] == 0x21:  # skip extension blocks up to the first image
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    if data[position] != 0x2C:
        raise ValueError("no image descriptor found in the GIF Pillow wrote")
    data[6:10] = struct.pack("<HH", *canvas)
    data[position + 1 : position + 5] = struct.pack("<HH", *offset)
    path.write_bytes(bytes(data))
    return path
