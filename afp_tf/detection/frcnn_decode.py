"""Faster R-CNN inference: class-wise decoding of the proposals, NMS, and mAP evaluation.

:func:`detection_function` maps the packed output of one image to ``boxes`` (relative
``xyxy``), ``scores``, ``classes`` and ``num_detections``: softmax over the class logits, each
class's deltas applied to its proposal, one ``NonMaxSuppressionV5`` for all classes (boxes of
class ``c`` shifted by ``2c`` never overlap another class's). The same function runs in the
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


def detection_function(layout: Layout):
    """``packed output (1, D) -> {boxes (1, K, 4), scores, classes (1, K), num_detections}``."""
    limit, c = layout.max_detections, layout.num_classes

    def detect(raw):
        parts = split_outputs(raw, layout.num_anchors, layout.num_rois, c)
        proposals = parts["proposals"][0]  # (R, 4)
        boxes = anchors_lib.decode(parts["box_deltas"][0], proposals[:, None, :])  # (R, C, 4)
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        probs = tf.nn.softmax(parts["class_logits"][0], axis=-1)[:, 1:]  # (R, C)
        shift = 2.0 * tf.range(c, dtype=tf.float32)[None, :, None]
        idx, scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=tf.reshape(boxes + shift, [-1, 4]),
            scores=tf.reshape(probs, [-1]),
            max_output_size=limit,
            iou_threshold=layout.iou_threshold,
            score_threshold=layout.score_threshold,
            soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        valid = tf.range(limit) < count
        return {
            "boxes": tf.gather(tf.reshape(boxes, [-1, 4]), idx)[None],
            "scores": tf.where(valid, scores, 0.0)[None],
            "classes": tf.cast(tf.where(valid, tf.math.floormod(idx, c), -1), tf.float32)[None],
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
