"""From a config to what a run trains on: datasets, a model builder and the task's loss/metric."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from afp_tf import data as data_lib
from afp_tf import export, models
from afp_tf.pruner import Task

# The width-multiplier keyword of each zoo model that has one.
_WIDTH_KWARG = {"vgg16": "width", "mobilenet": "alpha"}


@dataclasses.dataclass
class TaskData:
    """Datasets and builders of one experiment."""

    task: Task
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    build_model: Callable[[], keras.Model]
    sample: Callable[[str, int], tuple[np.ndarray, np.ndarray]]
    description: str
    accept: tf.data.Dataset | None = None  # decisions only (None: decide on val)
    accept_size: int = 0  # its size when the metric is a proportion (sets the margin)
    train_for_epoch: Callable[[int], tf.data.Dataset] | None = None  # one epoch's batches


def load_task(cfg, strategy: tf.distribute.Strategy | None = None) -> TaskData:
    """Loads the data of ``cfg`` and returns its datasets, model builder and task."""
    del strategy  # datasets are distributed by the trainer
    if cfg.task == "classification":
        return _classification(cfg)
    if cfg.task == "detection":
        from afp_tf.detection import task as detection_task  # noqa: PLC0415

        return detection_task.load(cfg)
    raise ValueError(f"task={cfg.task!r} is not one of classification, detection.")


def model_kwargs(cfg) -> dict:
    """Keyword arguments for ``models.build_model`` from the ``model`` config section."""
    if cfg.model.width == 1.0:
        return {}
    key = _WIDTH_KWARG.get(cfg.model.name)
    if key is None:
        raise ValueError(
            f"model.width={cfg.model.width}: model {cfg.model.name!r} has no width multiplier "
            f"(only {', '.join(_WIDTH_KWARG)})."
        )
    return {key: cfg.model.width}


def _classification(cfg) -> TaskData:
    data = data_lib.load_classification(cfg.data)
    kwargs = model_kwargs(cfg)
    return TaskData(
        task=Task(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            metric_name="accuracy",
            exporter=export.export_model,
        ),
        train=data.train,
        val=data.val,
        test=data.test,
        build_model=lambda: models.build_model(
            cfg.model.name, data.input_shape, data.num_classes, **kwargs
        ),
        sample=data.sample,
        description=(
            f"{cfg.data.name} from {data.source}: {data.num_train} train / {data.num_val} val / "
            + (f"{data.num_accept} accept / " if data.num_accept else "")
            + f"{data.num_test} test"
        ),
        accept=data.accept,
        accept_size=data.num_accept,
        train_for_epoch=(
            None
            if cfg.data.name == "imagenet2012"
            else lambda epoch: data.make_train(data.batch_size, epoch)
        ),
    )
