"""decoding: every file kind decodes to Pillow's reference pixels; bad files get a reason.

The reference is ``ImageOps.exif_transpose(Image.open(p)).convert("RGB")`` (alpha
dropped), except 16-bit grey, where Pillow clips and hubtransfer keeps the high byte.
Where the file's pixels are known exactly (palette, lossless, bitfields), they are also
checked against the array that was written, independently of Pillow.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

import photos
from hubtransfer import decoding
from hubtransfer.decoding import UnreadableImageError, decode_image, decode_many
from hubtransfer.errors import ConfigurationError, DatasetError


def reference(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def stored(path: Path) -> np.ndarray:
    """The pixels as stored in the file, orientation not applied."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# What each EXIF orientation does to the stored pixels to show them upright.
UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


# --- orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(2, 9))
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    path = photos.save_with_orientation(
        tmp_path / "photo.jpg", photos.asymmetric_rgb(20, 32), orientation, "JPEG"
    )
    with Image.open(path) as image:
        assert image.getexif()[photos.ORIENTATION_TAG] == orientation

    decoded = decode_image(path)

    assert decoded.dtype == np.uint8
    assert decoded.shape == ((32, 20, 3) if orientation >= 5 else (20, 32, 3))
    np.testing.assert_array_equal(decoded, reference(path))
    np.testing.assert_array_equal(decoded, UPRIGHT[orientation](stored(path)))


def test_webp_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = photos.asymmetric_rgb(20, 32)
    path = photos.save_with_orientation(tmp_path / "photo.webp", array, 6, "WEBP")

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, np.rot90(array, k=-1))  # lossless: exact
    np.testing.assert_array_equal(decoded, reference(path))


# --- BMP ------------------------------------------------------------------------------


def test_8bit_palette_bmp_gives_palette_colours_not_indices(tmp_path: Path) -> None:
    colours, index = photos.palette(256), photos.indices(12, 17, 256)
    image = Image.fromarray(index, "P")
    image.putpalette(colours.tobytes())
    path = tmp_path / "palette.bmp"
    image.save(path)

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, colours[index])
    np.testing.assert_array_equal(decoded, reference(path))


def test_1bit_bmp(tmp_path: Path) -> None:
    bits = photos.indices(9, 13, 2).astype(bool)
    path = tmp_path / "mono.bmp"
    Image.fromarray(bits).save(path)  # mode "1"

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, np.repeat(bits[..., None] * 255, 3, axis=2))
    np.testing.assert_array_equal(decoded, reference(path))


@pytest.mark.parametrize(
    ("kind", "write"),
    [
        ("4-bit", lambda p, i, c: photos.write_bmp_4bit(p, i, c)),
        ("RLE4", lambda p, i, c: photos.write_bmp_rle(p, i, c, bits=4)),
        ("RLE8", lambda p, i, c: photos.write_bmp_rle(p, i, c, bits=8)),
    ],
)
def test_low_bit_and_rle_bmps(tmp_path: Path, kind: str, write: object) -> None:
    colours = photos.palette(16, seed=1)
    index = photos.indices(11, 23, 16, seed=2)  # odd width: row padding and nibbles
    path = write(tmp_path / f"{kind}.bmp", index, colours)  # type: ignore[operator]
    with Image.open(path) as image:
        assert image.info["compression"] == {"4-bit": 0, "RLE8": 1, "RLE4": 2}[kind]

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, colours[index])
    np.testing.assert_array_equal(decoded, reference(path))


@pytest.mark.parametrize("layout", sorted(photos.BITFIELDS_32))
def test_32bit_bitfields_bmp_channels(tmp_path: Path, layout: str) -> None:
    rgb = photos.asymmetric_rgb(10, 15)
    # Alpha 0 in the RGBA layout: dropped, the colour under it kept.
    path = photos.write_bmp_bitfields_32(tmp_path / "bitfields.bmp", rgb, layout, alpha=0)

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, rgb)
    np.testing.assert_array_equal(decoded, reference(path))


def test_16bit_565_bmp(tmp_path: Path) -> None:
    rgb = photos.asymmetric_rgb(10, 15)
    path = photos.write_bmp_565(tmp_path / "565.bmp", rgb)

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, reference(path))
    # 5 and 6 bits per channel: within one quantisation step of the original.
    assert np.abs(decoded.astype(int) - rgb).max() <= 8


# --- alpha, palette, grey, CMYK, 16-bit ------------------------------------------------


def test_rgba_webp_drops_alpha_keeping_the_colour_underneath(tmp_path: Path) -> None:
    rgb = photos.asymmetric_rgb(12, 16)
    alpha = np.full((12, 16), 255, np.uint8)
    alpha[:, :8] = 0  # left half fully transparent
    path = tmp_path / "alpha.webp"
    Image.fromarray(np.dstack([rgb, alpha])).save(path, lossless=True, exact=True)
    with Image.open(path) as image:
        assert image.mode == "RGBA"

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, rgb)  # not composited on white or black
    np.testing.assert_array_equal(decoded, reference(path))


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("grey.png", "L"),
        ("grey.jpg", "L"),
        ("grey_alpha.png", "LA"),
        ("rgba.png", "RGBA"),
        ("palette.png", "P"),
        ("palette.gif", "P"),
    ],
)
def test_other_modes_match_pillow(tmp_path: Path, name: str, mode: str) -> None:
    path = tmp_path / name
    Image.fromarray(photos.asymmetric_rgb(9, 14)).convert(mode).save(path)
    with Image.open(path) as image:
        assert image.mode == mode

    decoded = decode_image(path)

    assert decoded.shape == (9, 14, 3)
    np.testing.assert_array_equal(decoded, reference(path))
    if mode in ("L", "LA"):
        np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    rgb = photos.asymmetric_rgb(16, 24)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    with Image.open(path) as image:
        assert image.mode == "CMYK"

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, reference(path))
    assert np.abs(decoded.astype(int) - rgb).mean() < 3  # not inverted, not shifted


def test_16bit_grey_png_keeps_the_high_byte(tmp_path: Path) -> None:
    grey16 = (np.arange(10 * 12).reshape(10, 12) * 541).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, np.repeat((grey16 >> 8)[..., None], 3, axis=2))
    # Pillow's convert("RGB") clips instead: the reason for the special case.
    assert (reference(path) == 255).mean() > 0.9


def test_16bit_grey_tiff_keeps_the_high_byte_as_png_does(tmp_path: Path) -> None:
    grey16 = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.tif")
    Image.fromarray(grey16).save(tmp_path / "grey16.png")

    decoded = decode_image(tmp_path / "grey16.tif")

    np.testing.assert_array_equal(decoded, decode_image(tmp_path / "grey16.png"))
    np.testing.assert_array_equal(decoded[..., 0], (grey16 >> 8).astype(np.uint8))


def test_16bit_rgb_png(tmp_path: Path) -> None:
    rgb16 = (photos.asymmetric_rgb(10, 12).astype(np.uint16) * 257 + 100).astype(np.uint16)
    path = photos.write_png_rgb16(tmp_path / "rgb16.png", rgb16)

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, (rgb16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(decoded, reference(path))


# --- animations -----------------------------------------------------------------------


def test_gif_first_frame_is_placed_on_its_canvas(tmp_path: Path) -> None:
    colours, index = photos.palette(256, seed=3), photos.indices(5, 7, 256, seed=4)
    path = photos.write_gif_offset_first_frame(
        tmp_path / "anim.gif", index, colours, canvas=(16, 12), offset=(6, 4)
    )

    decoded = decode_image(path)

    assert decoded.shape == (12, 16, 3)  # the canvas, not the 5 x 7 frame
    np.testing.assert_array_equal(decoded[4:9, 6:13], colours[index])
    np.testing.assert_array_equal(decoded, reference(path))


def test_animated_webp_gives_the_first_frame(tmp_path: Path) -> None:
    first, second = photos.asymmetric_rgb(10, 14, seed=1), photos.asymmetric_rgb(10, 14, seed=2)
    path = tmp_path / "anim.webp"
    Image.fromarray(first).save(
        path, save_all=True, append_images=[Image.fromarray(second)], lossless=True
    )
    with Image.open(path) as image:
        assert image.n_frames == 2

    decoded = decode_image(path)

    np.testing.assert_array_equal(decoded, first)
    np.testing.assert_array_equal(decoded, reference(path))


# --- unreadable files -----------------------------------------------------------------


def _jpeg(tmp_path: Path) -> bytes:
    path = tmp_path / "source.jpg"
    Image.fromarray(photos.asymmetric_rgb(40, 60)).save(path)
    return path.read_bytes()


def _png(tmp_path: Path) -> bytes:
    path = tmp_path / "source.png"
    Image.fromarray(photos.asymmetric_rgb(40, 60)).save(path)
    return path.read_bytes()


def _bad_crc(png: bytes) -> bytes:
    start = png.index(b"IDAT") + 10  # inside the compressed data, CRC now wrong
    return png[:start] + bytes([png[start] ^ 0xFF]) + png[start + 1 :]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.jpg", lambda t: _jpeg(t)[: len(_jpeg(t)) // 2], "truncated"),
        ("header_only.jpg", lambda t: _jpeg(t)[:40], "truncated"),
        ("truncated.png", lambda t: _png(t)[: len(_png(t)) // 2], "truncated"),
        ("corrupt.png", lambda t: _bad_crc(_png(t)), "corrupt"),
        ("empty.jpg", lambda t: b"", "empty file"),
        ("notes.jpg", lambda t: b"not an image, just text\n" * 20, "not an image"),
        ("fake.png", lambda t: b"\x89PNG but not really", "not an image"),
    ],
)
def test_unreadable_files_raise_with_a_reason(
    tmp_path: Path, name: str, content: object, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content(tmp_path))  # type: ignore[operator]

    with pytest.raises(UnreadableImageError, match="re-save the file") as caught:
        decode_image(path)

    assert caught.value.reason == reason
    assert caught.value.path == str(path)
    assert isinstance(caught.value, DatasetError)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError) as missing:
        decode_image(tmp_path / "gone.jpg")
    with pytest.raises(UnreadableImageError) as folder:
        decode_image(tmp_path)

    assert (missing.value.reason, folder.value.reason) == ("missing file", "cannot read file")


def test_error_survives_pickling(tmp_path: Path) -> None:
    error = pickle.loads(pickle.dumps(UnreadableImageError(tmp_path / "a.jpg", "truncated")))

    assert (error.path, error.reason) == (str(tmp_path / "a.jpg"), "truncated")


# --- pixel cap ------------------------------------------------------------------------


def test_pixel_cap_refuses_from_the_header_before_decoding(tmp_path: Path) -> None:
    # The file declares 9000 x 9000 but has no pixel data: decoding it would fail as
    # "truncated", so this reason proves the refusal came first.
    path = photos.write_png_header_only(tmp_path / "bomb.png", 9000, 9000)
    limit = Image.MAX_IMAGE_PIXELS

    with pytest.raises(UnreadableImageError) as caught:
        decode_image(path, max_pixels=50_000_000)

    assert caught.value.reason == "over the pixel cap (9000 x 9000)"
    assert limit == Image.MAX_IMAGE_PIXELS  # Pillow's global untouched


def test_pixel_cap_default_refuses_a_huge_header(tmp_path: Path) -> None:
    path = photos.write_png_header_only(tmp_path / "bomb.png", 30_000, 30_000)

    with pytest.raises(UnreadableImageError) as caught:
        decode_image(path)

    # Over Pillow's own limit: Pillow refuses at open(), before any size check of ours.
    assert caught.value.reason == f"over the pixel cap (> {2 * Image.MAX_IMAGE_PIXELS} pixels)"


def test_pixel_cap_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(photos.asymmetric_rgb(30, 40)).save(path)

    assert decode_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(UnreadableImageError, match=r"over the pixel cap \(40 x 30\)"):
        decode_image(path, max_pixels=1199)


# --- min_size and draft ---------------------------------------------------------------


@pytest.fixture(scope="module")
def big_rotated_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4000 x 3000 (12 MP) JPEG shown upright as 3000 x 4000 (EXIF orientation 6)."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    array = np.asarray(base.resize((4000, 3000), Image.Resampling.BICUBIC))
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    return photos.save_with_orientation(path, array, 6, "JPEG")


@pytest.mark.parametrize(("min_size", "scale"), [(300, 8), (1000, 2)])
def test_draft_decodes_large_jpegs_reduced_then_resizes(
    big_rotated_jpeg: Path, min_size: int, scale: int
) -> None:
    drafts: list[object] = []
    original = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = original(self, mode, size)
        drafts.append(result)
        return result

    with mock.patch.object(JpegImageFile, "draft", spy):
        decoded = decode_image(big_rotated_jpeg, min_size=min_size)

    # DCT-domain reduction by `scale` of the stored 4000 x 3000 (box in stored pixels).
    assert drafts == [("RGB", (0, 0, 4000 / scale, 3000 / scale))]
    height = round(4000 * min_size / 3000)
    assert decoded.shape == (height, min_size, 3)  # upright: portrait, short side exact
    full = Image.fromarray(reference(big_rotated_jpeg))
    expected = np.asarray(full.resize((min_size, height), Image.Resampling.BICUBIC))
    assert np.abs(decoded.astype(int) - expected).mean() < 3


@pytest.mark.parametrize(
    ("height", "width", "min_size", "shape"),
    [
        (513, 2000, 256, (256, 998)),  # reduced by 2: 257 rows, the last half a row
        (2264, 2201, 256, (263, 256)),
        (300, 2000, 32, (32, 213)),
        (2000, 20, 2, (200, 2)),
    ],
)
def test_reduced_jpeg_keeps_the_files_aspect_ratio(
    tmp_path: Path, height: int, width: int, min_size: int, shape: tuple[int, int]
) -> None:
    # draft's reduced image rounds its sides up; the long side comes from the file's.
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.jpg")
    Image.fromarray(array).save(tmp_path / "a.png")

    assert decode_image(tmp_path / "a.jpg", min_size=min_size).shape == (*shape, 3)
    assert decode_image(tmp_path / "a.png", min_size=min_size).shape == (*shape, 3)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_reduced_jpeg_is_oriented_like_the_upright_one(tmp_path: Path, orientation: int) -> None:
    # 2049 x 2729 reduced by 8 leaves an eighth of a row and of a column at the bottom
    # and right edges; after a flip or rotation they sit elsewhere, and so must the box
    # the resize reads (else the picture shifts by up to a pixel: diffs over 100).
    y, x = np.mgrid[0:2049, 0:2729]
    squares = ((((x // 48) + (y // 48)) % 2) * 200 + 20).astype(np.uint8)
    array = np.stack([squares, np.flipud(squares), (x * 255 // 2729).astype(np.uint8)], -1)
    Image.fromarray(array).save(tmp_path / "upright.jpg", quality=95)
    turned = photos.save_with_orientation(tmp_path / "turned.jpg", array, orientation, "JPEG")
    upright = Image.fromarray(decode_image(tmp_path / "upright.jpg", min_size=256))

    decoded = decode_image(turned, min_size=256)

    expected = np.asarray(upright.transpose(decoding._ORIENTATIONS[orientation]))
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).max() <= 1


def test_orientation_does_not_depend_on_rewriting_the_exif_block(tmp_path: Path) -> None:
    # ImageOps.exif_transpose turns the pixels, then rewrites the EXIF block; a failure
    # there must not leave turned pixels with the unturned size (nor skip the file).
    array = photos.asymmetric_rgb(600, 1000)
    path = photos.save_with_orientation(tmp_path / "turned.jpg", array, 6, "JPEG")
    expected = decode_image(path, min_size=64)
    with mock.patch.object(Image.Exif, "tobytes", side_effect=ValueError("no EXIF writing")):
        decoded = decode_image(path, min_size=64)
    assert decoded.shape == expected.shape == (107, 64, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_min_size_never_enlarges(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    Image.fromarray(photos.asymmetric_rgb(30, 40)).save(path)

    np.testing.assert_array_equal(decode_image(path, min_size=30), reference(path))
    np.testing.assert_array_equal(decode_image(path, min_size=100), reference(path))


@pytest.mark.parametrize(("name", "mode"), [("wide.png", "RGB"), ("grey16.png", "I;16")])
def test_min_size_resizes_other_formats(tmp_path: Path, name: str, mode: str) -> None:
    path = tmp_path / name
    array = photos.asymmetric_rgb(50, 120)
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray(array[..., 0].astype(np.uint16) * 257)
    image.save(path)

    decoded = decode_image(path, min_size=20)

    assert decoded.shape == (20, 48, 3)
    full = Image.fromarray(decode_image(path))
    expected = np.asarray(full.resize((48, 20), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"min_size": 0}, "min_size must be a positive integer or None. Received: min_size=0"),
        ({"min_size": 2.5}, "min_size must be a positive integer or None"),
        ({"max_pixels": -1}, "max_pixels must be a positive integer. Received: max_pixels=-1"),
    ],
)
def test_bad_arguments(tmp_path: Path, arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.")):
        decode_image(tmp_path / "any.jpg", **arguments)  # type: ignore[arg-type]


# --- decode_many ----------------------------------------------------------------------


def _mixed_folder(tmp_path: Path, n: int = 9) -> tuple[list[Path], list[str | None]]:
    paths, reasons = [], []
    for i in range(n):
        path = tmp_path / f"{i:02d}.jpg"
        if i % 4 == 3:
            path.write_bytes(b"")
            reasons.append("empty file")
        else:
            Image.fromarray(photos.asymmetric_rgb(8 + i, 12, seed=i)).save(path)
            reasons.append(None)
        paths.append(path)
    return paths, reasons


@pytest.mark.parametrize("workers", [1, 3])
def test_decode_many_keeps_input_order_and_gives_reasons(tmp_path: Path, workers: int) -> None:
    paths, reasons = _mixed_folder(tmp_path)
    seen: list[tuple[int, int]] = []

    results = list(decode_many(paths, workers=workers, progress=lambda d, t: seen.append((d, t))))

    assert len(results) == len(paths)
    for path, reason, result in zip(paths, reasons, results, strict=True):
        if reason is None:
            assert isinstance(result, np.ndarray)
            np.testing.assert_array_equal(result, decode_image(path))
        else:
            assert result == reason
    assert seen == [(i, len(paths)) for i in range(1, len(paths) + 1)]


def test_decode_many_passes_min_size_and_cap(tmp_path: Path) -> None:
    paths, _ = _mixed_folder(tmp_path, n=3)  # 12 wide, 8, 9 and 10 high

    results = list(decode_many(paths, min_size=5, max_pixels=100, workers=2))

    assert isinstance(results[0], np.ndarray)
    assert results[0].shape == (5, 8, 3)
    assert results[1:] == ["over the pixel cap (12 x 9)", "over the pixel cap (12 x 10)"]


def test_decode_many_is_lazy_and_bounded(tmp_path: Path) -> None:
    paths, _ = _mixed_folder(tmp_path, n=30)
    submitted: list[object] = []

    class CountingExecutor(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(args[0])
            return super().submit(fn, *args, **kwargs)

    with mock.patch.object(decoding, "ThreadPoolExecutor", CountingExecutor):
        results = decode_many(paths, workers=2)
        assert submitted == []  # nothing runs before the first next()
        next(results)
        # A window of 2 x workers, plus the one queued when the first was taken.
        assert len(submitted) == 5
        results.close()  # the caller stops early: nothing more is queued
    assert len(submitted) == 5


def test_decode_many_rejects_bad_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"workers must be a positive integer or None"):
        decode_many([tmp_path / "a.jpg"], workers=0)  # at the call, not at the first next()


def test_decode_many_of_nothing() -> None:
    assert list(decode_many([])) == []
