"""Per-backbone input pipelines: resize, crop, augment and scale inside tf.data.

Image size and value range always come from the :class:`~hubtransfer.Backbone`; the
report fed every backbone 224 px in [-1, 1], where the Hub models expect their own size
and [0, 1].
"""

from __future__ import annotations

from hubtransfer._tf import as_written, no_autotune_stalls, tf
from hubtransfer.config import DEFAULTS
from hubtransfer.data import reshuffled
from hubtransfer.errors import ConfigurationError, DatasetError
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone
from hubtransfer.validation import check_int

__all__ = ["prepare", "preprocess_image"]

_AUTOTUNE = tf.data.AUTOTUNE
#: Random-resized-crop ranges shared by the peers (Inception-style augmentation).
_CROP_AREA = (0.08, 1.0)
_CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
#: Shuffle buffer, in decoded images, for datasets whose file list is not known (TFDS,
#: arrays). TFDS writes examples in a shuffled order, so a buffer only has to break up
#: neighbours; it holds full-size images, so it is kept well below memory limits.
DEFAULT_SHUFFLE_BUFFER = 1024


def _scale(image: tf.Tensor, input_range: tuple[float, float]) -> tf.Tensor:
    # image: float32 in [0, 255] -> [low, high]
    low, high = input_range
    return image * ((high - low) / 255.0) + low


def preprocess_image(
    image: tf.Tensor,
    backbone: Backbone,
    *,
    crop_fraction: float | None = None,
    augment_seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """One uint8 ``(H, W, 3)`` image -> float32 ``(size, size, 3)`` in the backbone's range.

    Also takes a batch ``(N, H, W, 3)`` without ``augment_seed`` (the serving SavedModel
    preprocesses its input batch with this function).

    With ``augment_seed`` (a shape-[2] int tensor): a random resized crop and a horizontal
    flip, both stateless so a seed reproduces them. Otherwise, with ``crop_fraction``, a
    central crop of that fraction before resizing.
    """
    size = backbone.image_size
    if augment_seed is not None:
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=augment_seed,
            min_object_covered=0.0,
            aspect_ratio_range=_CROP_ASPECT,
            area_range=_CROP_AREA,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, crop_size)
        image = tf.image.stateless_random_flip_left_right(image, seed=augment_seed)
    elif crop_fraction is not None:
        image = tf.image.central_crop(image, crop_fraction)
    image = tf.image.resize(image, (size, size), method="bilinear")
    image = tf.clip_by_value(image, 0.0, 255.0)
    return _scale(image, backbone.input_range)


def prepare(
    dataset: tf.data.Dataset,
    backbone: str | Backbone,
    *,
    batch_size: int = DEFAULTS.batch_size,
    training: bool = False,
    augment: bool = False,
    crop_fraction: float | None = None,
    shuffle_buffer: int | None = None,
    seed: int = DEFAULTS.seed,
    drop_remainder: bool = False,
    registry: BackboneRegistry | None = None,
) -> tf.data.Dataset:
    """Batches ``(image, label)`` pairs into what ``backbone`` expects.

    Images are resized to ``backbone.image_size`` (square) and scaled into
    ``backbone.input_range`` as float32. Everything runs in tf.data with parallel maps
    and AUTOTUNE prefetch.

    Args:
        dataset: ``(image, label)`` pairs, images uint8 ``(H, W, 3)`` of any size, e.g.
            ``ImageData.train``.
        backbone: A registered name or a Backbone.
        batch_size: Examples per batch.
        training: Shuffle, seeded and afresh each epoch. A split of
            :func:`~hubtransfer.load_image_folder` is shuffled as a whole list of file
            paths before decoding, so every stretch of an epoch mixes all classes at
            any dataset size. Other datasets (TFDS, arrays, a ``.map()`` of a folder
            split) are shuffled through a buffer of decoded images.
        augment: With ``training``, a random resized crop (area 8-100%, aspect 3/4-4/3)
            and a horizontal flip, reproducible from ``seed``.
        crop_fraction: Without augmentation, centre-crop this fraction of each side before
            resizing (0.875 is the usual evaluation crop). None resizes the whole image.
        shuffle_buffer: Buffer shuffle, in examples, when training. None: no buffer for
            image-folder splits (their file list is shuffled in full), and
            ``DEFAULT_SHUFFLE_BUFFER`` (1,024, capped at the dataset's size when known)
            for other datasets. A number adds a buffer shuffle of that size in any case.
        seed: Seed of the shuffle and the augmentation.
        drop_remainder: Drop the last incomplete batch.
        registry: Where to look a name up; the default registry if None.

    Raises:
        ConfigurationError: Bad batch size, crop fraction or buffer.
        DatasetError: ``dataset`` does not yield ``(image, label)`` pairs of 3-D images.
    """
    spec = resolve_backbone(backbone, registry)
    check_int("batch_size", batch_size)
    if shuffle_buffer is not None:
        check_int("shuffle_buffer", shuffle_buffer)
    if crop_fraction is not None and not (
        isinstance(crop_fraction, (int, float)) and 0 < crop_fraction <= 1
    ):
        raise ConfigurationError(
            "crop_fraction must be in (0, 1], e.g. 0.875, or None for no crop. "
            f"Received: crop_fraction={crop_fraction!r}."
        )
    _check_element_spec(dataset)
    if training:
        files = reshuffled(dataset, seed)
        if files is not None:
            dataset = files
        buffer = shuffle_buffer or (None if files is not None else _default_buffer(dataset))
        if buffer is not None:
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if training and augment:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            as_written(lambda pair, s: (preprocess_image(pair[0], spec, augment_seed=s), pair[1])),
            num_parallel_calls=_AUTOTUNE,
        )
    else:
        dataset = dataset.map(
            as_written(lambda x, y: (preprocess_image(x, spec, crop_fraction=crop_fraction), y)),
            num_parallel_calls=_AUTOTUNE,
        )
    batches = dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(_AUTOTUNE)
    return no_autotune_stalls(batches)


def _default_buffer(dataset: tf.data.Dataset) -> int:
    known = int(dataset.cardinality())
    return min(DEFAULT_SHUFFLE_BUFFER, known) if known > 0 else DEFAULT_SHUFFLE_BUFFER


def _check_element_spec(dataset: tf.data.Dataset) -> None:
    spec = getattr(dataset, "element_spec", None)
    ok = (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], tf.TensorSpec)
        and spec[0].shape.rank == 3
        and spec[0].shape[-1] in (3, None)
    )
    if not ok:
        raise DatasetError(
            "prepare() takes a tf.data.Dataset of unbatched (image, label) pairs with images "
            f"of shape (height, width, 3), such as ImageData.train. Received element_spec: {spec}."
        )
