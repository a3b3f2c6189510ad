"""SSD default boxes in pixels (the same for any input size) and the box-offset encoding.

A fully convolutional SSD sees the same pixels in a training crop and in a full frame, so its
default boxes are defined in pixels, not relative to the input: level ``l`` (stride ``s_l``)
has square sizes ``sizes[l]`` (times each aspect ratio) centred on ``((j + 0.5) s_l,
(i + 0.5) s_l)``. :meth:`AnchorSpec.boxes` lays them out for an ``height x width`` input
(feature maps ``ceil(height / s_l) x ceil(width / s_l)``) and returns them relative to it,
which is how targets and decoded boxes are expressed.

:meth:`AnchorSpec.for_object_sizes` covers an object-size range (GTSDB: 16-128 px) with one
level per octave (strides 8, 16, 32, 64 for 16-128 px) and ``scales_per_octave`` sizes per
level, ``min_size * 2 ** (l + k / scales_per_octave)``: any square object in the range is
within a factor ``2 ** (1 / (2 * scales_per_octave))`` of a default box (IoU >= 0.79 when
centred, for 3 scales), and the stride is half the level's smallest box, so a centre is at most
``s_l / 2`` from a cell centre.

Offsets are encoded as in SSD with variances ``(0.1, 0.2)``: ``((cx - cx_a) / (w_a v0),
(cy - cy_a) / (h_a v0), log(w / w_a) / v1, log(h / h_a) / v1)``; relative coordinates of
either axis give the same offsets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

VARIANCES = (0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """Default boxes per feature level: a stride, square sizes in pixels, aspect ratios."""

    strides: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        if not self.strides or len(self.sizes) != len(self.strides):
            raise ValueError(f"need one size tuple per stride, got {self.strides}, {self.sizes}.")
        if len({len(s) for s in self.sizes}) != 1 or not self.aspect_ratios:
            raise ValueError("every level needs the same number of sizes and >= 1 aspect ratio.")
        if min(self.strides) <= 0 or min(min(s) for s in self.sizes) <= 0:
            raise ValueError(f"strides and sizes must be positive: {self}.")

    @classmethod
    def for_object_sizes(
        cls,
        min_size: float = 16,
        max_size: float = 128,
        *,
        scales_per_octave: int = 3,
        aspect_ratios: Sequence[float] = (1.0,),
        first_stride: int | None = None,
    ) -> AnchorSpec:
        """One level per octave from ``min_size`` up to ``max_size``; strides double from
        ``first_stride`` (default ``min_size / 2``)."""
        if not 0 < min_size <= max_size or scales_per_octave < 1:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}.")
        levels = math.ceil(math.log2(max_size / min_size) - 1e-9) + 1
        first = first_stride or max(1, round(min_size / 2))
        return cls(
            strides=tuple(first * 2**lv for lv in range(levels)),
            sizes=tuple(
                tuple(
                    round(min_size * 2 ** (lv + k / scales_per_octave), 2)
                    for k in range(scales_per_octave)
                )
                for lv in range(levels)
            ),
            aspect_ratios=tuple(float(a) for a in aspect_ratios),
        )

    @property
    def per_location(self) -> int:
        """Boxes per feature-map cell."""
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(rows, cols)`` of each level's feature map for an ``height x width`` input."""
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    def boxes(self, height: int, width: int) -> np.ndarray:
        """``(anchors, 4)`` relative ``xyxy`` boxes, in the model's order (level, row, col, box)."""
        out = []
        for stride, sizes, (rows, cols) in zip(
            self.strides, self.sizes, self.feature_sizes(height, width), strict=True
        ):
            wh = np.array(
                [(s * math.sqrt(a), s / math.sqrt(a)) for s in sizes for a in self.aspect_ratios],
                np.float32,
            )
            cy, cx = np.meshgrid(
                (np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij"
            )
            c = np.stack([cx, cy], -1).reshape(-1, 1, 2)
            out.append(np.concatenate([c - wh / 2, c + wh / 2], -1).reshape(-1, 4))
        return (np.concatenate(out) / np.array([width, height] * 2, np.float32)).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "strides": list(self.strides),
            "sizes": [list(s) for s in self.sizes],
            "aspect_ratios": list(self.aspect_ratios),
        }

    @classmethod
    def from_dict(cls, d: dict) -> AnchorSpec:
        return cls(
            tuple(int(s) for s in d["strides"]),
            tuple(tuple(float(v) for v in s) for s in d["sizes"]),
            tuple(float(a) for a in d["aspect_ratios"]),
        )


def resolve(anchors, height: int, width: int) -> np.ndarray:
    """The relative boxes for an input size: from an :class:`AnchorSpec`, or a fixed array."""
    if isinstance(anchors, AnchorSpec):
        return anchors.boxes(height, width)
    return np.asarray(anchors, np.float32)


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
