"""SSD default boxes and the box-offset encoding.

The default boxes follow the SSD paper: on feature map ``k`` of ``m`` (size ``f_k``), scale
``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)``, one box per aspect ratio ``a`` of size
``(s_k sqrt(a), s_k / sqrt(a))`` plus an extra square box of scale ``sqrt(s_k s_{k+1})``, centred
on each cell. keras-cv's ``AnchorGenerator`` works under Keras 3.15 but produces RetinaNet-style
pixel anchors (``sizes x scales x ratios`` per stride) without SSD's extra square box, so the
paper's boxes are computed here in NumPy (they are constants).

All boxes are relative to the image (``[0, 1]``). Offsets are encoded as in SSD with variances
``(0.1, 0.2)``: ``((cx - cx_a) / (w_a v0), (cy - cy_a) / (h_a v0), log(w / w_a) / v1, ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5)
VARIANCES = (0.1, 0.2)


def anchors_per_location(aspect_ratios: Sequence[float]) -> int:
    """Boxes per feature-map cell: one per aspect ratio plus the extra square scale."""
    return len(aspect_ratios) + 1


def default_boxes(
    feature_sizes: Sequence[int],
    *,
    min_scale: float = 0.05,
    max_scale: float = 0.6,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
) -> np.ndarray:
    """Returns the ``(num_anchors, 4)`` SSD default boxes as relative ``xyxy`` (float32).

    The order matches :func:`afp_tf.models.ssd.build_ssd`: level by level, row-major cells, the
    aspect-ratio boxes then the extra square box per cell.
    """
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}.")
    m = len(feature_sizes)
    scales = [min_scale + (max_scale - min_scale) * k / max(m - 1, 1) for k in range(m)]
    scales.append(min(1.0, scales[-1] * 1.1 if m == 1 else scales[-1] + scales[1] - scales[0]))
    out = []
    for k, f in enumerate(feature_sizes):
        shapes = [(scales[k] * math.sqrt(a), scales[k] / math.sqrt(a)) for a in aspect_ratios]
        extra = math.sqrt(scales[k] * scales[k + 1])
        shapes.append((extra, extra))
        centres = (np.arange(f, dtype=np.float32) + 0.5) / f
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        wh = np.array(shapes, np.float32)  # (k, 2)
        c = np.stack([cx, cy], -1).reshape(-1, 1, 2)  # (cells, 1, 2)
        out.append(np.concatenate([c - wh / 2, c + wh / 2], -1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def _centre(boxes):
    wh = boxes[..., 2:] - boxes[..., :2]
    return boxes[..., :2] + wh / 2, wh


def encode(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Encodes relative ``xyxy`` boxes as SSD offsets from ``anchors`` (broadcasting)."""
    c, wh = _centre(boxes)
    ca, wha = _centre(anchors)
    wh = tf.maximum(wh, 1e-6)
    return tf.concat(
        [(c - ca) / (wha * VARIANCES[0]), tf.math.log(wh / wha) / VARIANCES[1]], axis=-1
    )


def decode(offsets: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`encode`: SSD offsets to relative ``xyxy`` boxes."""
    ca, wha = _centre(anchors)
    c = offsets[..., :2] * VARIANCES[0] * wha + ca
    wh = tf.exp(tf.minimum(offsets[..., 2:] * VARIANCES[1], 10.0)) * wha
    return tf.concat([c - wh / 2, c + wh / 2], axis=-1)
