"""Faster R-CNN pieces: ROI Align against a NumPy reference, proposals, loss, surgery groups."""

import keras
import numpy as np
import tensorflow as tf

from afp_tf import surgery
from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection.frcnn_decode import Layout, detection_function
from afp_tf.detection.frcnn_loss import FasterRCNNLoss
from afp_tf.detection.proposals import RPNProposals, fast_nms, pairwise_iou
from afp_tf.detection.roi_align import ROIAlign, roi_align_level
from afp_tf.models.frcnn import build_frcnn, rpn_anchors, split_outputs
from afp_tf.surgery.golden import golden_error

SPEC = rpn_anchors(16, 1, (1.0,))
SIZE, CLASSES, ROIS = 64, 3, 8


def _reference_roi_align(feature, box, size, ratio):
    """Bilinear ROI Align of one box (relative xyxy) on ``feature`` (H, W, C), loop by loop."""
    h, w, _ = feature.shape
    x1, y1, x2, y2 = box[0] * w - 0.5, box[1] * h - 0.5, box[2] * w - 0.5, box[3] * h - 0.5
    out = np.zeros((size, size, feature.shape[-1]))
    for i in range(size):
        for j in range(size):
            for a in range(ratio):
                for b in range(ratio):
                    y = np.clip(y1 + (i + (a + 0.5) / ratio) * (y2 - y1) / size, 0, h - 1)
                    x = np.clip(x1 + (j + (b + 0.5) / ratio) * (x2 - x1) / size, 0, w - 1)
                    y0, x0 = int(np.floor(y)), int(np.floor(x))
                    yb, xb = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                    ly, lx = y - y0, x - x0
                    out[i, j] += (
                        (1 - ly) * (1 - lx) * feature[y0, x0]
                        + (1 - ly) * lx * feature[y0, xb]
                        + ly * (1 - lx) * feature[yb, x0]
                        + ly * lx * feature[yb, xb]
                    ) / ratio**2
    return out


def test_roi_align_level_equals_numpy_bilinear_reference():
    rng = np.random.default_rng(0)
    feature = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    boxes = np.array(
        [
            [[0.1, 0.2, 0.6, 0.9], [-0.1, 0.0, 0.3, 0.25]],
            [[0.5, 0.5, 1.05, 0.98], [0.3, 0.3, 0.31, 0.33]],
        ],
        np.float32,
    )
    got = roi_align_level(tf.constant(feature), tf.constant(boxes), 3, 2).numpy()
    for b in range(2):
        for r in range(2):
            np.testing.assert_allclose(
                got[b, r], _reference_roi_align(feature[b], boxes[b, r], 3, 2), atol=1e-5
            )


def test_roi_align_layer_small_rois_read_the_fine_level_large_the_coarse():
    rng = np.random.default_rng(1)
    fine, coarse = rng.normal(size=(1, 16, 16, 2)), rng.normal(size=(1, 8, 8, 2))
    boxes = np.array([[[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.9, 0.8]]], np.float32)  # 13 and 54 px
    layer = ROIAlign((64, 64), pool_size=2, canonical_size=32.0)
    out = layer([fine.astype(np.float32), coarse.astype(np.float32), boxes]).numpy()
    assert out.shape == (1, 2, 2 * 2 * 2)
    np.testing.assert_allclose(
        out[0, 0].reshape(2, 2, 2), _reference_roi_align(fine[0], boxes[0, 0], 2, 2), atol=1e-5
    )
    np.testing.assert_allclose(
        out[0, 1].reshape(2, 2, 2), _reference_roi_align(coarse[0], boxes[0, 1], 2, 2), atol=1e-5
    )


def test_fast_nms_drops_boxes_overlapping_a_higher_scoring_one():
    boxes = tf.constant(
        [[[0, 0, 1, 1], [0, 0, 1, 0.9], [2, 2, 3, 3], [0, 0, 0.5, 0.5]]], tf.float32
    )
    scores = tf.constant([[0.9, 0.8, 0.7, 0.6]])
    out = fast_nms(boxes, scores, 0.5).numpy()[0]
    np.testing.assert_allclose(out[[0, 2, 3]], [0.9, 0.7, 0.6])
    assert out[1] < -1e8


def test_rpn_proposals_decode_encoded_ground_truth_at_the_top_anchors():
    layer = RPNProposals(SPEC.to_dict(), (SIZE, SIZE), pre_nms=20, post_nms=2, iou_threshold=0.7)
    anchors = layer.boxes
    gt = np.array([[0.1, 0.2, 0.4, 0.45], [0.5, 0.55, 0.9, 0.8]], np.float32)
    picks = [3, 40]
    deltas = np.zeros((1, len(anchors), 4), np.float32)
    deltas[0, picks] = anchors_lib.encode(tf.constant(gt), tf.constant(anchors[picks])).numpy()
    logits = np.full((1, len(anchors)), -5.0, np.float32)
    logits[0, picks] = [3.0, 2.0]
    out = layer([logits, deltas]).numpy()[0]
    np.testing.assert_allclose(out, gt, atol=1e-5)


def _packed(boxes, classes, max_boxes=4):
    out = -np.ones((1, max_boxes, 5), np.float32)
    out[0, : len(boxes), :4], out[0, : len(boxes), 4] = boxes, classes
    return out


def test_frcnn_loss_box_terms_vanish_for_exact_deltas():
    loss = FasterRCNNLoss(SPEC, (SIZE, SIZE), CLASSES, num_rois=2)
    anchors = loss.boxes
    gt = np.array([[0.1, 0.1, 0.35, 0.35]], np.float32)
    packed = _packed(gt, [2])
    a = len(anchors)
    rpn_deltas = anchors_lib.encode(tf.constant(gt), tf.constant(anchors)).numpy()
    proposals = np.array([[0.12, 0.1, 0.36, 0.34], [0.6, 0.6, 0.9, 0.9]], np.float32)
    box = np.zeros((2, CLASSES, 4), np.float32)
    box[0, 2] = anchors_lib.encode(tf.constant(gt), tf.constant(proposals[:1])).numpy()[0]
    logits = np.full((2, CLASSES + 1), -10.0, np.float32)
    logits[0, 3], logits[1, 0] = 10.0, 10.0  # fg of class 2 (index 3), background
    rpn_logits = np.full(a, -20.0, np.float32)
    overlap = pairwise_iou(tf.constant(anchors), tf.constant(gt)).numpy()[:, 0]
    rpn_logits[(overlap >= 0.7) | (overlap == overlap.max())] = 20.0
    y = np.concatenate(
        [
            rpn_logits,
            rpn_deltas.reshape(-1),
            np.concatenate([proposals, logits, box.reshape(2, -1)], 1).reshape(-1),
        ]
    )[None]
    assert y.shape[1] == loss.size
    good = float(loss(packed, y))
    assert good < 1e-3
    y_bad = y.copy()
    y_bad[0, a : 5 * a] += 0.5  # every RPN delta off by 0.5
    assert float(loss(packed, y_bad)) > good + 0.1


def _tiny_model():
    keras.utils.set_random_seed(0)
    return build_frcnn(
        (SIZE, SIZE, 3), CLASSES, SPEC, "mobilenet", 0.25,
        fpn_channels=16, num_rois=ROIS, pre_nms=50, roi_size=3, head_units=16,
    )  # fmt: skip


def test_frcnn_predictors_are_unprunable_and_roi_align_couples_the_fpn_levels():
    model = _tiny_model()
    groups = surgery.find_channel_groups(model)
    by_producer = {p: g for g in groups for p in g.producers}
    for name in ("box_class_logits", "box_deltas", "rpn_objectness3", "rpn_deltas4"):
        assert not by_producer[name].prunable, name
    fpn = by_producer["fpn_p3"]
    assert fpn.prunable and {"fpn_p4", "fpn_p5"} <= set(fpn.producers)
    for name in ("block3_pw_conv", "fpn_lateral3", "rpn_tower4", "box_head_fc1", "box_head_fc2"):
        assert by_producer[name].prunable, name
    prunable = [p for g in groups if g.prunable for p in g.producers]
    assert not any(
        p.startswith(("box_class", "box_deltas", "rpn_obj", "rpn_deltas")) for p in prunable
    )


def test_frcnn_pruned_box_head_and_fpn_equal_zeroed_reference():
    model = _tiny_model()
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    assert golden_error(model, {"box_head_fc1": [0, 5, 7]}, x) < 1e-5
    pruned = surgery.remove_filters(model, {"fpn_p3": [1, 2], "block4_pw_conv": [0]})
    assert pruned.get_layer("fpn_p3").filters == 14 and pruned.output_shape == model.output_shape
    assert model.get_layer("fpn_p3").filters == 16


def test_detection_function_decodes_class_deltas_of_confident_proposals():
    layout = Layout(num_anchors=5, num_rois=2, num_classes=2)
    proposals = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.8, 0.9]], np.float32)
    logits = np.array([[-5, 5, -5], [-5, -5, 5]], np.float32)  # class 0, class 1
    deltas = np.zeros((2, 2, 4), np.float32)
    deltas[1, 1] = [1.0, 0.0, 0.0, 0.0]  # shift proposal 1 right by 0.1 * its width
    raw = np.concatenate(
        [np.zeros(25), np.concatenate([proposals, logits, deltas.reshape(2, 8)], 1).reshape(-1)]
    )
    parts = split_outputs(raw[None], 5, 2, 2)
    np.testing.assert_allclose(parts["proposals"][0], proposals)
    det = detection_function(layout)(tf.constant(raw[None], tf.float32))
    n = int(det["num_detections"][0])
    assert n == 2
    order = np.argsort(det["classes"][0, :n].numpy())
    np.testing.assert_allclose(det["classes"][0, :n].numpy()[order], [0, 1])
    np.testing.assert_allclose(
        det["boxes"][0, :n].numpy()[order],
        [[0.1, 0.1, 0.3, 0.3], [0.53, 0.5, 0.83, 0.9]],
        atol=1e-5,
    )


def test_frcnn_loss_zero_width_proposal_stays_finite():
    loss = FasterRCNNLoss(SPEC, (SIZE, SIZE), CLASSES, num_rois=2)
    a = len(loss.boxes)
    roi = np.zeros((2, 4 + (CLASSES + 1) + 4 * CLASSES), np.float32)
    roi[0, :4] = [1.0, 0.2, 1.0, 0.5]  # clipped to the right edge: zero width
    roi[1, :4] = [0.1, 0.1, 0.3, 0.3]
    y = np.concatenate([np.zeros(5 * a, np.float32), roi.reshape(-1)])[None]
    value = float(loss(_packed(np.array([[0.1, 0.1, 0.3, 0.3]]), [1]), y))
    assert np.isfinite(value) and value > 0


def test_roi_align_macs_count_both_matmuls_on_every_level():
    from afp_tf import stats

    fine, coarse = keras.Input((16, 16, 4)), keras.Input((8, 8, 4))
    boxes = keras.Input((10, 4))
    out = ROIAlign((64, 64), pool_size=2)([fine, coarse, boxes])
    model = keras.Model([fine, coarse, boxes], out)
    # per ROI: S * W * C * (H + S) on each level
    assert stats.model_stats(model).macs == 10 * (2 * 16 * 4 * 18 + 2 * 8 * 4 * 10)
