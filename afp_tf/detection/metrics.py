"""Detection mAP: COCO-style AP@[.5:.95] and AP@0.5, computed in NumPy like pycocotools.

The algorithm is pycocotools' ``COCOeval`` for boxes with area range "all", no crowd boxes and
``maxDets = max_detections`` per image and class: greedy matching in score order to the unmatched
ground truth of highest IoU, 101-point interpolated precision, the mean over classes that have
ground truth. It needs no JSON round trip and runs on the tensors of an evaluation loop; the
tests cross-check it against pycocotools and keras-cv's ``BoxCOCOMetrics``.
"""

from __future__ import annotations

from collections import defaultdict

import keras
import numpy as np
import tensorflow as tf

from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection.decode import decode_predictions
from afp_tf.models.ssd import at_input_size

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of ``xyxy`` boxes ``(N, 4)`` x ``(M, 4)``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


class MeanAveragePrecision:
    """Accumulates detections image by image; :meth:`result` gives ``map``, ``map50``, ``map75``."""

    def __init__(self, iou_thresholds=COCO_IOU_THRESHOLDS, max_detections: int = 100):
        self.iou_thresholds = np.asarray(iou_thresholds, np.float64)
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        # class -> list of (scores (n,), matched (T, n) bool); class -> number of gt boxes
        self._dets: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self._num_gt: dict[int, int] = defaultdict(int)

    def update(self, gt_boxes, gt_classes, det_boxes, det_scores, det_classes) -> None:
        """Adds one image: ground truth and detections as NumPy arrays (``xyxy`` boxes)."""
        gt_boxes, gt_classes = np.asarray(gt_boxes, np.float64), np.asarray(gt_classes)
        det_boxes, det_scores = np.asarray(det_boxes, np.float64), np.asarray(det_scores)
        det_classes = np.asarray(det_classes)
        for c in np.union1d(np.unique(gt_classes), np.unique(det_classes)):
            c = int(c)
            g = gt_boxes[gt_classes == c]
            d_mask = det_classes == c
            order = np.argsort(-det_scores[d_mask], kind="mergesort")[: self.max_detections]
            d, s = det_boxes[d_mask][order], det_scores[d_mask][order]
            self._num_gt[c] += len(g)
            matched = np.zeros((len(self.iou_thresholds), len(d)), bool)
            if len(d) and len(g):
                ious = box_iou(d, g)
                for t, thr in enumerate(self.iou_thresholds):
                    taken = np.zeros(len(g), bool)
                    for i in range(len(d)):
                        candidates = np.where(taken, -1.0, ious[i])
                        j = int(np.argmax(candidates))
                        if candidates[j] >= min(thr, 1 - 1e-10):
                            taken[j] = matched[t, i] = True
            self._dets[c].append((s, matched))

    def update_batch(self, y_true, detections: dict) -> None:
        """Adds a batch: packed targets ``(B, M, 5)`` and keras-cv dense detections."""
        y_true = np.asarray(y_true)
        det = {k: np.asarray(v) for k, v in detections.items()}
        for b in range(len(y_true)):
            valid = y_true[b, :, 4] >= 0
            n = int(det["num_detections"][b])
            self.update(
                y_true[b, valid, :4],
                y_true[b, valid, 4].astype(int),
                det["boxes"][b, :n],
                det["confidence"][b, :n],
                det["classes"][b, :n].astype(int),
            )

    def result(self) -> dict[str, float]:
        """Returns ``map`` (AP@[.5:.95]), ``map50`` and ``map75``; NaN without any ground truth."""
        per_class = []
        for c, n_gt in self._num_gt.items():
            if n_gt == 0:
                continue
            scores = np.concatenate([s for s, _ in self._dets[c]])
            if not len(scores):
                per_class.append(np.zeros(len(self.iou_thresholds)))
                continue
            matched = np.concatenate([m for _, m in self._dets[c]], axis=1)
            order = np.argsort(-scores, kind="mergesort")
            tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
            fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
            ap = np.zeros(len(self.iou_thresholds))
            for t in range(len(self.iou_thresholds)):
                recall = tp[t] / n_gt
                precision = tp[t] / (tp[t] + fp[t] + np.spacing(1))
                precision = np.maximum.accumulate(precision[::-1])[::-1]
                idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
                q = np.where(
                    idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0
                )
                ap[t] = q.mean()
            per_class.append(ap)
        if not per_class:
            return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
        ap = np.mean(per_class, axis=0)
        at = {round(float(t), 2): float(v) for t, v in zip(self.iou_thresholds, ap, strict=True)}
        return {
            "map": float(ap.mean()),
            "map50": at.get(0.5, np.nan),
            "map75": at.get(0.75, np.nan),
        }


def evaluate_detector(
    model: keras.Model, dataset: tf.data.Dataset, anchors, **decode_kwargs
) -> dict[str, float]:
    """Runs ``model`` over ``(image, packed targets)`` batches and returns the mAP dict.

    ``anchors``: an ``AnchorSpec`` or fixed boxes. A fully convolutional detector trained on
    crops is re-inputted to the dataset's image size (full frames) first.
    """
    height, width = dataset.element_spec[0].shape[1:3]
    if height is not None and width is not None:
        model = at_input_size(model, height, width)
        anchors = anchors_lib.resolve(anchors, height, width)
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    metric = MeanAveragePrecision()
    for images, y_true in dataset:
        detections = decode_predictions(predict(images), anchors, **decode_kwargs)
        metric.update_batch(y_true, detections)
    result = metric.result()
    if np.isnan(result["map"]):
        raise ValueError(
            "The evaluation split has no ground-truth box; mAP is undefined. Use "
            "more images or a larger validation fraction."
        )
    return result
