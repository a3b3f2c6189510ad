"""LeNet-5 in its Caffe form (20-50-500), the LeNet of the pruning literature."""

from __future__ import annotations

import keras

from afp_tf.models import register_model


@register_model("lenet5")
def lenet5(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """LeNet-5 as in Caffe's MNIST example: logits out, no softmax.

    ``conv1`` 5×5×20 (valid) → ``pool1`` 2×2 → ``conv2`` 5×5×50 → ``pool2`` → ``flatten`` →
    ``fc1`` dense 500 + ReLU → ``fc2`` dense ``num_classes``. As in Caffe the convolutions have
    no activation (max pooling is the non-linearity). On 28×28×1 with 10 classes: 431,080
    parameters and 2,293,000 MACs.
    """
    inputs = keras.Input(input_shape, name="input")
    x = keras.layers.Conv2D(20, 5, name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(50, 5, name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, name="fc2")(x)
    return keras.Model(inputs, outputs, name="lenet5")
