"""The German Traffic Sign Detection Benchmark (GTSDB, IJCNN 2013) as tf.data pipelines.

Layout (``FullIJCNN2013.zip``): a folder with ``00000.ppm`` ... ``00899.ppm`` (1360x800) and
``gt.txt`` with lines ``file;x1;y1;x2;y2;class_id`` (:mod:`afp_tf.data.gtsdb_layout`).
Standard split: the first 600 images (in file order) train, the last 300 test; smaller sets
keep the 2:1 ratio. Validation is a seeded ``val_fraction`` of the training images and the
acceptance split (pruning decisions only, never trained on or early-stopped on) a further
``accept_fraction`` of them (0: none). Images without a sign are kept as negatives.

Scale: nothing is resized. Training batches are ``image_size`` x ``image_size`` crops at native
resolution with sign-aware sampling plus negatives (:mod:`afp_tf.data.gtsdb_crops`);
validation, test and :attr:`DetectionData.sample` give full frames, on which the fully
convolutional detector runs (``frame_shape``).

Labels are the 43 class ids or the 4 super-categories (``data.labels``), mapped from ``gt.txt``'s
class ids by the benchmark's own list (:data:`afp_tf.data.gtsdb_signs.CATEGORY_CLASSES`); targets
are packed (see :mod:`afp_tf.data.gtsdb_layout`); :func:`unpack_targets` gives keras-cv's dense
dict. Scoring (``data.scoring``, :func:`scored_classes`): ``competition`` (default) averages AP
over the three categories the GTSDB competition scores (prohibitory, danger, mandatory; with
``labels=classes`` their 35 class ids), ``all`` over every label ("other" included).

Config keys read from ``cfg.data`` (defaults in :data:`DEFAULTS` when absent): ``source``
(``auto``/``local``: the real set, downloaded if allowed; ``synthetic``: generated in the same
layout), ``data_dir``, ``download``, ``url``, ``sha256``, ``labels``, ``image_size`` (training crop
side), ``crops_per_image``, ``negative_crops`` (fraction of crops placed anywhere),
``salient_crops`` (fraction placed around sign-coloured background, 0 = none), ``max_boxes``,
``batch_size``, ``eval_batch_size``, ``val_fraction``, ``accept_fraction``, ``seed``, ``scoring``,
``synthetic_images``, ``synthetic_scale`` (synthetic frame size relative to 1360x800),
``synthetic_sign_scale`` (sign size relative to the native 16-128 px; 1 by default)."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf.data import download as download_lib
from afp_tf.data import gtsdb_crops, gtsdb_signs, gtsdb_synth, holdout
from afp_tf.data.errors import DatasetCorruptError, DatasetNotFoundError
from afp_tf.data.gtsdb_layout import (
    ARCHIVE_NAME,
    Annotation,
    pack_targets,
    read_annotations,
    read_ppm,
)

LAYOUT_DIR = "FullIJCNN2013"
DEFAULTS = {
    "data_dir": "~/.cache/afp_tf/gtsdb",
    "url": "https://sid.erda.dk/public/archives/ff17dc924eba88d5d01a807357d6614c/FullIJCNN2013.zip",
    "sha256": "",  # unknown to us; set it to check the archive
    "labels": "categories",  # categories (4) | classes (43)
    "scoring": "competition",  # competition (prohibitory, danger, mandatory) | all
    "image_size": 192,
    "crops_per_image": 2,
    "negative_crops": 0.2,
    "max_boxes": 16,
    "synthetic_images": 300,
    "synthetic_scale": 0.4,
    "synthetic_sign_scale": 1.0,
}


SCORINGS = ("competition", "all")  # data.scoring


def scored_classes(labels: str, scoring: str) -> tuple[int, ...]:
    """The label ids whose AP the decision metric averages under ``data.scoring``.

    ``competition``: the GTSDB competition's categories (prohibitory, danger, mandatory: ids
    0-2 with ``labels=categories``, the 35 class ids in them with ``labels=classes``); ``all``:
    every label, "other" included.
    """
    if scoring not in SCORINGS:
        raise ValueError(f"data.scoring={scoring!r} is not one of {', '.join(SCORINGS)}.")
    if labels == "categories":
        every = range(len(gtsdb_signs.CATEGORY_NAMES))
        in_competition = set(gtsdb_signs.COMPETITION_CATEGORIES)
    else:
        every = range(gtsdb_signs.NUM_CLASSES)
        in_competition = {
            c for k in gtsdb_signs.COMPETITION_CATEGORIES for c in gtsdb_signs.CATEGORY_CLASSES[k]
        }
    return tuple(c for c in every if scoring == "all" or c in in_competition)


class GTSDBDownloadError(DatasetNotFoundError, download_lib.DownloadError):
    """GTSDB is not on disk and could not be downloaded; the message says where to put it."""


@dataclasses.dataclass
class DetectionData:
    """Batched datasets ``(image, packed targets)`` and what describes them.

    ``train`` holds crops of ``input_shape`` (the model's training input); ``val``, ``test``
    and ``sample`` hold full frames of ``frame_shape``. ``scored_classes``: the labels the
    decision metric averages (``scoring``; None: all).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple[int, int, int]
    frame_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    num_train: int
    num_val: int
    num_test: int
    source: str
    sample: Callable[[str, int], tuple[np.ndarray, np.ndarray]]
    accept: tf.data.Dataset | None = None
    num_accept: int = 0
    scoring: str = "all"
    scored_classes: tuple[int, ...] | None = None


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


def standard_split(
    annotations: list[Annotation], val_fraction: float, seed: int, accept_fraction: float = 0.0
) -> dict[str, list[Annotation]]:
    """First 2/3 (600 of 900) train, last 1/3 test; val and accept are held out of train by
    :func:`afp_tf.data.holdout.hold_out` (``accept`` empty when ``accept_fraction`` is 0)."""
    num_train = round(len(annotations) * 600 / 900)
    train, test = annotations[:num_train], annotations[num_train:]
    if not test:
        raise ValueError(
            f"Cannot split {len(annotations)} images: the last third is test and needs an image."
        )
    what = f"training images (the first two thirds of {len(annotations)}; the rest is test)"
    idx = holdout.hold_out(len(train), val_fraction, accept_fraction, seed, what)
    return {k: [train[i] for i in sorted(v)] for k, v in idx.items()} | {"test": test}


def unpack_targets(packed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Splits packed targets into keras-cv's dense ``{"boxes", "classes"}`` (padding = -1)."""
    classes = packed[..., 4]
    boxes = tf.where(classes[..., None] < 0, -1.0, packed[..., :4])
    return {"boxes": boxes, "classes": classes}


def frame_dataset(
    annotations: list[Annotation],
    *,
    labels: str,
    max_boxes: int,
    batch_size: int,
) -> tf.data.Dataset:
    """Batches of full frames ``(float32 [0, 1] (H, W, 3), packed targets (max_boxes, 5))``."""
    if not annotations:
        raise ValueError("No images in this split; use more images or a smaller val_fraction.")
    paths = [str(a.path) for a in annotations]
    targets = np.stack([pack_targets(a, labels, max_boxes) for a in annotations])
    height, width = annotations[0].height, annotations[0].width

    def load(path):
        image = tf.numpy_function(lambda p: read_ppm(p.decode()), [path], tf.uint8)
        return tf.ensure_shape(image, [height, width, 3])

    ds = tf.data.Dataset.from_tensor_slices((paths, targets))
    ds = ds.map(lambda p, t: (load(p), t), num_parallel_calls=tf.data.AUTOTUNE)
    if len(paths) * height * width * 3 <= _CACHE_BYTES:
        ds = ds.cache()
    ds = ds.map(lambda x, t: (tf.cast(x, tf.float32) / 255.0, t))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


_CACHE_BYTES = 256 * 2**20  # decoded uint8 frames of an evaluation split kept in memory


def frame_size(annotations: list[Annotation]) -> tuple[int, int]:
    """The ``(height, width)`` shared by every frame; a clear error when they differ."""
    sizes = {(a.height, a.width) for a in annotations}
    if len(sizes) != 1:
        raise DatasetCorruptError(
            f"GTSDB frames must share one size to be batched; found {sorted(sizes)[:4]}."
        )
    return sizes.pop()


def _option(data_cfg, key: str):
    value = data_cfg.get(key, None) if hasattr(data_cfg, "get") else getattr(data_cfg, key, None)
    return DEFAULTS[key] if value in (None, "", 0) and key in DEFAULTS else value


def locate(data_cfg) -> tuple[Path, str]:
    """Finds (generating or downloading if configured) the layout folder; returns it and a label."""
    root = Path(_option(data_cfg, "data_dir")).expanduser()
    source = data_cfg.source
    if source == "synthetic":
        num, scale, signs = (
            int(_option(data_cfg, "synthetic_images")),
            float(_option(data_cfg, "synthetic_scale")),
            float(_option(data_cfg, "synthetic_sign_scale")),
        )
        out = root / f"synthetic_v2_{num}_{scale:g}_{signs:g}_seed{data_cfg.seed}"
        if not (out / "gt.txt").is_file():
            logging.info("Generating %d synthetic GTSDB-format images in %s.", num, out)
            gtsdb_synth.generate(out, num, scale=scale, sign_scale=signs, seed=int(data_cfg.seed))
        return out, (
            f"synthetic GTSDB layout ({num} images, frames {scale:g} x 1360x800, signs "
            f"{signs:g} x native 16-128 px) in {out}"
        )
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
    """Builds the train (crops) / val / test (full frames) pipelines from ``cfg.data``."""
    data_cfg = cfg.data if hasattr(cfg, "data") else cfg
    labels = _option(data_cfg, "labels")
    if labels not in ("categories", "classes"):
        raise ValueError(f"data.labels={labels!r} must be 'categories' (4) or 'classes' (43).")
    scoring = _option(data_cfg, "scoring")
    scored = scored_classes(labels, scoring)
    layout, source = locate(data_cfg)
    annotations = read_annotations(layout)
    height, width = frame_size(annotations)
    splits = standard_split(
        annotations,
        float(data_cfg.val_fraction),
        data_cfg.seed,
        accept_fraction=float(data_cfg.get("accept_fraction", 0.0) or 0.0),
    )
    crop, max_boxes = int(_option(data_cfg, "image_size")), int(_option(data_cfg, "max_boxes"))
    common = {"labels": labels, "max_boxes": max_boxes}
    eval_batch = int(data_cfg.eval_batch_size or data_cfg.batch_size)

    def sample(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = next(iter(frame_dataset(splits[split][:n], batch_size=n, **common)))
        return x.numpy(), y.numpy()

    names = (
        gtsdb_signs.CATEGORY_NAMES
        if labels == "categories"
        else tuple(f"class_{i}" for i in range(gtsdb_signs.NUM_CLASSES))
    )
    train = gtsdb_crops.crop_dataset(
        splits["train"],
        crop_size=crop,
        crops_per_image=int(_option(data_cfg, "crops_per_image")),
        negative_fraction=float(_option(data_cfg, "negative_crops")),
        salient_fraction=float(data_cfg.get("salient_crops", 0.0) or 0.0),
        batch_size=int(data_cfg.batch_size),
        seed=int(data_cfg.seed),
        **common,
    )
    return DetectionData(
        train=train,
        val=frame_dataset(splits["val"], batch_size=eval_batch, **common),
        test=frame_dataset(splits["test"], batch_size=eval_batch, **common),
        accept=(
            frame_dataset(splits["accept"], batch_size=eval_batch, **common)
            if splits["accept"]
            else None
        ),
        num_accept=len(splits["accept"]),
        input_shape=(crop, crop, 3),
        frame_shape=(height, width, 3),
        num_classes=len(names),
        class_names=names,
        num_train=len(splits["train"]),
        num_val=len(splits["val"]),
        num_test=len(splits["test"]),
        source=source,
        sample=sample,
        scoring=scoring,
        scored_classes=scored,
    )
