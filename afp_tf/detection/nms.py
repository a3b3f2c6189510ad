"""Class-aware NMS inside exported graphs, with score ties broken alike in every runtime.

TensorFlow's ``NonMaxSuppressionV5`` takes the lower index first among equal scores; TFLite's
``NON_MAX_SUPPRESSION_V5`` returns them in heap order. A barely trained detector has many
exactly equal scores (dead ReLUs give many boxes identical logits), so the same graph gave
other detections, in another order, in each runtime. Here the candidates above the score
threshold are ranked by ``top_k`` (equal values: lower index first in TensorFlow, TFLite
``TOPK_V2`` and ONNX ``TopK`` alike) and NMS runs on their strictly decreasing ranks; the
scores are gathered back. The order is that of the NumPy post-processing
(``export/detection_postprocess.py``: a stable sort of the flattened ``(box, class)`` scores).
Sorting only those above the threshold keeps a trained SSD's NMS as cheap as it was (43,380
candidates, none above 0.01: 11.9 ms in TFLite with or without the ranking; ranking all of
them took 16.0 ms).
"""

from __future__ import annotations

import tensorflow as tf

_EXACT_RANKS = 2**24  # float32 holds every integer up to this


def class_aware_nms(
    boxes: tf.Tensor,
    probs: tf.Tensor,
    *,
    max_detections: int,
    iou_threshold: float,
    score_threshold: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Greedy NMS of every class at once (class ``c``'s boxes shifted by ``2c`` never overlap
    another class's), over candidates scoring above ``score_threshold``.

    Args:
        boxes: ``(N, C, 4)`` per-class boxes, or ``(N, 1, 4)`` one box for all classes;
            relative ``xyxy`` in ``[0, 1]``.
        probs: ``(N, C)`` class scores (static shape).

    Returns:
        ``(index, scores, classes, count)``: ``index`` ``(max_detections,)`` int32 into the
        flattened ``(N, C)`` candidates (box ``index // C``, class ``index % C``), best first;
        rows from ``count`` on are padding with score 0 and class -1.
    """
    n, c = probs.shape
    if n * c >= _EXACT_RANKS:
        raise ValueError(f"{n * c} NMS candidates: ranks above 2**24 are not exact in float32.")
    shift = 2.0 * tf.range(c, dtype=tf.float32)[None, :, None]
    flat_boxes = tf.reshape(boxes + shift, [-1, 4])
    flat = tf.reshape(probs, [-1])
    # Only the candidates above the threshold are sorted (few, once a detector is trained),
    # with one dummy after them: it keeps k >= 1 and the padded NMS indices in range.
    above = tf.concat([tf.cast(tf.where(flat > score_threshold)[:, 0], tf.int32), [0]], axis=0)
    values = tf.concat([tf.gather(flat, above[:-1]), [-1.0]], axis=0)
    ranked = tf.math.top_k(values, k=tf.size(values))
    order = tf.gather(above, ranked.indices)
    ranks = tf.range(tf.size(values) - 1, -1, -1)  # the dummy's is 0
    keep, _, count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=tf.gather(flat_boxes, order),
        scores=tf.cast(ranks, tf.float32),
        max_output_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=0.5,  # ranks are >= 1 above the threshold, 0 for the dummy
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    index = tf.gather(order, keep)
    valid = tf.range(max_detections) < count
    scores = tf.where(valid, tf.gather(flat, index), 0.0)
    return index, scores, tf.where(valid, tf.math.floormod(index, c), -1), count
