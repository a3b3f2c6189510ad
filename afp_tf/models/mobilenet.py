"""MobileNet v1 (Howard et al. 2017) with width multiplier, for 224 px and small inputs."""

from __future__ import annotations

import math

import keras

from afp_tf.models import register_model, scaled_width

# (pointwise filters, stride) of the 13 depthwise-separable blocks; the stem conv has stride 2.
_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
_MAX_DOWNSAMPLES = 5
_MIN_FEATURE_SIZE = 2


def _conv_bn_relu6(x, layer: keras.layers.Layer, name: str):
    x = layer(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


def default_downsamples(input_shape: tuple[int, ...]) -> int:
    """Stride-2 layers (at most 5) that keep the last feature map ≥ 2 pixels per side."""
    side = min(input_shape[:2])
    return max(0, min(_MAX_DOWNSAMPLES, int(math.log2(side / _MIN_FEATURE_SIZE))))


@register_model("mobilenet")
def mobilenet(
    input_shape: tuple[int, ...],
    num_classes: int,
    alpha: float = 1.0,
    dropout: float = 1e-3,
    downsamples: int | None = None,
) -> keras.Model:
    """MobileNet v1: stem conv, 13 depthwise-separable blocks, global pooling, logits.

    Stem ``conv1`` 3×3×32 stride 2; block ``i`` is ``block{i}_dw`` (depthwise 3×3) and
    ``block{i}_pw`` (pointwise 1×1), each followed by ``_bn`` and ``_relu`` (ReLU6); then
    ``gap`` → ``dropout`` → ``logits`` (dense). At 224×224 with ``alpha=1`` and 1000 classes it
    has the paper's 4.2 M parameters and 569 M MACs.

    Small inputs: the full network downsamples 32× (five stride-2 layers), which would shrink
    a 32×32 image to 1 pixel. By default the number of stride-2 layers is the largest (≤ 5)
    that keeps the last feature map at least 2×2 — 5 for 64 px and more, 4 for 32 px (as in
    common CIFAR ports), 3 for 28 px; the first ones (stem first) become stride 1.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of logits.
        alpha: width multiplier of every layer (the paper's α).
        dropout: dropout rate before the logits layer (0 disables it).
        downsamples: number of stride-2 layers (0–5); ``None`` chooses from ``input_shape``.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"mobilenet needs input_shape (height, width, channels), got {input_shape}."
        )
    if downsamples is None:
        downsamples = default_downsamples(input_shape)
    if not 0 <= downsamples <= _MAX_DOWNSAMPLES:
        raise ValueError(f"downsamples={downsamples} must be in [0, {_MAX_DOWNSAMPLES}].")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout} must be in [0, 1).")
    # Stride of the stem and of each block; the first (5 - downsamples) stride-2 layers become 1.
    strides = [2] + [s for _, s in _BLOCKS]
    skip = _MAX_DOWNSAMPLES - downsamples
    for i, s in enumerate(strides):
        if s == 2 and skip:
            strides[i], skip = 1, skip - 1

    inputs = keras.Input(input_shape, name="input")
    stem = keras.layers.Conv2D(
        scaled_width(32, alpha), 3, strides=strides[0], padding="same", use_bias=False, name="conv1"
    )
    x = _conv_bn_relu6(inputs, stem, "conv1")
    for i, ((filters, _), stride) in enumerate(zip(_BLOCKS, strides[1:], strict=True), start=1):
        dw = keras.layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw"
        )
        x = _conv_bn_relu6(x, dw, f"block{i}_dw")
        pw = keras.layers.Conv2D(
            scaled_width(filters, alpha), 1, use_bias=False, name=f"block{i}_pw"
        )
        x = _conv_bn_relu6(x, pw, f"block{i}_pw")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet")
