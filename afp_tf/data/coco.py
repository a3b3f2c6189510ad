"""COCO-format detection data: an instances-json + image-folder reader and its tf.data pipelines.

A split is a COCO ``instances`` json (``images``, ``annotations`` with ``bbox`` = ``[x, y,
width, height]`` in pixels, ``categories``) and a folder of the images it names. Category
ids map to contiguous class indices in id order; crowd annotations are skipped; boxes are
clipped to their image. Malformed files raise :class:`DatasetCorruptError` naming the file,
the entry and the fault; a missing json or image raises :class:`DatasetNotFoundError`.

Images are resized to ``image_size`` x ``image_size`` (boxes are relative ``xyxy``, so they
need no change) and scaled to ``[0, 1]``; targets are packed ``(max_boxes, 5)`` =
``[x1, y1, x2, y2, class]`` with padding class -1, as for GTSDB. Training batches are shuffled
and horizontally flipped, both seeded by ``(seed, epoch)`` so a resumed run sees the batches an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf.data.errors import DatasetCorruptError, DatasetNotFoundError

_CACHE_BYTES = 512 * 2**20  # decoded, resized uint8 images of a split kept in memory


@dataclasses.dataclass(frozen=True)
class CocoSplit:
    """One split read from a COCO json: image paths, boxes and class indices per image."""

    paths: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]  # per image (n, 4) relative xyxy
    labels: tuple[np.ndarray, ...]  # per image (n,) class index
    class_names: tuple[str, ...]


def _fail(json_path, where: str, fault: str):
    raise DatasetCorruptError(f"{json_path}: {where} {fault}")


def _require(entry, keys, json_path, where: str) -> None:
    if not isinstance(entry, dict):
        _fail(json_path, where, f"must be an object, got {type(entry).__name__}")
    for key in keys:
        if key not in entry:
            _fail(json_path, where, f"lacks {key!r}")


def _load_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise DatasetNotFoundError(
            f"No COCO annotation file {json_path}. Put the instances json there or set "
            "data.data_dir / data.train_split / data.test_split (see afp_tf.data.coco)."
        )
    try:
        doc = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetCorruptError(f"{json_path} is not valid JSON: {e}") from e
    _require(doc, ("images", "annotations", "categories"), json_path, "the top level")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc[key], list):
            _fail(json_path, f"'{key}'", "must be a list")
    if not doc["categories"]:
        _fail(json_path, "'categories'", "is empty")
    return doc


def _box(ann, image, json_path, where):
    bbox = ann["bbox"]
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        or bbox[2] <= 0
        or bbox[3] <= 0
    ):
        _fail(json_path, where, f"bbox {bbox!r} must be [x, y, width, height], width, height > 0")
    w, h = float(image["width"]), float(image["height"])
    x1, y1 = max(0.0, bbox[0]), max(0.0, bbox[1])
    x2, y2 = min(w, bbox[0] + bbox[2]), min(h, bbox[1] + bbox[3])
    return None if x2 <= x1 or y2 <= y1 else [x1 / w, y1 / h, x2 / w, y2 / h]


def read_coco(json_path: str | Path, image_dir: str | Path) -> CocoSplit:
    """Reads and checks one split (see the module docstring)."""
    json_path, image_dir = Path(json_path).expanduser(), Path(image_dir).expanduser()
    doc = _load_json(json_path)
    for i, c in enumerate(doc["categories"]):
        _require(c, ("id", "name"), json_path, f"categories[{i}]")
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(cats)}
    images = {}
    for i, im in enumerate(doc["images"]):
        _require(im, ("id", "file_name", "width", "height"), json_path, f"images[{i}]")
        if (
            not (isinstance(im["width"], int) and isinstance(im["height"], int))
            or min(im["width"], im["height"]) <= 0
        ):
            _fail(json_path, f"images[{i}]", "needs positive integer width and height")
        if im["id"] in images:
            _fail(json_path, f"images[{i}]", f"repeats image id {im['id']!r}")
        images[im["id"]] = im
    per_image = {k: ([], []) for k in images}
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotations[{i}]"
        _require(ann, ("image_id", "category_id", "bbox"), json_path, where)
        if ann["image_id"] not in images:
            _fail(json_path, where, f"refers to image_id {ann['image_id']!r}, not in 'images'")
        if ann["category_id"] not in index:
            _fail(json_path, where, f"has category_id {ann['category_id']!r}, not in 'categories'")
        box = _box(ann, images[ann["image_id"]], json_path, where)
        if box is not None and not ann.get("iscrowd", 0):
            per_image[ann["image_id"]][0].append(box)
            per_image[ann["image_id"]][1].append(index[ann["category_id"]])
    order = sorted(images)
    paths = [image_dir / images[k]["file_name"] for k in order]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(paths)} images of {json_path} are missing from "
            f"{image_dir}, e.g. {missing[0]}."
        )
    return CocoSplit(
        paths=tuple(str(p) for p in paths),
        boxes=tuple(np.asarray(per_image[k][0], np.float32).reshape(-1, 4) for k in order),
        labels=tuple(np.asarray(per_image[k][1], np.int64) for k in order),
        class_names=tuple(str(c["name"]) for c in cats),
    )


def pack(boxes: np.ndarray, labels: np.ndarray, max_boxes: int) -> np.ndarray:
    """``(max_boxes, 5)`` packed targets; beyond ``max_boxes`` the largest boxes are kept."""
    out = -np.ones((max_boxes, 5), np.float32)
    if len(boxes) > max_boxes:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = np.sort(np.argsort(-area, kind="stable")[:max_boxes])
        boxes, labels = boxes[keep], labels[keep]
    out[: len(boxes), :4], out[: len(boxes), 4] = boxes, labels
    return out


def subset(split: CocoSplit, indices) -> CocoSplit:
    """The images ``indices`` of ``split``."""
    return CocoSplit(
        tuple(split.paths[i] for i in indices),
        tuple(split.boxes[i] for i in indices),
        tuple(split.labels[i] for i in indices),
        split.class_names,
    )


def _decode(path, size: int):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def images_dataset(split: CocoSplit, image_size: int, max_boxes: int) -> tf.data.Dataset:
    """Unbatched ``(uint8 image (S, S, 3), packed targets)``, decoded once and cached if small."""
    if not split.paths:
        raise ValueError("No images in this split; use more images or a smaller val_fraction.")
    targets = np.stack(
        [pack(b, lab, max_boxes) for b, lab in zip(split.boxes, split.labels, strict=True)]
    )
    ds = tf.data.Dataset.from_tensor_slices((list(split.paths), targets))
    ds = ds.map(lambda p, t: (_decode(p, image_size), t), num_parallel_calls=tf.data.AUTOTUNE)
    if len(split.paths) * image_size**2 * 3 <= _CACHE_BYTES:
        ds = ds.cache()
    else:
        logging.info("%d images: decoded on every pass (not cached).", len(split.paths))
    return ds


def to_float(image, packed):
    return tf.cast(image, tf.float32) / 255.0, packed


def flip(image, packed, seed):
    """Horizontal flip (with the boxes) when a stateless draw from ``seed`` says so."""
    do = tf.random.stateless_uniform([], seed) < 0.5
    x1, y1, x2, y2, c = tf.unstack(packed, axis=-1)
    flipped = tf.where((c >= 0)[:, None], tf.stack([1 - x2, y1, 1 - x1, y2, c], -1), packed)
    return tf.cond(do, lambda: (tf.image.flip_left_right(image), flipped), lambda: (image, packed))


def train_batches(images: tf.data.Dataset, size: int, batch_size: int, seed: int, epoch: int):
    """Epoch ``epoch``'s shuffled, flipped, batched training data."""
    ds = images.shuffle(min(size, 4096), seed=seed * 100003 + epoch, reshuffle_each_iteration=False)
    ds = ds.enumerate().map(
        lambda i, xt: flip(*to_float(*xt), tf.stack([tf.cast(seed, tf.int64) + epoch, i])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size, drop_remainder=size >= batch_size).prefetch(tf.data.AUTOTUNE)


def eval_batches(images: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return images.map(to_float).batch(batch_size).prefetch(tf.data.AUTOTUNE)
