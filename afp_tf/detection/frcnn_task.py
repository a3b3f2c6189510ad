"""The ``frcnn`` task: COCO-format data, a Faster R-CNN + FPN builder, its loss, mAP, export.

Config keys beyond the base config (defaults in :func:`afp_tf.run.config_lib.frcnn_config`):
``model.backbone`` (``mobilenet`` | ``resnet50``), ``model.width``, ``model.fpn_channels``,
``model.num_rois``, ``model.pre_nms``, ``model.roi_size``, ``model.head_units``, the RPN
anchors ``model.min_size`` (pixels, stride-8 level) / ``model.scales_per_octave`` /
``model.aspect_ratios`` (comma-separated), and the ``data`` keys of
:mod:`afp_tf.data.coco_sources`. The decision metric is ``map50`` (mAP@0.5; on the acceptance
split when ``data.accept_fraction`` > 0, else on validation, as for SSD); ``map`` is COCO
mAP@[.5:.95].
"""

from __future__ import annotations

from afp_tf.data.coco_sources import load_coco
from afp_tf.detection.frcnn_decode import evaluate_frcnn
from afp_tf.detection.frcnn_export import export_frcnn
from afp_tf.detection.frcnn_loss import FasterRCNNLoss
from afp_tf.detection.task import detector_task_data
from afp_tf.models.frcnn import build_frcnn, rpn_anchors
from afp_tf.train.task import Task, TaskData


def anchors_of(cfg):
    """The RPN ``AnchorSpec`` of ``cfg.model``."""
    ratios = [float(r) for r in str(cfg.model.aspect_ratios).split(",") if r.strip()]
    return rpn_anchors(float(cfg.model.min_size), int(cfg.model.scales_per_octave), ratios)


def load(cfg) -> TaskData:
    """The datasets, Faster R-CNN builder and task (loss, ``map50`` evaluation, export)."""
    if cfg.model.name != "faster_rcnn":
        raise ValueError(f"task=frcnn needs model.name='faster_rcnn', got {cfg.model.name!r}.")
    data, make_train = load_coco(cfg)
    anchors = anchors_of(cfg)
    m = cfg.model

    def build_model():
        return build_frcnn(
            data.input_shape,
            data.num_classes,
            anchors,
            m.backbone,
            float(m.width),
            fpn_channels=int(m.fpn_channels),
            num_rois=int(m.num_rois),
            pre_nms=int(m.pre_nms),
            roi_size=int(m.roi_size),
            head_units=int(m.head_units),
        )

    task = Task(
        loss=FasterRCNNLoss(anchors, data.input_shape[:2], data.num_classes, int(m.num_rois)),
        metrics=list,
        metric_name="map50",
        evaluator=lambda trainer, ds: evaluate_frcnn(trainer.model, ds),
        exporter=export_frcnn,
    )
    detail = f"{data.input_shape[0]} px images"
    return detector_task_data(data, task, build_model, detail, train_for_epoch=make_train)
