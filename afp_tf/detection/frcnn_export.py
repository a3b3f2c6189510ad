"""Exports a Faster R-CNN with everything inside the graph: image -> detections.

The ``frcnn`` task's exporter (``Task.exporter``). Every artifact holds the whole detector:
backbone, FPN, RPN, proposal decoding and Fast NMS, ROI Align, the box head, class-wise
decoding and the final class-aware NMS (:func:`afp_tf.detection.frcnn_decode.detection_function`;
TFLite builtin ``NON_MAX_SUPPRESSION_V5``). Each maps one image ``(1, H, W, 3)`` to ``boxes``
``(1, K, 4)`` (relative ``xyxy``), ``scores``, ``classes`` ``(1, K)`` and ``num_detections``
``(1,)``, built from TensorFlow builtin ops only. Files (:data:`ARTIFACTS`) and report
entries carry the ``_nms`` suffix of the SSD's artifacts with NMS inside, so
``python export/run_detector.py model_fp32_nms.tflite`` runs and times them.

Verification: every artifact runs on the validation images in its own runtime. An fp32 one
(SavedModel, TFLite fp32, ONNX) must keep what the final NMS keeps of the Keras model's
candidates (proposals decoded per class, with their class scores), image by image
(:func:`afp_tf.export.checks.check_detections`, within ``max_rel_diff``); mAP over a few
images is no test of that, as it ranks all images' detections together and float round-off
reorders near-tied scores. fp16 weights change numerics by design (the RPN scores, whose
ranking picks the proposals, among them): like the SSD's fp16, its mAP@0.5 may fall at most
``MAP_TOLERANCE`` below the Keras model's. The report lists mAP@0.5 and mAP@[.5:.95] of each.

Full integer: ``tflite_int8`` gives ``model_int8_nms.tflite``, the whole detector as above
with the backbone, FPN, RPN convolutions and the box head's fully connected layers in int8
(weights per channel, activations calibrated on ``representative`` training images), their
outputs dequantised and the proposal decoding, Fast NMS, ROI Align (its ``BATCH_MATMUL``),
class-wise decoding and the final NMS in float (:mod:`afp_tf.detection.quantize`, the SSD's
conversion). Like the SSD's int8 artifacts its mAP@0.5 may fall at most ``MAP_TOLERANCE``
below the Keras model's; the report counts the ops run in int8 and in float (``int8_ops``).
Without representative images it is skipped. ``tflite_dynamic_int8`` is not offered.

ONNX: tf2onnx maps ``NonMaxSuppressionV5`` to ONNX ``NonMaxSuppression``; should a converter
lack an op, the report names it, and the post-processing can be run outside instead: export
the raw packed output (the Keras model itself) and apply
:func:`~afp_tf.detection.frcnn_decode.detection_function` to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf.detection import quantize
from afp_tf.detection.frcnn_decode import (
    Layout,
    candidates_function,
    detection_function,
    update_metric,
)
from afp_tf.detection.metrics import MeanAveragePrecision
from afp_tf.export.artifacts import (
    check_single_io,
    convert,
    layer_names,
    prepare_out_dir,
    write_saved_model,
)
from afp_tf.export.checks import (
    FORMATS,
    detector_checked,
    load_runner,
    not_written,
    resolve_formats,
    write_report,
)
from afp_tf.train import precision

ARTIFACTS = {
    "saved_model": "saved_model_nms",
    "tflite_fp32": "model_fp32_nms.tflite",
    "tflite_fp16": "model_fp16_nms.tflite",
    "onnx": "model_nms.onnx",
    "tflite_int8": "model_int8_nms.tflite",
}
SUPPORTED = tuple(ARTIFACTS)
# Formats judged by mAP@0.5 (the rest by detections); int8 as the SSD's int8 artifacts.
MAP_TOLERANCE = {"tflite_fp16": 0.005, "tflite_int8": 0.05}
NO_CALIBRATION = "skipped: no representative training images to calibrate int8"
INT8_REPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
_KEYS = ("boxes", "scores", "classes", "num_detections")


def _metric(detections: list[dict], val_y: np.ndarray) -> dict[str, float]:
    metric = MeanAveragePrecision()
    for det, packed in zip(detections, val_y, strict=True):
        update_metric(metric, det, packed)
    return {k: (0.0 if np.isnan(v) else float(v)) for k, v in metric.result().items()}


class _OnnxRunner:
    """ONNX Runtime on the detection graph, outputs by name (``run_onnx.py`` gives one)."""

    def __init__(self, path: Path):
        load_runner("run_onnx.py")  # a clear error when onnxruntime is missing
        import onnxruntime as ort  # noqa: PLC0415 - optional extra

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.runtime = {"name": "onnxruntime", "version": ort.__version__}

    def predict_all(self, x):
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(None, {self._input: np.asarray(x, np.float32)})
        return {n.split(":")[0]: v for n, v in zip(names, values, strict=True)}


def _runner(name: str, path: Path):
    if name == "onnx":
        return _OnnxRunner(path)
    return load_runner(FORMATS[name].runner).load(str(path), threads=1)


def _kept(outputs: dict) -> dict[str, np.ndarray]:
    """The ``num_detections`` kept detections of batch-1 ``outputs``."""
    n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    return {k: np.asarray(outputs[k])[0, :n] for k in ("boxes", "scores", "classes")}


def _verify(fmt, path, val_x, val_y, keras_candidates, keras_metric, layout: Layout) -> dict:
    runner = _runner(fmt.name, path)
    out = [
        {k: np.asarray(v) for k, v in runner.predict_all(x[None]).items() if k in _KEYS}
        for x in val_x
    ]
    metric = _metric(out, val_y)
    return detector_checked(
        fmt,
        path,
        runner,
        [_kept(d) for d in out],
        keras_candidates,
        map50=metric["map50"],
        keras_map50=keras_metric["map50"],
        against="Keras",
        nms={
            "score_threshold": layout.score_threshold,
            "iou_threshold": layout.iou_threshold,
            "max_detections": layout.max_detections,
        },
        map=metric["map"],
        keras_map=keras_metric["map"],
    )


def export_frcnn(
    model: keras.Model,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = SUPPORTED,
    val_x: np.ndarray,
    val_y: np.ndarray,
    tolerances: Mapping[str, Mapping[str, float | None]] | None = None,
    representative: np.ndarray | None = None,
    data_note: str | None = None,
) -> dict:
    """Writes and verifies the detection artifacts of a Faster R-CNN (module docstring).

    Args:
        model: a model of :func:`afp_tf.models.frcnn.build_frcnn`.
        out_dir: created if missing; artifacts replace earlier ones atomically.
        formats: of ``SUPPORTED``; other known formats are reported as skipped.
        val_x: validation images every artifact is run on.
        val_y: their packed ground truth ``(n, max_boxes, 5)``.
        tolerances: ``{format: {check: value}}`` replacing the defaults: ``max_rel_diff``
            of the fp32 formats' detection check, ``max_metric_drop`` (mAP@0.5) of the
            formats of ``MAP_TOLERANCE`` (module docstring).
        representative: training images calibrating ``tflite_int8`` (None skips it).
        data_note: recorded in the report.

    Returns:
        The report, also written to ``out_dir/export_report.json``.

    Raises:
        ExportVerificationError: an artifact failed (after all were attempted).
    """
    out = prepare_out_dir(out_dir)
    input_shape = check_single_io(model)
    model = precision.as_float32(model)  # TFLite and ONNX have no bfloat16 kernels
    val_x, val_y = np.asarray(val_x, np.float32), np.asarray(val_y, np.float32)
    if val_y.ndim != 3 or val_y.shape[-1] != 5 or len(val_y) != len(val_x):
        raise ValueError(
            f"val_y must be packed targets (n={len(val_x)}, max_boxes, 5), got {val_y.shape}."
        )
    layout = Layout.of(model)
    detect, candidates = detection_function(layout), candidates_function(layout)
    endpoint = tf.function(lambda image: detect(model(image, training=False)))
    keras_metric = _metric([endpoint(x[None]) for x in val_x], val_y)
    nms_input = tf.function(lambda image: candidates(model(image, training=False)))
    keras_candidates = [{k: np.asarray(v) for k, v in nms_input(x[None]).items()} for x in val_x]
    saved = out / ARTIFACTS["saved_model"]
    write_saved_model(model, input_shape, saved, "detections", endpoint=endpoint, batch=1)
    results = {}
    for fmt in resolve_formats(formats, tolerances, metric_drop=MAP_TOLERANCE):
        name = fmt.name
        if name not in SUPPORTED:
            results[f"{name}_nms"] = not_written(
                fmt, "skipped", f"{name} is not offered for Faster R-CNN"
            )
            continue
        if fmt.needs_calibration and (representative is None or len(representative) == 0):
            results[f"{name}_nms"] = not_written(fmt, "skipped", NO_CALIBRATION)
            continue
        path = out / ARTIFACTS[name]
        try:
            if fmt.needs_calibration:
                quantize.write_int8_tflite(saved, path, representative)
            elif name != "saved_model":
                convert(name, saved, path, None, layer_names(model))
            results[f"{name}_nms"] = _verify(
                fmt, path, val_x, val_y, keras_candidates, keras_metric, layout
            )
            if fmt.needs_calibration:
                results[f"{name}_nms"]["int8_ops"] = quantize.op_precision(
                    path.read_bytes(), INT8_REPORTED
                )
        except Exception as e:  # noqa: BLE001 - one format's failure must not stop the others
            logging.warning("%s export failed: %s", name, e)
            results[f"{name}_nms"] = not_written(fmt, "failed", str(e).strip().splitlines()[0])
    report = {
        "task": "frcnn",
        "samples": len(val_x),
        "data": data_note or "validation set",
        "metric": "map50",
        "keras_metric": keras_metric["map50"],
        "keras_map": keras_metric["map"],
        "input": {"name": "image", "shape": [1, *input_shape]},
        "outputs": "boxes (1, K, 4) relative xyxy, scores (1, K), classes (1, K), "
        "num_detections (1,): proposals, ROI Align, decoding and NMS inside the graph",
        "formats": {},  # no raw artifacts: every one has NMS inside (see "detectors")
        "detectors": results,
    }
    write_report(out, report, results)
    logging.info("Exported Faster R-CNN (%s) to %s.", ", ".join(results), out)
    return report
