"""Where COCO-format detection data comes from: TFDS ``coco/2017``, local files, or synthetic.

``data.source``:

* ``tfds`` / ``auto``: TFDS ``coco/2017`` (``data.tfds_data_dir``; prepared by TFDS when
  ``data.download`` is true). The first ``data.val_subset`` (or ``val_fraction``) training
  images validate, the next ``accept_fraction`` are the acceptance split, the rest trains;
  ``validation`` is the reported test split.
* ``local``: COCO files under ``data.data_dir``: ``annotations/instances_{split}.json`` and
  the images in ``data.image_dir`` (default ``images/{split}``; ``{split}`` for the COCO
  archive layout ``train2017/``), for ``data.train_split`` and ``data.test_split``;
  validation and acceptance are held out of the training split as for every dataset
  (:func:`afp_tf.data.holdout.hold_out`).
* ``synthetic``: :mod:`afp_tf.data.coco_synth` generates ``data.synthetic_train`` +
  ``data.synthetic_test`` images into ``data.data_dir`` on first use, read back as ``local``.

``data.train_subset`` / ``data.test_subset`` (0 = all) take the first images of a split. The
acceptance split (``data.accept_fraction`` > 0; none when 0) is for pruning decisions only:
never trained on, never early-stopped on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf.data import coco, coco_synth, holdout
from afp_tf.data import sources as sources_lib
from afp_tf.data.errors import DatasetNotFoundError
from afp_tf.data.gtsdb import DetectionData

TFDS_NAME = "coco/2017"


def _get(section, key, default):
    value = section.get(key, None)
    return default if value in (None, "") else value


def _first(split: coco.CocoSplit, n: int) -> coco.CocoSplit:
    return coco.subset(split, range(min(n, len(split.paths)))) if n else split


def synthetic_dir(d) -> Path:
    """The folder of the synthetic set a config names, generated there if absent."""
    train, test = int(_get(d, "synthetic_train", 400)), int(_get(d, "synthetic_test", 100))
    size = int(d.image_size)
    out = Path(d.data_dir).expanduser() / f"coco_synth_v1_{train}_{test}_{size}_seed{d.seed}"
    if not (out / "annotations" / "instances_test.json").is_file():
        logging.info("Generating %d + %d synthetic COCO-format images in %s.", train, test, out)
        coco_synth.generate(out, train, test, image_size=size, seed=int(d.seed))
    return out


def _local(d, root: Path) -> tuple[coco.CocoSplit, coco.CocoSplit]:
    pattern = _get(d, "image_dir", "images/{split}")
    read = [
        coco.read_coco(root / "annotations" / f"instances_{s}.json", root / pattern.format(split=s))
        for s in (_get(d, "train_split", "train"), _get(d, "test_split", "test"))
    ]
    if read[0].class_names != read[1].class_names:
        raise coco.DatasetCorruptError(
            f"The train and test annotation files under {root} have different categories: "
            f"{read[0].class_names} vs {read[1].class_names}."
        )
    return read[0], read[1]


def _tfds(d, size: int, max_boxes: int, accept_fraction: float):
    builder = sources_lib.tfds_builder(TFDS_NAME, d.tfds_data_dir)
    hint = (
        f"Prepare TFDS {TFDS_NAME!r} (about 25 GB) in data.tfds_data_dir with network access, "
        "or use COCO files with data.source=local, or the offline config frcnn_coco_synthetic."
    )
    if not builder.is_prepared():
        if not d.download:
            raise DatasetNotFoundError(f"TFDS {TFDS_NAME!r} is not prepared in "
                                       f"{builder.data_dir}. {hint}")  # fmt: skip
        sources_lib.tfds_prepare(builder, "", hint)
    train_n = builder.info.splits["train"].num_examples
    num_val, num_accept = holdout.sizes(
        train_n, float(d.val_fraction), accept_fraction, f"images of TFDS {TFDS_NAME} train"
    )
    num_val = int(d.val_subset) or num_val
    held = num_val + num_accept
    splits = {"train": f"train[{held}:]", "val": f"train[:{num_val}]", "test": "validation"}
    if num_accept:
        splits["accept"] = f"train[{num_val}:{held}]"
    if int(d.train_subset):
        splits["train"] = f"train[{held}:{held + int(d.train_subset)}]"
    if int(d.test_subset):
        splits["test"] = f"validation[:{int(d.test_subset)}]"

    def convert(example):
        obj = example["objects"]
        keep = tf.logical_not(obj["is_crowd"])
        boxes = tf.gather(tf.boolean_mask(obj["bbox"], keep), [1, 0, 3, 2], axis=1)
        labels = tf.cast(tf.boolean_mask(obj["label"], keep), tf.float32)[:, None]
        packed = tf.concat([boxes, labels], axis=1)[:max_boxes]
        packed = tf.pad(packed, [[0, max_boxes - tf.shape(packed)[0]], [0, 0]], constant_values=-1)
        image = tf.image.resize(example["image"], [size, size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), packed

    datasets = {
        k: builder.as_dataset(split=v, shuffle_files=False).map(convert, tf.data.AUTOTUNE)
        for k, v in splits.items()
    }
    counts = {
        "train": train_n - held if not int(d.train_subset) else int(d.train_subset),
        "val": num_val,
        "accept": num_accept,
        "test": int(d.test_subset) or builder.info.splits["validation"].num_examples,
    }
    names = tuple(builder.info.features["objects"]["label"].names)
    return datasets, counts, names, f"TFDS {TFDS_NAME} in {builder.data_dir}"


def load_coco(cfg) -> tuple[DetectionData, Callable[[int], tf.data.Dataset]]:
    """Train / val / test pipelines of ``cfg.data`` (see the module docstring) and the
    ``epoch -> training batches`` function."""
    d = cfg.data
    size, max_boxes = int(d.image_size), int(_get(d, "max_boxes", 100))
    accept_fraction = float(_get(d, "accept_fraction", 0.0))
    if size <= 0 or size % 32:
        raise ValueError(f"data.image_size={size} must be a positive multiple of 32.")
    if d.source in ("synthetic", "local"):
        root = synthetic_dir(d) if d.source == "synthetic" else Path(d.data_dir).expanduser()
        train, test = _local(d, root)
        train = _first(train, int(d.train_subset))
        held = holdout.hold_out(
            len(train.paths), float(d.val_fraction), accept_fraction, d.seed, "training images"
        )
        parts = {k: coco.subset(train, sorted(v)) for k, v in held.items()}
        parts["test"] = _first(test, int(d.test_subset))
        datasets = {
            k: coco.images_dataset(s, size, max_boxes)
            for k, s in parts.items()
            if s.paths or k != "accept"
        }
        counts = {k: len(s.paths) for k, s in parts.items()}
        names, source = train.class_names, f"COCO-format files in {root}"
        if d.source == "synthetic":
            source = f"synthetic COCO-format set ({len(names)} classes) in {root}"
    elif d.source in ("tfds", "auto"):
        datasets, counts, names, source = _tfds(d, size, max_boxes, accept_fraction)
    else:
        raise ValueError(f"data.source={d.source!r} must be auto, tfds, local or synthetic.")
    eval_batch = int(d.eval_batch_size or d.batch_size)

    def sample(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = next(iter(coco.eval_batches(datasets[split].take(n), n)))
        return x.numpy(), y.numpy()

    def make_train(epoch: int) -> tf.data.Dataset:
        return coco.train_batches(
            datasets["train"], counts["train"], int(d.batch_size), int(d.seed), epoch
        )

    data = DetectionData(
        train=make_train(0),
        val=coco.eval_batches(datasets["val"], eval_batch),
        test=coco.eval_batches(datasets["test"], eval_batch),
        accept=coco.eval_batches(datasets["accept"], eval_batch) if counts["accept"] else None,
        num_accept=counts["accept"],
        input_shape=(size, size, 3),
        frame_shape=(size, size, 3),
        num_classes=len(names),
        class_names=names,
        num_train=counts["train"],
        num_val=counts["val"],
        num_test=counts["test"],
        source=source,
        sample=sample,
    )
    return data, make_train
