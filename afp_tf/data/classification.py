"""Classification datasets as batched tf.data pipelines: :func:`load_classification`.

Sources, in order (``data.source``):

- ``auto``: a TFDS dataset already prepared in ``tfds_data_dir``, then local files (searched
  first when ``data_dir`` is set). ``auto`` never downloads: on a machine without internet a
  TFDS download cannot be made to fail fast reliably, so a missing dataset is an immediate
  :class:`DatasetNotFoundError` saying how to get it.
- ``tfds``: TFDS only; prepared data, else a download when ``download`` is true (any failure
  becomes a :class:`DatasetNotFoundError`).
- ``local``: local files only (see :mod:`afp_tf.data.sources`).

There is never a fallback to synthetic data. Small datasets are read into memory as uint8 once;
validation is a seeded random ``val_fraction`` of the training split and subsets are the first
N after a seeded shuffle, so ``data.seed`` fixes the split. Training batches are reshuffled every
epoch and augmented with stateless per-example seeds; with the same ``data.seed`` (and the same
TF global seed, which ``tf.data`` mixes into its seeds) the batch sequence is reproducible.
ImageNet (``imagenet2012``) comes from TFDS only, prepared from ``imagenet_manual_dir``; its
validation split is the last ``val_fraction`` of TFDS' train split (the seed does not move it)
and its test split is TFDS' ``validation``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf.data import holdout, preprocess, sources
from afp_tf.data.errors import DatasetNotFoundError

SOURCES = ("auto", "tfds", "local")
SPLITS = ("train", "val", "accept", "test")
_IMAGENET_SHUFFLE = 10_000


@dataclasses.dataclass
class ClassificationData:
    """Batched, prefetched ``(float32 image, int32 label)`` datasets and what describes them.

    ``train`` is reshuffled each epoch (and augmented if configured); ``val``, ``accept`` and
    ``test`` are never augmented. ``accept`` (None unless ``data.accept_fraction`` > 0) is held
    out of training like ``val``, for accept/reject decisions only. :meth:`make_train` /
    :meth:`make_eval` rebuild them with another batch
    size, e.g. a tf.distribute global batch size.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    accept: tf.data.Dataset | None
    num_classes: int
    input_shape: tuple[int, int, int]
    num_train: int
    num_val: int
    num_test: int
    num_accept: int
    class_names: tuple[str, ...]
    source: str
    batch_size: int
    eval_batch_size: int
    _make: Callable[[str, int, bool], tf.data.Dataset] = dataclasses.field(repr=False)

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass over ``train`` (the last one may be partial)."""
        return math.ceil(self.num_train / self.batch_size)

    def make_train(self, batch_size: int, epoch: int | None = None) -> tf.data.Dataset:
        """The training pipeline with ``batch_size``; with ``epoch``, shuffled and augmented from
        that epoch's seed only (the same batches whenever it is rebuilt, e.g. after a resume)."""
        return self._make("train", batch_size, True if epoch is None else ("epoch", epoch))

    def make_eval(self, split: str, batch_size: int) -> tf.data.Dataset:
        """The non-augmented, unshuffled pipeline of ``split`` (train, val or test)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {', '.join(SPLITS)}.")
        return self._make(split, batch_size, False)

    def sample(self, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` preprocessed, non-augmented examples of ``split``, in a fixed order."""
        if n < 1:
            raise ValueError(f"sample() needs n >= 1, got {n}.")
        batch = max(1, min(n, self.eval_batch_size))
        xs, ys = [], []
        for x, y in self.make_eval(split, batch).take(math.ceil(n / batch)):
            xs.append(x.numpy())
            ys.append(y.numpy())
        return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def load_classification(cfg) -> ClassificationData:
    """Builds the datasets described by the ``data`` config section.

    Raises:
      ValueError: unknown dataset name (with a suggestion) or an invalid option.
      DatasetNotFoundError: the dataset is nowhere; the message says how to get it.
      DatasetCorruptError: a dataset file is unreadable; the message names it.
    """
    spec = _spec(cfg.name)
    _validate(cfg, spec)
    if spec.fmt == "tfds_only":
        return _imagenet(cfg, spec)
    arrays = _load_arrays(cfg, spec)
    idx = split_indices(len(arrays.train_y), len(arrays.test_y), cfg)
    data = {
        "train": (arrays.train_x[idx["train"]], arrays.train_y[idx["train"]]),
        "val": (arrays.train_x[idx["val"]], arrays.train_y[idx["val"]]),
        "accept": (arrays.train_x[idx["accept"]], arrays.train_y[idx["accept"]]),
        "test": (arrays.test_x[idx["test"]], arrays.test_y[idx["test"]]),
    }
    native = arrays.train_x.shape[1:]
    kwargs = {"size": cfg.image_size, "channels": cfg.channels}
    augment = ("crop_flip" if spec.fmt == "cifar" else "translate") if cfg.augment else None
    train_fn = preprocess.small_image_fn(spec.mean, spec.std, augment=augment, **kwargs)
    eval_fn = preprocess.small_image_fn(spec.mean, spec.std, augment=None, **kwargs)

    def elements(split: str, train) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(data[split])
        if not train:
            return ds
        if isinstance(train, tuple):  # one epoch's order, from its own seed
            seed = int(np.random.default_rng([cfg.seed, train[1]]).integers(2**31))
            return ds.shuffle(len(data[split][1]), seed=seed, reshuffle_each_iteration=False)
        return ds.shuffle(len(data[split][1]), seed=cfg.seed)

    out_shape = tuple(eval_fn(tf.zeros(native, tf.uint8), 0)[0].shape)
    counts = {s: len(data[s][1]) for s in SPLITS}
    return _build(
        cfg, spec, arrays.class_names, arrays.source, out_shape, counts, elements, train_fn, eval_fn
    )


def split_indices(num_train: int, num_test: int, cfg) -> dict[str, np.ndarray]:
    """Sorted indices of the train/val/accept examples (into the original train split) and of
    the test examples, from ``val_fraction``, ``accept_fraction``, the subsets and ``seed``.

    Validation is the first ``val_fraction`` of a seeded permutation of the training split, the
    acceptance split the next ``accept_fraction`` (none when 0), training the rest
    (:func:`afp_tf.data.holdout.hold_out`)."""
    accept_fraction = cfg.get("accept_fraction", 0.0)
    pick = holdout.hold_out(num_train, cfg.val_fraction, accept_fraction, cfg.seed)
    pick["test"] = np.random.default_rng([cfg.seed, 1]).permutation(num_test)
    for split in SPLITS:
        if subset := cfg.get(f"{split}_subset", 0):
            pick[split] = pick[split][:subset]
    return {k: np.sort(v) for k, v in pick.items()}


def _build(cfg, spec, class_names, source, input_shape, counts, elements, train_fn, eval_fn):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True

    def make(split: str, batch_size: int, train: bool) -> tf.data.Dataset:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        ds = elements(split, train)
        if train and cfg.augment:
            seed = cfg.seed if train is True else cfg.seed + 7919 * (train[1] + 1)
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip(ds, seeds).map(
                lambda xy, s: train_fn(xy[0], xy[1], s), num_parallel_calls=tf.data.AUTOTUNE
            )
        else:
            ds = ds.map(eval_fn, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)

    logging.info("%s from %s: %s, input shape %s.", spec.name, source, counts, input_shape)
    return ClassificationData(
        train=make("train", cfg.batch_size, True),
        val=make("val", cfg.eval_batch_size, False),
        test=make("test", cfg.eval_batch_size, False),
        accept=make("accept", cfg.eval_batch_size, False) if counts.get("accept") else None,
        num_classes=spec.num_classes,
        input_shape=tuple(int(d) for d in input_shape),
        num_train=counts["train"],
        num_val=counts["val"],
        num_test=counts["test"],
        num_accept=counts.get("accept", 0),
        class_names=tuple(class_names),
        source=source,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        _make=make,
    )


def _spec(name: str) -> sources.DatasetSpec:
    if name in sources.SPECS:
        return sources.SPECS[name]
    close = difflib.get_close_matches(str(name), sources.SPECS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown dataset {name!r}.{hint} Known: {', '.join(sources.SPECS)}.")


def _validate(cfg, spec: sources.DatasetSpec) -> None:
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source={cfg.source!r} is not one of {', '.join(SOURCES)}.")
    if spec.fmt == "tfds_only" and cfg.source == "local":
        raise ValueError(f"{spec.name} is read through TFDS only; set data.source=tfds or auto.")
    if not 0 < cfg.val_fraction < 1:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}.")
    native_channels = len(spec.mean)
    if cfg.channels not in (0, native_channels, 3):
        raise ValueError(
            f"data.channels={cfg.channels}: {spec.name} has {native_channels} channel(s); use 0 "
            "(native) or 3 (replicates a grayscale channel)."
        )
    for key in ("image_size", "train_subset", "val_subset", "test_subset", "accept_subset"):
        if cfg.get(key, 0) < 0:
            raise ValueError(f"data.{key} must be >= 0, got {cfg[key]}.")


def _load_arrays(cfg, spec: sources.DatasetSpec) -> sources.Arrays:
    def local():
        folder = sources.find_local(spec, cfg.data_dir)
        return sources.read_local(spec, folder) if folder else None

    def tfds_prepared():
        builder = _builder(spec, cfg)
        return sources.read_tfds_arrays(builder) if builder and builder.is_prepared() else None

    if cfg.source == "local":
        order = [local]
    elif cfg.source == "tfds":
        order = [tfds_prepared]
    else:
        order = [local, tfds_prepared] if cfg.data_dir else [tfds_prepared, local]
    for attempt in order:
        arrays = attempt()
        if arrays is not None:
            return arrays
    if cfg.source == "tfds" and cfg.download:
        builder = _builder(spec, cfg)
        if builder is not None:
            sources.tfds_prepare(builder, "", _how_to_get(spec, cfg))
            return sources.read_tfds_arrays(builder)
    raise DatasetNotFoundError(_how_to_get(spec, cfg))


def _builder(spec, cfg):
    try:
        return sources.tfds_builder(spec.name, cfg.tfds_data_dir)
    except ImportError as e:
        logging.warning("TFDS is unavailable (%s); skipping it for %s.", e, spec.name)
        return None


def _how_to_get(spec: sources.DatasetSpec, cfg) -> str:
    searched = []
    if cfg.source != "local":
        searched.append(f"TFDS in {cfg.tfds_data_dir or '~/tensorflow_datasets'} (not prepared)")
    if cfg.source != "tfds":
        dirs = ", ".join(str(d) for d in sources.candidate_dirs(spec, cfg.data_dir))
        searched.append(f"local folders {dirs}")
    steps = []
    if spec.apt_package:
        steps.append(
            f"`sudo apt-get install {spec.apt_package}` (installs the IDX files to "
            f"/usr/share/datasets/{spec.folders[0]})"
        )
    if spec.fmt == "idx":
        files = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        steps.append(f"put {files}and t10k-labels-idx1-ubyte.gz in a folder")
    elif spec.fmt == "cifar":
        steps.append(
            f"extract the CIFAR python archive so that the folder {spec.folders[0]} "
            "(https://www.cs.toronto.edu/~kriz/) is in a folder"
        )
    if spec.fmt != "tfds_only":
        steps[-1] += " and set --config.data.data_dir=FOLDER (with data.source=local or auto)"
        steps.append(
            "with internet access, run with --config.data.source=tfds --config.data.download=True"
        )
    else:
        steps.append(
            "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into "
            "a folder, set --config.data.imagenet_manual_dir=FOLDER and data.download=True "
            "(TFDS then prepares imagenet2012 into data.tfds_data_dir)"
        )
    options = "; or ".join(f"({i}) {s}" for i, s in enumerate(steps, 1))
    where = "; ".join(searched)
    return f"Dataset {spec.name!r} not found. Searched: {where}. To get it: {options}."


def _imagenet(cfg, spec: sources.DatasetSpec) -> ClassificationData:
    import tensorflow_datasets as tfds  # noqa: PLC0415

    builder = sources.tfds_builder(spec.name, cfg.tfds_data_dir)
    if not builder.is_prepared():
        if not (cfg.download and cfg.imagenet_manual_dir):
            raise DatasetNotFoundError(_how_to_get(spec, cfg))
        sources.tfds_prepare(builder, cfg.imagenet_manual_dir, _how_to_get(spec, cfg))
    if "train" not in builder.info.splits or "validation" not in builder.info.splits:
        raise DatasetNotFoundError(
            f"TFDS {spec.name} in {builder.data_dir} has no train/validation splits; prepare it "
            "again. " + _how_to_get(spec, cfg)
        )
    total = builder.info.splits["train"].num_examples
    num_val = max(1, round(total * cfg.val_fraction))
    ranges = {
        "train": ("train", 0, total - num_val, cfg.train_subset),
        "val": ("train", total - num_val, total, cfg.val_subset),
        "test": ("validation", 0, builder.info.splits["validation"].num_examples, cfg.test_subset),
    }
    ranges = {k: (s, a, min(b, a + n) if n else b) for k, (s, a, b, n) in ranges.items()}
    size = cfg.image_size or 224

    def elements(split: str, train: bool) -> tf.data.Dataset:
        name, start, stop = ranges[split]
        ds = builder.as_dataset(
            split=tfds.core.ReadInstruction(name, from_=start, to=stop, unit="abs"),
            as_supervised=True,
            shuffle_files=bool(train),
            read_config=tfds.ReadConfig(shuffle_seed=cfg.seed),
        )
        return ds.shuffle(_IMAGENET_SHUFFLE, seed=cfg.seed) if train else ds

    eval_fn = preprocess.imagenet_fn(spec.mean, spec.std, size=size, train=False)
    train_fn = preprocess.imagenet_fn(spec.mean, spec.std, size=size, train=True)
    counts = {k: b - a for k, (_, a, b) in ranges.items()}
    names = builder.info.features["label"].names
    source = f"tfds:{builder.data_dir}"
    return _build(cfg, spec, names, source, (size, size, 3), counts, elements, train_fn, eval_fn)
