"""Training crops of GTSDB frames at the signs' native resolution: sign-aware, plus negatives.

A detector that sees the whole 1360x800 frame resized to a few hundred pixels sees the 16-128 px
signs at 2-18 px. Training instead takes square ``crop_size`` windows of the frame *unscaled*: each
epoch draws ``crops_per_image`` windows per training frame; with probability ``1 -
negative_fraction`` a window is placed (uniformly among the positions that contain it whole) around
one sign of the frame chosen at random, otherwise anywhere (mostly background: the negatives). With
``salient_fraction`` > 0, that share of the windows is instead placed around a *sign-coloured*
background pixel (saturated red, blue or yellow, outside every sign; see :func:`salient_points`):
the hard negatives a detector confuses with signs (a blue disc that is not a mandatory sign), which
windows placed anywhere rarely contain. Signs cut by the window are kept, clipped, when at least
``min_visible`` of their area is inside; the rest are dropped. Inference runs the same fully
convolutional model on the full frame. Frames smaller than a window are zero-padded at the
bottom/right.

Windows are read straight from the PPM file (memory-mapped), so the frames need not fit in
memory. The draw of epoch ``e`` is seeded by ``(seed, e)``.
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from afp_tf.data import gtsdb_layout


def crop_origin(
    rng: np.random.Generator,
    ann: gtsdb_layout.Annotation,
    crop: int,
    negative_fraction: float,
    salient: np.ndarray | None = None,
    salient_fraction: float = 0.0,
) -> tuple[int, int]:
    """Top-left corner of one training window of ``ann`` (see the module docstring);
    ``salient``: ``(K, 2)`` ``x, y`` of its sign-coloured background pixels."""
    max_x, max_y = max(0, ann.width - crop), max(0, ann.height - crop)

    def place(lo_box, hi_box, limit):
        lo, hi = max(0, int(hi_box) + 1 - crop), min(limit, int(lo_box))
        if lo > hi:  # the box is larger than the window: centre it
            return int(np.clip((lo_box + hi_box + 1 - crop) // 2, 0, limit))
        return int(rng.integers(lo, hi + 1))

    if salient_fraction:
        draw = rng.random()
        if draw < negative_fraction:
            box = None
        elif draw < negative_fraction + salient_fraction and salient is not None and len(salient):
            x, y = salient[rng.integers(len(salient))]
            box = (x, y, x, y)
        else:
            box = ann.boxes[rng.integers(len(ann.boxes))] if len(ann.boxes) else None
    else:
        take = len(ann.boxes) and rng.random() >= negative_fraction
        box = ann.boxes[rng.integers(len(ann.boxes))] if take else None
    if box is None:
        return int(rng.integers(0, max_x + 1)), int(rng.integers(0, max_y + 1))
    x1, y1, x2, y2 = box
    return place(x1, x2, max_x), place(y1, y2, max_y)


def salient_points(
    ann: gtsdb_layout.Annotation, rng: np.random.Generator, max_points: int = 256
) -> np.ndarray:
    """Up to ``max_points`` ``x, y`` pixels of ``ann``'s frame in a sign colour outside its signs.

    Sign colours: red or blue the dominant channel, or yellow (red and green both over blue), by
    at least half of the brightest channel, which is at least 60; green (foliage) and greys are
    not. Pixels within 4 px of a sign's box are left out.
    """
    image = gtsdb_layout.read_ppm(ann.path).astype(np.int16)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    top = image.max(axis=-1)
    strong = top >= 60
    red = (r == top) & (r - np.maximum(g, b) >= top // 2)
    blue = (b == top) & (b - np.maximum(r, g) >= top // 2)
    yellow = (np.minimum(r, g) - b >= top // 2) & (np.abs(r - g) < top // 3)
    mask = strong & (red | blue | yellow)
    for x1, y1, x2, y2 in ann.boxes.astype(int):
        mask[max(0, y1 - 4) : y2 + 5, max(0, x1 - 4) : x2 + 5] = False
    ys, xs = np.nonzero(mask)
    if len(xs) > max_points:
        pick = rng.choice(len(xs), max_points, replace=False)
        ys, xs = ys[pick], xs[pick]
    return np.stack([xs, ys], axis=-1).astype(np.int32)


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
    salient_fraction: float = 0.0,
) -> tf.data.Dataset:
    """Batches of ``(crop float32 [0, 1] (S, S, 3), packed targets (max_boxes, 5))``; a new draw
    of windows every epoch (every iteration of the dataset). ``salient_fraction``: share of the
    windows around sign-coloured background (:func:`salient_points`, found once per frame)."""
    if not annotations:
        raise ValueError("No training images; use more images or a smaller val_fraction.")
    if (
        crop_size < 32
        or crops_per_image < 1
        or not 0 <= negative_fraction <= 1
        or not 0 <= salient_fraction <= 1 - negative_fraction
    ):
        raise ValueError(
            f"need crop_size >= 32, crops_per_image >= 1, 0 <= negative_fraction <= 1 and "
            f"0 <= salient_fraction <= 1 - negative_fraction, got {crop_size}, "
            f"{crops_per_image}, {negative_fraction}, {salient_fraction}."
        )
    epochs = itertools.count()
    count = len(annotations) * crops_per_image
    salient: list[np.ndarray | None] = [None] * len(annotations)

    def windows():
        rng = np.random.default_rng([seed, next(epochs)])
        for i in rng.permutation(count):
            k = i // crops_per_image
            ann = annotations[k]
            if salient_fraction and salient[k] is None:
                salient[k] = salient_points(ann, np.random.default_rng([seed, k]))
            x0, y0 = crop_origin(
                rng, ann, crop_size, negative_fraction, salient[k], salient_fraction
            )
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
