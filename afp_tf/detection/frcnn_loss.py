"""The Faster R-CNN losses: RPN objectness + box regression, box-head classification +
class-wise box regression, matched inside the loss from packed ground truth.

Targets are the packed ``(batch, max_boxes, 5)`` ``[x1, y1, x2, y2, class]`` of the detection
data (relative, padding ``class = -1``); the predictions are the model's packed output
(:func:`afp_tf.models.frcnn.split_outputs`). Per image:

* RPN: an anchor is positive at IoU >= ``rpn_positive_iou`` with a box, or when it is (one
  of) a box's best anchors; negative below ``rpn_negative_iou``; others are ignored. The
  objectness loss is the mean binary cross-entropy over positives plus that over negatives
  (class-balanced, in place of sampling 256 anchors half positive); the box loss is smooth L1
  on the positives' deltas over their count.
* Box head: a proposal is foreground (class of its best box) at IoU >= ``roi_fg_iou``, else
  background. Cross-entropy weights foreground 1 and background at most
  ``3 * max(#fg, 1) / #bg`` (the paper's 1:3 sampling as a weight); smooth L1 on the
  foreground proposals' deltas of their own class, over their count.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection.proposals import pairwise_iou
from afp_tf.models.frcnn import split_outputs


def _smooth_l1(diff: tf.Tensor) -> tf.Tensor:
    diff = tf.abs(diff)
    return tf.reduce_sum(tf.where(diff < 1.0, 0.5 * diff**2, diff - 0.5), axis=-1)


def match_boxes(boxes: tf.Tensor, packed: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Best ground truth of each box: ``(best IoU (B, N), target boxes (B, N, 4), class (B, N),
    IoU matrix (B, N, M))``.

    ``boxes`` is ``(N, 4)`` (shared, e.g. anchors) or ``(B, N, 4)``; class is the packed class
    of the best box (-1 where an image has none); padding columns of the matrix are -1.
    """
    valid = packed[..., 4] >= 0
    if boxes.shape.rank == 2:
        boxes = tf.broadcast_to(boxes[None], [tf.shape(packed)[0], *boxes.shape])
    iou = tf.where(valid[:, None, :], pairwise_iou(boxes, packed[..., :4]), -1.0)  # (B, N, M)
    column = tf.argmax(iou, axis=2, output_type=tf.int32)
    best = tf.reduce_max(iou, axis=2)
    target = tf.gather(packed, column, batch_dims=1)
    return best, target[..., :4], tf.where(best >= 0, target[..., 4], -1.0), iou


@keras.saving.register_keras_serializable(package="afp_tf")
class FasterRCNNLoss(keras.losses.Loss):
    """The four Faster R-CNN losses summed, one value per image (see the module docstring).

    Args:
      anchors: the RPN anchors (``AnchorSpec`` or its dict) laid out for ``image_size``.
      image_size: ``(height, width)`` of the model input.
      num_classes: object classes without background.
      num_rois: proposals per image (the model's ``num_rois``).
      rpn_positive_iou, rpn_negative_iou, roi_fg_iou: matching thresholds (0.7, 0.3, 0.5).
    """

    def __init__(
        self,
        anchors,
        image_size,
        num_classes: int,
        num_rois: int,
        rpn_positive_iou: float = 0.7,
        rpn_negative_iou: float = 0.3,
        roi_fg_iou: float = 0.5,
        name: str = "faster_rcnn_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(anchors, dict):
            anchors = anchors_lib.AnchorSpec.from_dict(anchors)
        self.anchors = anchors
        self.image_size = tuple(int(v) for v in image_size)
        self.boxes = anchors.boxes(*self.image_size)
        self.num_classes = int(num_classes)
        self.num_rois = int(num_rois)
        self.rpn_positive_iou = float(rpn_positive_iou)
        self.rpn_negative_iou = float(rpn_negative_iou)
        self.roi_fg_iou = float(roi_fg_iou)

    @property
    def size(self) -> int:
        """Length of the packed prediction this loss reads."""
        return 5 * len(self.boxes) + self.num_rois * (5 + 5 * self.num_classes)

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] != self.size:
            raise ValueError(
                f"FasterRCNNLoss expects packed predictions of length {self.size} "
                f"({len(self.boxes)} anchors, {self.num_rois} ROIs, {self.num_classes} classes), "
                f"got {y_pred.shape}; anchors, num_rois or num_classes do not match the model."
            )
        packed = tf.cast(y_true, tf.float32)
        parts = split_outputs(y_pred, len(self.boxes), self.num_rois, self.num_classes)
        return self._rpn(packed, parts) + self._head(packed, parts)

    def _rpn(self, packed, parts):
        anchors = tf.constant(self.boxes)
        best, target, _, iou = match_boxes(anchors, packed)
        per_box_best = tf.reduce_max(iou, axis=1, keepdims=True)  # (B, 1, M)
        forced = tf.reduce_any((iou >= per_box_best - 1e-6) & (per_box_best > 0), axis=2)
        pos = (best >= self.rpn_positive_iou) | forced
        neg = (best < self.rpn_negative_iou) & ~pos
        pos_f, neg_f = tf.cast(pos, tf.float32), tf.cast(neg, tf.float32)
        num_pos = tf.maximum(tf.reduce_sum(pos_f, axis=1), 1.0)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(pos_f, parts["rpn_logits"])
        objectness = tf.reduce_sum(bce * pos_f, axis=1) / num_pos + tf.reduce_sum(
            bce * neg_f, axis=1
        ) / tf.maximum(tf.reduce_sum(neg_f, axis=1), 1.0)
        targets = anchors_lib.encode(target, anchors[None])
        box = tf.reduce_sum(_smooth_l1(targets - parts["rpn_deltas"]) * pos_f, axis=1) / num_pos
        return objectness + box

    def _head(self, packed, parts):
        proposals = parts["proposals"]
        best, target, cls, _ = match_boxes(proposals, packed)
        fg = best >= self.roi_fg_iou
        fg_f = tf.cast(fg, tf.float32)
        labels = tf.where(fg, tf.cast(cls, tf.int32) + 1, 0)
        num_fg = tf.reduce_sum(fg_f, axis=1, keepdims=True)
        num_bg = tf.reduce_sum(1.0 - fg_f, axis=1, keepdims=True)
        bg_weight = tf.minimum(1.0, 3.0 * tf.maximum(num_fg, 1.0) / tf.maximum(num_bg, 1.0))
        weight = fg_f + (1.0 - fg_f) * bg_weight
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, parts["class_logits"])
        classification = tf.reduce_sum(ce * weight, axis=1) / tf.reduce_sum(weight, axis=1)
        own = tf.gather(parts["box_deltas"], tf.maximum(labels - 1, 0), batch_dims=2)
        # A proposal clipped to the image edge can have zero width: encoding against it
        # divides by zero, and inf * 0 would turn the masked-out term into NaN.
        safe = tf.concat(
            [proposals[..., :2], tf.maximum(proposals[..., 2:], proposals[..., :2] + 1e-3)], -1
        )
        targets = anchors_lib.encode(target, safe)
        l1 = tf.where(fg, _smooth_l1(targets - own), 0.0)
        box = tf.reduce_sum(l1, axis=1) / tf.maximum(num_fg[:, 0], 1.0)
        return classification + box

    def get_config(self):
        return {
            **super().get_config(),
            "anchors": self.anchors.to_dict(),
            "image_size": list(self.image_size),
            "num_classes": self.num_classes,
            "num_rois": self.num_rois,
            "rpn_positive_iou": self.rpn_positive_iou,
            "rpn_negative_iou": self.rpn_negative_iou,
            "roi_fg_iou": self.roi_fg_iou,
        }
