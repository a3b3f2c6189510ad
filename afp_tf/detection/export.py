"""Exports an SSD detector: raw artifacts in every format plus TFLite/SavedModel with NMS inside.

The detection task's exporter (``Task.exporter``). Raw artifacts (the formats of
:mod:`afp_tf.export.checks`) return ``(batch, anchors, 4 + 1 + C)``; each
is checked against Keras (relative difference of the raw outputs) and by mAP@0.5 on validation
images after the deploy-side NumPy post-processing of ``export/detection_postprocess.py``
(decoding + class-aware NMS), which is also how a runtime without NMS (ONNX here) is used:
``python export/run_detector.py model.onnx``. ``detection.json`` and ``anchors.npy`` beside the
artifacts carry what that post-processing needs.

Where the runtime has the ops, decoding and NMS are inside the artifact: ``saved_model_nms/``
and ``model_fp32_nms.tflite`` (TFLite builtin ``NON_MAX_SUPPRESSION_V5``; batch 1) map an image
to ``boxes`` (relative ``xyxy``), ``scores``, ``classes`` and ``num_detections``. They run the
same NMS as the NumPy code, ties broken alike (:func:`afp_tf.detection.nms.class_aware_nms`),
and must keep what it keeps of the Keras model's candidates, image by image
(:func:`afp_tf.export.checks.check_detections`, within the ``max_rel_diff`` of their raw
format): the mAP of a few images ranks all their detections together, and float round-off
reorders near-tied scores.

Full integer: ``tflite_int8`` and, with it, ``model_int8_nms.tflite`` (decoding + NMS inside)
run every convolution in int8 while the predictor outputs are dequantised and decoded in float
(:mod:`afp_tf.detection.quantize`); both are held to mAP@0.5 within ``MAP_TOLERANCE``.

A detector trained on crops is exported at the size of ``val_x`` (full frames): it is fully
convolutional, so it is re-inputted (:func:`afp_tf.models.ssd.at_input_size`) and its default
boxes (an ``AnchorSpec``) laid out for that size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf import io_utils
from afp_tf.detection import anchors as anchors_lib
from afp_tf.detection import quantize
from afp_tf.detection.metrics import MeanAveragePrecision
from afp_tf.detection.nms import class_aware_nms
from afp_tf.export import write_formats
from afp_tf.export.artifacts import (
    INPUT_NAME,
    check_single_io,
    convert,
    layer_names,
    prepare_out_dir,
    write_saved_model,
)
from afp_tf.export.checks import (
    ALL_FORMATS,
    checked,
    detector_checked,
    load_runner,
    metric_failures,
    resolve_formats,
    run_and_compare,
    write_report,
)
from afp_tf.models.ssd import at_input_size
from afp_tf.train import precision

ANCHORS_NAME = "anchors.npy"
POSTPROCESS = "detection_postprocess.py"
OUTPUT_NAME = "predictions"
# mAP@0.5 (absolute) an artifact may lose against the Keras model through the same
# post-processing. fp32 artifacts are bound by the raw-output difference already.
MAP_TOLERANCE = {"tflite_fp16": 0.01, "tflite_dynamic_int8": 0.03, "tflite_int8": 0.05}
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
    formats: Sequence[str] = ALL_FORMATS,
    representative: np.ndarray | None = None,
    val_x: np.ndarray,
    val_y: np.ndarray,
    data_note: str | None = None,
    tolerances: Mapping[str, Mapping[str, float | None]] | None = None,
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
        formats: Raw formats, names from ``afp_tf.export.checks.ALL_FORMATS``.
        representative: Training images calibrating full-integer quantisation (None skips
            ``tflite_int8``).
        val_x: Validation images every artifact is run on.
        val_y: Their packed ground truth ``(n, max_boxes, 5)`` (class -1 = padding).
        data_note: Recorded in the report.
        tolerances: ``{format: {check: value}}`` replacing the defaults (``max_metric_drop``
            is in mAP@0.5 points here); see ``afp_tf.export.checks.parse_tolerances``.
        score_threshold: NMS candidates need a class probability above this.
        iou_threshold: NMS drops a box overlapping a kept box of its class by more than this.
        max_detections: Detections kept per image.

    Returns:
        The report, also written to ``out_dir/export_report.json``.

    Raises:
        ExportVerificationError: An artifact failed (after every format was attempted and the
            report written).
    """
    fmts = resolve_formats(formats, tolerances, metric_drop=MAP_TOLERANCE)
    out = prepare_out_dir(out_dir)
    check_single_io(model)
    val_x, val_y = np.asarray(val_x, np.float32), np.asarray(val_y, np.float32)
    model = at_input_size(precision.as_float32(model), *val_x.shape[1:3])
    input_shape = check_single_io(model)
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
    post = load_runner(POSTPROCESS)
    keras_map = _map(post.postprocess(keras_raw, meta), val_y)
    report: dict[str, Any] = {
        "task": "detection",
        "samples": len(val_x),
        "data": data_note or "validation set",
        "metric": "map50",
        "keras_metric": keras_map,
        "relative_difference": "max|artifact - keras| / max|keras| over all raw outputs",
        "input": {"name": INPUT_NAME, "shape": [None, *input_shape]},
        "output": OUTPUT_NAME,
        "raw_output": "(batch, anchors, 4 + 1 + classes): SSD offsets, background, class logits",
    }
    report["formats"] = write_formats(
        model,
        out,
        fmts,
        representative=representative,
        verify=lambda fmt, path: _verify_raw(
            fmt, path, val_x, val_y, keras_raw, keras_map, meta, post
        ),
        output_name=OUTPUT_NAME,
        writers={"tflite_int8": quantize.write_int8_tflite},
    )
    int8 = report["formats"].get("tflite_int8", {}).get("status") not in (None, "skipped")
    report["postprocessing"] = _export_nms(
        model,
        out,
        input_shape,
        meta,
        val_x,
        val_y,
        _candidates(keras_raw, meta, post),
        keras_map,
        tolerances,
        representative if int8 else None,
    )
    write_report(out, report, {**report["formats"], **report["postprocessing"]["built_in"]})
    logging.info(
        "Exported detector (%s + NMS artifacts) to %s.", ", ".join(f.name for f in fmts), out
    )
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
_NMS_SETTINGS = ("score_threshold", "iou_threshold", "max_detections")


def _verify_raw(fmt, path, val_x, val_y, keras_raw, keras_map, meta, post) -> dict:
    runner, raw, abs_diff, rel_diff, failures = run_and_compare(
        fmt, path, val_x, keras_raw, batch=32
    )
    metric = _map(post.postprocess(raw, meta), val_y)
    failures += metric_failures(fmt, metric, keras_map, "mAP@0.5")
    return checked(
        fmt,
        path,
        runner,
        failures,
        max_abs_diff=abs_diff,
        max_rel_diff=rel_diff,
        metric=metric,
        keras_metric=keras_map,
        postprocessing=f"export/{POSTPROCESS} (NumPy decode + NMS)",
    )


def nms_function(model: keras.Model, meta: dict):
    """``image (1, S, S, 3) -> {boxes, scores, classes, num_detections}`` with TFLite builtins."""
    anchors = tf.constant(meta["anchors"])
    limit = int(meta["max_detections"])

    def detect(image):
        raw = tf.cast(model(image, training=False)[0], tf.float32)
        boxes = tf.clip_by_value(anchors_lib.decode(raw[:, :4], anchors), 0.0, 1.0)
        probs = tf.nn.softmax(raw[:, 4:], axis=-1)[:, 1:]
        idx, scores, classes, count = class_aware_nms(
            boxes[:, None, :],
            probs,
            max_detections=limit,
            iou_threshold=float(meta["iou_threshold"]),
            score_threshold=float(meta["score_threshold"]),
        )
        return {
            "boxes": tf.gather(boxes, tf.math.floordiv(idx, probs.shape[-1]))[None],
            "scores": scores[None],
            "classes": tf.cast(classes, tf.float32)[None],
            "num_detections": tf.reshape(count, [1]),
        }

    return detect


def _export_nms(
    model,
    out: Path,
    input_shape,
    meta,
    val_x,
    val_y,
    keras_candidates,
    keras_map,
    tolerances,
    int8_representative=None,
) -> dict:
    """Writes and verifies ``saved_model_nms/``, ``model_fp32_nms.tflite`` and, given
    representative frames, ``model_int8_nms.tflite``, each held to the checks of its raw
    format (``tolerances`` included): the fp32 ones to what NMS keeps of the Keras model's
    candidates (``keras_candidates``), the int8 one to mAP@0.5."""
    saved = out / NMS_ARTIFACTS["saved_model_nms"]
    tflite = out / NMS_ARTIFACTS["tflite_fp32_nms"]
    write_saved_model(
        model, input_shape, saved, OUTPUT_NAME, endpoint=nms_function(model, meta), batch=1
    )
    convert("tflite_fp32", saved, tflite, None, layer_names(model))
    fmts = {
        f.name: f
        for f in resolve_formats(
            ("saved_model", "tflite_fp32", "tflite_int8"), tolerances, metric_drop=MAP_TOLERANCE
        )
    }
    artifacts = [
        ("saved_model_nms", saved, "saved_model"),
        ("tflite_fp32_nms", tflite, "tflite_fp32"),
    ]
    int8, int8_failure = out / NMS_ARTIFACTS["tflite_int8_nms"], None
    if int8_representative is not None:
        try:
            quantize.write_int8_tflite(saved, int8, int8_representative)
            artifacts.append(("tflite_int8_nms", int8, "tflite_int8"))
        except Exception as e:  # noqa: BLE001 - one artifact's failure must not stop the others
            int8_failure = f"int8 conversion failed: {str(e).strip().splitlines()[0]}"
            logging.warning("tflite_int8_nms %s", int8_failure)
    built_in = {
        name: _verify_nms(fmts[raw], path, val_x, val_y, keras_candidates, keras_map, meta)
        for name, path, raw in artifacts
    }
    if "tflite_int8_nms" in built_in:
        built_in["tflite_int8_nms"]["int8_ops"] = quantize.op_precision(int8.read_bytes())
    elif int8_failure:
        built_in["tflite_int8_nms"] = {
            "status": "failed", "path": None, "metric": None, "passed": False,
            "failures": [int8_failure],
        }  # fmt: skip
    return {
        "built_in": built_in,
        "left_to_export": {
            "formats": "every raw artifact in 'formats' (ONNX among them: no NMS is built in)",
            "how": f"python export/run_detector.py ARTIFACT (NumPy decoding + NMS in export/"
            f"{POSTPROCESS}, settings and anchors from detection.json and {ANCHORS_NAME})",
        },
        "nms": {k: meta[k] for k in _NMS_SETTINGS},
    }


def _candidates(raw: np.ndarray, meta: dict, post) -> list[dict[str, np.ndarray]]:
    """Per image the NMS input of the NumPy post-processing: ``boxes`` ``(A, 1, 4)`` (one for
    every class) and class ``scores`` ``(A, C)``."""
    boxes = post.decode_boxes(raw[..., :4], meta["anchors"], tuple(meta["variances"]))
    scores = post.softmax(raw[..., 4:])[..., 1:]
    return [{"boxes": b[:, None, :], "scores": s} for b, s in zip(boxes, scores, strict=True)]


def _verify_nms(fmt, path: Path, val_x, val_y, keras_candidates, keras_map, meta) -> dict:
    runner = load_runner(fmt.runner).load(str(path), threads=1)
    detections = []
    for x in val_x:
        outputs = runner.predict_all(x[None])
        n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        detections.append(
            {k: np.asarray(outputs[k])[0, :n].astype(np.float32) for k in _KEYS}
            | {"classes": np.asarray(outputs["classes"])[0, :n].astype(int)}
        )
    return detector_checked(
        fmt,
        path,
        runner,
        detections,
        keras_candidates,
        map50=_map(detections, val_y),
        keras_map50=keras_map,
        against="Keras + NumPy NMS",
        nms={k: meta[k] for k in _NMS_SETTINGS},
        outputs="boxes (1, K, 4) relative xyxy, scores (1, K), classes (1, K), "
        "num_detections (1,); batch 1",
    )
