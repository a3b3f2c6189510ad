"""Exports an SSD detector: raw artifacts in every format plus TFLite/SavedModel with NMS inside.

Raw artifacts (the formats of :mod:`afp_tf.export`) return ``(batch, anchors, 4 + 1 + C)``; each
is checked against Keras (relative difference of the raw outputs) and by mAP@0.5 on validation
images after the deploy-side NumPy post-processing of ``export/detection_postprocess.py``
(decoding + class-aware NMS), which is also how a runtime without NMS (ONNX here) is used:
``python export/run_detector.py model.onnx``. ``detection.json`` and ``anchors.npy`` beside the
artifacts carry what that post-processing needs.

Where the runtime has the ops, decoding and NMS are inside the artifact: ``saved_model_nms/``
and ``model_fp32_nms.tflite`` (TFLite builtin ``NON_MAX_SUPPRESSION_V5``; batch 1) map an image
to ``boxes`` (relative ``xyxy``), ``scores``, ``classes`` and ``num_detections``. They run the
same NMS as the NumPy code (class-aware via per-class box offsets) and are held to the same mAP.

Full integer: ``tflite_int8`` and, with it, ``model_int8_nms.tflite`` (decoding + NMS inside)
run every convolution in int8 while the predictor outputs are dequantised and decoded in float
(:mod:`afp_tf.detection.quantize`); both are held to mAP@0.5 within ``MAP_TOLERANCE``.

A detector trained on crops is exported at the size of ``val_x`` (full frames): it is fully
convolutional, so it is re-inputted (:func:`afp_tf.models.ssd.at_input_size`) and its default
boxes (an ``AnchorSpec``) laid out for that size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf import export, io_utils
from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection import quantize
from afp_tf.detection.metrics import MeanAveragePrecision
from afp_tf.models.ssd import at_input_size

ANCHORS_NAME = "anchors.npy"
POSTPROCESS = "detection_postprocess.py"
OUTPUT_NAME = "predictions"
# mAP@0.5 (absolute) an artifact may lose against the Keras model through the same
# post-processing. fp32 artifacts are bound by the raw-output difference already.
MAP_TOLERANCE = {"tflite_fp16": 0.01, "tflite_dynamic_int8": 0.03, "tflite_int8": 0.05}
NMS_MAP_TOLERANCE = 0.01  # score ties may be broken differently by the runtime NMS
NMS_ARTIFACTS = {
    "saved_model_nms": "saved_model_nms",
    "tflite_fp32_nms": "model_fp32_nms.tflite",
    "tflite_int8_nms": "model_int8_nms.tflite",
}


def export_detector(
    model: keras.Model,
    out_dir: str | Path,
    *,
    anchors: np.ndarray,
    formats: Sequence[str] = export.ALL_FORMATS,
    representative: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    data_note: str | None = None,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
) -> dict:
    """Writes and verifies the raw artifacts of an SSD and the artifacts with built-in NMS.

    Args:
        model: ``image -> (batch, anchors, 4 + 1 + classes)`` (see ``afp_tf.models.ssd``).
        out_dir: Created if missing; artifacts replace earlier ones atomically.
        anchors: The model's default boxes: an ``AnchorSpec`` or ``(anchors, 4)`` relative
            ``xyxy`` boxes for the size of ``val_x``.
        formats: Raw formats, names from ``afp_tf.export.ALL_FORMATS``.
        representative: Training images calibrating full-integer quantisation.
        val_x: Validation images every artifact is run on.
        val_y: Their packed ground truth ``(n, max_boxes, 5)`` (class -1 = padding).
        data_note: Recorded in the report.
        score_threshold: NMS candidates need a class probability above this.
        iou_threshold: NMS drops a box overlapping a kept box of its class by more than this.
        max_detections: Detections kept per image.

    Returns:
        The report, also written to ``out_dir/export_report.json``.

    Raises:
        ExportError: A conversion failed.
        ExportVerificationError: An artifact failed a check (after the report is written).
    """
    formats = export.parse_formats(formats)
    out = export.prepare_out_dir(out_dir)
    export.check_single_io(model)
    val_x, val_y = np.asarray(val_x, np.float32), np.asarray(val_y, np.float32)
    model = at_input_size(model, *val_x.shape[1:3])
    input_shape = export.check_single_io(model)
    anchors = anchors_lib.resolve(anchors, *val_x.shape[1:3])
    if val_y.ndim != 3 or val_y.shape[-1] != 5 or len(val_y) != len(val_x):
        raise ValueError(
            f"val_y must be packed targets (n={len(val_x)}, max_boxes, 5), got {val_y.shape}."
        )
    keras_raw = np.asarray(model.predict(val_x, batch_size=32, verbose=0), np.float32)
    if keras_raw.ndim != 3 or keras_raw.shape[1] != len(anchors):
        raise ValueError(
            f"Model output {keras_raw.shape[1:]} does not match {len(anchors)} anchors; pass "
            "the anchors the detector was trained with."
        )
    meta = _write_metadata(out, anchors, score_threshold, iou_threshold, max_detections)
    post = export.load_runner(POSTPROCESS)
    keras_map = _map(post.postprocess(keras_raw, meta), val_y)
    report: dict[str, Any] = {
        "task": "detection",
        "samples": len(val_x),
        "data": data_note or "validation set",
        "metric": "map50",
        "keras_metric": keras_map,
        "relative_difference": "max|artifact - keras| / max|keras| over all raw outputs",
        "input": {"name": export.INPUT_NAME, "shape": [None, *input_shape]},
        "output": OUTPUT_NAME,
        "raw_output": "(batch, anchors, 4 + 1 + classes): SSD offsets, background, class logits",
        "formats": {},
    }
    with tempfile.TemporaryDirectory(dir=out, prefix=".export.") as tmp:
        saved_model = out / "saved_model" if "saved_model" in formats else Path(tmp) / "sm"
        export.write_saved_model(model, input_shape, saved_model, output_name=OUTPUT_NAME)
        layers = export.layer_names(model)
        for name in formats:
            fmt = export.FORMATS[name]
            path = out / fmt.filename
            if name == "tflite_int8":
                _write_int8(saved_model, path, representative)
            elif name != "saved_model":
                export.convert(name, saved_model, path, representative, layers)
            report["formats"][name] = _verify_raw(
                fmt, path, val_x, val_y, keras_raw, keras_map, meta, post
            )
        int8_rep = representative if "tflite_int8" in formats else None
        report["postprocessing"] = _export_nms(
            model, out, input_shape, meta, val_x, val_y, keras_map, int8_rep
        )
    export.write_report(out, report, {**report["formats"], **report["postprocessing"]["built_in"]})
    logging.info("Exported detector (%s + NMS artifacts) to %s.", ", ".join(formats), out)
    return report


def _write_metadata(out: Path, anchors, score_threshold, iou_threshold, max_detections) -> dict:
    with io_utils.atomic_path(out / ANCHORS_NAME) as tmp, open(tmp, "wb") as f:
        np.save(f, anchors)
    meta = {
        "anchors_file": ANCHORS_NAME,
        "box_format": "relative xyxy in [0, 1]",
        "variances": list(anchors_lib.VARIANCES),
        "score_threshold": float(score_threshold),
        "iou_threshold": float(iou_threshold),
        "max_detections": int(max_detections),
    }
    io_utils.write_json(out / "detection.json", meta)
    return {**meta, "anchors": anchors}


def _map(detections: list[dict], packed: np.ndarray) -> float:
    """mAP@0.5 of per-image detections against packed ground truth."""
    metric = MeanAveragePrecision(iou_thresholds=[0.5])
    for det, gt in zip(detections, packed, strict=True):
        valid = gt[:, 4] >= 0
        metric.update(gt[valid, :4], gt[valid, 4].astype(int), *(det[k] for k in _KEYS))
    result = metric.result()["map50"]
    return 0.0 if np.isnan(result) else float(result)


_KEYS = ("boxes", "scores", "classes")


def _verify_raw(fmt, path, val_x, val_y, keras_raw, keras_map, meta, post) -> dict:
    runner, raw, abs_diff, rel_diff, failures = export.run_and_compare(
        fmt, path, val_x, keras_raw, batch=32
    )
    metric = _map(post.postprocess(raw, meta), val_y)
    tolerance = MAP_TOLERANCE.get(fmt.name)
    if tolerance is not None and not metric >= keras_map - tolerance:
        failures.append(f"mAP@0.5 {metric:.4f} more than {tolerance:g} below Keras {keras_map:.4f}")
    return {
        "path": str(path),
        "size_bytes": export.artifact_size(path),
        "max_abs_diff": abs_diff,
        "max_rel_diff": rel_diff,
        "metric": metric,
        "keras_metric": keras_map,
        "thresholds": {"max_rel_diff": fmt.max_rel_diff, "max_map50_drop": tolerance},
        "postprocessing": f"export/{POSTPROCESS} (NumPy decode + NMS)",
        "runtime": runner.runtime,
        "passed": not failures,
        "failures": failures,
    }


def nms_function(model: keras.Model, meta: dict):
    """``image (1, S, S, 3) -> {boxes, scores, classes, num_detections}`` with TFLite builtins."""
    anchors = tf.constant(meta["anchors"])
    limit = int(meta["max_detections"])

    def detect(image):
        raw = tf.cast(model(image, training=False)[0], tf.float32)
        boxes = tf.clip_by_value(anchors_lib.decode(raw[:, :4], anchors), 0.0, 1.0)
        probs = tf.nn.softmax(raw[:, 4:], axis=-1)[:, 1:]
        num_classes = probs.shape[-1]
        # Boxes of class c shifted by 2c never overlap another class: one NMS is class-aware.
        shift = 2.0 * tf.range(num_classes, dtype=tf.float32)[None, :, None]
        idx, scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=tf.reshape(boxes[:, None, :] + shift, [-1, 4]),
            scores=tf.reshape(probs, [-1]),
            max_output_size=limit,
            iou_threshold=float(meta["iou_threshold"]),
            score_threshold=float(meta["score_threshold"]),
            soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        valid = tf.range(limit) < count
        classes = tf.where(valid, tf.math.floormod(idx, num_classes), -1)
        return {
            "boxes": tf.gather(boxes, tf.math.floordiv(idx, num_classes))[None],
            "scores": tf.where(valid, scores, 0.0)[None],
            "classes": tf.cast(classes, tf.float32)[None],
            "num_detections": tf.reshape(count, [1]),
        }

    return detect


def _write_int8(saved_model: Path, path: Path, representative) -> None:
    """Writes the full-integer TFLite of ``saved_model`` (:mod:`afp_tf.detection.quantize`)."""
    try:
        with io_utils.atomic_path(path) as tmp:
            tmp.write_bytes(quantize.to_int8_tflite(str(saved_model), representative))
    except Exception as e:  # noqa: BLE001 - converters raise many types; re-raised with context
        raise export.ExportError(f"tflite_int8 conversion of the detector failed: {e}") from e


def _export_nms(
    model, out: Path, input_shape, meta, val_x, val_y, keras_map, int8_representative=None
) -> dict:
    """Writes and verifies ``saved_model_nms/``, ``model_fp32_nms.tflite`` and, given
    representative frames, ``model_int8_nms.tflite``."""
    saved = out / NMS_ARTIFACTS["saved_model_nms"]
    tflite = out / NMS_ARTIFACTS["tflite_fp32_nms"]
    export.write_saved_model(model, input_shape, saved, endpoint=nms_function(model, meta), batch=1)
    export.convert("tflite_fp32", saved, tflite, None, export.layer_names(model))
    artifacts = [
        ("saved_model_nms", saved, "run_saved_model.py", NMS_MAP_TOLERANCE),
        ("tflite_fp32_nms", tflite, "run_tflite.py", NMS_MAP_TOLERANCE),
    ]
    if int8_representative is not None:
        int8 = out / NMS_ARTIFACTS["tflite_int8_nms"]
        _write_int8(saved, int8, int8_representative)
        artifacts.append(("tflite_int8_nms", int8, "run_tflite.py", MAP_TOLERANCE["tflite_int8"]))
    built_in = {
        name: _verify_nms(path, runner, val_x, val_y, keras_map, tolerance)
        for name, path, runner, tolerance in artifacts
    }
    if int8_representative is not None:
        built_in["tflite_int8_nms"]["int8_ops"] = quantize.op_precision(int8.read_bytes())
    return {
        "built_in": built_in,
        "left_to_export": {
            "formats": "every raw artifact in 'formats' (ONNX among them: no NMS is built in)",
            "how": f"python export/run_detector.py ARTIFACT (NumPy decoding + NMS in export/"
            f"{POSTPROCESS}, settings and anchors from detection.json and {ANCHORS_NAME})",
        },
        "nms": {k: meta[k] for k in ("score_threshold", "iou_threshold", "max_detections")},
    }


def _verify_nms(path: Path, runner_script: str, val_x, val_y, keras_map, tolerance) -> dict:
    runner = export.load_runner(runner_script).load(str(path), threads=1)
    detections = []
    for x in val_x:
        outputs = runner.predict_all(x[None])
        n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        detections.append(
            {k: np.asarray(outputs[k])[0, :n].astype(np.float32) for k in _KEYS}
            | {"classes": np.asarray(outputs["classes"])[0, :n].astype(int)}
        )
    metric = _map(detections, val_y)
    failures = []
    if not abs(metric - keras_map) <= tolerance:
        failures.append(
            f"mAP@0.5 {metric:.4f} differs from Keras + NumPy NMS {keras_map:.4f} by more "
            f"than {tolerance:g}"
        )
    return {
        "path": str(path),
        "size_bytes": export.artifact_size(path),
        "outputs": "boxes (1, K, 4) relative xyxy, scores (1, K), classes (1, K), "
        "num_detections (1,); batch 1",
        "metric": metric,
        "keras_metric": keras_map,
        "thresholds": {"max_map50_difference": tolerance},
        "runtime": runner.runtime,
        "passed": not failures,
        "failures": failures,
    }
