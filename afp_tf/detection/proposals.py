"""RPN proposals inside the model: decode anchor deltas, top-k, batched NMS, top-R boxes.

The NMS is *Fast NMS* (Bolya et al., YOLACT 2019): among the ``pre_nms`` highest-scoring
boxes, a box is dropped when any higher-scoring box overlaps it by more than the threshold,
whether or not that box was itself dropped. It is exact for chains of length one, drops a
little more than greedy NMS otherwise, and is a few element-wise ops on an IoU matrix: it
batches, has a fixed output size and converts to TFLite builtins. The ``post_nms`` survivors
of highest objectness are the proposals (relative ``xyxy``, gradient stopped: approximate
joint training as in the Faster R-CNN paper).

Box deltas use the offset encoding of :mod:`afp_tf.detection.anchors` (variances 0.1, 0.2,
i.e. Faster R-CNN's box-coder weights 10, 10, 5, 5).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from afp_tf.detection import anchors as anchors_lib
from afp_tf.surgery.rules import Boundary, Rule, register_rule


def pairwise_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU ``(..., N, M)`` of ``xyxy`` boxes ``(..., N, 4)`` and ``(..., M, 4)``."""
    a, b = a[..., :, None, :], b[..., None, :, :]
    lt = tf.maximum(a[..., :2], b[..., :2])
    rb = tf.minimum(a[..., 2:], b[..., 2:])
    wh = tf.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_a + area_b - inter, 1e-9)


def fast_nms(boxes: tf.Tensor, scores: tf.Tensor, iou_threshold: float) -> tf.Tensor:
    """Scores with Fast-NMS-suppressed boxes set to ``-inf``; ``boxes`` ``(B, K, 4)`` sorted
    by descending ``scores`` ``(B, K)``."""
    k = boxes.shape[1]
    earlier = tf.range(k)[:, None] < tf.range(k)[None, :]  # [j, i]: j scores higher than i
    iou = tf.where(earlier[None], pairwise_iou(boxes, boxes), 0.0)
    suppressed = tf.reduce_max(iou, axis=1) > iou_threshold
    return tf.where(suppressed, tf.fill(tf.shape(scores), -1e9), scores)


@keras.saving.register_keras_serializable(package="afp_tf")
class RPNProposals(keras.layers.Layer):
    """``[objectness logits (B, A), deltas (B, A, 4)] -> proposals (B, post_nms, 4)``.

    Args:
      anchors: the RPN anchors, an ``AnchorSpec`` dict (``AnchorSpec.to_dict()``).
      image_size: ``(height, width)`` of the model input, to lay the anchors out.
      pre_nms: highest-scoring decoded boxes entering NMS.
      post_nms: proposals kept.
      iou_threshold: NMS overlap threshold (0.7 in the paper).
    """

    def __init__(self, anchors, image_size, pre_nms=300, post_nms=64, iou_threshold=0.7, **kwargs):
        super().__init__(**kwargs)
        self.spec = (
            anchors
            if isinstance(anchors, anchors_lib.AnchorSpec)
            else anchors_lib.AnchorSpec.from_dict(anchors)
        )
        self.image_size = tuple(int(v) for v in image_size)
        self.boxes = self.spec.boxes(*self.image_size)
        self.pre_nms = min(int(pre_nms), len(self.boxes))
        self.post_nms = int(post_nms)
        if self.post_nms > self.pre_nms:
            raise ValueError(f"post_nms={post_nms} exceeds the {self.pre_nms} boxes entering NMS.")
        self.iou_threshold = float(iou_threshold)

    def call(self, inputs):
        logits, deltas = (tf.cast(t, tf.float32) for t in inputs)
        boxes = anchors_lib.decode(deltas, tf.constant(self.boxes)[None])
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        top = tf.math.top_k(logits, k=self.pre_nms)
        boxes = tf.gather(boxes, top.indices, batch_dims=1)
        scores = fast_nms(boxes, top.values, self.iou_threshold)
        keep = tf.math.top_k(scores, k=self.post_nms).indices
        return tf.stop_gradient(tf.gather(boxes, keep, batch_dims=1))

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.post_nms, 4)

    def get_config(self):
        return {
            **super().get_config(),
            "anchors": self.spec.to_dict(),
            "image_size": list(self.image_size),
            "pre_nms": self.pre_nms,
            "post_nms": self.post_nms,
            "iou_threshold": self.iou_threshold,
        }


class ProposalsRule(Rule):
    """The proposal layer ranks and selects boxes: the channels of its inputs (the RPN
    predictors) cannot be removed; its output (4 box coordinates) has none to remove."""

    def propagate(self, layer, inputs, ctx):
        raise Boundary("it decodes, ranks and selects RPN boxes (the RPN predictors feed it)")


register_rule(RPNProposals, ProposalsRule())
