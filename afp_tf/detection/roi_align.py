"""ROI Align (He et al., Mask R-CNN) over FPN levels, as matrix products of bilinear weights.

Bilinear sampling of a feature map ``F`` at a point ``(y, x)`` (index coordinates, clamped to
the map) is ``sum_h sum_w t(y - h) t(x - w) F[h, w]`` with the tent ``t(d) = max(0, 1 - |d|)``:
it separates into a row-weight and a column-weight vector. Averaging ``sampling_ratio``
points per bin and axis averages those vectors, so one ROI's ``S x S`` bins are
``Wy (S, H) @ F (H, W, C) @ Wx (S, W)^T``: two batched matmuls, reshapes and a transpose,
TFLite builtins with a gradient, and no gather. Coordinates follow Detectron2's
``aligned=True`` (a box edge at relative ``u`` is at ``u * W - 0.5`` in index space).

Each ROI is pooled from one level, ``clip(floor(log2(sqrt(area) / canonical_size)) + 1, 0,
L - 1)`` (its area in input pixels; level 0 = the finest given): ROIs smaller than
``canonical_size`` read the finest map, each doubling moves one level up. All levels are
pooled and the ROI's own is selected by a one-hot weight.

The output is ``(batch, rois, S * S * C)`` with channel ``c`` at positions ``p * C + c`` (as
``Flatten`` would), so the box head's dense layers read it directly; the surgery rule below
makes the layer channel-passthrough (all levels' channels coupled), so the FPN stays prunable.
Its MACs (``afp_tf.stats``) are those two matmuls on every level.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from afp_tf.stats import register_mac_rule
from afp_tf.surgery.rules import Boundary, Rule, register_rule


def bilinear_weights(lo, hi, size: int, bins: int, sampling_ratio: int) -> tf.Tensor:
    """``(..., bins, size)`` averaged tent weights of the sample points of ``bins`` bins
    spanning ``[lo, hi]`` (index coordinates, ``(...)`` shaped) on an axis of ``size`` cells."""
    step = (hi - lo)[..., None] / float(bins * sampling_ratio)
    offsets = tf.range(bins * sampling_ratio, dtype=tf.float32) + 0.5
    points = tf.clip_by_value(lo[..., None] + offsets * step, 0.0, float(size - 1))
    cells = tf.range(size, dtype=tf.float32)
    tent = tf.maximum(0.0, 1.0 - tf.abs(points[..., None] - cells))  # (..., bins * ratio, size)
    shape = tf.concat([tf.shape(tent)[:-2], [bins, sampling_ratio, size]], axis=0)
    return tf.reduce_mean(tf.reshape(tent, shape), axis=-2)


def roi_align_level(features: tf.Tensor, boxes: tf.Tensor, pool_size: int, sampling_ratio: int):
    """``(B, R, S, S, C)`` ROI Align of ``boxes`` ``(B, R, 4)`` (relative ``xyxy``) on
    ``features`` ``(B, H, W, C)`` (static ``H, W, C``)."""
    _, height, width, channels = features.shape
    s = pool_size
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    wy = bilinear_weights(y1 * height - 0.5, y2 * height - 0.5, height, s, sampling_ratio)
    wx = bilinear_weights(x1 * width - 0.5, x2 * width - 0.5, width, s, sampling_ratio)
    batch, rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    rows = tf.matmul(
        tf.reshape(wy, [batch, rois * s, height]),
        tf.reshape(features, [batch, height, width * channels]),
    )  # (B, R * S, W * C)
    rows = tf.reshape(rows, [batch * rois, s, width, channels])
    rows = tf.reshape(tf.transpose(rows, [0, 2, 1, 3]), [batch * rois, width, s * channels])
    out = tf.matmul(tf.reshape(wx, [batch * rois, s, width]), rows)  # (B*R, S_x, S_y * C)
    out = tf.transpose(tf.reshape(out, [batch * rois, s, s, channels]), [0, 2, 1, 3])
    return tf.reshape(out, [batch, rois, s, s, channels])


def roi_levels(boxes, image_size, num_levels: int, canonical_size: float) -> tf.Tensor:
    """``(B, R)`` int32 FPN level of each ROI (see the module docstring)."""
    height, width = image_size
    area = (boxes[..., 2] - boxes[..., 0]) * width * (boxes[..., 3] - boxes[..., 1]) * height
    side = tf.sqrt(tf.maximum(area, 1e-6))
    level = tf.floor(tf.math.log(side / canonical_size) / np.log(2.0)) + 1.0
    return tf.cast(tf.clip_by_value(level, 0.0, num_levels - 1.0), tf.int32)


@keras.saving.register_keras_serializable(package="afp_tf")
class ROIAlign(keras.layers.Layer):
    """Multi-level ROI Align: inputs ``[P_finest, ..., P_coarsest, boxes]``, output
    ``(batch, rois, pool_size**2 * C)``.

    Args:
      image_size: ``(height, width)`` of the model input (ROI areas are measured in its pixels).
      pool_size: bins per side (7 in the paper).
      sampling_ratio: sample points per bin and axis.
      canonical_size: ROI side (pixels) up to which the finest level is read.
    """

    def __init__(self, image_size, pool_size=7, sampling_ratio=2, canonical_size=32.0, **kwargs):
        super().__init__(**kwargs)
        self.image_size = tuple(int(v) for v in image_size)
        self.pool_size = int(pool_size)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_size = float(canonical_size)

    def call(self, inputs):
        *features, boxes = inputs
        boxes = tf.cast(boxes, tf.float32)
        level = roi_levels(boxes, self.image_size, len(features), self.canonical_size)
        out = 0.0
        for index, feature in enumerate(features):
            pooled = roi_align_level(
                tf.cast(feature, tf.float32), boxes, self.pool_size, self.sampling_ratio
            )
            weight = tf.cast(tf.equal(level, index), tf.float32)[..., None, None, None]
            out += weight * pooled
        channels = features[0].shape[-1]
        return tf.reshape(out, [tf.shape(boxes)[0], -1, self.pool_size**2 * channels])

    def compute_output_shape(self, input_shapes):
        *features, boxes = input_shapes
        return (boxes[0], boxes[1], self.pool_size**2 * features[0][-1])

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": list(self.image_size),
            "pool_size": self.pool_size,
            "sampling_ratio": self.sampling_ratio,
            "canonical_size": self.canonical_size,
        }


class ROIAlignRule(Rule):
    """Channels pass through ROI Align: every level's channel ``c`` is one channel, found at
    positions ``p * C + c`` of the output; the boxes carry no channels."""

    consistent_calls = False

    def propagate(self, layer, inputs, ctx):
        *features, _ = inputs
        if any(f is None for f in features):
            raise Boundary("one of its feature inputs has no channel axis")
        if len({len(f) for f in features}) != 1:
            raise Boundary("its feature levels have different channel counts")
        for other in features[1:]:
            ctx.unify(features[0], other)
        return [np.tile(features[0], layer.pool_size**2)]


register_rule(ROIAlign, ROIAlignRule())


@register_mac_rule(ROIAlign)
def _roi_align_macs(layer, inputs, outputs) -> int:
    """Per ROI and level: ``Wy (S, H) @ F (H, W C)`` then ``Wx (S, W) @ (W, S C)``."""
    del outputs
    *features, boxes = inputs
    s = layer.pool_size
    return boxes[1] * sum(s * w * c * (h + s) for _, h, w, c in features)
