"""Composite layers (subclassed layers made of layers): traced, pruned through, inlined."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from surgery_cases import randomize

from afp_tf import surgery
from afp_tf.surgery import golden
from afp_tf.surgery.keras_internals import Functional

L = keras.layers


class SEResidualBlock(L.Layer):
    """A user's residual block with squeeze-and-excite (deliberately not registered)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = L.Conv2D(filters, 3, padding="same", name="conv1")
        self.bn1 = L.BatchNormalization(name="bn1")
        self.conv2 = L.Conv2D(filters, 3, padding="same", name="conv2")
        self.se_reduce = L.Conv2D(max(1, filters // 4), 1, activation="relu", name="se_reduce")
        self.se_expand = L.Conv2D(filters, 1, activation="sigmoid", name="se_expand")

    def call(self, x):
        y = keras.ops.relu(self.bn1(self.conv1(x)))
        y = self.conv2(y)
        s = self.se_expand(self.se_reduce(keras.ops.mean(y, axis=(1, 2), keepdims=True)))
        return keras.ops.relu(x + y * s)


class TFOpsBlock(L.Layer):
    """A layer whose call uses TensorFlow ops: it cannot run on symbolic Keras tensors."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(8, 1, name="conv")

    def call(self, x):
        return tf.nn.relu(self.conv(x))


def _model(block=SEResidualBlock):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = block(8, name="block_1_0")(x) if block is SEResidualBlock else block(name="block_1_0")(x)
    x = SEResidualBlock(8, name="block_1_1")(x)
    x = L.Conv2D(6, 1, name="head")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="out")(L.GlobalAveragePooling2D()(x))))


def _x():
    return np.random.default_rng(1).uniform(-1, 1, size=(2, 8, 8, 3)).astype("float32")


def test_find_channel_groups_composite_producers_named_by_kernel_path():
    groups = {g.name: g for g in surgery.find_channel_groups(_model())}
    assert {"block_1_0/conv1", "block_1_0/se_reduce", "block_1_1/conv1", "head"} <= set(groups)
    residual = groups["stem"]
    assert residual.prunable
    assert set(residual.producers) == {
        "stem",
        "block_1_0/conv2",
        "block_1_0/se_expand",
        "block_1_1/conv2",
        "block_1_1/se_expand",
    }
    assert [g.name for g in groups.values() if not g.prunable] == ["input_layer", "out"]


def test_remove_filters_composite_inlined_exact_and_loads_without_class(tmp_path):
    model = _model()
    removal = {"stem": [0, 5], "block_1_0/conv1": [1, 2, 3], "block_1_1/se_reduce": [1]}
    pruned = surgery.remove_filters(model, removal)
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4
    block = pruned.get_layer("block_1_0")
    assert isinstance(block, Functional)
    assert block.get_layer("conv1").filters == 5 and block.get_layer("conv2").filters == 6
    assert "SEResidualBlock" not in json.dumps(pruned.get_config(), default=str)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)  # SEResidualBlock is not registered anywhere
    np.testing.assert_allclose(loaded(_x()), pruned(_x()), rtol=1e-5, atol=1e-6)


def test_remove_filters_composite_group_names_stable_across_surgery():
    model = _model()
    names = [g.name for g in surgery.find_channel_groups(model)]
    once = surgery.remove_filters(model, {"block_1_0/conv1": [0]})
    assert [g.name for g in surgery.find_channel_groups(once)] == names
    twice = surgery.remove_filters(once, {"block_1_0/conv1": [0]})
    assert twice.get_layer("block_1_0").get_layer("conv1").filters == 6


def test_find_channel_groups_untraceable_composite_boundary_with_reason():
    groups = {g.name: g for g in surgery.find_channel_groups(_model(TFOpsBlock))}
    reason = groups["stem"].reason
    assert not groups["stem"].prunable
    assert "'block_1_0' (TFOpsBlock)" in reason and "cannot be traced on symbolic" in reason
    assert groups["block_1_1/conv1"].prunable  # the next (traceable) block is looked inside


def test_filter_weights_composite_producer_kernels():
    model = _model()
    analysis = surgery.analyze(model)
    pairs = analysis.filter_weights("block_1_0/conv1")
    assert [(v.path, axis) for v, axis in pairs] == [("block_1_0/conv1/kernel", 3)]
    assert analysis.consumers("block_1_0/conv1") == ("block_1_0/conv2",)
    with pytest.raises(surgery.SurgeryError, match="not prunable"):
        analysis.filter_weights("input_layer")
