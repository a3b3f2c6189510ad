"""keras-hub models (built from config, no downloads): backbones, classifiers, RetinaNet."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from afp_tf import surgery
from afp_tf.surgery import golden

keras_hub = pytest.importorskip("keras_hub")


def _mobilenet():
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 144]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=32,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=32,
        squeeze_and_excite=0.5,
        image_shape=(32, 32, 3),
    )


def _cspnet():
    return keras_hub.models.CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=2,
        stackwise_depth=[1, 2],
        stackwise_strides=[1, 2],
        stackwise_num_filters=[16, 32],
        stage_type="csp",
        block_type="bottleneck_block",
        bottle_ratio=[0.5],
        expand_ratio=[2.0],
        image_shape=(32, 32, 3),
    )


def _removal(analysis):
    return {g.name: list(range(0, g.size, 3)) for g in analysis.prunable if g.size > 1}


def _x(n=2):
    return np.random.default_rng(1).uniform(0, 1, size=(n, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("build", [_mobilenet, _cspnet], ids=["MobileNetV3", "CSPNet"])
def test_remove_filters_hub_backbone_exact_and_saves(build, tmp_path):
    model = golden.randomize(build())
    analysis = surgery.analyze(model)
    internal = [g for g in analysis.groups if g.name != "input_layer"][:-1]  # last: output
    assert all(g.prunable for g in internal), [(g.name, g.reason) for g in internal]
    removal = _removal(analysis)
    pruned = surgery.remove_filters(model, removal, analysis=analysis)
    assert pruned.count_params() < 0.8 * model.count_params()
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(_x()), pruned(_x()), atol=1e-5)


def test_find_channel_groups_hub_mobilenet_block_names():
    groups = {g.name: g for g in surgery.find_channel_groups(_mobilenet())}
    assert groups["block_1_0/block_1_0_conv1"].prunable
    # the depthwise Conv2D(groups=C) of the block passes its input's channels through
    assert groups["block_1_0/block_1_0_conv1"].passthrough == ("block_1_0/block_1_0_conv2",)


def test_remove_filters_hub_image_classifier_in_place_keeps_preprocessor(tmp_path):
    converter = keras_hub.layers.MobileNetImageConverter(image_size=(32, 32), scale=1 / 255.0)
    preprocessor = keras_hub.models.MobileNetImageClassifierPreprocessor(converter)
    model = keras_hub.models.MobileNetImageClassifier(
        backbone=_mobilenet(), num_classes=3, num_features=16, preprocessor=preprocessor
    )
    golden.randomize(model)
    analysis = surgery.analyze(model)
    assert not analysis.group("classifier_conv").prunable
    assert (
        "head of the keras-hub MobileNetImageClassifier" in analysis.group("classifier_conv").reason
    )
    removal = _removal(analysis)
    pruned = surgery.remove_filters(model, removal, analysis=analysis)
    assert type(pruned) is type(model) and pruned.preprocessor is preprocessor
    assert golden.golden_error(model, removal, _x(), pruned) < 1e-4
    raw = _x() * 255.0
    np.testing.assert_allclose(pruned.predict(raw, verbose=0), pruned(_x()), atol=1e-5)
    path = str(tmp_path / "clf.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.preprocessor is not None
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), pruned(_x()), atol=1e-5)
    assert tf.lite.TFLiteConverter.from_keras_model(pruned).convert()


def test_remove_filters_hub_retinanet_backbone_fpn_towers_prunable_exact():
    image = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=(64, 64, 3),
    )
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=image, min_level=3, max_level=4, use_p5=False, image_shape=(64, 64, 3)
    )
    anchors = keras_hub.layers.AnchorGenerator(
        "yxyx", min_level=3, max_level=4, num_scales=1, aspect_ratios=[1.0], anchor_size=4
    )
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, anchor_generator=anchors, pre_logits_num_conv_layers=1
    )
    golden.randomize(model)
    analysis = surgery.analyze(model)
    blocked = sorted(g.name for g in analysis.groups if not g.prunable)
    assert blocked == [
        "bbox_regression",
        "box_head/logits_layer",
        "classification_head/logits_layer",
        "cls_logits",
        "images",
    ]
    names = {g.name for g in analysis.prunable}
    fpn = "retina_net_backbone/fpn/lateral_conv_P4"
    assert {fpn, "box_head/conv2d_0", "classification_head/conv2d_0"} <= names
    removal = _removal(analysis)
    x = np.random.default_rng(1).uniform(size=(1, 64, 64, 3)).astype("float32")
    assert golden.golden_error(model, removal, x) < 1e-4


def test_prune_hub_image_classifier_returns_compiled_classifier():
    import afp_tf

    model = keras_hub.models.MobileNetImageClassifier(
        backbone=_mobilenet(), num_classes=2, num_features=16
    )
    x = _x(64)
    y = (x[..., 0].mean(axis=(1, 2)) > 0.5).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    result = afp_tf.prune(
        model,
        (x, y),
        (x, y),
        tolerance=0.3,
        max_rounds=1,
        shrink_epochs=1,
        recovery_epochs=0,
        batch_size=32,
        progress=False,
    )
    assert type(result.model) is type(model) and result.model.compiled
    assert result.params[1] < result.params[0]
    assert result.model.predict(x[:2], verbose=0).shape == (2, 2)
