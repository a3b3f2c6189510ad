"""Tests of the model zoo: builds, shapes, names, literature anchors, errors."""

import keras
import numpy as np
import pytest

from afp_tf import models, stats, surgery

# Classifier of the zoo -> input shape used to test it (small, to stay fast).
_CLASSIFIERS = {
    "lenet5": (28, 28, 1),
    "vgg16": (32, 32, 3),
    "resnet56": (16, 16, 3),
    "resnet110": (16, 16, 3),
    "mobilenet": (32, 32, 3),
}

# Literature anchors (one MAC = one multiply-add), on 32×32×3 with 10 classes: VGG-16 and the
# CIFAR ResNets from Li et al. 2017 / He et al. 2016 as published. Tolerance: 2%,
# except ResNet-110's "1.7 M", printed to two digits (±0.05 M, i.e. 3%). Our ResNets use
# projection shortcuts, which add 0.26 M MACs and a few thousand params to the option-A figures.
_ANCHORS = [
    ("vgg16", 15.0e6, 313e6, 0.02),
    ("resnet56", 0.86e6, 125e6, 0.02),
    ("resnet110", 1.7e6, 253e6, 0.03),
]


def test_available_models_lists_the_zoo():
    assert set(_CLASSIFIERS) <= set(models.available_models())
    assert models.available_models() == sorted(models.available_models())


@pytest.mark.parametrize("name", sorted(_CLASSIFIERS))
def test_build_model_forward_batch_of_two_gives_logits(name):
    model = models.build_model(name, _CLASSIFIERS[name], 7)
    x = np.random.default_rng(0).normal(size=(2, *_CLASSIFIERS[name])).astype("float32")
    head = model.layers[-1]
    features = keras.Model(model.inputs, head.input)(x, training=False).numpy()
    kernel = np.random.default_rng(1).normal(size=head.kernel.shape).astype("float32")
    bias = np.arange(7, dtype="float32") - 3
    head.set_weights([kernel, bias])
    # logits: the head's affine map of each example's own features, no softmax or clipping
    y = model(x, training=False).numpy()
    np.testing.assert_allclose(y, features @ kernel + bias, rtol=1e-4, atol=1e-4)
    head.set_weights([np.zeros_like(kernel), bias])
    np.testing.assert_array_equal(model(x, training=False), [[-3, -2, -1, 0, 1, 2, 3]] * 2)
    assert model.name == name
    assert model.layers[-1].activation is keras.activations.linear
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


@pytest.mark.parametrize("name", sorted(_CLASSIFIERS))
def test_build_model_twice_gives_same_unique_layer_names(name):
    first = [layer.name for layer in models.build_model(name, _CLASSIFIERS[name], 3).layers]
    second = [layer.name for layer in models.build_model(name, _CLASSIFIERS[name], 3).layers]
    assert first == second
    assert len(set(first)) == len(first)


@pytest.mark.parametrize("name", ["lenet5", "vgg16", "resnet56", "mobilenet"])
def test_zoo_model_every_conv_is_in_a_prunable_group(name):
    kwargs = {"width": 0.25} if name == "vgg16" else {}
    model = models.build_model(name, _CLASSIFIERS[name], 10, **kwargs)
    prunable = {p for g in surgery.find_channel_groups(model) if g.prunable for p in g.producers}
    convs = {layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert convs and convs <= prunable


def test_lenet5_mnist_shape_matches_caffe_counts_exactly():
    result = stats.model_stats(models.build_model("lenet5", (28, 28, 1), 10))
    assert result.params == 431_080
    assert result.macs == 2_293_000
    assert {r.name: r.macs for r in result.per_layer if r.macs} == {
        "conv1": 288_000,
        "conv2": 1_600_000,
        "fc1": 400_000,
        "fc2": 5_000,
    }


@pytest.mark.parametrize(("name", "params", "macs", "tol"), _ANCHORS)
def test_cifar_model_counts_match_literature(name, params, macs, tol):
    result = stats.model_stats(models.build_model(name, (32, 32, 3), 10))
    assert result.params == pytest.approx(params, rel=tol)
    assert result.macs == pytest.approx(macs, rel=tol)


def test_mobilenet_imagenet_counts_match_paper():
    # Howard et al. 2017, Table 1 row 1.0 MobileNet-224: 569 M mult-adds, 4.2 M parameters.
    result = stats.model_stats(models.build_model("mobilenet", (224, 224, 3), 1000))
    assert result.macs == pytest.approx(569e6, rel=0.01)
    assert result.params == pytest.approx(4.2e6, rel=0.02)


@pytest.mark.parametrize(("side", "final"), [(224, 7), (64, 2), (32, 2), (28, 4)])
def test_mobilenet_input_size_keeps_final_map_at_least_two(side, final):
    model = models.build_model("mobilenet", (side, side, 3), 10)
    assert tuple(model.get_layer("block13_pw_relu").output.shape[1:3]) == (final, final)


def test_mobilenet_alpha_scales_channels():
    model = models.build_model("mobilenet", (32, 32, 3), 10, alpha=0.5)
    assert model.get_layer("conv1").filters == 16
    assert model.get_layer("block13_pw").filters == 512


def test_vgg16_width_multiplier_shrinks_params():
    full = models.build_model("vgg16", (32, 32, 3), 10).count_params()
    quarter = models.build_model("vgg16", (32, 32, 3), 10, width=0.25)
    assert quarter.get_layer("block5_conv3").filters == 128
    assert quarter.count_params() < full / 10


def test_resnet56_width_multiplier_scales_every_stage():
    model = models.build_model("resnet56", (16, 16, 3), 10, width=0.25)
    assert model.get_layer("conv1").filters == 4
    assert model.get_layer("stage1_block9_conv2").filters == 4
    assert model.get_layer("stage2_block1_shortcut_conv").filters == 8
    assert model.get_layer("stage3_block9_conv2").filters == 16
    groups = [g for g in surgery.find_channel_groups(model) if g.prunable]
    assert len(groups) == 3 * 9 + 3  # one per block's conv1, plus one residual group per stage


def test_model_kwargs_width_maps_to_resnet_width_keyword():
    from afp_tf.run import config_lib, task_builders

    cfg = config_lib.load_config("resnet56_fashion_mnist")
    cfg.model.width = 0.5
    assert task_builders.model_kwargs(cfg) == {"width": 0.5}
    cfg.model.name = "lenet5"
    with pytest.raises(ValueError, match="has no width multiplier"):
        task_builders.model_kwargs(cfg)


def test_resnet_uses_projection_only_where_shape_changes():
    names = {layer.name for layer in models.build_model("resnet56", (16, 16, 3), 10).layers}
    assert {"stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"} <= names
    assert "stage1_block1_shortcut_conv" not in names
    assert "stage2_block2_shortcut_conv" not in names
    assert {"conv1", "stage3_block9_conv2", "stage3_block9_add"} <= names


def test_build_model_keras_application_has_logits_head():
    model = models.build_model("applications.MobileNetV2", (96, 96, 3), 10, alpha=0.35)
    y = model(np.zeros((2, 96, 96, 3), "float32"), training=False)
    assert tuple(y.shape) == (2, 10)
    assert model.layers[-1].activation is keras.activations.linear


def test_build_model_unknown_application_suggests_spelling():
    with pytest.raises(ValueError, match=r"Did you mean 'applications\.MobileNetV2'"):
        models.build_model("applications.MobilenetV2", (96, 96, 3), 10)


def test_build_model_application_reserved_kwarg_raises():
    with pytest.raises(ValueError, match="weights"):
        models.build_model("applications.MobileNetV2", (96, 96, 3), 10, weights="imagenet")


def test_build_model_unknown_name_lists_names_and_suggests():
    with pytest.raises(ValueError, match="Did you mean 'resnet56'") as err:
        models.build_model("resnet57", (32, 32, 3), 10)
    assert "lenet5" in str(err.value) and "applications.<Name>" in str(err.value)


@pytest.mark.parametrize(
    ("shape", "classes", "match"),
    [((), 10, "input_shape"), ((32, 0, 3), 10, "input_shape"), ((32, 32, 3), 0, "num_classes")],
)
def test_build_model_bad_shape_or_classes_raises(shape, classes, match):
    with pytest.raises(ValueError, match=match):
        models.build_model("lenet5", shape, classes)


def test_register_model_new_name_builds_and_duplicate_raises():
    @models.register_model("test_tiny")
    def tiny(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(inputs))

    try:
        assert "test_tiny" in models.available_models()
        assert models.build_model("test_tiny", (4,), 2).output.shape[-1] == 2
        with pytest.raises(ValueError, match="already registered"):
            models.register_model("test_tiny")(lambda input_shape, num_classes: None)
    finally:
        models._REGISTRY.pop("test_tiny")


def test_register_model_applications_prefix_raises():
    with pytest.raises(ValueError, match="reserved"):
        models.register_model("applications.Mine")(lambda input_shape, num_classes: None)
