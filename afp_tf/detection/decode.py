"""From raw SSD outputs to detections: offsets to boxes, softmax, keras-cv multi-class NMS."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras_cv.layers import MultiClassNonMaxSuppression

from afp_tf.detection import anchors as anchors_lib


def decode_predictions(
    y_pred: tf.Tensor,
    anchors: np.ndarray | tf.Tensor,
    *,
    confidence_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
) -> dict[str, tf.Tensor]:
    """Decodes ``(B, A, 4 + C + 1)`` raw outputs with keras-cv ``MultiClassNonMaxSuppression``.

    Returns:
      keras-cv's dense dict: ``boxes`` ``(B, max_detections, 4)`` relative ``xyxy``,
      ``confidence`` and ``classes`` ``(B, max_detections)`` (class ids without background,
      padding ``-1``) and ``num_detections`` ``(B,)``.
    """
    y_pred = tf.cast(y_pred, tf.float32)
    boxes = anchors_lib.decode(y_pred[..., :4], tf.constant(anchors, tf.float32)[None])
    scores = tf.nn.softmax(y_pred[..., 4:], axis=-1)[..., 1:]  # drop the background column
    # Relative coordinates: IoU is invariant to the per-axis scale, so "xyxy" is exact here.
    nms = MultiClassNonMaxSuppression(
        bounding_box_format="xyxy",
        from_logits=False,
        iou_threshold=iou_threshold,
        confidence_threshold=confidence_threshold,
        max_detections=max_detections,
        max_detections_per_class=max_detections,
    )
    return nms(tf.clip_by_value(boxes, 0.0, 1.0), scores)
