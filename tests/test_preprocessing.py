from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import hubtransfer as ht
from hubtransfer.preprocessing import preprocess_image
from images import write_sorted_classes

MNV2 = ht.get_backbone("mobilenet_v2")


def _dataset(n: int = 6, shape: tuple[int, int] = (50, 70)) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *shape, 3)).astype("uint8")
    images[0] = 0
    images[1] = 255
    return tf.data.Dataset.from_tensor_slices((images, np.arange(n) % 2))


@pytest.mark.parametrize(
    ("spec", "size", "low", "high"),
    [
        (MNV2, 224, 0.0, 1.0),
        (ht.get_backbone("efficientnet_b3"), 300, 0.0, 1.0),
        (ht.get_backbone("inception_v3"), 299, 0.0, 1.0),
        (dataclasses.replace(MNV2, input_range=(-1.0, 1.0)), 224, -1.0, 1.0),
    ],
)
def test_size_and_range_come_from_backbone(
    spec: ht.Backbone, size: int, low: float, high: float
) -> None:
    images, labels = next(iter(ht.prepare(_dataset(), spec, batch_size=6)))
    assert images.shape == (6, size, size, 3) and images.dtype == tf.float32
    values = images.numpy()
    assert values[0].min() == pytest.approx(low) and values[1].max() == pytest.approx(high)
    assert values.min() >= low and values.max() <= high
    assert labels.numpy().tolist() == [0, 1, 0, 1, 0, 1]


def test_centre_crop_keeps_the_middle() -> None:
    image = np.zeros((80, 80, 3), "uint8")
    image[10:70, 10:70] = 255  # white centre 75% of each side, black border
    spec = dataclasses.replace(MNV2, image_size=16)
    cropped = preprocess_image(tf.constant(image), spec, crop_fraction=0.75).numpy()
    whole = preprocess_image(tf.constant(image), spec).numpy()
    assert cropped.min() > 0.99
    assert whole.min() < 0.01


def test_training_shuffles_reproducibly_and_eval_keeps_order() -> None:
    spec = dataclasses.replace(MNV2, image_size=8)
    ids = tf.data.Dataset.from_tensor_slices((np.zeros((32, 8, 8, 3), "uint8"), np.arange(32)))

    def labels_of(dataset: tf.data.Dataset) -> list[int]:
        return [int(y) for _, ys in dataset for y in ys]

    first = labels_of(ht.prepare(ids, spec, training=True, seed=1))
    again = labels_of(ht.prepare(ids, spec, training=True, seed=1))
    other = labels_of(ht.prepare(ids, spec, training=True, seed=2))
    assert first == again and first != other and sorted(first) == list(range(32))
    assert labels_of(ht.prepare(ids, spec)) == list(range(32))


def test_augmentation_is_seeded_and_changes_images() -> None:
    spec = dataclasses.replace(MNV2, image_size=32)
    data = _dataset(8, (64, 64))

    def batches(seed: int) -> np.ndarray:
        ds = ht.prepare(data, spec, training=True, augment=True, seed=seed, batch_size=8)
        return next(iter(ds))[0].numpy()

    plain = next(iter(ht.prepare(data, spec, batch_size=8)))[0].numpy()
    assert np.array_equal(batches(5), batches(5))
    assert not np.array_equal(batches(5), batches(6))
    assert batches(5).shape == plain.shape == (8, 32, 32, 3)
    assert batches(5).min() >= 0.0 and batches(5).max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ht.ConfigurationError, r"batch_size must be a positive integer"),
        ({"crop_fraction": 1.5}, ht.ConfigurationError, r"crop_fraction must be in \(0, 1\]"),
        ({"shuffle_buffer": -1}, ht.ConfigurationError, r"shuffle_buffer must be"),
    ],
)
def test_bad_prepare_arguments(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ht.prepare(_dataset(), MNV2, **kwargs)  # type: ignore[arg-type]


def test_prepare_rejects_batched_or_unlabelled_data() -> None:
    with pytest.raises(ht.DatasetError, match=r"unbatched \(image, label\) pairs"):
        ht.prepare(_dataset().batch(2), MNV2)
    with pytest.raises(ht.DatasetError, match="element_spec"):
        ht.prepare(tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 3))), MNV2)


def test_batches_mix_classes_from_the_first_step_in_a_class_sorted_folder(
    tmp_path: Path,
) -> None:
    # 2 x 1,500 images listed class by class: a 1,024-image buffer gave 7 one-class
    # batches at the start of every epoch. The file list is now shuffled in full.
    write_sorted_classes(tmp_path, per_class=1500)
    data = ht.load_image_folder(tmp_path, validation_fraction=0.2, seed=0)
    spec = dataclasses.replace(MNV2, image_size=8)
    pipeline = ht.prepare(data.train, spec, training=True, batch_size=32, seed=7)

    def epoch() -> list[int]:
        return [int(y) for _, ys in pipeline for y in ys.numpy()]

    start = time.perf_counter()
    first, second = epoch(), epoch()
    seconds = time.perf_counter() - start
    assert sorted(first) == sorted(second) and len(first) == data.counts.train == 2400
    assert first != second  # reshuffled every epoch
    tenth = first[: len(first) // 10]
    share = tenth.count(1) / len(tenth)
    batches = [first[i : i + 32] for i in range(0, len(first), 32)]
    one_class = sum(len(set(b)) == 1 for b in batches)
    logging.getLogger(__name__).info(
        "class-b share in the first tenth: %.3f; one-class batches: %d; 2 epochs in %.1f s",
        share,
        one_class,
        seconds,
    )
    assert 0.35 <= share <= 0.65
    assert one_class == 0
    again = ht.prepare(data.train, spec, training=True, batch_size=32, seed=7)
    assert [int(y) for _, ys in again for y in ys.numpy()] == first  # same seed, same order
    other = ht.prepare(data.train, spec, training=True, batch_size=32, seed=8)
    assert [int(y) for _, ys in other for y in ys.numpy()] != first


def test_buffer_shuffle_still_used_for_other_datasets_and_on_request(tmp_path: Path) -> None:
    spec = dataclasses.replace(MNV2, image_size=8)
    ids = tf.data.Dataset.from_tensor_slices((np.zeros((8, 8, 8, 3), "uint8"), np.arange(8)))
    labels = [int(y) for _, ys in ht.prepare(ids, spec, training=True, seed=3) for y in ys]
    assert sorted(labels) == list(range(8)) and labels != list(range(8))
    write_sorted_classes(tmp_path, per_class=6)
    data = ht.load_image_folder(tmp_path, validation_fraction=0.0)
    both = ht.prepare(data.train, spec, training=True, shuffle_buffer=4, batch_size=4)
    assert sorted(int(y) for _, ys in both for y in ys) == [0] * 6 + [1] * 6


def test_pipelines_run_without_autotune_stalls(tmp_path: Path) -> None:
    # With tf.data's autotuning on, dropping an iterator (every epoch's end) can block
    # until the autotuner's thread next wakes (benchmarks/iterator_teardown.py).
    from hubtransfer.features import FeatureSet

    write_sorted_classes(tmp_path, per_class=4)
    data = ht.load_image_folder(tmp_path, validation_fraction=0.25, image_store=False)
    features = FeatureSet(np.zeros((6, 4), np.float32), np.zeros(6, np.int64), 0.0)
    spilled = tmp_path / "features.npy"
    np.zeros((6, 4), np.float32).tofile(spilled)
    on_disk = FeatureSet(
        np.memmap(spilled, np.float32, "r", shape=(6, 4)), np.zeros(6, np.int64), 0.0, spilled
    )
    pipelines = {
        "train split": data.train,
        "prepare": ht.prepare(data.train, MNV2, training=True, augment=True),
        "prepare, any dataset": ht.prepare(_dataset(), MNV2),
        "features": features.dataset(4, shuffle=True),
        "features on disk": on_disk.dataset(4, shuffle=True),
    }
    for name, dataset in pipelines.items():
        assert dataset.options().autotune.enabled is False, name
        assert sum(1 for _ in dataset) > 0, name


def test_pipelines_are_traced_as_written(tmp_path: Path) -> None:
    # AutoGraph rewrites a function's source the first time tf.data traces it (about
    # 0.3 s for prepare()'s map in every new process); hubtransfer's pipeline functions
    # have no Python control flow on tensors, so none is handed to AutoGraph.
    from unittest import mock

    from tensorflow.python.autograph.impl import api

    from hubtransfer.features import FeatureSet
    from hubtransfer.sampling import sample_split
    from hubtransfer.trial import label_counts

    write_sorted_classes(tmp_path, per_class=4)
    spilled = tmp_path / "features.npy"
    np.zeros((6, 4), np.float32).tofile(spilled)
    with (
        mock.patch.object(api, "converted_call", wraps=api.converted_call) as converted,
        tfds.testing.mock_data(num_examples=6),
    ):
        tfds_data = ht.load_tfds("cats_vs_dogs")
        data = ht.load_image_folder(tmp_path, validation_fraction=0.25, image_store=False)
        on_disk = FeatureSet(
            np.memmap(spilled, np.float32, "r", shape=(6, 4)), np.zeros(6, np.int64), 0.0, spilled
        )
        pipelines = [
            data.train,
            ht.prepare(data.train, MNV2, training=True, augment=True),
            ht.prepare(_dataset(), MNV2),
            on_disk.dataset(4, shuffle=True),
            tfds_data.train,
            sample_split(tfds_data, "validation", 3, seed=0),
        ]
        batches = sum(1 for dataset in pipelines for _ in dataset)
        counts = label_counts(data)
    assert batches > 0 and sum(counts) == data.counts.train
    ours = [
        call.args[0]
        for call in converted.call_args_list
        if getattr(call.args[0], "__module__", "").startswith("hubtransfer")
    ]
    assert ours == []
