"""VGG-16 in the CIFAR form of the filter-pruning literature (BatchNorm, 512-512-10 head)."""

from __future__ import annotations

import keras

from afp_tf.models import register_model, scaled_width

# Output channels of the 13 convolutions per block; each block ends with a 2×2 max pool.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


@register_model("vgg16")
def vgg16(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, dropout: float = 0.5
) -> keras.Model:
    """VGG-16 for small images, as pruned by Li et al. (2017) and Singh et al. (2020).

    Five blocks of 3×3 convolutions (``block{b}_conv{i}`` + ``_bn`` + ``_relu``), each block
    closed by a 2×2 max pool (``same`` padding, so inputs down to 1 pixel per side stay valid,
    e.g. 28×28), then ``flatten`` → ``fc1`` dense 512 + BN + ReLU + dropout → ``logits``.
    This is the "512-512-10" head of the reference CIFAR model: on 32×32×3 with 10 classes,
    about 15.0 M parameters and 313 M MACs.

    Args:
        input_shape: e.g. ``(32, 32, 3)``.
        num_classes: number of logits.
        width: multiplier of every conv and hidden dense width, for reduced-width runs.
        dropout: dropout rate before the logits layer (0 disables it).
    """
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout} must be in [0, 1).")
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for b, channels in enumerate(_BLOCKS, start=1):
        for i, c in enumerate(channels, start=1):
            prefix = f"block{b}_conv{i}"
            x = keras.layers.Conv2D(
                scaled_width(c, width), 3, padding="same", use_bias=False, name=prefix
            )(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"block{b}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(scaled_width(512, width), use_bias=False, name="fc1")(x)
    x = keras.layers.BatchNormalization(name="fc1_bn")(x)
    x = keras.layers.ReLU(name="fc1_relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="vgg16")
