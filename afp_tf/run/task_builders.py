"""The tasks a config can name (``cfg.task``): each builder turns a config into a ``TaskData``."""

from __future__ import annotations

from collections.abc import Callable

import keras

from afp_tf import data as data_lib
from afp_tf import export, models
from afp_tf.train.task import Task, TaskData

# The width-multiplier keyword of each zoo model that has one.
_WIDTH_KWARG = {"vgg16": "width", "resnet56": "width", "resnet110": "width", "mobilenet": "alpha"}


def load_task(cfg) -> TaskData:
    """Loads the data of ``cfg`` and returns its datasets, model builder and task."""
    builder = BUILDERS.get(cfg.task)
    if builder is None:
        raise ValueError(f"task={cfg.task!r} is not one of {', '.join(BUILDERS)}.")
    return builder(cfg)


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


def classification_task() -> Task:
    """Integer labels, logits out, decided on top-1 accuracy, exported as a classifier."""
    return Task(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        metric_name="accuracy",
        exporter=export.export_model,
    )


def load_classification(cfg) -> TaskData:
    """An image classifier from the model zoo on a classification dataset."""
    data = data_lib.load_classification(cfg.data)
    kwargs = model_kwargs(cfg)
    return TaskData(
        task=classification_task(),
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
        accept_size=data.num_accept if data.accept is not None else data.num_val,
        train_for_epoch=(
            None
            if cfg.data.name == "imagenet2012"
            else lambda epoch: data.make_train(data.batch_size, epoch)
        ),
    )


def load_detection(cfg) -> TaskData:
    """SSD on GTSDB (:mod:`afp_tf.detection.task`); imported only when asked for, so a core
    install without the ``detection`` extra runs classification."""
    from afp_tf.detection import task as detection_task  # noqa: PLC0415 - optional extra

    return detection_task.load(cfg)


def load_frcnn(cfg) -> TaskData:
    """Faster R-CNN on COCO-format data (:mod:`afp_tf.detection.frcnn_task`); imported only
    when asked for, like :func:`load_detection`."""
    from afp_tf.detection import frcnn_task  # noqa: PLC0415 - optional extra

    return frcnn_task.load(cfg)


BUILDERS: dict[str, Callable[..., TaskData]] = {
    "classification": load_classification,
    "detection": load_detection,
    "frcnn": load_frcnn,
}
