"""Golden tests, one tiny model per slicing rule: pruning == zeroing the consumers' inputs."""

import functools

import keras
import numpy as np
import pytest
from surgery_cases import assert_same_outputs, randomize, zero_consumer_inputs

from afp_tf import surgery

L = keras.layers
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")


def _head(x):
    return L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))


def _conv(n, name, **kw):
    return L.Conv2D(n, 3, padding="same", name=name, **kw)


def conv_bn_relu():
    x = inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(_conv(6, "a")(x)))
    x = _conv(4, "b")(x)
    return keras.Model(inp, _head(x)), {"a": [1, 3], "b": [2]}, {"b": [1, 3], "out": [2]}


def activations():
    x = inp = keras.Input((8, 8, 3))
    x = _conv(6, "a")(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.PReLU()(x)
    x = L.LeakyReLU(0.2)(x)
    x = L.Activation("tanh")(L.ELU()(x))
    x = L.SpatialDropout2D(0.3)(L.Dropout(0.3)(x))
    x = L.Rescaling(0.5, offset=0.1)(L.Identity()(x))
    return keras.Model(inp, _head(_conv(4, "b")(x))), {"a": [1, 3]}, {"b": [1, 3]}


def spatial():
    x = inp = keras.Input((8, 8, 3))
    x = L.MaxPooling2D()(_conv(6, "a")(x))
    x = L.Cropping2D(1)(L.ZeroPadding2D(1)(x))
    x = L.AveragePooling2D(1)(L.UpSampling2D()(x))
    return keras.Model(inp, _head(_conv(4, "b")(x))), {"a": [0, 5]}, {"b": [0, 5]}


def global_pool_reshape():
    inp = keras.Input((8, 8, 3))
    a = _conv(6, "a")(inp)
    x = L.Reshape((1, 1, 6))(L.GlobalMaxPooling2D()(a))
    x = _conv(4, "b")(x)
    y = L.Conv2D(4, 1, name="c")(L.GlobalAveragePooling2D(keepdims=True)(a))
    x = L.Flatten()(L.Add()([x, y]))
    return keras.Model(inp, L.Dense(2, name="out")(x)), {"a": [2, 4]}, {"b": [2, 4], "c": [2, 4]}


def merge(kind):
    inp = keras.Input((8, 8, 3))
    x = getattr(L, kind)()([_conv(6, "a")(inp), _conv(6, "c")(inp)])
    return keras.Model(inp, _head(_conv(4, "b")(x))), {"a": [1, 3]}, {"b": [1, 3]}


def keras_ops_hard_swish():
    """MobileNetV3-style hard-swish and squeeze-excitation written with keras.ops arithmetic."""
    inp = keras.Input((8, 8, 3))
    x = _conv(6, "a")(inp)
    x = x * keras.ops.relu6(x + 3.0) / 6.0
    s = L.Conv2D(6, 1, name="e")(L.GlobalAveragePooling2D(keepdims=True)(x))
    x = keras.ops.clip(1.0 - x, -2.0, 2.0) * keras.ops.hard_sigmoid(s)
    x = keras.ops.maximum(keras.ops.hard_silu(x), -0.5)
    return keras.Model(inp, _head(_conv(4, "b")(x))), {"a": [1, 3]}, {"e": [1, 3], "b": [1, 3]}


def squeeze_excitation():
    inp = keras.Input((8, 8, 3))
    x = _conv(6, "a")(inp)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(2, 1, activation="relu", name="r")(s)
    s = L.Conv2D(6, 1, activation="sigmoid", name="e")(s)
    x = L.Multiply()([x, s])
    return (
        keras.Model(inp, _head(_conv(4, "b")(x))),
        {"a": [1, 3], "r": [0]},
        {
            "r": [1, 3],
            "e": [0],
            "b": [1, 3],
        },
    )


def concatenate():
    inp = keras.Input((8, 8, 3))
    x = L.Concatenate()([_conv(6, "a")(inp), _conv(4, "c")(inp)])
    return keras.Model(inp, _head(_conv(4, "b")(x))), {"a": [1], "c": [0, 2]}, {"b": [1, 6, 8]}


def depthwise(m):
    inp = keras.Input((8, 8, 3))
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=m)(_conv(4, "a")(inp))
    x = _conv(3, "b")(L.BatchNormalization()(x))
    zero = [c * m + k for c in (1, 2) for k in range(m)]
    return keras.Model(inp, _head(x)), {"a": [1, 2]}, {"b": zero}


def separable():
    inp = keras.Input((8, 8, 3))
    x = L.SeparableConv2D(5, 3, depth_multiplier=2, name="s")(_conv(6, "a")(inp))
    x = _conv(4, "b")(L.BatchNormalization()(x))
    return keras.Model(inp, _head(x)), {"a": [1, 3], "s": [0, 4]}, {"s": [1, 3], "b": [0, 4]}


def transpose():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2DTranspose(5, 3, strides=2, name="t")(_conv(6, "a")(inp))
    x = _conv(4, "b")(x)
    return keras.Model(inp, _head(x)), {"a": [1, 3], "t": [2]}, {"t": [1, 3], "b": [2]}


def flatten_dense():
    inp = keras.Input((8, 8, 3))
    x = L.Flatten()(L.MaxPooling2D(2)(_conv(6, "a")(inp)))
    x = L.Dense(5, activation="relu", name="d")(x)
    out = L.Dense(2, name="out")(L.Dropout(0.1)(x))
    flat = [p * 6 + c for p in range(16) for c in (1, 3)]
    return keras.Model(inp, out), {"a": [1, 3], "d": [0]}, {"d": flat, "out": [0]}


def nested():
    x = inner_in = keras.Input((8, 8, 6))
    x = L.ReLU()(L.BatchNormalization()(_conv(5, "i1")(x)))
    inner = keras.Model(inner_in, _conv(4, "i2")(x), name="inner")
    inp = keras.Input((8, 8, 3))
    x = inner(_conv(6, "a")(inp))
    removal = {"a": [1, 3], "inner/i1": [0, 2], "inner/i2": [1]}
    return keras.Model(inp, _head(x)), removal, {"inner/i1": [1, 3], "inner/i2": [0, 2], "out": [1]}


def sequential_nested():
    seq = keras.Sequential([keras.Input((8, 8, 6)), _conv(5, "s1"), L.ReLU()], name="seq")
    inp = keras.Input((8, 8, 3))
    x = _conv(4, "b")(seq(_conv(6, "a")(inp)))
    return keras.Model(inp, _head(x)), {"a": [1], "seq/s1": [0, 4]}, {"seq/s1": [1], "b": [0, 4]}


def shared_layer():
    inp = keras.Input((8, 8, 3))
    shared = _conv(4, "s")
    x = L.Add()([shared(_conv(6, "a")(inp)), shared(_conv(6, "c")(inp))])
    removal = {"a": [1, 3], "s": [0]}
    return keras.Model(inp, _head(_conv(3, "b")(x))), removal, {"s": [1, 3], "b": [0]}


def shared_submodel():
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(inner_in, _conv(4, "i1")(inner_in), name="inner")
    inp = keras.Input((8, 8, 3))
    x = L.Add()([inner(_conv(6, "a")(inp)), inner(_conv(6, "c")(inp))])
    removal = {"a": [1, 3], "inner/i1": [0]}
    return keras.Model(inp, _head(_conv(3, "b")(x))), removal, {"inner/i1": [1, 3], "b": [0]}


def conv1d():
    inp = keras.Input((10, 3))
    x = L.MaxPooling1D()(L.Conv1D(6, 3, name="a")(inp))
    x = L.GlobalAveragePooling1D()(L.Conv1D(4, 3, name="b")(x))
    return keras.Model(inp, L.Dense(2, name="out")(x)), {"a": [1, 3]}, {"b": [1, 3]}


def conv3d():
    inp = keras.Input((4, 4, 4, 2))
    x = L.UpSampling3D()(L.Conv3D(6, 3, padding="same", name="a")(inp))
    x = L.GlobalMaxPooling3D()(L.Conv3D(4, 3, name="b")(x))
    return keras.Model(inp, L.Dense(2, name="out")(x)), {"a": [1, 3]}, {"b": [1, 3]}


BUILDERS = {
    **{f.__name__: f for f in (conv_bn_relu, activations, spatial, global_pool_reshape)},
    **{kind: functools.partial(merge, kind) for kind in MERGES},
    "squeeze_excitation": squeeze_excitation,
    "keras_ops_hard_swish": keras_ops_hard_swish,
    "concatenate": concatenate,
    "depthwise_m1": functools.partial(depthwise, 1),
    "depthwise_m2": functools.partial(depthwise, 2),
    **{f.__name__: f for f in (separable, transpose, flatten_dense, nested, sequential_nested)},
    **{f.__name__: f for f in (shared_layer, shared_submodel, conv1d, conv3d)},
}


@pytest.mark.parametrize("name", BUILDERS)
def test_remove_filters_tiny_model_matches_zeroed_consumers(name):
    """Builders give the removal by producer path and the consumer inputs to zero by hand."""
    model, by_producer, zero = BUILDERS[name]()
    randomize(model)
    groups = {g.name: g for g in surgery.find_channel_groups(model)}
    group_of = {p: g.name for g in groups.values() for p in g.producers}
    removal = {group_of[p]: indices for p, indices in by_producer.items()}
    assert all(groups[name].prunable for name in removal), groups
    pruned = surgery.remove_filters(model, removal)
    x = np.random.default_rng(1).normal(size=(2, *model.input.shape[1:])).astype("float32")
    assert_same_outputs(pruned, zero_consumer_inputs(model, zero), x)
    after = {g.name: g.size for g in surgery.find_channel_groups(pruned)}
    for name, indices in removal.items():
        assert after[name] == groups[name].size - len(indices)
    assert pruned.count_params() < model.count_params()
