"""SSD post-processing in NumPy: box decoding, softmax and class-aware NMS. numpy + stdlib only.

For runtimes whose artifact holds the raw detector (ONNX, the raw TFLite/SavedModel): the model
returns ``(batch, anchors, 4 + 1 + classes)`` = SSD box offsets, then background and class
logits. ``detection.json`` next to the artifact names the anchors file (relative ``xyxy``
default boxes), the offset variances and the NMS settings the export was verified with.

The NMS is the one the TFLite artifacts with built-in NMS run (``NON_MAX_SUPPRESSION_V5``):
every (anchor, class) pair above ``score_threshold`` is a candidate, candidates are taken in
score order, and a candidate is dropped when its IoU with a kept box *of the same class*
exceeds ``iou_threshold``; at most ``max_detections`` are kept per image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METADATA_NAME = "detection.json"


def load_metadata(artifact: str | Path) -> dict:
    """Reads ``detection.json`` beside ``artifact`` (file or SavedModel dir) and its anchors."""
    folder = Path(artifact).resolve().parent
    path = folder / METADATA_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: export the detector with afp_tf (it writes {METADATA_NAME} and "
            "the anchors next to the artifacts)."
        )
    meta = json.loads(path.read_text())
    meta["anchors"] = np.load(folder / meta["anchors_file"]).astype(np.float32)
    return meta


def decode_boxes(offsets: np.ndarray, anchors: np.ndarray, variances=(0.1, 0.2)) -> np.ndarray:
    """SSD offsets ``(..., A, 4)`` to relative ``xyxy`` boxes clipped to ``[0, 1]``."""
    wha = anchors[:, 2:] - anchors[:, :2]
    ca = anchors[:, :2] + wha / 2
    c = offsets[..., :2] * variances[0] * wha + ca
    wh = np.exp(np.minimum(offsets[..., 2:] * variances[1], 10.0)) * wha
    return np.clip(np.concatenate([c - wh / 2, c + wh / 2], axis=-1), 0.0, 1.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1) - inter
    return inter / np.maximum(union, 1e-12)


def nms(
    boxes: np.ndarray,
    probs: np.ndarray,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> dict[str, np.ndarray]:
    """Class-aware greedy NMS of one image: ``boxes (A, 4)``, class probabilities ``(A, C)``."""
    num_classes = probs.shape[1]
    flat = probs.reshape(-1)
    candidates = np.nonzero(flat > score_threshold)[0]
    order = candidates[np.argsort(-flat[candidates], kind="stable")]
    anchor, cls = order // num_classes, order % num_classes
    keep = []
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == max_detections:
            break
        rest = np.nonzero(alive[i + 1 :] & (cls[i + 1 :] == cls[i]))[0] + i + 1
        if len(rest):
            alive[rest[_iou(boxes[anchor[i]], boxes[anchor[rest]]) > iou_threshold]] = False
    keep = np.asarray(keep, int)
    return {
        "boxes": boxes[anchor[keep]].reshape(-1, 4),
        "scores": flat[order[keep]],
        "classes": cls[keep],
    }


def postprocess(raw: np.ndarray, meta: dict) -> list[dict[str, np.ndarray]]:
    """Raw outputs ``(B, A, 5 + C)`` to one dict per image: ``boxes``, ``scores``, ``classes``.

    ``meta`` holds ``anchors``, ``variances``, ``score_threshold``, ``iou_threshold`` and
    ``max_detections`` (as :func:`load_metadata` returns them). Class ids exclude background.
    """
    raw = np.asarray(raw, np.float32)
    boxes = decode_boxes(raw[..., :4], meta["anchors"], tuple(meta["variances"]))
    probs = softmax(raw[..., 4:])[..., 1:]
    return [
        nms(
            boxes[b],
            probs[b],
            score_threshold=meta["score_threshold"],
            iou_threshold=meta["iou_threshold"],
            max_detections=meta["max_detections"],
        )
        for b in range(len(raw))
    ]
