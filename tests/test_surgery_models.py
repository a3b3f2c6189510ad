"""Whole-model surgery: applications models, no mutation, preserved configs, save/load, repeats."""

import keras
import numpy as np
import pytest
from surgery_cases import assert_same_outputs, randomize, zero_consumer_inputs

from afp_tf import surgery
from afp_tf.surgery.analysis import analyze
from afp_tf.surgery.keras_internals import Functional

L = keras.layers


def _random_removal(model, rng, fraction=0.25):
    return {
        g.name: sorted(rng.choice(g.size, max(1, int(g.size * fraction)), replace=False).tolist())
        for g in surgery.find_channel_groups(model)
        if g.prunable and g.size > 1
    }


def _consumer_zero(model, removal):
    """Input positions of every channel-mixing consumer that carry a removed channel.

    Single-call layers only. A depthwise convolution is not a consumer here: its channels belong
    to the group and are zeroed at the layer that mixes them.
    """
    analysis = analyze(model)
    removed = np.zeros(len(analysis.roots), bool)
    for name, indices in removal.items():
        removed[analysis.orders[name][indices]] = True
    gone = removed[analysis.roots]
    zero = {}
    for layer in model.layers:
        if type(layer) in (L.Conv2D, L.Dense, L.SeparableConv2D, L.Conv2DTranspose):
            positions = np.flatnonzero(gone[analysis.labels[id(layer.input)]])
            if positions.size:
                zero[layer.name] = positions
    return zero


def _small_net():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, name="a", kernel_regularizer="l2", kernel_constraint="max_norm")(inp)
    x = L.BatchNormalization(name="bn", trainable=False)(x)
    x = L.Conv2D(5, 3, name="b", dtype="mixed_bfloat16")(L.ReLU()(x))
    x = L.Conv2D(4, 1, name="c")(L.Activation("relu", dtype="float32")(x))
    return randomize(keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))))


def _x(shape, n=2):
    return np.random.default_rng(1).uniform(-1, 1, size=(n, *shape)).astype("float32")


@pytest.mark.parametrize(
    "build, shape",
    [
        (
            lambda: keras.applications.MobileNetV2((96, 96, 3), alpha=0.35, weights=None),
            (96, 96, 3),
        ),
        (lambda: keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), (64, 64, 3)),
        (
            lambda: keras.applications.MobileNetV3Small((64, 64, 3), weights=None),
            (64, 64, 3),
        ),
        (lambda: keras.applications.Xception(weights=None, input_shape=(71, 71, 3)), (71, 71, 3)),
    ],
    ids=["MobileNetV2", "ResNet50", "MobileNetV3Small", "Xception"],
)
def test_remove_filters_applications_match_zeroed_consumers(build, shape):
    model = randomize(build())
    groups = surgery.find_channel_groups(model)
    blocked = [g for g in groups if not g.prunable]
    # Only the input and the softmax classifier block (MobileNetV3: logits conv + softmax).
    assert len(blocked) <= 3, [(g.name, g.reason) for g in blocked]
    removal = _random_removal(model, np.random.default_rng(0))
    pruned = surgery.remove_filters(model, removal)
    assert type(pruned) is Functional
    assert pruned.count_params() < 0.8 * model.count_params()
    assert_same_outputs(
        pruned, zero_consumer_inputs(model, _consumer_zero(model, removal)), _x(shape)
    )


def test_remove_filters_input_model_not_mutated():
    model = _small_net()
    before = [w.copy() for w in model.get_weights()]
    layers, config = list(model.layers), model.get_config()
    surgery.remove_filters(model, {"a": [0, 2], "b": [1]})
    assert model.layers == layers and model.get_config() == config
    assert all(np.array_equal(u, v) for u, v in zip(before, model.get_weights(), strict=True))


def test_copy_model_equal_weights_new_variables_same_outputs():
    model = _small_net()
    copy = surgery.copy_model(model, analysis=analyze(model))
    assert [v.path for v in copy.weights] == [v.path for v in model.weights]
    pairs = zip(copy.get_weights(), model.get_weights(), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    assert not {id(v) for v in copy.weights} & {id(v) for v in model.weights}
    assert_same_outputs(copy, model, _x((8, 8, 3)), tol=1e-6)
    assert [la.name for la in copy.layers] == [la.name for la in model.layers]
    assert not copy.compiled
    before = model.get_weights()
    copy.weights[0].assign(copy.weights[0] + 1.0)  # separate: the original keeps its values
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_remove_filters_empty_removal_is_a_copy_like_copy_model():
    model = _small_net()
    copy = surgery.remove_filters(model, {})
    assert_same_outputs(copy, surgery.copy_model(model), _x((8, 8, 3)), tol=1e-6)
    assert not {id(v) for v in copy.weights} & {id(v) for v in model.weights}


def test_remove_filters_keeps_trainable_regularizer_constraint_dtype_policy():
    pruned = surgery.remove_filters(_small_net(), {"a": [0, 2], "b": [1]})
    a, bn, b = (pruned.get_layer(n) for n in ("a", "bn", "b"))
    assert a.kernel.shape[-1] == 4 and b.kernel.shape[-2:] == (4, 4)
    assert isinstance(a.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(a.kernel_constraint, keras.constraints.MaxNorm)
    assert not bn.trainable and len(bn.trainable_weights) == 0
    assert b.dtype_policy.name == "mixed_bfloat16"


def test_remove_filters_pruned_model_keras_roundtrip(tmp_path):
    pruned = surgery.remove_filters(_small_net(), {"a": [0, 2], "c": [3]})
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert_same_outputs(loaded, pruned, _x((8, 8, 3)), tol=1e-6)


def test_remove_filters_twice_keeps_group_names():
    model = _small_net()
    once = surgery.remove_filters(model, {"a": [0, 2], "b": [1]})
    names = [g.name for g in surgery.find_channel_groups(model)]
    assert [g.name for g in surgery.find_channel_groups(once)] == names
    twice = surgery.remove_filters(once, {"a": [0], "b": [3]})
    sizes = {g.name: g.size for g in surgery.find_channel_groups(twice)}
    assert (sizes["a"], sizes["b"], sizes["c"]) == (3, 3, 4)
    zero = {"b": [0, 1, 2], "c": [1, 4]}
    assert_same_outputs(twice, zero_consumer_inputs(model, zero), _x((8, 8, 3)))


def test_remove_filters_functional_subclass_returns_plain_functional():
    class Backbone(keras.Model):
        def __init__(self, **kwargs):
            inp = keras.Input((8, 8, 3))
            out = L.Conv2D(3, 1, name="b")(L.Conv2D(4, 3, name="a")(inp))
            super().__init__(inp, out, **kwargs)

    model = Backbone(name="backbone")
    pruned = surgery.remove_filters(model, {"a": [1]})
    assert type(pruned) is Functional
    assert pruned.name == "backbone" and pruned.get_layer("a").filters == 3


def test_remove_filters_sequential_model_supported():
    model = randomize(
        keras.Sequential(
            [keras.Input((8, 8, 3)), L.Conv2D(6, 3, name="a"), L.BatchNormalization(), L.ReLU()]
            + [L.Flatten(), L.Dense(3, name="out")]
        )
    )
    pruned = surgery.remove_filters(model, {"a": [5]})
    zero = {"out": [p * 6 + 5 for p in range(36)]}
    assert_same_outputs(pruned, zero_consumer_inputs(model, zero), _x((8, 8, 3)))
