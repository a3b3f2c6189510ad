"""Helpers shared by the surgery tests (no tests here): random weights, zeroed reference."""

import keras
import numpy as np

from afp_tf.surgery.keras_internals import SafeModeScope

_RANDOM = ("bias", "beta", "gamma", "moving_mean", "moving_variance", "alpha")


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random biases, BatchNorm parameters/statistics and PReLU slopes (in place)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.path.split("/")[-1]
        if name in _RANDOM:
            values = (
                rng.uniform(0.5, 1.5, v.shape)
                if name in ("gamma", "moving_variance")
                else (rng.normal(0.0, 0.5, v.shape))
            )
            v.assign(values.astype(v.dtype))
    return model


def copy_model(model: keras.Model) -> keras.Model:
    with SafeModeScope(False):  # models with a Lambda layer
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def zero_consumer_inputs(model: keras.Model, zero: dict) -> keras.Model:
    """A copy of ``model`` whose consumers ignore the given input positions.

    Args:
        model: the original model.
        zero: layer path ("outer/inner") -> positions of its input's last axis to ignore.
    """
    ref = copy_model(model)
    for path, positions in zero.items():
        layer = ref
        for part in path.split("/"):
            layer = layer.get_layer(part)
        positions = np.asarray(positions, dtype=np.int64)
        if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            kernel, axis = layer.depthwise_kernel, -2
        elif isinstance(layer, keras.layers.Conv2DTranspose | keras.layers.Conv1DTranspose):
            kernel, axis = layer.kernel, -1
        else:
            kernel, axis = layer.kernel, -2
        values = np.array(kernel.numpy())
        index = [slice(None)] * values.ndim
        index[axis] = positions
        values[tuple(index)] = 0.0
        kernel.assign(values)
    return ref


def assert_same_outputs(a: keras.Model, b: keras.Model, x, tol: float = 1e-4) -> None:
    """Relative max error of the two models' outputs below ``tol`` (inference mode)."""
    ya, yb = a(x, training=False), b(x, training=False)
    for u, v in zip(keras.tree.flatten(ya), keras.tree.flatten(yb), strict=True):
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape
        err = np.abs(u - v).max() / max(np.abs(v).max(), 1e-12)
        assert err < tol, f"relative error {err:.3g}"
