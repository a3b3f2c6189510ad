"""SSD (Liu et al., 2016) as a plain functional Keras model, prunable by channel surgery.

Parts: a backbone (VGG16 as in the paper, or a MobileNet-style depthwise-separable one) giving
features at strides 8 and 16; extra feature layers (1x1 then 3x3 stride-2 convs) halving the
map down to 1x1; per scale an optional head tower (3x3 conv + BN + ReLU) and two predictor
convs: classes ``k * (num_classes + 1)`` (index 0 = background) and boxes ``k * 4``.

The model returns one raw tensor ``(batch, anchors, 4 + num_classes + 1)``: SSD box offsets
(see :mod:`afp_tf.detection.anchors`) then class logits. The predictors reach it only through
Reshape and Concatenate, so their output channels are never pruned, while backbone, extra
layers and head towers are ordinary prunable conv groups. Decoding and NMS live outside the
model (:func:`afp_tf.detection.decode.decode_predictions`); exported artifacts may carry them
(:mod:`afp_tf.detection.export`).

The network is fully convolutional: it trains on crops at the signs' native resolution and
runs on full frames (:func:`at_input_size` re-inputs a trained or pruned model); its default
boxes are pixel-sized (:class:`afp_tf.detection.anchors.AnchorSpec`), laid out for whatever
input it gets.

Differences from the paper: BatchNormalization after every conv (trains from scratch on small
data), no L2Normalization on conv4_3, and fc6/fc7 are a dilated 3x3 and a 1x1 conv of
``1024 * width`` channels.
"""

from __future__ import annotations

import math

import keras

BACKBONES = ("vgg16", "mobilenet")
# Faster than Keras' 0.99 so inference statistics settle within the few hundred steps of a
# small-data run (with 0.99 the eval-mode loss stayed 3x the train-mode loss after 60 steps).
_BN_MOMENTUM = 0.9


def feature_sizes(height: int, width: int, num_levels: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of the SSD feature maps (strides 8, 16, 32, ...) for an input size."""
    return [(math.ceil(height / 2**k), math.ceil(width / 2**k)) for k in range(3, 3 + num_levels)]


def at_input_size(model: keras.Model, height: int, width: int) -> keras.Model:
    """The same (fully convolutional) detector, weights shared by value, for another input size."""
    if tuple(model.input_shape[1:3]) == (height, width):
        return model
    clone = keras.models.clone_model(
        model, input_tensors=keras.Input((height, width, model.input_shape[-1]), name="image")
    )
    clone.set_weights(model.get_weights())
    return clone


def _conv(x, filters, kernel, name, strides=1, dilation=1):
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _ch(filters: int, width: float) -> int:
    return max(8, int(round(filters * width / 8)) * 8) if width != 1.0 else filters


def _vgg16(x, width):
    feats = []
    for block, (filters, reps) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
        if block > 1:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{block - 1}")(x)
        for r in range(1, reps + 1):
            x = _conv(x, _ch(filters, width), 3, f"conv{block}_{r}")
        if block == 4:
            feats.append(x)  # conv4_3, stride 8
    x = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="pool5")(x)
    x = _conv(x, _ch(1024, width), 3, "fc6", dilation=6)
    feats.append(_conv(x, _ch(1024, width), 1, "fc7"))  # stride 16
    return feats


def _mobilenet(x, width):
    x = _conv(x, _ch(32, width), 3, "stem", strides=2)
    # MobileNet-v1 blocks 1-11; its stride-32 blocks are replaced by the SSD extra layers.
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5
    feats = []
    for i, (filters, stride) in enumerate(plan, 1):
        x = keras.layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw"
        )(x)
        x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"block{i}_dw_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_dw_relu")(x)
        x = _conv(x, _ch(filters, width), 1, f"block{i}_pw")
        if i in (5, 11):  # ends of the stride-8 and stride-16 stages
            feats.append(x)
    return feats


def build_ssd(
    input_shape: tuple[int, int, int],
    num_classes: int,
    backbone: str = "mobilenet",
    width: float = 1.0,
    *,
    anchors_per_location: int = 3,
    num_levels: int = 4,
    head_depth: int = 1,
    name: str = "ssd",
) -> keras.Model:
    """Builds an SSD detector.

    Args:
      input_shape: ``(height, width, channels)``: the training-crop size (see
        :func:`at_input_size` for inference on full frames).
      num_classes: object classes, without background.
      backbone: ``"vgg16"`` (the paper's) or ``"mobilenet"`` (MobileNet-v1 style).
      width: channel multiplier of backbone, extra layers and towers.
      anchors_per_location: default boxes per cell (``AnchorSpec.per_location``).
      num_levels: number of feature maps (strides 8, 16, 32, ...; ``len(AnchorSpec.strides)``).
      head_depth: head-tower convs per scale before the predictors (prunable).
      name: model name.

    Returns:
      A functional model ``image -> (batch, anchors, 4 + num_classes + 1)``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r} is not one of {', '.join(BACKBONES)}.")
    if len(input_shape) != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"SSD needs an input of at least 32x32, got {input_shape}.")
    if num_classes < 1 or width <= 0 or num_levels < 1 or anchors_per_location < 1:
        raise ValueError(
            f"need num_classes >= 1, width > 0, num_levels >= 1 and anchors_per_location >= 1, "
            f"got {num_classes}, {width}, {num_levels}, {anchors_per_location}."
        )
    sizes = feature_sizes(input_shape[0], input_shape[1], num_levels)
    inputs = keras.Input(input_shape, name="image")
    feats = (_vgg16 if backbone == "vgg16" else _mobilenet)(inputs, width)[: len(sizes)]
    x = feats[-1]
    for level in range(len(feats), len(sizes)):
        filters = _ch(256 if level < 4 else 128, width)
        x = _conv(x, filters // 2, 1, f"extra{level}_1")
        x = _conv(x, filters, 3, f"extra{level}_2", strides=2)
        feats.append(x)
    k = anchors_per_location
    boxes, classes = [], []
    for level, feat in enumerate(feats):
        if tuple(feat.shape[1:3]) != sizes[level]:
            raise AssertionError(f"level {level}: size {feat.shape[1:3]} != {sizes[level]}")
        tower = feat
        for d in range(head_depth):
            tower = _conv(tower, feat.shape[-1], 3, f"head{level}_tower{d}")
        cls = keras.layers.Conv2D(k * (num_classes + 1), 3, padding="same", name=f"cls_pred{level}")
        box = keras.layers.Conv2D(k * 4, 3, padding="same", name=f"box_pred{level}")
        classes.append(
            keras.layers.Reshape((-1, num_classes + 1), name=f"cls_flat{level}")(cls(tower))
        )
        boxes.append(keras.layers.Reshape((-1, 4), name=f"box_flat{level}")(box(tower)))
    boxes = keras.layers.Concatenate(axis=1, name="boxes")(boxes)
    classes = keras.layers.Concatenate(axis=1, name="classes")(classes)
    outputs = keras.layers.Concatenate(axis=-1, name="predictions")([boxes, classes])
    return keras.Model(inputs, outputs, name=name)
