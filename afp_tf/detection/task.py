"""The detection task of a run: GTSDB data, an SSD builder, the SSD loss and mAP evaluation.

Config keys beyond the base config (read with defaults when absent): ``model.backbone``
(``mobilenet`` | ``vgg16``), ``model.head_depth`` (1), the default-box range ``model.min_size`` /
``model.max_size`` in pixels (16 / 128: GTSDB's sign sizes) with ``model.scales_per_octave`` (3),
the loss's hard negatives ``model.neg_pos_ratio`` (3 per positive) and ``model.min_negatives`` (0:
fewest per image), and the ``data`` keys of :mod:`afp_tf.data.gtsdb`. The model trains on native-
resolution crops and is evaluated on full frames. The decision metric is ``map50`` (mAP@0.5; on the
acceptance split when ``data.accept_fraction`` > 0, else on validation) over the classes
``data.scoring`` chooses: ``competition`` (default) the three categories the GTSDB competition
scores (prohibitory, danger, mandatory), ``all`` every class; ``map50_all`` beside it is always over
every class. ``map`` is COCO mAP@[.5:.95]. The run report adds, per split, AP@0.5 by class name
(``ap_per_class``) and confusion counts at IoU 0.5 (``confusion``: class swaps, background
detections, missed signs; see :class:`afp_tf.detection.metrics.ConfusionCounts`). mAP is not a
proportion of independent trials, so the binomial acceptance margin (``prune.margin_z``) does not
apply: the margin is 0 and the held-out acceptance split is what keeps recovery's early stopping out
of the decision.
"""

from __future__ import annotations

import functools

from afp_tf.data.gtsdb import DetectionData, load_gtsdb
from afp_tf.detection.anchors import AnchorSpec
from afp_tf.detection.export import export_detector
from afp_tf.detection.loss import SSDLoss
from afp_tf.detection.metrics import evaluate_detector
from afp_tf.models.ssd import at_input_size, build_ssd
from afp_tf.train.task import Task, TaskData


def _get(section, key, default):
    value = section.get(key, None)
    return default if value is None else value


def detector_task_data(
    data: DetectionData, task: Task, build_model, detail: str, train_for_epoch=None
) -> TaskData:
    """The ``TaskData`` of a detector (SSD, Faster R-CNN) on ``data``: train / val / test and the
    acceptance split when ``data`` holds one out; ``detail`` ends the log line on the data.
    ``accept_size`` stays 0: mAP is not a proportion, so no binomial margin."""
    return TaskData(
        task=task,
        train=data.train,
        val=data.val,
        accept=data.accept,
        test=data.test,
        build_model=build_model,
        sample=data.sample,
        description=(
            f"{data.source}: {data.num_train} train / {data.num_val} val / "
            + (f"{data.num_accept} accept / " if data.num_accept else "")
            + f"{data.num_test} test, {data.num_classes} classes, {detail}"
        ),
        train_for_epoch=train_for_epoch,
    )


def load(cfg) -> TaskData:
    """The datasets, SSD builder and task (loss, ``map50`` evaluation, export) of ``cfg``."""
    if cfg.model.name != "ssd":
        raise ValueError(f"task=detection needs model.name='ssd', got {cfg.model.name!r}.")
    data = load_gtsdb(cfg)
    backbone = _get(cfg.model, "backbone", "mobilenet")
    anchors = AnchorSpec.for_object_sizes(
        float(_get(cfg.model, "min_size", 16)),
        float(_get(cfg.model, "max_size", 128)),
        scales_per_octave=int(_get(cfg.model, "scales_per_octave", 3)),
        first_stride=8,  # the SSD's first feature map
    )

    def build_model():
        return build_ssd(
            data.input_shape,
            data.num_classes,
            backbone,
            width=float(cfg.model.width),
            anchors_per_location=anchors.per_location,
            num_levels=len(anchors.strides),
            head_depth=int(_get(cfg.model, "head_depth", 1)),
        )

    evaluate = functools.partial(
        evaluate_detector,
        anchors=anchors,
        scored=data.scored_classes,
        class_names=data.class_names,
    )
    task = Task(
        loss=SSDLoss(
            anchors,
            data.num_classes,
            neg_pos_ratio=float(_get(cfg.model, "neg_pos_ratio", 3.0)),
            min_negatives=int(_get(cfg.model, "min_negatives", 0)),
            image_size=data.input_shape[:2],
        ),
        metrics=list,
        metric_name="map50",
        evaluator=lambda trainer, ds: evaluate(trainer.model, ds),
        exporter=functools.partial(export_detector, anchors=anchors),
        report_evaluator=lambda trainer, ds: evaluate(trainer.model, ds, details=True),
        deployed=lambda model: at_input_size(model, *data.frame_shape[:2]),
    )
    detail = (
        f"{data.input_shape[0]} px crops for training, "
        f"{data.frame_shape[1]}x{data.frame_shape[0]} frames for evaluation, "
        f"mAP scored on {data.scoring} ({len(data.scored_classes or data.class_names)} classes)"
    )
    return detector_task_data(data, task, build_model, detail)
