"""The image store: decoded folders kept across processes, incremental, torn-safe, bounded."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

import hubtransfer as ht
from hubtransfer import decoding, imagecache
from hubtransfer.data import file_split
from hubtransfer.errors import ConfigurationError
from hubtransfer.imagecache import build_image_cache
from hubtransfer.imagestore import ImageStore, file_stamps, image_key
from images import encode, write_colour_folder


def _folder(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    write_colour_folder(root, per_class=per_class, size=(30, 40), seed=seed)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return root


def _decoding() -> mock.MagicMock:
    """Counts decoding passes (and their files) where the image cache calls the decoder."""
    return mock.patch.object(imagecache, "decode_many", wraps=decoding.decode_many)


def _decoded(spy: mock.MagicMock) -> list[str]:
    return [str(p) for call in spy.call_args_list for p in call.args[0]]


def _pixels(data: ht.ImageData) -> dict[str, list[tuple[bytes, int]]]:
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    pixels = {
        name: [(x.numpy().tobytes() + bytes(x.shape), int(y)) for x, y in split]
        for name, split in splits.items()
        if split is not None
    }
    pixels["train"].sort()  # train's order is a fresh shuffle every pass
    return pixels


def _same(a: ht.ImageData, b: ht.ImageData) -> None:
    assert a.fingerprint == b.fingerprint
    assert a.counts == b.counts and a.counts.skip_reasons == b.counts.skip_reasons
    assert a.class_names == b.class_names
    assert (a.train_files, a.validation_files, a.test_files) == (
        b.train_files,
        b.validation_files,
        b.test_files,
    )
    assert _pixels(a) == _pixels(b)


def test_second_load_decodes_nothing_and_gives_the_same_data(
    tmp_path: Path, _private_cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path / "photos")
    kwargs: dict[str, Any] = {"validation_fraction": 0.25, "test_fraction": 0.2}
    first = ht.load_image_folder(folder, **kwargs)
    assert first.counts.skip_reasons == (
        (str(folder / "red" / "broken.jpg"), "unreadable (truncated)"),
    )
    with _decoding() as spy, caplog.at_level(logging.INFO, logger="hubtransfer"):
        second = ht.load_image_folder(folder, **kwargs)
    assert spy.call_count == 0  # nothing decoded, not even the broken file
    assert "from the image store" in caplog.text
    _same(first, second)
    fresh = ht.load_image_folder(folder, **kwargs, image_store=False)  # decoded, no store
    _same(fresh, second)
    split = file_split(second.validation)
    assert split is not None and split.cache.path is not None
    assert split.cache.path.parent.parent == _private_cache_dir / "images"
    assert not split.cache.images[0].flags.writeable  # a read-only view of the store's file
    (entry,) = ImageStore().entries()
    assert entry.metadata["root"] == str(folder.absolute())
    assert entry.metadata["images"] == 12 and entry.metadata["failures"] == 1
    assert entry.metadata["max_image_size"] == 256
    assert sorted(p.name for p in entry.path.iterdir()) == [
        ".hubtransfer.json",
        "index.json",
        "pixels.u8",
    ]
    # Its recipe (what a Dask or spawn worker runs) reads the store too.
    with _decoding() as spy:
        again = second.recipe.load() if second.recipe else None
    assert again is not None and spy.call_count == 0
    _same(second, again)


def test_changed_and_added_files_are_the_only_ones_decoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path / "photos")
    ht.load_image_folder(folder)
    touched = folder / "blue" / "img_002.png"
    info = touched.stat()
    os.utime(touched, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    added = folder / "red" / "img_100.jpg"
    added.write_bytes((folder / "red" / "img_000.jpg").read_bytes())
    with _decoding() as spy, caplog.at_level(logging.INFO, logger="hubtransfer"):
        updated = ht.load_image_folder(folder)
    assert sorted(_decoded(spy)) == sorted([str(touched), str(added)])
    assert "12 of 14 files" in caplog.text and "reused" in caplog.text
    _same(updated, ht.load_image_folder(folder, image_store=False))
    (entry,) = ImageStore().entries()  # the folder's older entry is gone: all is in this one
    assert entry.metadata["images"] == 13 and entry.metadata["failures"] == 1
    with _decoding() as spy:
        _same(updated, ht.load_image_folder(folder))
    assert spy.call_count == 0


def _entry(cache: Path) -> Path:
    (entry,) = (cache / "images").iterdir()
    return entry


def _truncate_pixels(entry: Path) -> None:
    pixels = entry / "pixels.u8"
    pixels.write_bytes(pixels.read_bytes()[:-7])


def _garble_index(entry: Path) -> None:
    (entry / "index.json").write_text('{"format": 1, "files": [')


def _misplace_offsets(entry: Path) -> None:
    index = json.loads((entry / "index.json").read_text())
    shaped = [item for item in index["files"] if "shape" in item]
    shaped[0]["shape"], shaped[1]["shape"] = shaped[1]["shape"], [1, 1, 3]
    (entry / "index.json").write_text(json.dumps(index))


def _remove_marker(entry: Path) -> None:
    (entry / ".hubtransfer.json").unlink()


@pytest.mark.parametrize(
    "damage", [_truncate_pixels, _garble_index, _misplace_offsets, _remove_marker]
)
def test_a_torn_entry_is_discarded_with_a_warning_and_rebuilt(
    tmp_path: Path, _private_cache_dir: Path, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    folder = _folder(tmp_path / "photos")
    ht.load_image_folder(folder)
    first = ht.load_image_folder(folder, image_store=False)  # not a view of the entry
    entry = _entry(_private_cache_dir)
    damage(entry)
    with _decoding() as spy, caplog.at_level(logging.WARNING, logger="hubtransfer"):
        again = ht.load_image_folder(folder)
    assert len(_decoded(spy)) == 13  # all of it: a damaged entry is not reused either
    warnings = [r.getMessage() for r in caplog.records if r.name == "hubtransfer.imagestore"]
    assert len(warnings) == 1 and str(entry) in warnings[0]
    assert "not what was written" in warnings[0] and "it is removed" in warnings[0]
    _same(first, again)
    assert _entry(_private_cache_dir) == entry  # written again, whole
    assert (entry / ".hubtransfer.json").is_file()
    with _decoding() as spy:
        _same(first, ht.load_image_folder(folder))
    assert spy.call_count == 0


def _load_in_a_process(folder: str, store: str, barrier: Any) -> tuple[str, Any]:
    barrier.wait()  # both scan, decode and store at once
    data = ht.load_image_folder(folder, image_store=store)
    return data.fingerprint, _pixels(data)


@pytest.mark.slow  # starts two processes
def test_two_processes_loading_one_folder_both_succeed_with_one_entry(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "photos", per_class=20)
    store = tmp_path / "store"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(2)
        with context.Pool(2) as pool:
            results = pool.starmap(
                _load_in_a_process, [(str(folder), str(store), barrier) for _ in range(2)]
            )
    assert results[0] == results[1]
    expected = ht.load_image_folder(folder, image_store=False)
    assert results[0] == (expected.fingerprint, _pixels(expected))
    (entry,) = ImageStore(store).entries()
    assert [p.name for p in (store / "images").iterdir()] == [entry.key]  # no staging left


def test_a_read_only_cache_root_costs_one_warning_not_the_load(
    tmp_path: Path, _private_cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path / "photos")
    expected = ht.load_image_folder(folder, image_store=False)
    _private_cache_dir.chmod(0o555)
    # As root, permissions do not stop a write: the file system's refusal is simulated.
    refusal = OSError(errno.EROFS, "Read-only file system")
    as_root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    patch = (
        mock.patch("hubtransfer._fs.write_directory", side_effect=refusal)
        if as_root
        else contextlib.nullcontext()
    )
    try:
        with patch, caplog.at_level(logging.WARNING, logger="hubtransfer"):
            data = ht.load_image_folder(folder)
    finally:
        _private_cache_dir.chmod(0o755)
    _same(expected, data)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hubtransfer.imagestore"]
    assert len(warnings) == 1
    assert "decoded again next time" in warnings[0]
    assert "HUBTRANSFER_CACHE_DIR" in warnings[0] and "image_store=False" in warnings[0]
    assert ImageStore().entries() == []


def _build(folder: Path, store: ImageStore) -> str:
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    build_image_cache(paths, store=store, folder=folder)
    return image_key(file_stamps(paths, {}), 256)


def _png_folder(folder: Path, n: int, seed: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_eviction_keeps_the_store_under_its_cap_and_leaves_user_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "cache" / "images"
    directory.mkdir(parents=True)
    mine = directory / "notes.txt"
    mine.write_text("keep me")
    foreign = directory / ("f" * 64)  # named like an entry, not marked as one
    foreign.mkdir()
    (foreign / "big.bin").write_bytes(b"\0" * 100_000)
    first = _build(_png_folder(tmp_path / "first", 4, seed=0), ImageStore(tmp_path / "cache"))
    (entry,) = ImageStore(tmp_path / "cache").entries()
    assert entry.key == first
    ImageStore(tmp_path / "cache").clear()
    # Room for two entries of four 20 x 20 images, not three.
    store = ImageStore(tmp_path / "cache", max_bytes=entry.bytes * 5 // 2)
    a = _build(_png_folder(tmp_path / "a", 4, seed=1), store)
    time.sleep(0.05)
    b = _build(_png_folder(tmp_path / "b", 4, seed=2), store)
    time.sleep(0.05)
    with _decoding() as spy:
        _build(tmp_path / "a", store)  # a use: a is now more recent than b
    assert spy.call_count == 0
    time.sleep(0.05)
    with caplog.at_level(logging.INFO, logger="hubtransfer"):
        c = _build(_png_folder(tmp_path / "c", 4, seed=3), store)
    kept = {e.key for e in store.entries()}
    assert kept == {a, c} and b not in kept  # b, least recently used, went
    assert sum(e.bytes for e in store.entries()) <= store.max_bytes
    assert "removed 1 least recently used" in caplog.text and str(tmp_path / "b") in caplog.text
    assert mine.read_text() == "keep me" and (foreign / "big.bin").stat().st_size > 0
    # An entry larger than the whole cap is still kept: never the one just written.
    tiny = ImageStore(tmp_path / "cache", max_bytes=0)
    d = _build(_png_folder(tmp_path / "d", 4, seed=4), tiny)
    assert {e.key for e in tiny.entries()} == {d}
    assert mine.exists() and foreign.is_dir()


def test_without_the_store_nothing_is_written_to_the_cache_root(
    tmp_path: Path, _private_cache_dir: Path
) -> None:
    folder = _folder(tmp_path / "photos")
    for _ in range(2):
        with _decoding() as spy:
            ht.load_image_folder(folder, image_store=False)
        assert len(_decoded(spy)) == 13
    assert list(_private_cache_dir.rglob("*")) == []


def test_a_store_path_keeps_the_images_there(tmp_path: Path, _private_cache_dir: Path) -> None:
    folder = _folder(tmp_path / "photos")
    first = ht.load_image_folder(folder, image_store=tmp_path / "elsewhere")
    assert len(ImageStore(tmp_path / "elsewhere").entries()) == 1
    assert list(_private_cache_dir.rglob("*")) == []
    assert first.recipe is not None
    assert dict(first.recipe.arguments)["image_store"] == str(tmp_path / "elsewhere")


@pytest.mark.parametrize("bad", [None, 1, 0, "", b"/tmp", ["/tmp"]])
def test_a_bad_image_store_is_refused_before_any_decoding(tmp_path: Path, bad: object) -> None:
    folder = _folder(tmp_path / "photos")
    with (
        _decoding() as spy,
        pytest.raises(ConfigurationError, match="image_store must be True") as err,
    ):
        ht.load_image_folder(folder, image_store=bad)  # type: ignore[arg-type]
    assert "or a directory path" in str(err.value) and f"image_store={bad!r}" in str(err.value)
    assert spy.call_count == 0


def _bmp(colour: int) -> bytes:
    """A 40x30 BMP of one colour channel: same dimensions, same number of bytes."""
    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[..., colour] = 200
    return encode(pixels, "BMP")


def test_a_file_rewritten_with_the_same_size_and_time_is_decoded_again(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "photos")
    target = folder / "red" / "img_bmp.bmp"
    target.write_bytes(_bmp(0))
    ht.load_image_folder(folder)
    info = target.stat()
    target.write_bytes(_bmp(2))  # as cp -p, rsync -a or an in-place EXIF edit do
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (info.st_size, info.st_mtime_ns)
    with _decoding() as spy:
        data = ht.load_image_folder(folder)
    assert _decoded(spy) == [str(target)]  # its change time moved: only it is decoded
    _same(data, ht.load_image_folder(folder, image_store=False))


def test_a_file_that_could_not_be_read_is_tried_again_next_time(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "photos")
    victim = str(folder / "blue" / "img_002.png")
    real = decoding.decode_many

    def unreadable_once(paths: list[str], **kwargs: Any) -> Any:
        # The fault (permissions, a network drive's I/O error), not the decoder, is faked.
        for path, result in zip(paths, real(paths, **kwargs), strict=True):
            yield "cannot read file" if path == victim else result

    with mock.patch.object(imagecache, "decode_many", side_effect=unreadable_once):
        first = ht.load_image_folder(folder)
    assert (victim, "unreadable (cannot read file)") in first.counts.skip_reasons
    with _decoding() as spy:
        second = ht.load_image_folder(folder)
    assert _decoded(spy) == [victim]  # the others come from the store
    assert victim not in dict(second.counts.skip_reasons)
    _same(second, ht.load_image_folder(folder, image_store=False))
    with _decoding() as spy:
        _same(second, ht.load_image_folder(folder))
    assert spy.call_count == 0  # stored whole now


def test_a_store_that_cannot_be_read_costs_a_warning_and_keeps_its_entries(
    tmp_path: Path, _private_cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path / "photos")
    expected = ht.load_image_folder(folder)
    images = str(_private_cache_dir / "images")
    real_is_dir = Path.is_dir

    def refused(path: Path) -> bool:  # EACCES, as for a folder another user made 0700
        if str(path).startswith(images):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_is_dir(path)

    with (
        mock.patch.object(Path, "is_dir", refused),
        caplog.at_level(logging.WARNING, logger="hubtransfer"),
    ):
        data = ht.load_image_folder(folder)
    _same(expected, data)
    assert "Could not read image store entry" in caplog.text
    assert "Check the permissions" in caplog.text
    with _decoding() as spy:
        ht.load_image_folder(folder)
    assert spy.call_count == 0  # the entry was kept, not discarded


def test_a_folder_past_the_memory_limit_is_stored_and_read_back(
    tmp_path: Path, _private_cache_dir: Path
) -> None:
    folder = _folder(tmp_path / "photos")
    first = ht.load_image_folder(folder, memory_limit_bytes=0)  # decoded to a spill file
    split = file_split(first.train)
    # ...then mapped from the store entry instead: the folder is on disk once.
    assert split is not None and split.cache.path is not None
    assert split.cache.path.parent.parent == _private_cache_dir / "images"
    under = ht.load_image_folder(tmp_path / "photos", image_store=tmp_path / "other")
    kept = file_split(under.train)
    assert kept is not None and kept.cache.path is None  # under the limit: in memory
    with _decoding() as spy:
        second = ht.load_image_folder(folder, memory_limit_bytes=0)
    assert spy.call_count == 0
    _same(first, second)
    _same(second, ht.load_image_folder(folder, image_store=False))


@pytest.fixture(scope="module")
def _module_cache_root() -> Path:
    from hubtransfer.config import cache_root

    return cache_root()  # what a module-scoped fixture (built before any test) sees


def test_module_fixtures_never_see_the_users_cache(
    _module_cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubtransfer.config import cache_root

    monkeypatch.delenv("HUBTRANSFER_CACHE_DIR")
    assert _module_cache_root != cache_root()  # the user's default


def test_an_entry_cleared_by_another_process_meanwhile_is_decoded_again_quietly(
    tmp_path: Path, _private_cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hubtransfer import imagestore

    folder = _folder(tmp_path / "photos")
    ht.load_image_folder(folder)
    entry = _entry(_private_cache_dir)
    real = imagestore.read_marker

    def cleared_meanwhile(path: Path) -> Any:
        if path == entry and entry.exists():
            shutil.rmtree(entry)  # another process's `hubtransfer cache clear`, just now
        return real(path)

    with (
        mock.patch.object(imagestore, "read_marker", cleared_meanwhile),
        caplog.at_level(logging.WARNING, logger="hubtransfer"),
    ):
        data = ht.load_image_folder(folder)
    _same(data, ht.load_image_folder(folder, image_store=False))
    assert [r for r in caplog.records if r.name == "hubtransfer.imagestore"] == []


def test_pillows_load_truncated_images_setting_decides_the_entry(
    tmp_path: Path, _private_cache_dir: Path
) -> None:
    # Users of timm and torchvision set it to keep truncated files: a stored load made
    # without it must not skip them then, nor the other way round.
    from PIL import ImageFile

    folder = tmp_path / "photos"
    write_colour_folder(folder, per_class=4, size=(30, 40))
    whole = (folder / "red").iterdir().__next__().read_bytes()
    (folder / "red" / "cut.jpg").write_bytes(whole[: len(whole) - 40])
    strict = ht.load_image_folder(folder, validation_fraction=0.25)
    assert [name for name, _ in strict.counts.skip_reasons] == [str(folder / "red" / "cut.jpg")]
    with mock.patch.object(ImageFile, "LOAD_TRUNCATED_IMAGES", True):
        lenient = ht.load_image_folder(folder, validation_fraction=0.25)
        without_store = ht.load_image_folder(folder, validation_fraction=0.25, image_store=False)
    assert lenient.counts.skipped == 0
    _same(lenient, without_store)
    assert ht.load_image_folder(folder, validation_fraction=0.25).counts.skipped == 1
    assert len(ImageStore().entries()) == 2
