"""Every Keras class afp_tf registers survives serialize -> deserialize with the same config
and the same behaviour; a newly registered class without a case here fails the first test."""

import importlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import afp_tf


def _registered() -> set[str]:
    for module in pkgutil.walk_packages(afp_tf.__path__, "afp_tf."):
        importlib.import_module(module.name)
    return {name for name in keras.saving.get_custom_objects() if name.startswith("afp_tf>")}


def _round_trip(obj):
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))


def _orthogonal_regularizer():
    from afp_tf.method.regularizers import OrthogonalRegularizer

    args = {"factor": 0.3, "mode": "depthwise", "normalize": True, "epsilon": 0.5}
    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 4, 2)), tf.float32)
    return OrthogonalRegularizer(**args), lambda r: float(r(kernel)), args


def _ssd_loss():
    from afp_tf.detection.anchors import AnchorSpec
    from afp_tf.detection.loss import SSDLoss

    spec = AnchorSpec.for_object_sizes(8, 32)
    args = {
        "num_classes": 3,
        "neg_pos_ratio": 2.0,
        "min_negatives": 5,
        "iou_threshold": 0.4,
        "name": "ssd",
    }
    loss = SSDLoss(spec, image_size=(32, 32), **args)
    rng = np.random.default_rng(1)
    y_pred = tf.constant(rng.normal(size=(2, len(loss.boxes), 8)), tf.float32)
    y_true = tf.constant([[[0.1, 0.1, 0.5, 0.6, 2]], [[0.0, 0.0, 0.0, 0.0, -1]]], tf.float32)
    return loss, lambda lo: lo(y_true, y_pred).numpy(), args


def _functional_backbone():
    from afp_tf.detection.kerascv import FunctionalBackbone

    inputs = keras.Input((16, 16, 3))
    p3 = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="p3")(inputs)
    p4 = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="p4")(p3)
    backbone = FunctionalBackbone(inputs, p4, {"P3": "p3", "P4": "p4"}, name="tiny")
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 3)).astype(np.float32)

    def behaviour(b):
        b.set_weights(backbone.get_weights())
        return b.pyramid_level_inputs, np.asarray(b(x))

    return backbone, behaviour, {"pyramid_level_inputs": {"P3": "p3", "P4": "p4"}}


def _roi_align():
    from afp_tf.detection.roi_align import ROIAlign

    args = {"image_size": [64, 64], "pool_size": 2, "sampling_ratio": 1, "canonical_size": 16.0}
    rng = np.random.default_rng(3)
    fine = tf.constant(rng.normal(size=(1, 16, 16, 3)), tf.float32)
    coarse = tf.constant(rng.normal(size=(1, 8, 8, 3)), tf.float32)
    boxes = tf.constant([[[0.1, 0.1, 0.3, 0.3], [0.2, 0.1, 0.9, 0.8]]], tf.float32)
    return ROIAlign(**args), lambda layer: layer([fine, coarse, boxes]).numpy(), args


def _frcnn_anchors():
    from afp_tf.models.frcnn import rpn_anchors

    return rpn_anchors(16, 1, (1.0,))


def _rpn_proposals():
    from afp_tf.detection.proposals import RPNProposals

    spec = _frcnn_anchors()
    args = {"image_size": [64, 64], "pre_nms": 20, "post_nms": 4, "iou_threshold": 0.6}
    layer = RPNProposals(spec.to_dict(), **args)
    rng = np.random.default_rng(4)
    n = len(layer.boxes)
    logits = tf.constant(rng.normal(size=(1, n)), tf.float32)
    deltas = tf.constant(0.1 * rng.normal(size=(1, n, 4)), tf.float32)
    return layer, lambda lay: lay([logits, deltas]).numpy(), {"anchors": spec.to_dict(), **args}


def _frcnn_loss():
    from afp_tf.detection.frcnn_loss import FasterRCNNLoss

    spec = _frcnn_anchors()
    args = {"image_size": [64, 64], "num_classes": 3, "num_rois": 2, "roi_fg_iou": 0.4}
    loss = FasterRCNNLoss(spec, **args)
    rng = np.random.default_rng(5)
    rois = rng.uniform(0.0, 0.4, size=(2, 4 + 4 + 12)).astype(np.float32)
    rois[:, 2:4] += 0.5  # x2, y2 beyond x1, y1
    y_pred = np.concatenate([rng.normal(size=5 * len(loss.boxes)), rois.reshape(-1)])[None]
    y_true = -np.ones((1, 4, 5), np.float32)
    y_true[0, 0] = [0.1, 0.1, 0.6, 0.7, 1]
    return loss, lambda lo: lo(y_true, tf.constant(y_pred, tf.float32)).numpy(), args


CASES = {
    "afp_tf>OrthogonalRegularizer": _orthogonal_regularizer,
    "afp_tf>SSDLoss": _ssd_loss,
    "afp_tf>FunctionalBackbone": _functional_backbone,
    "afp_tf>ROIAlign": _roi_align,
    "afp_tf>RPNProposals": _rpn_proposals,
    "afp_tf>FasterRCNNLoss": _frcnn_loss,
}


def test_serialization_every_registered_class_has_a_round_trip_case():
    assert _registered() == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_serialization_round_trip_same_config_and_behaviour(name):
    obj, behaviour, args = CASES[name]()
    back = _round_trip(obj)
    assert type(back) is type(obj) and back is not obj
    assert back.get_config() == obj.get_config()
    assert {k: back.get_config()[k] for k in args} == args
    expected, got = behaviour(obj), behaviour(back)
    if isinstance(expected, tuple):
        assert got[0] == expected[0]
        expected, got = expected[1], got[1]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
