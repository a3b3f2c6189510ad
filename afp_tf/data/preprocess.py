"""Per-example preprocessing of classification images (TensorFlow ops, used inside tf.data).

Order: uint8 -> float in [0, 1] -> fit to ``image_size`` (centre zero-padding when larger than
the native size in both dimensions, e.g. Fashion-MNIST 28 -> 32, else bilinear resize) ->
augmentation (train only) -> standardisation ``(x - mean) / std`` with the dataset's constants
(:data:`afp_tf.data.sources.SPECS`) -> grayscale replicated to 3 channels if asked.

Augmentation, stateless and seeded per example so a seed fixes it:

- ``translate`` (MNIST family): shift by up to 2 px (zero-pad 2, random crop back).
- ``crop_flip`` (CIFAR): zero-pad 4, random crop back, random horizontal flip.
- ImageNet: random resized crop (area 8-100 %, aspect 3/4-4/3) + flip for training; resize the
  shorter side to ``size * 256 / 224`` and centre-crop ``size`` for evaluation.

Padding happens in [0, 1] space, i.e. with black, the background of the MNIST family.
"""

from __future__ import annotations

import tensorflow as tf

_PAD = {"translate": 2, "crop_flip": 4}


def _standardise(image, mean, std, channels: int):
    image = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    if channels and channels != image.shape[-1]:
        image = tf.tile(image, [1, 1, channels])
    return image


def _fit(image: tf.Tensor, size: int) -> tf.Tensor:
    h, w = image.shape[0], image.shape[1]
    if not size or (h, w) == (size, size):
        return image
    if size >= h and size >= w:
        return tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.image.resize(image, (size, size), antialias=True)


def _augment(image: tf.Tensor, kind: str, seed: tf.Tensor) -> tf.Tensor:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    h, w, c = image.shape
    pad = _PAD[kind]
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, (h, w, c), crop_seed)
    if kind == "crop_flip":
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def small_image_fn(mean, std, *, size: int, channels: int, augment: str | None):
    """Returns ``fn(image uint8, label[, seed]) -> (float32 image, int32 label)`` for in-memory
    datasets; the seed argument (shape ``(2,)``) exists only when ``augment`` is set."""

    def fn(image, label, seed=None):
        image = _fit(tf.cast(image, tf.float32) / 255.0, size)
        if augment:
            image = _augment(image, augment, seed)
        return _standardise(image, mean, std, channels), tf.cast(label, tf.int32)

    return fn


def imagenet_fn(mean, std, *, size: int, train: bool):
    """Returns the ImageNet ``fn(image uint8, label[, seed])`` (seed only when ``train``)."""

    def fn(image, label, seed=None):
        image = tf.cast(image, tf.float32) / 255.0
        if train:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image),
                tf.zeros([1, 0, 4], tf.float32),
                seed=crop_seed,
                min_object_covered=0.0,
                aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=(0.08, 1.0),
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            image = tf.image.resize(tf.slice(image, begin, extent), (size, size), antialias=True)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        else:
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            scale = (size * 256 / 224) / tf.reduce_min(shape)
            new_hw = tf.cast(tf.round(shape * scale), tf.int32)
            image = tf.image.resize(image, new_hw, antialias=True)
            image = tf.image.resize_with_crop_or_pad(image, size, size)
        image.set_shape((size, size, 3))
        return _standardise(image, mean, std, 0), tf.cast(label, tf.int32)

    return fn
