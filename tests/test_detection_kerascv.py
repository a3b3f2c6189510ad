"""Pruning the backbone of a keras-cv YOLOV8Detector built from config (no download)."""

import keras
import keras_cv
import numpy as np
import pytest

from afp_tf.detection.kerascv import FunctionalBackbone, prune_backbone


def _detector(kind="yolo"):
    backbone = keras_cv.models.YOLOV8Backbone(
        stackwise_channels=[16, 32, 64, 64],
        stackwise_depth=[1, 1, 1, 1],
        include_rescaling=False,
        input_shape=(64, 64, 3),
    )
    if kind == "retinanet":
        return keras_cv.models.RetinaNet(
            num_classes=3, bounding_box_format="xyxy", backbone=backbone
        )
    return keras_cv.models.YOLOV8Detector(
        num_classes=3, bounding_box_format="xyxy", backbone=backbone, fpn_depth=1
    )


@pytest.fixture(params=["yolo", "retinanet"])
def detector(request):
    return _detector(request.param)


def test_prune_backbone_keeps_pyramid_and_head_weights(detector):
    pruned = prune_backbone(detector, lambda g: list(range(g.size // 2)))
    assert isinstance(pruned.backbone, FunctionalBackbone)
    assert pruned.backbone.count_params() < detector.backbone.count_params()
    for level in ("P3", "P4", "P5"):
        name = detector.backbone.pyramid_level_inputs[level]
        old = detector.backbone.get_layer(name).output.shape
        assert pruned.backbone.get_layer(name).output.shape == old
    head = [layer for layer in detector.layers if layer.weights][-1]  # last prediction layer
    head_copy = [layer for layer in pruned.layers if layer.weights][-1]
    for a, b in zip(head.weights, head_copy.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_prune_backbone_no_removal_same_predictions(detector):
    copy = prune_backbone(detector, lambda g: [])
    x = np.random.default_rng(0).random((1, 64, 64, 3)).astype(np.float32)
    a, b = detector(x), copy(x)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)


@pytest.mark.slow
def test_pruned_detector_trains_predicts_and_saves(tmp_path):
    detector = _detector("yolo")
    pruned = prune_backbone(detector, lambda g: list(range(g.size // 2)))
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    y = {
        "boxes": np.array(
            [[[5, 5, 30, 30], [-1, -1, -1, -1]], [[10, 10, 50, 40], [1, 1, 20, 20]]], np.float32
        ),
        "classes": np.array([[0, -1], [1, 2]], np.float32),
    }
    pruned.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        classification_loss="binary_crossentropy",
        box_loss="ciou",
        jit_compile=False,
    )
    before = [w.numpy().copy() for w in pruned.backbone.trainable_weights[:1]]
    # keras-cv's train_step unpacks (x, y) only, so fit() rather than train_on_batch().
    loss = pruned.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss)
    assert not np.array_equal(before[0], pruned.backbone.trainable_weights[0].numpy())
    predictions = pruned.predict(x, verbose=0)
    assert predictions["boxes"].shape == (2, 100, 4)
    path = tmp_path / "pruned_yolo.keras"
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.count_params() == pruned.count_params()
    np.testing.assert_allclose(reloaded(x)["boxes"], pruned(x)["boxes"], atol=1e-5)
