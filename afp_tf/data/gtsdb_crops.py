"""Training crops of GTSDB frames at the signs' native resolution: sign-aware, plus negatives.

A detector that sees the whole 1360x800 frame resized to a few hundred pixels sees the 16-128 px
signs at 2-18 px. Training instead takes square ``crop_size`` windows of the frame *unscaled*:
each epoch draws ``crops_per_image`` windows per training frame; with probability
``1 - negative_fraction`` a window is placed (uniformly among the positions that contain it
whole) around one sign of the frame chosen at random, otherwise anywhere (mostly background: the
negatives). Signs cut by the window are kept, clipped, when at least ``min_visible`` of their
area is inside; the rest are dropped. Inference runs the same fully convolutional model on the
full frame. Frames smaller than a window are zero-padded at the bottom/right.

Windows are read straight from the PPM file (memory-mapped), so the frames need not fit in
memory. The draw of epoch ``e`` is seeded by ``(seed, e)``.
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from afp_tf.data import gtsdb_layout


def crop_origin(
    rng: np.random.Generator, ann: gtsdb_layout.Annotation, crop: int, negative_fraction: float
) -> tuple[int, int]:
    """Top-left corner of one training window of ``ann`` (see the module docstring)."""
    max_x, max_y = max(0, ann.width - crop), max(0, ann.height - crop)
    if len(ann.boxes) and rng.random() >= negative_fraction:
        x1, y1, x2, y2 = ann.boxes[rng.integers(len(ann.boxes))]

        def place(lo_sign, hi_sign, limit):
            lo, hi = max(0, int(hi_sign) + 1 - crop), min(limit, int(lo_sign))
            if lo > hi:  # the sign is larger than the window: centre it
                return int(np.clip((lo_sign + hi_sign + 1 - crop) // 2, 0, limit))
            return int(rng.integers(lo, hi + 1))

        return place(x1, x2, max_x), place(y1, y2, max_y)
    return int(rng.integers(0, max_x + 1)), int(rng.integers(0, max_y + 1))


def crop_annotation(
    ann: gtsdb_layout.Annotation, x0: int, y0: int, crop: int, min_visible: float = 0.5
) -> gtsdb_layout.Annotation:
    """The signs of ``ann`` inside the window at ``(x0, y0)``, in window pixel coordinates."""
    boxes = ann.boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(boxes, 0, crop - 1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2] + 1, axis=1)
    visible = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2] + 1, 0, None), axis=1)
    inside = (clipped[:, 2] >= clipped[:, 0]) & (clipped[:, 3] >= clipped[:, 1])
    keep = inside & (visible >= min_visible * area)
    return gtsdb_layout.Annotation(ann.path, crop, crop, clipped[keep], ann.classes[keep])


def read_window(ann: gtsdb_layout.Annotation, x0: int, y0: int, crop: int) -> np.ndarray:
    """The ``(crop, crop, 3)`` uint8 window of the frame's PPM file (zero-padded past its edge)."""
    _, _, offset = gtsdb_layout.read_ppm_header(ann.path)
    frame = np.memmap(ann.path, np.uint8, "r", offset=offset, shape=(ann.height, ann.width, 3))
    window = np.zeros((crop, crop, 3), np.uint8)
    part = frame[y0 : y0 + crop, x0 : x0 + crop]
    window[: part.shape[0], : part.shape[1]] = part
    return window


def crop_dataset(
    annotations: list[gtsdb_layout.Annotation],
    *,
    crop_size: int,
    crops_per_image: int,
    negative_fraction: float,
    labels: str,
    max_boxes: int,
    batch_size: int,
    seed: int,
) -> tf.data.Dataset:
    """Batches of ``(crop float32 [0, 1] (S, S, 3), packed targets (max_boxes, 5))``; a new draw
    of windows every epoch (every iteration of the dataset)."""
    if not annotations:
        raise ValueError("No training images; use more images or a smaller val_fraction.")
    if crop_size < 32 or crops_per_image < 1 or not 0 <= negative_fraction <= 1:
        raise ValueError(
            f"need crop_size >= 32, crops_per_image >= 1 and 0 <= negative_fraction <= 1, got "
            f"{crop_size}, {crops_per_image}, {negative_fraction}."
        )
    epochs = itertools.count()
    count = len(annotations) * crops_per_image

    def windows():
        rng = np.random.default_rng([seed, next(epochs)])
        for i in rng.permutation(count):
            ann = annotations[i // crops_per_image]
            x0, y0 = crop_origin(rng, ann, crop_size, negative_fraction)
            packed = gtsdb_layout.pack_targets(
                crop_annotation(ann, x0, y0, crop_size), labels, max_boxes
            )
            yield read_window(ann, x0, y0, crop_size), packed

    ds = tf.data.Dataset.from_generator(
        windows,
        output_signature=(
            tf.TensorSpec((crop_size, crop_size, 3), tf.uint8),
            tf.TensorSpec((max_boxes, 5), tf.float32),
        ),
    ).apply(tf.data.experimental.assert_cardinality(count))
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
