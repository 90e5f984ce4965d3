from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import hubtransfer as ht
from images import write_colour_folder, write_junk


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
    expected_labels = [data.class_names.index(Path(f).parent.name) for f in data.train_files]
    assert [label for _, label in _labels_and_shapes(data.train)] == expected_labels


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
    ],
)
def test_bad_image_folders(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
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
