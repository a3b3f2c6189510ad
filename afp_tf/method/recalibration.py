"""BatchNorm statistics re-estimated for a changed network (after a removal or a fade)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


def recalibrate_batchnorm(
    model: keras.Model, layers: Sequence[keras.layers.Layer], dataset: tf.data.Dataset, steps: int
) -> int:
    """Re-estimates the moving mean and variance of the BatchNorm ``layers`` of ``model`` as the
    average over up to ``steps`` batches of ``dataset`` in training mode; no weight changes.

    After a removal (or a fade) the moving statistics still describe the old network and lag
    ~``1 / (1 − momentum)`` steps behind; this makes inference-mode metrics see the new one.
    Runs eagerly (each layer's momentum is set per batch). Returns the batches used.
    """
    saved = [layer.momentum for layer in layers]
    done = 0
    try:
        for batch in dataset.take(steps):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            for layer in layers:  # batch k gets weight 1/k: a plain average
                layer.momentum = done / (done + 1)
            model(x, training=True)
            done += 1
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return done
