"""A synthetic object-detection set written as real COCO files: PNG images + instances json.

Each image is a textured background (a smooth colour gradient, oriented stripes of random
frequency and blotchy noise, in muted colours) with 1-``max_objects`` objects of
``CLASS_NAMES``: a red disc, a green square, a blue triangle and a yellow ring, each with
its own colour jitter, a size of 16-72 px (log-uniform) and an aspect ratio of 0.75-1.33,
placed without overlapping another object by more than 0.1 IoU, plus grey distractor
rectangles. Then sensor noise.

Layout (what :func:`afp_tf.data.coco.read_coco` reads)::

    OUT/images/train/000000.png ...     OUT/annotations/instances_train.json
    OUT/images/test/000000.png ...      OUT/annotations/instances_test.json

``bbox`` is COCO's ``[x, y, width, height]`` in pixels; category ids start at 1.
``generate(out, ..., seed)`` is deterministic: image ``i`` of a split depends only on
``(seed, split, i)``. For tests and the explicitly named offline config
``frcnn_coco_synthetic``; never used in place of COCO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from afp_tf import io_utils

CLASS_NAMES = ("red_disc", "green_square", "blue_triangle", "yellow_ring")
_COLOURS = np.array([[220, 40, 40], [40, 190, 60], [50, 80, 230], [235, 210, 40]], np.float32)
SPLITS = ("train", "test")


def _background(rng, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(60, 170, 3)
    grad = rng.uniform(-40, 40, (2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 20)
    stripes = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    img += stripes[..., None] * rng.uniform(5, 25) * rng.uniform(0.5, 1, 3)
    coarse = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1, 3))
    img += np.kron(coarse, np.ones((8, 8, 1)))[:size, :size] * rng.uniform(4, 14)
    return img


def _mask(kind: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1  # [-1, 1] inside the box
    if kind == 0:
        return u**2 + v**2 <= 1
    if kind == 1:
        return np.ones((h, w), bool)
    if kind == 2:
        return (v >= -1) & (np.abs(u) <= (v + 1) / 2)
    r = u**2 + v**2
    return (r <= 1) & (r >= 0.3)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def render(rng: np.random.Generator, size: int, max_objects: int):
    """One image ``(size, size, 3)`` uint8 and its objects ``[(class, x1, y1, x2, y2)]``."""
    img = _background(rng, size)
    for _ in range(rng.integers(0, 3)):  # distractors
        w, h = rng.integers(8, size // 3, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        img[y : y + h, x : x + w] = rng.uniform(70, 190) + rng.normal(0, 6, 3)
    objects = []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _attempt in range(20):
            side = float(np.exp(rng.uniform(np.log(16), np.log(72))))
            aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
            w = int(np.clip(round(side * np.sqrt(aspect)), 12, size - 2))
            h = int(np.clip(round(side / np.sqrt(aspect)), 12, size - 2))
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = (x, y, x + w, y + h)
            if all(_iou(box, o[1:]) <= 0.1 for o in objects):
                break
        else:
            continue
        kind = int(rng.integers(len(CLASS_NAMES)))
        colour = _COLOURS[kind] * rng.uniform(0.75, 1.1) + rng.normal(0, 10, 3)
        mask = _mask(kind, w, h)
        patch = img[y : y + h, x : x + w]
        patch[mask] = colour + rng.normal(0, 6, (int(mask.sum()), 3))
        objects.append((kind, *box))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def generate(
    out: str | Path,
    num_train: int,
    num_test: int,
    *,
    image_size: int = 160,
    max_objects: int = 5,
    seed: int = 0,
) -> Path:
    """Writes the train and test splits under ``out`` (see the module docstring); returns it.

    The annotation files are written last (atomically), so a folder with both json files is a
    complete set.
    """
    if num_train < 1 or num_test < 1 or image_size < 32 or max_objects < 1:
        raise ValueError(
            f"need num_train, num_test, max_objects >= 1 and image_size >= 32, got "
            f"{num_train}, {num_test}, {max_objects}, {image_size}."
        )
    out = Path(out).expanduser()
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)]
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_test), strict=True)):
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            pixels, objects = render(rng, image_size, max_objects)
            name = f"{i:06d}.png"
            with io_utils.atomic_path(folder / name) as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG")
            images.append({"id": i + 1, "file_name": name, "width": image_size,
                           "height": image_size})  # fmt: skip
            for kind, x1, y1, x2, y2 in objects:
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": kind + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                })  # fmt: skip
        io_utils.write_json(
            out / "annotations" / f"instances_{split}.json",
            {"images": images, "annotations": annotations, "categories": categories},
        )
    return out
