"""The SSD loss: anchor matching, smooth-L1 box loss and cross-entropy with hard negative mining.

Matching runs inside the loss (in the compiled step) with keras-cv's ``BoxMatcher`` and
``compute_iou``, so datasets carry plain packed ground truth ``(batch, max_boxes, 5)`` =
``[x1, y1, x2, y2, class]`` (relative, padding ``class = -1``) and the loss is an ordinary
``loss(y_true, y_pred)`` returning one value per image.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras_cv import bounding_box
from keras_cv.layers import BoxMatcher

from afp_tf.detection import anchors as anchors_lib


def match_anchors(
    anchors: tf.Tensor, packed: tf.Tensor, iou_threshold: float = 0.5
) -> tuple[tf.Tensor, tf.Tensor]:
    """Assigns ground truth to anchors as SSD does (best anchor per box + every IoU >= threshold).

    Args:
      anchors: ``(A, 4)`` relative ``xyxy``.
      packed: ``(B, M, 5)`` packed ground truth.
      iou_threshold: IoU from which an anchor is positive.

    Returns:
      ``(target_boxes (B, A, 4) xyxy, target_classes (B, A) int32)`` with class 0 = background.

    keras-cv's ``BoxMatcher`` force-matches every column, padding columns included (their best
    anchor would become a false positive). A sink anchor row is appended whose similarity is 2
    for padding columns and -1 for real ones: padding is force-matched to the sink, which is then
    dropped.
    """
    batch = tf.shape(packed)[0]
    valid = packed[..., 4] >= 0  # (B, M)
    gt_boxes = packed[..., :4]
    iou = bounding_box.compute_iou(
        tf.broadcast_to(anchors[None], [batch, tf.shape(anchors)[0], 4]), gt_boxes, "xyxy"
    )  # (B, A, M)
    iou = tf.where(valid[:, None, :], iou, -1.0)
    sink = tf.where(valid, -1.0, 2.0)[:, None, :]
    matcher = BoxMatcher(
        thresholds=[iou_threshold], match_values=[-1, 1], force_match_for_each_col=True
    )
    columns, values = matcher(tf.concat([iou, sink], axis=1))
    # Rows without any real box point past the last column; they are negatives anyway.
    columns = tf.minimum(columns[:, :-1], tf.shape(packed)[1] - 1)
    values = values[:, :-1]
    positive = values == 1
    boxes = tf.gather(gt_boxes, columns, batch_dims=1)
    classes = tf.cast(tf.gather(packed[..., 4], columns, batch_dims=1), tf.int32) + 1
    return boxes, tf.where(positive, classes, 0)


@keras.saving.register_keras_serializable(package="afp_tf")
class SSDLoss(keras.losses.Loss):
    """Smooth-L1 box loss on positives + cross-entropy with ``neg_pos_ratio``:1 hard negatives.

    Per image: ``(L_loc + L_conf) / max(num_positives, 1)``. Images without a sign still
    contribute their ``neg_pos_ratio`` hardest negatives (as if they had one positive), and
    every image at least its ``min_negatives`` hardest ones.

    Args:
      anchors: the model's default boxes: an :class:`~afp_tf.detection.anchors.AnchorSpec`
        (kept as ``self.anchors`` for evaluation and export at other input sizes) laid out for
        ``image_size``, or a fixed ``(A, 4)`` relative ``xyxy`` array.
      num_classes: object classes without background.
      neg_pos_ratio: hard negatives per positive (3 in the paper).
      min_negatives: fewest hard negatives per image (0: only ``neg_pos_ratio``), so that a
        crop with one sign and a sign-like background object still learns to reject it.
      iou_threshold: matching IoU.
      image_size: ``(height, width)`` of the training inputs (needed with an ``AnchorSpec``).
    """

    def __init__(
        self,
        anchors,
        num_classes: int,
        neg_pos_ratio: float = 3.0,
        min_negatives: int = 0,
        iou_threshold: float = 0.5,
        image_size: tuple[int, int] | None = None,
        name: str = "ssd_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if isinstance(anchors, dict):
            anchors = anchors_lib.AnchorSpec.from_dict(anchors)
        if isinstance(anchors, anchors_lib.AnchorSpec) and image_size is None:
            raise ValueError("SSDLoss with an AnchorSpec needs the training image_size.")
        self.anchors = anchors
        self.image_size = None if image_size is None else tuple(int(v) for v in image_size)
        self.boxes = anchors_lib.resolve(anchors, *(self.image_size or (0, 0)))
        self.num_classes = int(num_classes)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.min_negatives = int(min_negatives)
        if self.neg_pos_ratio < 0 or self.min_negatives < 0:
            raise ValueError(
                f"neg_pos_ratio ({neg_pos_ratio}) and min_negatives ({min_negatives}) must be >= 0."
            )
        self.iou_threshold = float(iou_threshold)

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        if y_pred.shape[-1] != 5 + self.num_classes or y_pred.shape[1] != len(self.boxes):
            raise ValueError(
                f"SSDLoss expects predictions (batch, {len(self.boxes)}, "
                f"{5 + self.num_classes}), got {y_pred.shape}; anchors or num_classes do not "
                "match the model."
            )
        anchors = tf.constant(self.boxes)
        boxes, classes = match_anchors(anchors, tf.cast(y_true, tf.float32), self.iou_threshold)
        positive = classes > 0
        pos_f = tf.cast(positive, tf.float32)
        num_pos = tf.reduce_sum(pos_f, axis=1)
        targets = anchors_lib.encode(boxes, anchors[None])
        diff = tf.abs(targets - y_pred[..., :4])
        smooth_l1 = tf.reduce_sum(tf.where(diff < 1.0, 0.5 * diff**2, diff - 0.5), axis=-1)
        loc = tf.reduce_sum(smooth_l1 * pos_f, axis=1)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(classes, y_pred[..., 4:])
        neg_ce = tf.where(positive, -1.0, ce)  # positives sort last
        rank = tf.argsort(tf.argsort(neg_ce, axis=1, direction="DESCENDING"), axis=1)
        num_neg = tf.minimum(
            tf.maximum(self.neg_pos_ratio * tf.maximum(num_pos, 1.0), float(self.min_negatives)),
            tf.reduce_sum(1.0 - pos_f, axis=1),
        )
        hard = tf.logical_and(tf.cast(rank, tf.float32) < num_neg[:, None], ~positive)
        conf = tf.reduce_sum(ce * (pos_f + tf.cast(hard, tf.float32)), axis=1)
        return (loc + conf) / tf.maximum(num_pos, 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "anchors": (
                self.anchors.to_dict()
                if isinstance(self.anchors, anchors_lib.AnchorSpec)
                else self.boxes.tolist()
            ),
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "neg_pos_ratio": self.neg_pos_ratio,
            "min_negatives": self.min_negatives,
            "iou_threshold": self.iou_threshold,
        }
