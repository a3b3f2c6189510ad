"""Anchors, matching, SSD loss, decoding and mAP (cross-checked with pycocotools and keras-cv)."""

import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf

from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection.decode import decode_predictions
from afp_tf.detection.loss import SSDLoss, match_anchors
from afp_tf.detection.metrics import ConfusionCounts, MeanAveragePrecision

SPEC = anchors_lib.AnchorSpec.for_object_sizes(16, 128, first_stride=8)


def default_boxes(size, spec=SPEC):
    return spec.boxes(size, size)


def test_anchor_spec_for_gtsdb_sizes_one_level_per_octave():
    assert SPEC.strides == (8, 16, 32, 64)
    assert SPEC.sizes[0] == (16.0, 20.16, 25.4) and SPEC.sizes[3][0] == 128.0
    assert SPEC.per_location == 3


def test_anchor_spec_boxes_are_pixel_sized_at_any_input_size():
    crop, frame = SPEC.boxes(64, 64), SPEC.boxes(80, 160)
    assert len(crop) == (64 + 16 + 4 + 1) * 3 and len(frame) == (200 + 50 + 15 + 6) * 3
    # The first box: 16 px centred on (4, 4) in both, relative to each input.
    np.testing.assert_allclose(crop[0] * 64, [-4, -4, 12, 12], atol=1e-4)
    np.testing.assert_allclose(frame[0] * [160, 80, 160, 80], [-4, -4, 12, 12], atol=1e-4)
    # Second cell of the first row: one stride (8 px) to the right.
    np.testing.assert_allclose(frame[3] * [160, 80, 160, 80], [4, -4, 20, 12], atol=1e-4)


def test_anchor_spec_round_trips_through_dict_and_rejects_bad_sizes():
    assert anchors_lib.AnchorSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ValueError, match="one size tuple per stride"):
        anchors_lib.AnchorSpec((8, 16), ((16.0,),))


def test_encode_decode_roundtrip():
    anchors = default_boxes(48)
    boxes = tf.constant(np.tile([[0.1, 0.2, 0.4, 0.5]], (len(anchors), 1)), tf.float32)
    decoded = anchors_lib.decode(anchors_lib.encode(boxes, anchors), anchors)
    np.testing.assert_allclose(decoded.numpy(), boxes.numpy(), atol=1e-5)


def _packed(rows, max_boxes=3):
    out = np.zeros((max_boxes, 5), np.float32)
    out[:, 4] = -1
    out[: len(rows)] = np.reshape(rows, (-1, 5))
    return out


def test_match_anchors_force_matches_and_ignores_padding():
    anchors = tf.constant([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]], tf.float32)
    # One small box overlapping anchor 0 by IoU 0.16 (< 0.5): force-matched anyway.
    y = np.stack([_packed([[0, 0, 0.2, 0.2, 2]]), _packed([])])
    boxes, classes = match_anchors(anchors, tf.constant(y))
    np.testing.assert_array_equal(classes.numpy(), [[3, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(boxes.numpy()[0, 0], [0, 0, 0.2, 0.2])


def _perfect_logits(anchors, packed, num_classes, confidence=8.0):
    boxes, classes = match_anchors(tf.constant(anchors), tf.constant(packed))
    offsets = anchors_lib.encode(boxes, tf.constant(anchors)[None])
    logits = tf.one_hot(classes, num_classes + 1) * confidence
    return tf.concat([offsets, logits], -1)


def test_ssd_loss_perfect_prediction_is_small_and_wrong_is_large():
    anchors = default_boxes(64)
    y = np.stack([_packed([[0.1, 0.1, 0.3, 0.3, 0], [0.5, 0.5, 0.9, 0.8, 1]]), _packed([])])
    loss = SSDLoss(SPEC, num_classes=2, image_size=(64, 64))
    good = loss(tf.constant(y), _perfect_logits(anchors, y, 2))
    noisy = _perfect_logits(anchors, y, 2) + tf.random.normal([2, len(anchors), 7], stddev=2.0)
    bad = loss(tf.constant(y), noisy)
    assert float(good) < 0.01 < 1.0 < float(bad)


def test_ssd_loss_hard_negatives_three_per_positive():
    anchors = anchors_lib.AnchorSpec((16,), ((16.0,),)).boxes(64, 64)
    y = _packed([[0.0, 0.0, 0.25, 0.25, 0]])[None]
    _, classes = match_anchors(tf.constant(anchors), tf.constant(y))
    num_pos = int(tf.reduce_sum(tf.cast(classes > 0, tf.int32)))
    # Background logit 0 and object logit 5 everywhere: every negative costs the same CE c.
    logits = np.zeros((1, len(anchors), 6), np.float32)
    logits[..., 5] = 5.0
    positive = classes.numpy()[0] > 0
    logits[0, positive, 5] = 0.0  # positives (class 1) cost log(2) each, no box error
    offsets = anchors_lib.encode(
        *[tf.constant(v) for v in (np.repeat(y[:, :1, :4], len(anchors), 1), anchors[None])]
    )
    pred = np.concatenate([offsets.numpy(), logits[..., 4:]], -1)
    per_example = SSDLoss(anchors, num_classes=1, reduction=None)(tf.constant(y), pred)
    ce_neg = np.log1p(np.exp(5.0))
    expected = (num_pos * np.log(2) + 3 * num_pos * ce_neg) / num_pos
    np.testing.assert_allclose(per_example.numpy(), [expected], rtol=1e-4)


def test_ssd_loss_min_negatives_raises_the_negatives_of_an_image():
    anchors = anchors_lib.AnchorSpec((16,), ((16.0,),)).boxes(64, 64)
    y = _packed([])[None]  # no sign: neg_pos_ratio alone gives 3 negatives
    logits = np.zeros((1, len(anchors), 6), np.float32)
    logits[..., 5] = 5.0  # every negative costs the same CE
    pred = np.concatenate([np.zeros((1, len(anchors), 4), np.float32), logits[..., 4:]], -1)
    ce_neg = np.log1p(np.exp(5.0))
    for min_negatives, expected in ((0, 3), (10, 10), (10_000, len(anchors))):
        loss = SSDLoss(anchors, num_classes=1, min_negatives=min_negatives, reduction=None)
        np.testing.assert_allclose(loss(tf.constant(y), pred).numpy(), [expected * ce_neg], 1e-4)
    with pytest.raises(ValueError, match="min_negatives"):
        SSDLoss(anchors, num_classes=1, min_negatives=-1)


def test_decode_predictions_returns_the_true_boxes():
    anchors = default_boxes(64)
    y = _packed([[0.1, 0.1, 0.3, 0.3, 0], [0.5, 0.5, 0.9, 0.8, 1]])[None]
    det = decode_predictions(_perfect_logits(anchors, y, 2), anchors, confidence_threshold=0.5)
    n = int(det["num_detections"][0])
    assert n == 2
    got = sorted(
        zip(
            det["classes"][0, :n].numpy().tolist(),
            det["boxes"][0, :n].numpy().tolist(),
            strict=True,
        )
    )
    np.testing.assert_allclose(got[0][1], [0.1, 0.1, 0.3, 0.3], atol=1e-5)
    assert [c for c, _ in got] == [0, 1]


def _hand_made_case(seed=0, num_images=6, num_classes=3):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        n = rng.integers(0, 4)
        xy, wh = rng.uniform(0, 70, (n, 2)), rng.uniform(8, 30, (n, 2))
        g, gc = np.concatenate([xy, xy + wh], 1), rng.integers(0, num_classes, n)
        m = rng.integers(0, 3)
        fp = rng.uniform(0, 70, (m, 2))
        d = np.concatenate([g + rng.normal(0, 3, g.shape), np.concatenate([fp, fp + 15], 1)])
        dc = np.concatenate([gc, rng.integers(0, num_classes, m)])
        images.append((g, gc, d, rng.uniform(0.05, 1, len(d)), dc))
    return images


def _pycocotools_map(images, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    gt = {
        "images": [{"id": i} for i in range(len(images))],
        "annotations": [],
        "categories": [{"id": c} for c in range(num_classes)],
    }
    dets = []
    for i, (g, gc, d, s, dc) in enumerate(images):
        for b, c in zip(g, gc, strict=True):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": xywh(b),
                    "area": xywh(b)[2] * xywh(b)[3],
                    "iscrowd": 0,
                }
            )
        dets += [
            {"image_id": i, "category_id": int(c), "bbox": xywh(b), "score": float(sc)}
            for b, c, sc in zip(d, dc, s, strict=True)
        ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:3]


@pytest.mark.parametrize("seed", [0, 1])
def test_map_matches_pycocotools(seed):
    images = _hand_made_case(seed)
    metric = MeanAveragePrecision()
    for image in images:
        metric.update(*image)
    got = metric.result()
    expected = _pycocotools_map(images, 3)
    np.testing.assert_allclose([got["map"], got["map50"], got["map75"]], expected, atol=1e-6)
    assert 0 < got["map"] < got["map50"] < 1


def test_map_matches_keras_cv_box_coco_metrics():
    import keras_cv

    images = _hand_made_case(0)
    m, n = max(len(i[0]) for i in images), max(len(i[2]) for i in images)
    yt = {"boxes": -np.ones((6, m, 4), "float32"), "classes": -np.ones((6, m), "float32")}
    yp = {
        "boxes": -np.ones((6, n, 4), "float32"),
        "classes": -np.ones((6, n), "float32"),
        "confidence": -np.ones((6, n), "float32"),
    }
    for i, (g, gc, d, s, dc) in enumerate(images):
        yt["boxes"][i, : len(g)], yt["classes"][i, : len(g)] = g, gc
        yp["boxes"][i, : len(d)], yp["classes"][i, : len(d)] = d, dc
        yp["confidence"][i, : len(d)] = s
    kcv = keras_cv.metrics.BoxCOCOMetrics(bounding_box_format="xyxy", evaluate_freq=1)
    kcv.update_state(yt, yp)
    ref = kcv.result(force=True)
    metric = MeanAveragePrecision()
    for image in images:
        metric.update(*image)
    got = metric.result()
    assert abs(got["map"] - float(ref["MaP"])) < 1e-5
    assert abs(got["map50"] - float(ref["MaP@[IoU=50]"])) < 1e-5


def test_map_perfect_and_empty_detections():
    g = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float)
    perfect, empty = MeanAveragePrecision(), MeanAveragePrecision()
    perfect.update(g, [0, 1], g, [0.9, 0.8], [0, 1])
    empty.update(g, [0, 1], np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert perfect.result()["map"] == pytest.approx(1.0)
    assert empty.result()["map50"] == 0.0


def test_map_over_a_subset_of_classes_is_the_mean_of_their_ap():
    metric = MeanAveragePrecision()
    for image in _hand_made_case(1):
        metric.update(*image)
    per_class = metric.per_class()
    assert sorted(per_class) == [0, 1, 2]
    subset = metric.result(classes=[0, 2])
    assert subset["map50"] == pytest.approx((per_class[0][0] + per_class[2][0]) / 2)
    assert subset["map"] == pytest.approx((per_class[0].mean() + per_class[2].mean()) / 2)
    assert metric.result()["map50"] == pytest.approx(np.mean([ap[0] for ap in per_class.values()]))
    assert np.isnan(metric.result(classes=[7])["map50"])  # no ground truth of the class


def _box(x, y, side=10):
    return [x, y, x + side, y + side]


# Hand-built images with known confusion counts (classes p=0, d=1, m=2, o=3; min score 0.5).
CONFUSION_CASE = [
    (  # image 1
        np.array([_box(0, 0), _box(20, 20), _box(40, 40), _box(60, 60), _box(100, 100)], float),
        np.array([0, 1, 2, 0, 1]),
        np.array(
            [
                _box(0, 0),  # p on the p sign: correct
                _box(21, 20),  # m on the d sign: a swap d->m
                _box(1, 1),  # p again on the (taken) p sign: duplicate
                _box(80, 80),  # d on nothing: background
                _box(40, 40),  # m on the m sign but below min_score: ignored, so m missed
                _box(100, 100),  # o on the d sign, scored higher than ...
                _box(101, 100),  # ... d on it: its own class matches first (correct);
            ],  # the o detection is then a duplicate. The p sign at (60, 60): missed
            float,
        ),
        np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.95, 0.55]),
        np.array([0, 2, 0, 1, 2, 3, 1]),
    ),
    (  # image 2: no sign, one detection: background
        np.zeros((0, 4)),
        np.zeros(0, int),
        np.array([_box(5, 5)], float),
        np.array([0.9]),
        np.array([0]),
    ),
    (  # image 3: an "other" sign, no detection: missed
        np.array([_box(5, 5)], float),
        np.array([3]),
        np.zeros((0, 4)),
        np.zeros(0),
        np.zeros(0, int),
    ),
]
CONFUSION_EXPECTED = {
    "iou": 0.5,
    "min_score": 0.5,
    "correct": {"p": 1, "d": 1},
    "swaps": {"d->m": 1},
    "background": {"p": 1, "d": 1},
    "duplicates": {"p": 1, "o": 1},
    "missed": {"p": 1, "m": 1, "o": 1},
}


def test_confusion_counts_swaps_background_duplicates_misses():
    counts = ConfusionCounts(iou=0.5, min_score=0.5)
    for image in CONFUSION_CASE:
        counts.update(*image)
    got = counts.result(("p", "d", "m", "o"))
    assert got == CONFUSION_EXPECTED
    # every kept detection and every ground truth is counted once
    kept = sum(int((s >= 0.5).sum()) for _, _, _, s, _ in CONFUSION_CASE)
    detections = ("correct", "swaps", "background", "duplicates")
    assert sum(sum(got[k].values()) for k in detections) == kept == 7
    truths = sum(len(gc) for _, gc, _, _, _ in CONFUSION_CASE)
    assert sum(sum(got[k].values()) for k in ("correct", "swaps", "missed")) == truths == 6
    assert ConfusionCounts(min_score=0.5).result()["swaps"] == {}


def test_confusion_counts_from_packed_batches_match_per_image():
    size, m, n = 128.0, 6, 8
    y_true = np.full((len(CONFUSION_CASE), m, 5), -1.0, np.float32)
    det = {
        "boxes": np.full((len(CONFUSION_CASE), n, 4), -1.0, np.float32),
        "confidence": np.full((len(CONFUSION_CASE), n), -1.0, np.float32),
        "classes": np.full((len(CONFUSION_CASE), n), -1.0, np.float32),
        "num_detections": np.zeros(len(CONFUSION_CASE), np.int32),
    }
    for b, (g, gc, d, s, dc) in enumerate(CONFUSION_CASE):
        y_true[b, : len(g), :4], y_true[b, : len(g), 4] = g / size, gc
        det["boxes"][b, : len(d)], det["confidence"][b, : len(d)] = d / size, s
        det["classes"][b, : len(d)], det["num_detections"][b] = dc, len(d)
    counts = ConfusionCounts()
    counts.update_batch(y_true, det)
    assert counts.result(("p", "d", "m", "o")) == CONFUSION_EXPECTED
