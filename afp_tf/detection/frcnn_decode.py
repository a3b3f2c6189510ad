"""Faster R-CNN inference: class-wise decoding of the proposals, NMS, and mAP evaluation.

:func:`detection_function` maps the packed output of one image to ``boxes`` (relative
``xyxy``), ``scores``, ``classes`` and ``num_detections``: softmax over the class logits, each
class's deltas applied to its proposal, one class-aware NMS for all classes
(:func:`~afp_tf.detection.nms.class_aware_nms`: score ties broken alike in every runtime). The
same function runs in the
Keras evaluation and inside exported SavedModel/TFLite graphs (a TFLite builtin), so both are
judged by identical post-processing.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection.metrics import MeanAveragePrecision
from afp_tf.detection.nms import class_aware_nms
from afp_tf.models.frcnn import split_outputs


@dataclasses.dataclass(frozen=True)
class Layout:
    """Sizes of a Faster R-CNN's packed output and its post-processing settings."""

    num_anchors: int
    num_rois: int
    num_classes: int
    score_threshold: float = 0.01
    iou_threshold: float = 0.5
    max_detections: int = 100

    @classmethod
    def of(cls, model: keras.Model, **settings) -> Layout:
        """Reads the sizes from a model of :func:`afp_tf.models.frcnn.build_frcnn`."""
        proposals = model.get_layer("proposals")
        classes = model.get_layer("box_class_logits").units - 1
        return cls(len(proposals.boxes), proposals.post_nms, classes, **settings)


def candidates_function(layout: Layout):
    """``packed output (1, D) -> {boxes (R, C, 4), scores (R, C)}``: the NMS input, each
    proposal decoded for each class (relative ``xyxy``) and its class probabilities."""

    def candidates(raw):
        parts = split_outputs(raw, layout.num_anchors, layout.num_rois, layout.num_classes)
        proposals = parts["proposals"][0]  # (R, 4)
        boxes = anchors_lib.decode(parts["box_deltas"][0], proposals[:, None, :])
        return {
            "boxes": tf.clip_by_value(boxes, 0.0, 1.0),
            "scores": tf.nn.softmax(parts["class_logits"][0], axis=-1)[:, 1:],
        }

    return candidates


def detection_function(layout: Layout):
    """``packed output (1, D) -> {boxes (1, K, 4), scores, classes (1, K), num_detections}``."""
    limit = layout.max_detections
    candidates = candidates_function(layout)

    def detect(raw):
        boxes, probs = candidates(raw).values()
        idx, scores, classes, count = class_aware_nms(
            boxes,
            probs,
            max_detections=limit,
            iou_threshold=layout.iou_threshold,
            score_threshold=layout.score_threshold,
        )
        return {
            "boxes": tf.gather(tf.reshape(boxes, [-1, 4]), idx)[None],
            "scores": scores[None],
            "classes": tf.cast(classes, tf.float32)[None],
            "num_detections": tf.reshape(count, [1]),
        }

    return detect


def update_metric(metric: MeanAveragePrecision, detections: dict, packed: np.ndarray) -> None:
    """Adds one image's detections (batch-1 arrays) and packed ground truth to ``metric``."""
    n = int(np.asarray(detections["num_detections"]).reshape(-1)[0])
    valid = packed[:, 4] >= 0
    metric.update(
        packed[valid, :4],
        packed[valid, 4].astype(int),
        np.asarray(detections["boxes"])[0, :n],
        np.asarray(detections["scores"])[0, :n],
        np.asarray(detections["classes"])[0, :n].astype(int),
    )


def evaluate_frcnn(
    model: keras.Model, dataset: tf.data.Dataset, layout: Layout | None = None
) -> dict[str, float]:
    """COCO ``map`` (AP@[.5:.95]), ``map50`` and ``map75`` of ``model`` on ``(image, packed
    targets)`` batches."""
    layout = layout or Layout.of(model)
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    detect = tf.function(detection_function(layout))
    metric = MeanAveragePrecision(max_detections=layout.max_detections)
    for images, y_true in dataset:
        raw = predict(images)
        for b in range(len(y_true)):
            update_metric(metric, detect(raw[b : b + 1]), np.asarray(y_true[b]))
    result = metric.result()
    if np.isnan(result["map"]):
        raise ValueError(
            "The evaluation split has no ground-truth box; mAP is undefined. Use more images "
            "or a larger validation fraction."
        )
    return result
