"""Channel groups: prunability and reasons, boundaries, errors, filter_weights, custom rules."""

import keras
import numpy as np
import pytest
from surgery_cases import assert_same_outputs, randomize, zero_consumer_inputs

from afp_tf import surgery

L = keras.layers


def _model(*middle, channels=6):
    """input -> conv "a" -> middle layers -> conv "b" -> GAP -> Dense "out"."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(channels, 3, padding="same", name="a")(inp)
    for layer in middle:
        x = layer(x)
    x = L.Conv2D(4, 1, name="b")(x)
    return keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))


def _groups(model):
    return {g.name: g for g in surgery.find_channel_groups(model)}


@keras.saving.register_keras_serializable(package="afp_tf_tests")
class ChannelScale(L.Layer):
    """A custom channel-wise layer: one learnable scale per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


@pytest.mark.parametrize(
    "layer, kind",
    [
        (L.LayerNormalization(name="blocker"), "LayerNormalization"),
        (L.Softmax(name="blocker"), "Softmax"),
        (L.Activation("softmax", name="blocker"), "Activation"),
        (L.Reshape((8, 48), name="blocker"), "Reshape"),
        (L.Lambda(lambda t: t * 2.0, name="blocker"), "Lambda"),
        (ChannelScale(name="blocker"), "ChannelScale"),
    ],
)
def test_find_channel_groups_boundary_layer_blocks_group_with_reason(layer, kind):
    middle = (layer, L.Reshape((8, 8, 6))) if kind == "Reshape" else (layer,)
    groups = _groups(_model(*middle))
    assert not groups["a"].prunable
    assert f"'blocker' ({kind})" in groups["a"].reason
    assert groups["b"].prunable


def test_find_channel_groups_grouped_conv_over_two_groups_blocks_with_reason():
    inp = keras.Input((8, 8, 3))
    x = L.Concatenate()([L.Conv2D(2, 1, name="a")(inp), L.Conv2D(2, 1, name="c")(inp)])
    x = L.Conv2D(4, 1, groups=2, name="g")(L.Concatenate()([x, x]))
    groups = _groups(keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))))
    assert not groups["a"].prunable
    assert "'g' is a grouped convolution (groups=2) over channels of several groups" in (
        groups["a"].reason
    )
    assert groups["g"].prunable and groups["g"].divisions == 2


def test_find_channel_groups_softmax_producer_blocks_only_its_output():
    groups = _groups(_model(L.Dense(5, activation="softmax", name="d")))
    assert groups["a"].prunable
    assert not groups["d"].prunable and "softmax" in groups["d"].reason


def test_find_channel_groups_inputs_and_outputs_are_unprunable():
    groups = _groups(_model())
    assert "model input" in groups["input_layer"].reason
    assert "model output" in groups["out"].reason
    assert groups["a"].prunable and groups["a"].producers == ("a",)


def test_remove_filters_partial_concat_coupling_prunable_exact():
    inp = keras.Input((8, 8, 3))
    x = L.Concatenate()([L.Conv2D(3, 1, name="a")(inp), L.Conv2D(3, 1, name="c")(inp)])
    x = L.Add()([L.Conv2D(6, 1, name="p")(inp), x])
    model = randomize(keras.Model(inp, L.Conv2D(2, 1, name="b")(x)))
    group = _groups(model)["p"]
    assert group.prunable and set(group.producers) == {"a", "c", "p"}
    assert group.partial == ("a", "c")
    assert [v.path for v, _ in surgery.filter_weights(model, group)] == ["p/kernel"]
    pruned = surgery.remove_filters(model, {"p": [1, 3, 4]})
    assert [pruned.get_layer(n).filters for n in ("a", "c", "p")] == [2, 1, 3]
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert_same_outputs(pruned, zero_consumer_inputs(model, {"b": [1, 3, 4]}), x)


def test_find_channel_groups_coupling_without_full_producer_unprunable():
    inp = keras.Input((8, 8, 3))
    x = L.Concatenate()([L.Conv2D(2, 1, name="a")(inp), L.Conv2D(4, 1, name="c")(inp)])
    y = L.Concatenate()([L.Conv2D(4, 1, name="d")(inp), L.Conv2D(2, 1, name="e")(inp)])
    model = keras.Model(inp, L.Conv2D(2, 1, name="b")(L.Add()([x, y])))
    coupled = [g for g in _groups(model).values() if "a" in g.producers]
    assert len(coupled) == 1 and set(coupled[0].producers) == {"a", "c", "d", "e"}
    assert not coupled[0].prunable and "no layer produces all of them" in coupled[0].reason


def test_remove_filters_concat_of_same_tensor_removes_both_copies():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    x = L.Conv2D(2, 1, name="b")(L.Concatenate()([a, a]))
    model = randomize(keras.Model(inp, L.GlobalAveragePooling2D()(x)))
    pruned = surgery.remove_filters(model, {"a": [1]})
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert_same_outputs(pruned, zero_consumer_inputs(model, {"b": [1, 5]}), x)


def test_remove_filters_boundary_layers_are_cloned_unchanged():
    model = randomize(_model(L.LayerNormalization(name="ln"), L.Lambda(lambda t: t * 2.0)))
    pruned = surgery.remove_filters(model, {"b": [0, 3]})
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert_same_outputs(pruned, zero_consumer_inputs(model, {"out": [0, 3]}), x)


def test_register_rule_custom_layer_becomes_prunable():
    class ScaleRule(surgery.Rule):
        consistent_calls = False

        def rebuild(self, layer, config, weights, keep):
            return config, [w[keep.inputs[0]] for w in weights]

    model = _model(ChannelScale(name="scale"))
    assert not _groups(model)["a"].prunable
    surgery.register_rule(ChannelScale, ScaleRule())
    model.get_layer("scale").scale.assign(np.arange(1.0, 7.0))
    assert _groups(model)["a"].prunable
    pruned = surgery.remove_filters(model, {"a": [0, 4]})
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert_same_outputs(pruned, zero_consumer_inputs(model, {"b": [0, 4]}), x)
    assert pruned.get_layer("scale").scale.numpy().tolist() == [2.0, 3.0, 4.0, 6.0]


@keras.saving.register_keras_serializable(package="afp_tf_tests")
class FirstHalf(L.Layer):
    """A custom layer that keeps the first half of the channels."""

    def call(self, x):
        return x[..., : x.shape[-1] // 2]


def test_register_rule_wrong_channel_count_becomes_boundary():
    surgery.register_rule(FirstHalf, surgery.Rule())  # wrong: treats it as channel-wise
    groups = _groups(_model(FirstHalf(name="half"), L.Reshape((8, 8, 3))))
    assert not groups["a"].prunable
    assert "its rule gave 6 channels for an output of 3" in groups["a"].reason
    assert not groups["half"].prunable and groups["b"].prunable


def test_register_rule_non_rule_raises_type_error():
    with pytest.raises(TypeError, match="Rule instance"):
        surgery.register_rule(ChannelScale, object())


@pytest.mark.parametrize(
    "removal, match",
    [
        ({"aa": [0]}, r"No channel group named 'aa'.*\['a'\]"),
        ({"out": [0]}, "not prunable: it reaches the model output"),
        ({"a": [6]}, r"\[6\] out of range .* 6 channels"),
        ({"a": [-1]}, "out of range"),
        ({"a": [1, 1]}, r"Duplicate indices \[1\]"),
        ({"a": list(range(6))}, "Cannot remove all 6"),
        ({"a": [1.0]}, "must be integers"),
        ({"a": [True]}, "must be integers"),
        ([("a", [0])], "must map group names"),
    ],
)
def test_remove_filters_bad_request_raises_surgery_error(removal, match):
    with pytest.raises(surgery.SurgeryError, match=match):
        surgery.remove_filters(_model(), removal)


def test_remove_filters_subclassed_model_raises_surgery_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(surgery.SurgeryError, match="subclassed"):
        surgery.find_channel_groups(net)
    assert issubclass(surgery.SurgeryError, ValueError)


def test_filter_weights_producers_and_depthwise_live_variables_with_axes():
    inp = keras.Input((8, 8, 3))
    x = L.BatchNormalization()(L.Conv2D(4, 3, name="a")(inp))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = L.SeparableConv2D(5, 1, name="s")(x)
    x = L.Conv2DTranspose(3, 2, name="t")(x)
    x = L.Dense(7, name="d")(L.Flatten()(L.Conv2D(2, 1, name="c")(x)))
    model = keras.Model(inp, L.Dense(1)(x))
    groups = _groups(model)
    assert groups["a"].passthrough == ("dw",)
    expected = {
        "a": [("a", "kernel", 3), ("dw", "kernel", 2)],
        "s": [("s", "pointwise_kernel", 3)],
        "t": [("t", "kernel", 2)],
        "d": [("d", "kernel", 1)],
    }
    for name, pairs in expected.items():
        got = surgery.filter_weights(model, groups[name])
        assert len(got) == len(pairs)
        for (variable, axis), (layer, attr, want_axis) in zip(got, pairs, strict=True):
            assert variable is getattr(model.get_layer(layer), attr)
            assert axis == want_axis and variable.shape[axis] == groups[name].size
    with pytest.raises(surgery.SurgeryError, match="not prunable"):
        surgery.filter_weights(model, "input_layer")


def test_scale_weights_batchnorms_on_the_group_channels_in_order():
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(4, 3, name="a")(inp)))
    x = L.BatchNormalization(center=False, name="bn2")(L.DepthwiseConv2D(3, name="dw")(x))
    y = L.Concatenate()([L.Conv2D(2, 1, name="c")(x), L.Conv2D(3, 1, name="d")(x)])
    y = L.BatchNormalization(name="bn3")(y)  # over two groups' channels: neither's scale
    model = keras.Model(inp, L.Dense(1)(L.GlobalAveragePooling2D()(y)))
    analysis = surgery.analyze(model)
    groups = {g.name: g for g in analysis.groups}
    assert groups["a"].scales == ("bn1", "bn2")
    assert groups["c"].scales == () and groups["d"].scales == ()
    got = analysis.scale_weights("a")
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    assert [(v.path, axis) for v, axis in got] == [
        (bn1.gamma.path, 0),
        (bn1.beta.path, 0),
        (bn2.gamma.path, 0),
    ]
    assert analysis.scale_weights("c") == []
    with pytest.raises(surgery.SurgeryError, match="not prunable"):
        analysis.scale_weights("input_layer")


def test_get_layer_nested_path_resolves_and_unknown_raises():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(3, name="d")(inner_in), name="inner")
    inp = keras.Input((4,))
    model = keras.Model(inp, inner(inp))
    assert surgery.get_layer(model, "inner/d") is inner.get_layer("d")
    with pytest.raises(surgery.SurgeryError, match="No layer 'x'"):
        surgery.get_layer(model, "inner/x")
