from __future__ import annotations

import logging
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

import hubtransfer as ht
import photos
from hubtransfer import data as data_module
from hubtransfer.data import file_split
from hubtransfer.decoding import DECODING_VERSION
from hubtransfer.sampling import sample_split, stratified_indices
from images import write_colour_folder, write_junk, write_sorted_classes


def _labels_and_shapes(dataset: tf.data.Dataset) -> list[tuple[tuple[int, ...], int]]:
    return [(tuple(x.shape), int(y)) for x, y in dataset.as_numpy_iterator()]


def _paths(data: ht.ImageData) -> tuple[set[str], set[str]]:
    return set(data.train_files), set(data.validation_files)


def test_mock_tfds_cats_vs_dogs() -> None:
    with tfds.testing.mock_data(num_examples=8):
        data = ht.load_tfds("cats_vs_dogs")
        assert data.class_names == ("cat", "dog") and data.num_classes == 2
        assert data.counts.train == 8 and data.counts.validation == 8
        assert data.source == "tfds:cats_vs_dogs"
        image, label = next(iter(data.train))
        assert image.dtype == tf.uint8 and image.shape[-1] == 3 and label.dtype == tf.int64
        batch, labels = next(iter(ht.prepare(data.train, "mobilenet_v2", batch_size=8)))
        assert batch.shape == (8, 224, 224, 3) and batch.dtype == tf.float32
        assert float(tf.reduce_min(batch)) >= 0.0 and float(tf.reduce_max(batch)) <= 1.0
        assert labels.shape == (8,)
        b3, _ = next(iter(ht.prepare(data.validation, "efficientnet_b3", batch_size=4)))
        assert b3.shape == (4, 300, 300, 3)


def test_mock_tfds_grayscale_dataset_becomes_rgb() -> None:
    with tfds.testing.mock_data(num_examples=4):
        data = ht.load_tfds("mnist", splits=("train", "test"))
        image, _ = next(iter(data.train))
        assert image.shape == (28, 28, 3)
        assert len(data.class_names) == 10


def test_unprepared_tfds_dataset_explains_how_to_supply_it(tmp_path: Path) -> None:
    with pytest.raises(ht.DatasetError) as info:
        ht.load_tfds("cats_vs_dogs", data_dir=tmp_path)
    message = str(info.value)
    assert "'cats_vs_dogs'" in message and str(tmp_path) in message
    assert "download=True" in message and "data_dir" in message and "manual" in message


def test_unknown_tfds_dataset() -> None:
    with pytest.raises(
        ht.DatasetError, match=r"no dataset named 'cats_vs_dogz'.*load_image_folder"
    ):
        ht.load_tfds("cats_vs_dogz")


def test_image_folder_reads_every_kind_and_skips_junk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_colour_folder(tmp_path, per_class=10)
    junk = write_junk(tmp_path / "red")
    (tmp_path / "blue" / ".DS_Store").write_bytes(b"\0\0")  # hidden: ignored
    with caplog.at_level(logging.WARNING, logger="hubtransfer"):
        data = ht.load_image_folder(tmp_path, validation_fraction=0.2, seed=3)
    assert data.class_names == ("blue", "red")
    assert data.counts.skipped == len(junk)
    assert set(data.counts.skipped_files) == {str(p) for p in junk}
    assert "Skipped 5 unreadable file(s)" in caplog.text
    assert (data.counts.train, data.counts.validation) == (16, 4)
    train, validation = _paths(data)
    assert not train & validation
    assert train | validation == {str(p) for paths in written.values() for p in paths}
    decoded = _labels_and_shapes(data.train) + _labels_and_shapes(data.validation)
    assert len(decoded) == 20  # every valid image exactly once, junk never reaches the data
    for image_shape, label in decoded:
        assert image_shape == (24, 32, 3) and label in (0, 1)

    def labels_of(files: tuple[str, ...]) -> list[int]:
        return [data.class_names.index(Path(f).parent.name) for f in files]

    # validation keeps its file order; train is reshuffled each epoch (same labels).
    assert [label for _, label in _labels_and_shapes(data.validation)] == labels_of(
        data.validation_files
    )
    assert sorted(label for _, label in _labels_and_shapes(data.train)) == sorted(
        labels_of(data.train_files)
    )


def test_image_folder_split_is_deterministic_per_seed(tmp_path: Path) -> None:
    write_colour_folder(tmp_path, per_class=20)
    first = _paths(ht.load_image_folder(tmp_path, seed=1))
    assert first == _paths(ht.load_image_folder(tmp_path, seed=1))
    assert first != _paths(ht.load_image_folder(tmp_path, seed=2))


def test_image_folder_colours_survive_decoding(tmp_path: Path) -> None:
    write_colour_folder(tmp_path, per_class=8)
    data = ht.load_image_folder(tmp_path, validation_fraction=0.0)
    for image, label in data.train.as_numpy_iterator():
        means = image.reshape(-1, 3).mean(axis=0)
        if image.std(axis=-1).max() == 0:
            continue  # grayscale-mode file: colour is gone by design
        assert int(np.argmax(means)) == 2 - int(label)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", r"does not exist or is not a directory"),
        ("one_class", r"has 1 class subfolder\(s\) \(only\); at least 2 are needed"),
        ("empty_class", r"Class folder\(s\) 'empty' in .* hold no readable image"),
        ("junk_class", r"Class folder\(s\) 'junk' .*5 file\(s\) in the folder were skipped"),
        (
            "all_empty",
            r"Class folder\(s\) 'a', 'b' in .* hold no readable image \(they are empty\)",
        ),
    ],
)
def test_bad_image_folders(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "all_empty":
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
    elif layout != "missing":
        write_colour_folder(root, per_class=2, classes=("only",))
    if layout == "empty_class":
        (root / "empty").mkdir()
    if layout == "junk_class":
        (root / "junk").mkdir()
        write_junk(root / "junk")
    with pytest.raises(ht.DatasetError, match=message):
        ht.load_image_folder(root)


def test_bad_validation_fraction(tmp_path: Path) -> None:
    write_colour_folder(tmp_path, per_class=2)
    with pytest.raises(
        ht.ConfigurationError, match=r"validation_fraction must be a number in \[0, 1\)"
    ):
        ht.load_image_folder(tmp_path, validation_fraction=1.0)


def test_metadata_folders_and_files_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_colour_folder(tmp_path, per_class=4)
    for folder in ("__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information", ".git"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "thumb.jpg").write_bytes(b"junk")
        (tmp_path / "red" / folder).mkdir()
        (tmp_path / "red" / folder / "thumb.jpg").write_bytes(b"junk")
    for name in ("Thumbs.db", "desktop.ini", ".DS_Store", "._img_000.jpg"):
        (tmp_path / "blue" / name).write_bytes(b"junk")
    with caplog.at_level(logging.DEBUG, logger="hubtransfer"):
        data = ht.load_image_folder(tmp_path, validation_fraction=0.0)
    assert data.class_names == ("blue", "red")
    assert data.counts.skipped == 0 and data.counts.train == 8
    assert set(data.train_files) == {str(p) for paths in written.values() for p in paths}
    assert "Ignored 14 metadata/hidden" in caplog.text and "@eaDir" in caplog.text


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("cat ", "dog"), r"'cat ' .*cannot be a class name: it starts or ends with whitespace"),
        (("ca\nt", "dog"), r"control character .*labels.txt.*Rename the folder, e.g. to 'ca_t'"),
        (("a\\b", "dog"), r"backslash.*Rename the folder, e.g. to 'a_b'"),
        (("Cat", "cat"), r"'Cat' and 'cat' .*differ only in letter case.*rename one"),
        (("caf\u00e9", "cafe\u0301"), r"differ only in letter case or Unicode form"),
    ],
)
def test_class_names_that_break_labels_are_rejected(
    tmp_path: Path, names: tuple[str, str], message: str
) -> None:
    write_colour_folder(tmp_path, per_class=1, classes=names)
    with pytest.raises(ht.DatasetError, match=message):
        ht.load_image_folder(tmp_path)


def test_class_folder_linked_to_another_class_is_rejected(tmp_path: Path) -> None:
    write_colour_folder(tmp_path, per_class=2)
    (tmp_path / "crimson").symlink_to(tmp_path / "red", target_is_directory=True)
    with pytest.raises(
        ht.DatasetError, match=r"'crimson' and 'red' .*same folder.*Remove the link"
    ):
        ht.load_image_folder(tmp_path)


def test_files_reachable_twice_are_read_once_and_never_under_two_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = write_colour_folder(tmp_path, per_class=4)
    red0, red1, blue0 = written["red"][0], written["red"][1], written["blue"][0]
    (tmp_path / "red" / "alias.png").symlink_to(red0)  # same class, by a link
    os.link(red1, tmp_path / "red" / "hard.png")  # same class, a hard link
    (tmp_path / "red" / "stolen.jpg").symlink_to(blue0)  # a blue image, also under red
    (tmp_path / "red" / "sub").mkdir()
    (tmp_path / "red" / "sub" / "loop").symlink_to(tmp_path / "red", target_is_directory=True)
    (tmp_path / "red" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(tmp_path / "blue" / "pipe.jpg")  # reading it would block forever
    with caplog.at_level(logging.INFO, logger="hubtransfer"):
        data = ht.load_image_folder(tmp_path, validation_fraction=0.25, seed=0)
    reasons = dict(data.counts.skip_reasons)
    assert list(reasons) == list(data.counts.skipped_files)
    assert reasons[str(tmp_path / "red" / "alias.png")] == f"duplicate of {red0}"
    hard = str(tmp_path / "red" / "hard.png")  # neither is a link: the first path is kept
    assert reasons[str(red1)] == f"duplicate of {hard}"
    assert reasons[str(blue0)].startswith("under two classes: 'blue' and 'red'")
    assert reasons[str(tmp_path / "red" / "stolen.jpg")].startswith("under two classes")
    assert reasons[str(tmp_path / "red" / "dangling.jpg")].startswith("unreadable")
    assert reasons[str(tmp_path / "blue" / "pipe.jpg")] == "not a regular file"
    assert data.counts.skipped == 6
    used = data.train_files + data.validation_files
    assert len(used) == len(set(used)) == 7  # 8 images, minus the one under two classes
    assert str(blue0) not in used and not any("loop" in f for f in used)
    assert "reachable under two classes" in caplog.text and str(blue0) in caplog.text


def test_files_lost_after_loading_no_longer_matter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_colour_folder(tmp_path, per_class=4)
    data = ht.load_image_folder(tmp_path, validation_fraction=0.0)
    assert data.missing_files() == ()
    before = sorted((int(y), x.tobytes()) for x, y in data.train.as_numpy_iterator())
    gone = data.train_files[2]
    os.remove(gone)
    with caplog.at_level(logging.WARNING, logger="hubtransfer"):
        after = sorted((int(y), x.tobytes()) for x, y in data.train.as_numpy_iterator())
    assert after == before  # the split reads the images decoded at load time
    assert data.missing_files() == (gone,)  # the folder no longer matches what was loaded
    assert not caplog.records


def _pillow_reference(path: Path, max_image_size: int | None) -> np.ndarray:
    """Pillow's reference decoding, then the documented resize (shorter side, bicubic)."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = image.size
    if max_image_size is not None and min(width, height) > max_image_size:
        scale = max_image_size / min(width, height)
        size = (
            (max_image_size, round(height * scale))
            if width <= height
            else (round(width * scale), max_image_size)
        )
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image)


@pytest.mark.parametrize("max_image_size", [None, 16])
def test_image_folder_pixels_are_pillows_reference(tmp_path: Path, max_image_size: int) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    photo = photos.asymmetric_rgb(20, 30)  # short side < 2 x 16: no DCT-domain downscale
    for orientation in range(2, 9):
        photos.save_with_orientation(odd / f"exif_{orientation}.jpg", photo, orientation, "JPEG")
    colours, index = photos.palette(256), photos.indices(22, 31, 256)
    bmp = Image.fromarray(index, "P")
    bmp.putpalette(colours.tobytes())
    bmp.save(odd / "palette.bmp")
    alpha = np.full((20, 28), 255, np.uint8)
    alpha[:, :10] = 0
    Image.fromarray(np.dstack([photos.asymmetric_rgb(20, 28, seed=2), alpha])).save(
        odd / "alpha.webp", lossless=True, exact=True
    )
    photos.write_gif_offset_first_frame(
        odd / "anim.gif",
        photos.indices(5, 7, 256, seed=4),
        photos.palette(256, seed=3),
        canvas=(28, 20),
        offset=(6, 4),
    )
    write_colour_folder(tmp_path, per_class=2, classes=("plain",), size=(24, 40))
    data = ht.load_image_folder(tmp_path, validation_fraction=0.0, max_image_size=max_image_size)
    assert data.counts.skipped == 0 and data.counts.train == 12
    files = file_split(data.train)
    assert files is not None
    for path, i in zip(files.paths, files.indices, strict=True):
        expected = _pillow_reference(Path(path), max_image_size)
        np.testing.assert_array_equal(files.cache.images[i], expected, err_msg=path)
        if max_image_size is not None:
            assert min(expected.shape[:2]) == max_image_size
    rotated = _pillow_reference(odd / "exif_6.jpg", None)
    assert rotated.shape == (30, 20, 3)  # EXIF applied: portrait, as the phone showed it
    decoded = {bytes(x.tobytes()) for x, _ in data.train.as_numpy_iterator()}
    assert {files.cache.images[i].tobytes() for i in files.indices} == decoded


def test_image_cache_spills_to_a_mapped_file_identically(tmp_path: Path) -> None:
    write_colour_folder(tmp_path / "data", per_class=6)
    memory = ht.load_image_folder(tmp_path / "data", validation_fraction=0.25, image_store=False)
    spill_dir = tmp_path / "spill"
    disk = ht.load_image_folder(  # image_store=False: decoded again, not read from the store
        tmp_path / "data",
        validation_fraction=0.25,
        memory_limit_bytes=1000,
        cache_dir=spill_dir,
        image_store=False,
    )
    in_memory, mapped = file_split(memory.validation), file_split(disk.validation)
    assert in_memory is not None and mapped is not None
    assert in_memory.cache.path is None and mapped.cache.path is not None
    assert mapped.cache.path.parent == spill_dir
    assert list(spill_dir.iterdir()) == []  # unlinked once mapped: nothing outlives the process
    for a, b in zip(memory.validation, disk.validation, strict=True):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert sorted(int(y) for _, y in disk.train) == sorted(int(y) for _, y in memory.train)
    assert disk.fingerprint == memory.fingerprint
    assert ht.load_image_folder(tmp_path / "data", max_image_size=8).fingerprint != (
        memory.fingerprint
    )


def test_image_folder_logs_decoding_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_colour_folder(tmp_path, per_class=3)
    with caplog.at_level(logging.INFO, logger="hubtransfer"):
        ht.load_image_folder(tmp_path)
    assert f"Decoding 6 images of {tmp_path}: 6 images in" in caplog.text
    assert "images/s" in caplog.text


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    written = write_colour_folder(tmp_path, per_class=4)
    first = ht.load_image_folder(tmp_path).fingerprint
    assert len(first) == 64 and int(first, 16) >= 0
    assert ht.load_image_folder(tmp_path).fingerprint == first
    assert ht.load_image_folder(tmp_path, seed=1).fingerprint != first
    assert ht.load_image_folder(tmp_path, validation_fraction=0.5).fingerprint != first
    target = written["red"][0]
    info = target.stat()
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    touched = ht.load_image_folder(tmp_path).fingerprint
    assert touched != first
    extra = tmp_path / "red" / "extra.png"
    extra.write_bytes(written["red"][2].read_bytes())
    added = ht.load_image_folder(tmp_path).fingerprint
    assert added not in (first, touched)
    extra.unlink()
    assert ht.load_image_folder(tmp_path).fingerprint == touched
    written["blue"][1].unlink()
    removed = ht.load_image_folder(tmp_path).fingerprint
    assert removed not in (first, touched, added)
    # Other pixels from the same files: features and results of the old ones do not apply.
    with mock.patch.object(data_module, "DECODING_VERSION", DECODING_VERSION + 1):
        assert ht.load_image_folder(tmp_path, image_store=False).fingerprint != removed


def test_stratified_indices_keep_class_shares_and_every_class() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    chosen = stratified_indices(labels, 10, seed=0)
    assert len(set(chosen.tolist())) == 10
    assert np.bincount(labels[chosen], minlength=3).tolist() == [8, 1, 1]
    assert chosen.tolist() == stratified_indices(labels, 10, seed=0).tolist()
    assert chosen.tolist() != stratified_indices(labels, 10, seed=1).tolist()
    assert sorted(stratified_indices(labels, 500, seed=0).tolist()) == list(range(100))


def test_sample_split_of_a_folder_is_stratified_and_seeded(tmp_path: Path) -> None:
    write_sorted_classes(tmp_path, per_class=60, classes=("a", "b", "c"))
    data = ht.load_image_folder(tmp_path, validation_fraction=0.0)

    def labels(seed: int, n: int = 30) -> list[int]:
        return [int(y) for _, y in sample_split(data, "train", n, seed=seed).as_numpy_iterator()]

    first = labels(1)
    assert sorted(first) == [0] * 10 + [1] * 10 + [2] * 10
    assert first[:10] != sorted(first[:10]) or len(set(first[:10])) > 1  # mixed order
    assert labels(1) == first and labels(2) != first
    assert len(labels(1, n=1000)) == 180  # the whole split when it is smaller than n


def test_sample_split_of_tfds_and_missing_test_split() -> None:
    with tfds.testing.mock_data(num_examples=20):
        data = ht.load_tfds("cats_vs_dogs")
        sample = list(sample_split(data, "validation", 6, seed=0).as_numpy_iterator())
        every = list(data.validation.as_numpy_iterator())
        assert len(sample) == 6
        assert all(any(np.array_equal(x, e[0]) for e in every) for x, _ in sample)
        counts = np.bincount([int(y) for _, y in every], minlength=2)
        sampled = np.bincount([int(y) for _, y in sample], minlength=2)
        assert sampled.tolist() == [round(6 * c / 20) for c in counts]
        with pytest.raises(ht.DatasetError, match=r"no test split.*test_split='test'"):
            sample_split(data, "test", 4)
        with pytest.raises(ht.ConfigurationError, match=r"split must be one of"):
            sample_split(data, "eval", 4)  # type: ignore[arg-type]


def test_image_folder_test_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    write_colour_folder(tmp_path, per_class=20, classes=("blue", "green", "red"))
    plain = ht.load_image_folder(tmp_path, validation_fraction=0.2, seed=4)
    assert plain.test is None and plain.counts.test is None and plain.test_files == ()
    data = ht.load_image_folder(tmp_path, validation_fraction=0.2, test_fraction=0.1, seed=4)
    assert (data.counts.train, data.counts.validation, data.counts.test) == (42, 12, 6)
    train, validation, test = map(set, (data.train_files, data.validation_files, data.test_files))
    assert not (train & validation or train & test or validation & test)
    assert len(train | validation | test) == 60
    assert [Path(f).parent.name for f in data.test_files] == ["blue"] * 2 + ["green"] * 2 + [
        "red"
    ] * 2
    assert data.validation_files == plain.validation_files  # a test split only takes from train
    assert data.test is not None
    labels = [int(y) for _, y in data.test.as_numpy_iterator()]
    assert labels == [data.class_names.index(Path(f).parent.name) for f in data.test_files]
    again = ht.load_image_folder(tmp_path, validation_fraction=0.2, test_fraction=0.1, seed=4)
    assert again.test_files == data.test_files and again.fingerprint == data.fingerprint
    other = ht.load_image_folder(tmp_path, validation_fraction=0.2, test_fraction=0.1, seed=5)
    assert other.test_files != data.test_files
    assert data.fingerprint != plain.fingerprint


def test_small_classes_keep_a_training_image_and_say_what_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_colour_folder(tmp_path / "big", per_class=10, classes=("big",))
    write_colour_folder(tmp_path / "tiny", per_class=2, classes=("tiny",))
    for name in ("big", "tiny"):
        (tmp_path / name / name).rename(tmp_path / f"{name}_class")
        (tmp_path / name).rmdir()
    with caplog.at_level(logging.WARNING, logger="hubtransfer"):
        data = ht.load_image_folder(tmp_path, validation_fraction=0.2, test_fraction=0.2)
    assert (data.counts.train, data.counts.validation, data.counts.test) == (8, 2, 2)
    assert sum("tiny_class" in f for f in data.train_files) == 2
    assert "'tiny_class' (2)" in caplog.text
    assert "Add images to these classes (at least 3 each)" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 1.0}, r"test_fraction must be a number in \[0, 1\), e.g. 0.1"),
        ({"test_fraction": -0.1}, r"test_fraction must be a number in \[0, 1\)"),
        (
            {"validation_fraction": 0.5, "test_fraction": 0.5},
            r"validation_fraction \+ test_fraction must be below 1.*test_fraction=0.5",
        ),
        ({"seed": -1}, r"seed must be an integer >= 0"),
    ],
)
def test_bad_split_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    write_colour_folder(tmp_path, per_class=2)
    with pytest.raises(ht.ConfigurationError, match=message):
        ht.load_image_folder(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_tfds_test_split_and_fingerprint() -> None:
    with tfds.testing.mock_data(num_examples=6):
        plain = ht.load_tfds("mnist", splits=("train[:90%]", "train[90%:]"))
        assert plain.test is None and plain.counts.test is None
        data = ht.load_tfds("mnist", splits=("train[:90%]", "train[90%:]"), test_split="test")
        assert data.test is not None and data.counts.test == 6
        image, label = next(iter(data.test))
        assert image.shape == (28, 28, 3) and label.dtype == tf.int64
        assert len(data.fingerprint) == 64 and data.fingerprint != plain.fingerprint
        assert ht.load_tfds("mnist", splits=("train[:90%]", "train[90%:]")).fingerprint == (
            plain.fingerprint
        )
        with pytest.raises(ht.ConfigurationError, match=r"test_split must be a TFDS split"):
            ht.load_tfds("mnist", test_split="")
