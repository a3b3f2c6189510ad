"""Tests of afp_tf.stats: hand-computed MACs per layer type, nesting, sharing, totals."""

import json

import keras
import pytest

from afp_tf import stats


def _single_layer_stats(input_shape, layer):
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    return stats.model_stats(model), model


# (input shape without batch, layer, MACs computed by hand)
_LAYER_CASES = {
    # 5×5 outputs × 8 filters × 3·3·4 weights each.
    "conv2d_stride2_same": (
        (10, 10, 4),
        keras.layers.Conv2D(8, 3, strides=2, padding="same"),
        7200,
    ),
    # 8×8 outputs × 8 × 3·3·4.
    "conv2d_valid": ((10, 10, 4), keras.layers.Conv2D(8, 3), 18432),
    # 8×8 outputs × 6 filters × 3·3·(4/2) weights.
    "conv2d_groups": ((8, 8, 4), keras.layers.Conv2D(6, 3, padding="same", groups=2), 6912),
    "conv2d_channels_first": (
        (4, 10, 10),
        keras.layers.Conv2D(8, 3, data_format="channels_first"),
        18432,
    ),
    # 17 outputs × 5 × 4·3.
    "conv1d_valid": ((20, 3), keras.layers.Conv1D(5, 4), 1020),
    # 4·4·4 outputs × 4 × 3·3·3·2.
    "conv3d_valid": ((6, 6, 6, 2), keras.layers.Conv3D(4, 3), 13824),
    # 8×8 outputs × 3·3 × 3 channels × multiplier 2.
    "depthwise_multiplier2": (
        (8, 8, 3),
        keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
        3456,
    ),
    # 4×4 outputs (stride 2) × 3·3 × 3.
    "depthwise_stride2": (
        (8, 8, 3),
        keras.layers.DepthwiseConv2D(3, strides=2, padding="same"),
        432,
    ),
    # 6×6 outputs × (3·3·3 depthwise + 3·5 pointwise).
    "separable_valid": ((8, 8, 3), keras.layers.SeparableConv2D(5, 3), 1512),
    # 5×5 inputs × 3·3·2·4 (output 10×10×4).
    "conv2d_transpose_stride2": (
        (5, 5, 2),
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
        1800,
    ),
    # 7 rows × 16·3.
    "dense_leading_dims": ((7, 16), keras.layers.Dense(3), 336),
    "dense_flat": ((16,), keras.layers.Dense(3), 48),
    "batchnorm": ((8, 8, 3), keras.layers.BatchNormalization(), 0),
    "relu": ((8, 8, 3), keras.layers.ReLU(), 0),
    "maxpool": ((8, 8, 3), keras.layers.MaxPooling2D(), 0),
    "global_avgpool": ((8, 8, 3), keras.layers.GlobalAveragePooling2D(), 0),
}


@pytest.mark.parametrize("case", sorted(_LAYER_CASES))
def test_model_stats_single_layer_matches_hand_count(case):
    input_shape, layer, expected = _LAYER_CASES[case]
    result, model = _single_layer_stats(input_shape, layer)
    (row,) = result.per_layer
    assert row.macs == expected
    assert result.macs == expected
    assert row.params == layer.count_params() == result.params
    assert row.output_shape == tuple(model.output.shape[1:])


def test_model_stats_add_layer_counts_zero_macs():
    a, b = keras.Input((4, 4, 2)), keras.Input((4, 4, 2))
    model = keras.Model([a, b], keras.layers.Add(name="add")([a, b]))
    result = stats.model_stats(model)
    assert [(r.name, r.macs) for r in result.per_layer] == [("add", 0)]


def test_model_stats_nested_model_recurses_with_paths():
    x = keras.Input((8, 8, 3))
    inner = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same", name="c")(x), name="inner")
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(2, 1, name="head")(inner(inputs))
    result = stats.model_stats(keras.Model(inputs, outputs))
    assert [r.name for r in result.per_layer] == ["inner/c", "head"]
    assert result.macs == 8 * 8 * 4 * 27 + 8 * 8 * 2 * 4
    assert result.params == (27 * 4 + 4) + (4 * 2 + 2)


def test_model_stats_flexible_inner_model_uses_outer_shapes():
    x = keras.Input((None, None, 3))
    inner = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same", name="c")(x), name="inner")
    inputs = keras.Input((8, 8, 3))
    result = stats.model_stats(keras.Model(inputs, inner(inputs)))
    assert result.per_layer[0].output_shape == (8, 8, 4)
    assert result.macs == 8 * 8 * 4 * 27


def test_model_stats_nested_sequential_recurses():
    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="d")], name="seq")
    inputs = keras.Input((16,))
    result = stats.model_stats(keras.Model(inputs, inner(inputs)))
    assert [(r.name, r.macs) for r in result.per_layer] == [("seq/d", 128)]


def test_model_stats_shared_layer_sums_its_calls():
    conv = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    a, b = keras.Input((8, 8, 3)), keras.Input((4, 4, 3))
    model = keras.Model([a, b], [conv(a), conv(b)])
    result = stats.model_stats(model)
    (row,) = result.per_layer
    # 3x3x3 kernel = 27 MACs per output value: 8*8*4 * 27 = 6912 on a, 4*4*4 * 27 = 1728 on b
    assert row.macs == 8640 and result.macs == 8640
    assert row.params == result.params == 112  # 27 * 4 weights + 4 biases, counted once


def test_model_stats_unknown_dims_raise_then_input_shape_resolves():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(inputs))
    with pytest.raises(ValueError, match="input_shape"):
        stats.model_stats(model)
    assert stats.model_stats(model, input_shape=(10, 10, 3)).macs == 8 * 8 * 4 * 27


def test_model_stats_subclassed_model_raises_type_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(TypeError, match="functional"):
        stats.model_stats(Net())


def test_model_stats_sequential_counts_like_functional():
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(20, 5, name="conv1"), keras.layers.Flatten()]
    )
    result = stats.model_stats(model)
    assert result.macs == 24 * 24 * 20 * 25
    assert [r.name for r in result.per_layer][0] == "conv1"


def test_model_stats_batchnorm_trainable_params_exclude_moving_stats():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    result = stats.model_stats(model)
    assert (result.params, result.trainable_params) == (12, 6)


def test_register_mac_rule_custom_layer_is_counted():
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    @stats.register_mac_rule(Scale)
    def _scale_macs(layer, inputs, outputs):
        return 5

    inputs = keras.Input((3,))
    assert stats.model_stats(keras.Model(inputs, Scale()(inputs))).macs == 5


def test_model_stats_composite_layer_counts_its_inner_layers():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")

        def call(self, x):
            return keras.ops.relu(self.conv(x))

    inputs = keras.Input((8, 8, 2))
    result = stats.model_stats(keras.Model(inputs, Block(name="blk")(inputs)))
    assert result.macs == 8 * 8 * 3 * 3 * 2 * 4
    assert [r.name for r in result.per_layer if r.macs] == ["blk/conv"]


def test_model_stats_to_dict_and_table_are_readable():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    result = stats.model_stats(keras.Model(inputs, keras.layers.Flatten(name="flat")(x)))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["flops"] == 2 * d["macs"] == result.flops == 2 * 16 * 3 * 18
    assert d["per_layer"][0] == {
        "name": "conv",
        "class_name": "Conv2D",
        "params": 57,
        "macs": 864,
        "output_shape": [4, 4, 3],
    }
    table = result.summary()
    assert table == stats.format_table(result)
    assert "conv" in table and "Conv2D" in table and "864" in table and "1,728" in table


def test_model_stats_keras_mobilenet_v2_matches_paper():
    # Sandler et al. 2018, Table 3: MobileNetV2 (1.0, 224) has 300 M multiply-adds.
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    assert stats.model_stats(model).macs == pytest.approx(300e6, rel=0.01)
