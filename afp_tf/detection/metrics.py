"""Detection mAP: COCO-style AP@[.5:.95] and AP@0.5, computed in NumPy like pycocotools.

The algorithm is pycocotools' ``COCOeval`` for boxes with area range "all", no crowd boxes and
``maxDets = max_detections`` per image and class: greedy matching in score order to the unmatched
ground truth of highest IoU, 101-point interpolated precision, the mean over classes that have
ground truth. It needs no JSON round trip and runs on the tensors of an evaluation loop; the
tests cross-check it against pycocotools and keras-cv's ``BoxCOCOMetrics``.

:meth:`MeanAveragePrecision.result` can average over a subset of the classes (GTSDB's
competition scores three of its four categories); :class:`ConfusionCounts` says where the
errors go at IoU 0.5: class swaps, background detections, duplicates and missed signs.
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
        for image in batch_images(y_true, detections):
            self.update(*image)

    def per_class(self) -> dict[int, np.ndarray]:
        """AP at each IoU threshold ``(T,)`` of every class with ground truth, by class id."""
        return {c: self._class_ap(c) for c in sorted(self._num_gt) if self._num_gt[c]}

    def _class_ap(self, c: int) -> np.ndarray:
        n_gt = self._num_gt[c]
        scores = np.concatenate([s for s, _ in self._dets[c]])
        if not len(scores):
            return np.zeros(len(self.iou_thresholds))
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
            q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0)
            ap[t] = q.mean()
        return ap

    def result(self, classes=None) -> dict[str, float]:
        """Returns ``map`` (AP@[.5:.95]), ``map50`` and ``map75``: the mean over the classes
        with ground truth, of ``classes`` only when given; NaN when none has ground truth."""
        keep = None if classes is None else {int(c) for c in classes}
        per_class = [ap for c, ap in self.per_class().items() if keep is None or c in keep]
        if not per_class:
            return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
        ap = np.mean(per_class, axis=0)
        at = {round(float(t), 2): float(v) for t, v in zip(self.iou_thresholds, ap, strict=True)}
        return {
            "map": float(ap.mean()),
            "map50": at.get(0.5, np.nan),
            "map75": at.get(0.75, np.nan),
        }


def batch_images(y_true, detections: dict):
    """Yields ``(gt_boxes, gt_classes, det_boxes, det_scores, det_classes)`` per image of a
    batch: packed targets ``(B, M, 5)`` (padding ``class = -1``) and keras-cv dense detections."""
    y_true = np.asarray(y_true)
    det = {k: np.asarray(v) for k, v in detections.items()}
    for b in range(len(y_true)):
        valid = y_true[b, :, 4] >= 0
        n = int(det["num_detections"][b])
        yield (
            y_true[b, valid, :4],
            y_true[b, valid, 4].astype(int),
            det["boxes"][b, :n],
            det["confidence"][b, :n],
            det["classes"][b, :n].astype(int),
        )


class ConfusionCounts:
    """Where the detections and ground truths of a split go at IoU ``iou`` (0.5).

    Per image, the detections scoring at least ``min_score`` are matched in score order,
    one to one and greedily to the unmatched ground truth of highest IoU: first to their own
    class (``correct``), then the rest to a ground truth of any other class (a class swap,
    counted ``"true->detected"``). A detection left over is a ``duplicate`` when it overlaps
    an (already matched) ground truth by at least ``iou`` and ``background`` otherwise; a
    ground truth left over is ``missed``. Every detection is in exactly one of correct, swaps,
    duplicate and background, every ground truth in one of correct, swaps and missed.
    """

    def __init__(self, iou: float = 0.5, min_score: float = 0.5):
        self.iou, self.min_score = float(iou), float(min_score)
        self.reset()

    def reset(self) -> None:
        self.correct: dict[int, int] = defaultdict(int)
        self.swaps: dict[tuple[int, int], int] = defaultdict(int)  # (true, detected) -> n
        self.duplicates: dict[int, int] = defaultdict(int)  # by detected class
        self.background: dict[int, int] = defaultdict(int)  # by detected class
        self.missed: dict[int, int] = defaultdict(int)  # by true class

    def update(self, gt_boxes, gt_classes, det_boxes, det_scores, det_classes) -> None:
        """Adds one image: ground truth and detections as NumPy arrays (``xyxy`` boxes)."""
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes).astype(int).reshape(-1)
        keep = np.asarray(det_scores).reshape(-1) >= self.min_score
        order = np.argsort(-np.asarray(det_scores).reshape(-1)[keep], kind="mergesort")
        det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)[keep][order]
        det_classes = np.asarray(det_classes).astype(int).reshape(-1)[keep][order]
        ious = box_iou(det_boxes, gt_boxes)
        owner = np.full(len(gt_boxes), -1)  # the detection matched to each ground truth
        matched = np.zeros(len(det_boxes), bool)
        for same_class in (True, False):
            for i in np.flatnonzero(~matched):
                allowed = owner < 0
                if same_class:
                    allowed &= gt_classes == det_classes[i]
                candidates = np.where(allowed, ious[i], -1.0)
                if len(candidates) and candidates.max() >= self.iou - 1e-10:
                    j = int(np.argmax(candidates))
                    owner[j], matched[i] = i, True
                    if same_class:
                        self.correct[int(gt_classes[j])] += 1
                    else:
                        self.swaps[int(gt_classes[j]), int(det_classes[i])] += 1
        for i in np.flatnonzero(~matched):
            overlaps = len(gt_boxes) and ious[i].max() >= self.iou - 1e-10
            (self.duplicates if overlaps else self.background)[int(det_classes[i])] += 1
        for j in np.flatnonzero(owner < 0):
            self.missed[int(gt_classes[j])] += 1

    def update_batch(self, y_true, detections: dict) -> None:
        """Adds a batch: packed targets ``(B, M, 5)`` and keras-cv dense detections."""
        for image in batch_images(y_true, detections):
            self.update(*image)

    def result(self, class_names=None) -> dict:
        """The counts by class name (``class_names[id]``; the id as text without names)."""

        def name(c: int) -> str:
            return str(class_names[c]) if class_names is not None else str(c)

        def by_name(counts: dict[int, int]) -> dict[str, int]:
            return {name(c): int(n) for c, n in sorted(counts.items())}

        return {
            "iou": self.iou,
            "min_score": self.min_score,
            "correct": by_name(self.correct),
            "swaps": {f"{name(t)}->{name(d)}": int(n) for (t, d), n in sorted(self.swaps.items())},
            "background": by_name(self.background),
            "duplicates": by_name(self.duplicates),
            "missed": by_name(self.missed),
        }


def evaluate_detector(
    model: keras.Model,
    dataset: tf.data.Dataset,
    anchors,
    *,
    scored=None,
    class_names=None,
    details: bool = False,
    confusion_score: float = 0.5,
    **decode_kwargs,
) -> dict:
    """Runs ``model`` over ``(image, packed targets)`` batches and returns the mAP dict.

    ``anchors``: an ``AnchorSpec`` or fixed boxes. A fully convolutional detector trained on
    crops is re-inputted to the dataset's image size (full frames) first.

    ``map``, ``map50``, ``map75`` average the classes with ground truth, only those of
    ``scored`` when given (GTSDB's competition categories); then ``map_all``, ``map50_all``,
    ``map75_all`` give the mean over every class beside them. ``details`` adds ``scored`` (the
    scored class names), ``ap_per_class`` (AP@0.5 by class name, classes with ground truth)
    and ``confusion`` (:class:`ConfusionCounts` of the detections scoring at least
    ``confusion_score``). ``class_names[id]`` names the classes (else the id as text).
    """
    height, width = dataset.element_spec[0].shape[1:3]
    if height is not None and width is not None:
        model = at_input_size(model, height, width)
        anchors = anchors_lib.resolve(anchors, height, width)
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    metric = MeanAveragePrecision()
    confusion = ConfusionCounts(min_score=confusion_score) if details else None
    for images, y_true in dataset:
        detections = decode_predictions(predict(images), anchors, **decode_kwargs)
        metric.update_batch(y_true, detections)
        if confusion is not None:
            confusion.update_batch(y_true, detections)
    every = metric.result()
    if np.isnan(every["map"]):
        raise ValueError(
            "The evaluation split has no ground-truth box; mAP is undefined. Use "
            "more images or a larger validation fraction."
        )
    result = dict(every)
    if scored is not None:
        result = metric.result(scored)
        if np.isnan(result["map"]):
            raise ValueError(
                "The evaluation split has no ground-truth box of the scored classes "
                f"{_names(scored, class_names)}; mAP over them is undefined. Use more images, "
                "a larger validation fraction, or data.scoring=all."
            )
        result.update({f"{k}_all": v for k, v in every.items()})
    if details:
        if scored is None:
            scored = range(len(class_names)) if class_names is not None else metric.per_class()
        at50 = int(np.argmin(np.abs(metric.iou_thresholds - 0.5)))
        result["scored"] = _names(scored, class_names)
        result["ap_per_class"] = {
            _names([c], class_names)[0]: float(ap[at50]) for c, ap in metric.per_class().items()
        }
        result["confusion"] = confusion.result(class_names)
    return result


def _names(classes, class_names) -> list[str]:
    return [str(class_names[c]) if class_names is not None else str(c) for c in classes]
