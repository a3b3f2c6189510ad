"""CIFAR ResNets (He et al. 2016, section 4.2): ResNet-56 and ResNet-110."""

from __future__ import annotations

import keras

from afp_tf.models import register_model, scaled_width

_STAGE_WIDTHS = (16, 32, 64)


def _conv_bn(x, filters: int, kernel: int, strides: int, prefix: str, suffix: str, relu=True):
    """Conv + BN (+ ReLU) named ``{prefix}conv{suffix}``, ``{prefix}bn{suffix}``, ...."""
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{prefix}conv{suffix}",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{prefix}bn{suffix}")(x)
    return keras.layers.ReLU(name=f"{prefix}relu{suffix}")(x) if relu else x


def _basic_block(x, filters: int, strides: int, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, f"{name}_shortcut_", "", relu=False)
    y = _conv_bn(x, filters, 3, strides, f"{name}_", "1")
    y = _conv_bn(y, filters, 3, 1, f"{name}_", "2", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def cifar_resnet(
    input_shape: tuple[int, ...], num_classes: int, depth: int, name: str, width: float = 1.0
) -> keras.Model:
    """A CIFAR ResNet of ``depth = 6n + 2`` layers: three stages of n basic blocks.

    ``conv1`` 3×3×16 (+ ``bn1``, ``relu1``) → stages of 16, 32, 64 filters (the last two start
    with stride 2; every count times ``width`` for reduced-width runs) → ``gap`` → ``logits``.
    Block layers are named ``stage{s}_block{b}_conv1``, ``..._bn1``, ``..._relu1``,
    ``..._conv2``, ``..._bn2``, ``..._add``, ``..._out``.

    Where a block changes shape it uses a 1×1 conv + BN projection shortcut (``..._shortcut_
    conv``, option B of He et al.) instead of option A's strided zero-padding identity: option A
    needs a Lambda layer that channel surgery cannot slice, while the projection keeps every
    channel group prunable. This adds 2,560 conv weights and 96 BN channels.
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth {depth} must be 6n + 2 (20, 32, 44, 56, 110, ...).")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="input")
    widths = [scaled_width(c, width) for c in _STAGE_WIDTHS]
    x = _conv_bn(inputs, widths[0], 3, 1, "", "1")
    for s, filters in enumerate(widths, start=1):
        for b in range(1, blocks + 1):
            strides = 2 if s > 1 and b == 1 else 1
            x = _basic_block(x, filters, strides, f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("resnet56")
def resnet56(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> keras.Model:
    """ResNet-56 for CIFAR (9 blocks per stage); see ``cifar_resnet``."""
    return cifar_resnet(input_shape, num_classes, 56, "resnet56", width)


@register_model("resnet110")
def resnet110(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> keras.Model:
    """ResNet-110 for CIFAR (18 blocks per stage); see ``cifar_resnet``."""
    return cifar_resnet(input_shape, num_classes, 110, "resnet110", width)
