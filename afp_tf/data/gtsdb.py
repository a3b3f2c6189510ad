"""The German Traffic Sign Detection Benchmark (GTSDB, IJCNN 2013) as tf.data pipelines.

Layout (``FullIJCNN2013.zip``): a folder with ``00000.ppm`` ... ``00899.ppm`` (1360x800) and
``gt.txt`` with lines ``file;x1;y1;x2;y2;class_id``. Standard split: the first 600 images (in
file order) train, the last 300 test; smaller sets keep the 2:1 ratio. Validation is a seeded
``val_fraction`` of the training images. Images without a sign are kept as negatives.

Labels are the 43 class ids or the 4 super-categories (``data.labels``). Targets are packed per
image as one float tensor ``(max_boxes, 5)``: ``[x1, y1, x2, y2, class]`` with coordinates
relative to the image (``rel_xyxy``) and padding rows ``class = -1``; a single tensor keeps the
loss a plain ``loss(y_true, y_pred)``. :func:`unpack_targets` gives keras-cv's dense dict.

Config keys read from ``cfg.data`` (defaults in :data:`DEFAULTS` when absent): ``source``
(``auto``/``local``: the real set, downloaded if allowed; ``synthetic``: generated in the same
layout), ``data_dir``, ``download``, ``url``, ``sha256``, ``labels``, ``image_size``,
``max_boxes``, ``batch_size``, ``eval_batch_size``, ``val_fraction``, ``seed``,
``synthetic_images``, ``synthetic_scale``.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf.data import download as download_lib
from afp_tf.data import gtsdb_synth
from afp_tf.data.errors import DatasetCorruptError, DatasetNotFoundError

ARCHIVE_NAME = "FullIJCNN2013.zip"
LAYOUT_DIR = "FullIJCNN2013"
DEFAULTS = {
    "data_dir": "~/.cache/afp_tf/gtsdb",
    "url": "https://sid.erda.dk/public/archives/ff17dc924eba88d5d01a807357d6614c/FullIJCNN2013.zip",
    "sha256": "",  # unknown to us; set it to check the archive
    "labels": "categories",  # categories (4) | classes (43)
    "image_size": 160,
    "max_boxes": 16,
    "synthetic_images": 300,
    "synthetic_scale": 0.25,
}


class GTSDBDownloadError(DatasetNotFoundError, download_lib.DownloadError):
    """GTSDB is not on disk and could not be downloaded; the message says where to put it."""


@dataclasses.dataclass(frozen=True)
class Annotation:
    """The signs of one image: pixel boxes ``(n, 4)`` as x1, y1, x2, y2 and class ids ``(n,)``."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray


@dataclasses.dataclass
class DetectionData:
    """Batched datasets ``(image, packed targets)`` and what describes them."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    num_train: int
    num_val: int
    num_test: int
    source: str
    sample: Callable[[str, int], tuple[np.ndarray, np.ndarray]]


def read_ppm_header(path: Path) -> tuple[int, int, int]:
    """Returns (width, height, data offset) of a binary PPM (P6) file."""
    with open(path, "rb") as f:
        head = f.read(64)
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(head) and head[pos : pos + 1].isspace():
            pos += 1
        if head[pos : pos + 1] == b"#":
            pos = head.index(b"\n", pos)
            continue
        end = pos
        while end < len(head) and not head[end : end + 1].isspace():
            end += 1
        tokens.append(head[pos:end])
        pos = end
    if tokens[0] != b"P6" or tokens[3] != b"255":
        raise DatasetCorruptError(f"{path} is not an 8-bit binary PPM (P6) file.")
    return int(tokens[1]), int(tokens[2]), pos + 1


def read_ppm(path: str | Path) -> np.ndarray:
    """Reads a binary PPM (P6) file into an (H, W, 3) uint8 array."""
    path = Path(path)
    width, height, offset = read_ppm_header(path)
    data = np.fromfile(path, np.uint8, offset=offset, count=width * height * 3)
    return data.reshape(height, width, 3)


def find_layout(root: str | Path) -> Path:
    """Returns the folder holding ``gt.txt`` under ``root`` (itself or ``FullIJCNN2013/``)."""
    root = Path(root).expanduser()
    for candidate in (root, root / LAYOUT_DIR):
        if (candidate / "gt.txt").is_file():
            return candidate
    raise DatasetNotFoundError(
        f"No GTSDB data in {root}: expected {root / LAYOUT_DIR}/gt.txt and 00000.ppm ... "
        f"00899.ppm. Download {ARCHIVE_NAME} (German Traffic Sign Detection Benchmark) and unzip "
        f"it into {root}, or set data.download=True with a reachable data.url, or use the "
        "offline config ssd_gtsdb_synthetic."
    )


def read_annotations(layout_dir: str | Path) -> list[Annotation]:
    """Parses ``gt.txt`` and lists every ``.ppm`` image (negatives included) in file order.

    Raises:
      DatasetCorruptError: a malformed ``gt.txt`` line (named by line number), or a box naming a
        missing image or lying outside it.
    """
    layout_dir = Path(layout_dir)
    images = sorted(layout_dir.glob("*.ppm"))
    if not images:
        raise DatasetNotFoundError(
            f"No .ppm images in {layout_dir}: unzip {ARCHIVE_NAME} there (00000.ppm ... "
            "00899.ppm next to gt.txt)."
        )
    signs: dict[str, list[tuple[list[float], int]]] = {p.name: [] for p in images}
    gt = layout_dir / "gt.txt"
    for number, line in enumerate(gt.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(";")
        try:
            if len(fields) != 6:
                raise ValueError(f"expected 6 fields, found {len(fields)}")
            x1, y1, x2, y2, class_id = (int(v) for v in fields[1:])
        except ValueError as e:
            raise DatasetCorruptError(
                f"{gt}:{number}: malformed line {line!r} ({e}); expected file;x1;y1;x2;y2;class_id"
            ) from None
        if fields[0] not in signs:
            raise DatasetCorruptError(f"{gt}:{number}: image {fields[0]!r} is not in {layout_dir}.")
        if not (0 <= class_id < gtsdb_synth.NUM_CLASSES and x1 <= x2 and y1 <= y2):
            raise DatasetCorruptError(f"{gt}:{number}: bad class id or box in {line!r}.")
        signs[fields[0]].append(([x1, y1, x2, y2], class_id))
    annotations = []
    for path in images:
        width, height, _ = read_ppm_header(path)
        entries = signs[path.name]
        annotations.append(
            Annotation(
                path=path,
                width=width,
                height=height,
                boxes=np.array([b for b, _ in entries], np.float32).reshape(-1, 4),
                classes=np.array([c for _, c in entries], np.int32),
            )
        )
    return annotations


def standard_split(
    annotations: list[Annotation], val_fraction: float, seed: int
) -> dict[str, list[Annotation]]:
    """First 2/3 (600 of 900) train, last 1/3 test; a seeded ``val_fraction`` of train is val."""
    num_train = round(len(annotations) * 600 / 900)
    train, test = annotations[:num_train], annotations[num_train:]
    if not 0 < val_fraction < 1 or len(train) < 2 or not test:
        raise ValueError(
            f"Cannot split {len(annotations)} images with val_fraction={val_fraction}: need "
            "0 < val_fraction < 1 and at least 3 images (validation is carved from train)."
        )
    order = np.random.default_rng(seed).permutation(len(train))
    num_val = min(len(train) - 1, max(1, round(len(train) * val_fraction)))
    val_idx = set(order[:num_val].tolist())
    return {
        "train": [a for i, a in enumerate(train) if i not in val_idx],
        "val": [a for i, a in enumerate(train) if i in val_idx],
        "test": test,
    }


def pack_targets(ann: Annotation, labels: str, max_boxes: int) -> np.ndarray:
    """Returns the ``(max_boxes, 5)`` packed targets of one image (see module docstring)."""
    packed = np.zeros((max_boxes, 5), np.float32)
    packed[:, 4] = -1
    n = len(ann.classes)
    if n > max_boxes:
        logging.warning("%s has %d signs; keeping the first max_boxes=%d.", ann.path, n, max_boxes)
        n = max_boxes
    # gt.txt boxes are inclusive pixel coordinates.
    scale = np.array([ann.width, ann.height, ann.width, ann.height], np.float32)
    boxes = ann.boxes[:n] + np.array([0, 0, 1, 1], np.float32)
    packed[:n, :4] = boxes / scale
    classes = ann.classes[:n]
    if labels == "categories":
        classes = np.array([gtsdb_synth.CLASS_TO_CATEGORY[int(c)] for c in classes], np.int32)
    packed[:n, 4] = classes
    return packed


def unpack_targets(packed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Splits packed targets into keras-cv's dense ``{"boxes", "classes"}`` (padding = -1)."""
    classes = packed[..., 4]
    boxes = tf.where(classes[..., None] < 0, -1.0, packed[..., :4])
    return {"boxes": boxes, "classes": classes}


def make_dataset(
    annotations: list[Annotation],
    *,
    image_size: int,
    labels: str,
    max_boxes: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """A batched dataset of ``(image float32 [0, 1] (S, S, 3), packed targets (max_boxes, 5))``."""
    if not annotations:
        raise ValueError("No images in this split; use more images or a smaller val_fraction.")
    paths = [str(a.path) for a in annotations]
    targets = np.stack([pack_targets(a, labels, max_boxes) for a in annotations])

    def load(path):
        image = tf.numpy_function(lambda p: read_ppm(p.decode()), [path], tf.uint8)
        image.set_shape([None, None, 3])
        image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (image_size, image_size))
        return image

    ds = tf.data.Dataset.from_tensor_slices((paths, targets))
    ds = ds.map(lambda p, t: (load(p), t), num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        ds = ds.shuffle(len(annotations), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _option(data_cfg, key: str):
    value = data_cfg.get(key, None) if hasattr(data_cfg, "get") else getattr(data_cfg, key, None)
    return DEFAULTS[key] if value in (None, "", 0) and key in DEFAULTS else value


def locate(data_cfg) -> tuple[Path, str]:
    """Finds (generating or downloading if configured) the layout folder; returns it and a label."""
    root = Path(_option(data_cfg, "data_dir")).expanduser()
    source = data_cfg.source
    if source == "synthetic":
        num, scale = (
            int(_option(data_cfg, "synthetic_images")),
            float(_option(data_cfg, "synthetic_scale")),
        )
        out = root / f"synthetic_{num}_{scale:g}_seed{data_cfg.seed}"
        if not (out / "gt.txt").is_file():
            logging.info("Generating %d synthetic GTSDB-format images in %s.", num, out)
            gtsdb_synth.generate(out, num, scale=scale, seed=int(data_cfg.seed))
        return out, f"synthetic GTSDB layout ({num} images, scale {scale:g}) in {out}"
    if source not in ("auto", "local"):
        raise ValueError(f"data.source={source!r} for GTSDB must be auto, local or synthetic.")
    try:
        return find_layout(root), f"GTSDB in {root}"
    except FileNotFoundError:
        if not data_cfg.download or source == "local":
            raise
    try:
        archive = download_lib.download(
            _option(data_cfg, "url"),
            root / ARCHIVE_NAME,
            sha256=_option(data_cfg, "sha256") or None,
            manual_hint=(
                f"Offline? Put {ARCHIVE_NAME} into {root} (or its unzipped {LAYOUT_DIR}/ folder "
                "with gt.txt and the .ppm images), or use the offline config ssd_gtsdb_synthetic."
            ),
        )
    except download_lib.DownloadError as e:
        raise GTSDBDownloadError(str(e)) from e
    try:
        download_lib.extract_zip(archive, root)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DatasetCorruptError(
            f"{archive} is not a readable {ARCHIVE_NAME} ({e}); delete it and download it again."
        ) from e
    return find_layout(root), f"GTSDB downloaded to {root}"


def load_gtsdb(cfg) -> DetectionData:
    """Builds the train/val/test pipelines of GTSDB (real or synthetic) from ``cfg.data``."""
    data_cfg = cfg.data if hasattr(cfg, "data") else cfg
    labels = _option(data_cfg, "labels")
    if labels not in ("categories", "classes"):
        raise ValueError(f"data.labels={labels!r} must be 'categories' (4) or 'classes' (43).")
    layout, source = locate(data_cfg)
    splits = standard_split(read_annotations(layout), float(data_cfg.val_fraction), data_cfg.seed)
    size, max_boxes = int(_option(data_cfg, "image_size")), int(_option(data_cfg, "max_boxes"))
    common = {"image_size": size, "labels": labels, "max_boxes": max_boxes}

    def build(split, batch, shuffle):
        return make_dataset(
            splits[split], batch_size=batch, shuffle=shuffle, seed=data_cfg.seed, **common
        )

    eval_batch = int(data_cfg.eval_batch_size or data_cfg.batch_size)

    def sample(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = next(iter(make_dataset(splits[split][:n], batch_size=n, shuffle=False, **common)))
        return x.numpy(), y.numpy()

    names = (
        gtsdb_synth.CATEGORY_NAMES
        if labels == "categories"
        else tuple(f"class_{i}" for i in range(gtsdb_synth.NUM_CLASSES))
    )
    return DetectionData(
        train=build("train", int(data_cfg.batch_size), True),
        val=build("val", eval_batch, False),
        test=build("test", eval_batch, False),
        input_shape=(size, size, 3),
        num_classes=len(names),
        class_names=names,
        num_train=len(splits["train"]),
        num_val=len(splits["val"]),
        num_test=len(splits["test"]),
        source=source,
        sample=sample,
    )
