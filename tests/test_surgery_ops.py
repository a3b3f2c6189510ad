"""Golden tests of the rules for split, grouped convolutions, reductions and ops activations."""

import keras
import numpy as np
import pytest
from surgery_cases import randomize

from afp_tf import surgery
from afp_tf.surgery import golden

L = keras.layers
ops = keras.ops


def _x(shape=(8, 8, 3)):
    return np.random.default_rng(1).uniform(-1, 1, size=(2, *shape)).astype("float32")


def _head(x, inp):
    return randomize(keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))))


def _groups(model):
    return {g.name: g for g in surgery.find_channel_groups(model)}


@pytest.mark.parametrize("sections", [2, [3, 5]], ids=["halves", "indices"])
def test_remove_filters_split_channels_recomputes_sizes_exactly(sections):
    inp = keras.Input((8, 8, 3))
    a = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="a")(inp))
    parts = ops.split(a, sections, axis=-1)
    x = L.Concatenate()([L.Conv2D(4, 1, name=f"c{i}")(p) for i, p in enumerate(parts)])
    model = _head(x, inp)
    assert _groups(model)["a"].prunable
    removal = {"a": [0, 4, 6]}
    pruned = surgery.remove_filters(model, removal)
    sizes = [pruned.get_layer(f"c{i}").kernel.shape[-2] for i in range(len(parts))]
    assert sizes == ([3, 2] if sections == 2 else [2, 1, 2])
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4


def test_remove_filters_split_spatial_axis_keeps_channels_whole():
    inp = keras.Input((8, 8, 3))
    top, bottom = ops.split(L.Conv2D(6, 3, padding="same", name="a")(inp), 2, axis=1)
    x = L.Add()([L.Conv2D(4, 1, name="b")(top), L.Conv2D(4, 1, name="c")(bottom)])
    model = _head(x, inp)
    pruned = surgery.remove_filters(model, {"a": [1, 2]})
    assert pruned.get_layer("b").kernel.shape[-2] == pruned.get_layer("c").kernel.shape[-2] == 4
    assert golden.golden_error(model, {"a": [1, 2]}, _x(), pruned) < 1e-4


@pytest.mark.parametrize("multiplier", [1, 2])
def test_remove_filters_grouped_conv_groups_equal_channels_acts_depthwise(multiplier):
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    x = L.Conv2D(6 * multiplier, 3, groups=6, padding="same", name="dw")(a)
    model = _head(L.Conv2D(4, 1, name="b")(L.BatchNormalization()(x)), inp)
    group = _groups(model)["a"]
    assert group.prunable and "dw" not in group.producers
    assert group.passthrough == (("dw",) if multiplier == 1 else ())
    removal = {"a": [0, 5]}
    pruned = surgery.remove_filters(model, removal)
    dw = pruned.get_layer("dw")
    assert (dw.groups, dw.filters) == (4, 4 * multiplier)
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4
    if multiplier == 1:
        axes = [axis for _, axis in surgery.filter_weights(model, group)]
        assert axes == [3, 3]  # a's filters, then dw's per-channel kernels


def _grouped():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(inp)
    g = L.Conv2D(6, 3, groups=2, padding="same", name="g")(L.BatchNormalization()(a))
    return _head(L.Conv2D(4, 1, name="b")(L.ReLU()(g)), inp)


def test_remove_filters_grouped_conv_same_count_per_group_exact():
    model = _grouped()
    groups = _groups(model)
    assert (groups["a"].divisions, groups["g"].divisions) == (2, 2)
    removal = {"a": [1, 2, 4, 7], "g": [0, 5]}  # two of each division of 4; one of each of 3
    pruned = surgery.remove_filters(model, removal)
    g = pruned.get_layer("g")
    assert (g.groups, g.filters, g.kernel.shape[-2]) == (2, 4, 2)
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4


def test_remove_filters_grouped_conv_unequal_per_group_raises():
    with pytest.raises(surgery.SurgeryError, match=r"same number .* 2 divisions of 4, got \[2, 0"):
        surgery.remove_filters(_grouped(), {"a": [0, 1]})


@pytest.mark.parametrize(
    "reduce",
    [
        lambda t: ops.mean(t, axis=(1, 2), keepdims=True),
        lambda t: ops.reshape(ops.max(t, axis=[1, 2]), (-1, 1, 1, t.shape[-1])),
        lambda t: ops.expand_dims(ops.expand_dims(ops.sum(t, axis=(1, 2)), 1), 1),
    ],
    ids=["mean-keepdims", "max", "sum"],
)
def test_remove_filters_squeeze_excite_with_reduction_exact(reduce):
    inp = keras.Input((8, 8, 3))
    a = L.BatchNormalization(name="bn")(L.Conv2D(6, 3, padding="same", name="a")(inp))
    s = L.Conv2D(3, 1, activation="relu", name="se1")(reduce(a))
    s = L.Conv2D(6, 1, name="se2")(s)
    x = L.Multiply()([a, keras.activations.relu(s, max_value=6.0) / 6.0])
    model = _head(L.Conv2D(4, 1, name="b")(x), inp)
    groups = _groups(model)
    assert groups["a"].prunable and groups["se1"].prunable
    assert groups["a"].producers == ("a", "se2")
    removal = {"a": [2, 3], "se1": [0]}
    assert golden.golden_error(model, removal, _x()) < 1e-4


def test_find_channel_groups_reduction_over_channels_is_boundary():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    x = L.Multiply()([a, ops.mean(a, axis=-1, keepdims=True)])
    groups = _groups(_head(L.Conv2D(4, 1, name="b")(x), inp))
    assert not groups["a"].prunable
    assert "(Mean): it reduces over the channel axis" in groups["a"].reason


def test_remove_filters_relu_max_value_layer_and_op_exact():
    inp = keras.Input((8, 8, 3))
    a = L.ReLU(max_value=6.0)(L.Conv2D(6, 3, padding="same", name="a")(inp))
    x = keras.activations.relu(L.Conv2D(5, 1, name="b")(a), max_value=6.0)
    model = _head(L.Conv2D(4, 1, name="c")(x), inp)
    groups = _groups(model)
    assert groups["a"].prunable and groups["b"].prunable
    removal = {"a": [0], "b": [1, 4]}
    assert golden.golden_error(model, removal, _x()) < 1e-4


@pytest.mark.parametrize(
    "rearrange",
    [
        lambda t: ops.repeat(ops.repeat(t, 2, axis=1), 2, axis=2),  # YOLOv8's upsampling
        lambda t: ops.tile(t, (1, 2, 1, 1)),
        lambda t: ops.pad(t, [[0, 0], [1, 1], [2, 0], [0, 0]], mode="reflect"),
        lambda t: ops.flip(t, axis=1),
        lambda t: ops.roll(t, 3, axis=2),
        lambda t: ops.transpose(t, (0, 2, 1, 3)),
    ],
    ids=["repeat", "tile", "pad", "flip", "roll", "transpose"],
)
def test_remove_filters_spatial_rearrangement_passes_channels_exact(rearrange):
    inp = keras.Input((8, 8, 3))
    a = L.BatchNormalization(name="bn")(L.Conv2D(6, 3, padding="same", name="a")(inp))
    model = _head(L.Conv2D(4, 1, name="b")(rearrange(a)), inp)
    assert _groups(model)["a"].prunable
    removal = {"a": [0, 3, 5]}
    pruned = surgery.remove_filters(model, removal)
    assert pruned.get_layer("b").kernel.shape[-2] == 3
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4


@pytest.mark.parametrize(
    "rearrange",
    [
        lambda t: ops.repeat(t, 2, axis=-1),
        lambda t: ops.tile(t, (1, 1, 1, 2)),
        lambda t: ops.flip(t, axis=3),
        lambda t: ops.transpose(t, (0, 3, 1, 2)),
        lambda t: ops.pad(t, 1),
    ],
    ids=["repeat", "tile", "flip", "transpose", "pad-every-axis"],
)
def test_find_channel_groups_rearranging_channel_axis_is_boundary(rearrange):
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    groups = _groups(_head(L.Conv2D(4, 1, name="b")(rearrange(a)), inp))
    assert not groups["a"].prunable
    assert "it rearranges the channel axis" in groups["a"].reason
