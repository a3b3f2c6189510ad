"""Detector export: raw artifacts checked by mAP, NMS inside TFLite/SavedModel, NumPy NMS."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from afp_tf import resources
from afp_tf.detection import export as detection_export
from afp_tf.detection.anchors import AnchorSpec
from afp_tf.export_checks import ExportVerificationError, load_runner
from afp_tf.models.ssd import at_input_size, build_ssd

CROP, FRAME, CLASSES = 64, (64, 96), 4  # trained on crops, exported for full frames
SPEC = AnchorSpec.for_object_sizes(16, 128, first_stride=8)
post = load_runner("detection_postprocess.py")


@pytest.fixture(scope="module")
def detector():
    """A crop-sized model, its full-frame twin, the frame's anchors and frames."""
    keras.utils.set_random_seed(0)
    model = build_ssd((CROP, CROP, 3), CLASSES, "mobilenet", width=0.25)
    for layer in model.layers:  # no dead ReLU cells: they tie scores, which NMS may break anyhow
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(np.full(layer.beta.shape, 0.5, np.float32))
    x = np.random.default_rng(0).random((6, *FRAME, 3), dtype=np.float32)
    return model, at_input_size(model, *FRAME), SPEC.boxes(*FRAME), x


def _pseudo_ground_truth(model, anchors, x, meta):
    """The Keras model's own top-3 detections per image as ground truth: mAP is well above 0."""
    dets = post.postprocess(model.predict(x, verbose=0), {**meta, "anchors": anchors})
    y = -np.ones((len(x), 3, 5), np.float32)
    for i, d in enumerate(dets):
        y[i, :, :4], y[i, :, 4] = d["boxes"][:3], d["classes"][:3]
    return y


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    model, full, anchors, x = detector
    meta = {"variances": [0.1, 0.2], "score_threshold": 0.01, "iou_threshold": 0.45}
    y = _pseudo_ground_truth(full, anchors, x, {**meta, "max_detections": 100})
    out = tmp_path_factory.mktemp("det_export")
    report = detection_export.export_detector(
        model, out, anchors=SPEC, formats="tflite_fp32,onnx", val_x=x, val_y=y
    )
    return out, report


def test_export_detector_fp32_artifacts_match_keras_output_and_map(exported):
    _, report = exported
    assert report["passed"] and report["keras_metric"] > 0.3
    for name in ("tflite_fp32", "onnx"):
        r = report["formats"][name]
        assert r["max_rel_diff"] <= 1e-4
        assert r["metric"] == pytest.approx(report["keras_metric"], abs=1e-6)


def test_export_detector_nms_artifacts_reproduce_keras_map(exported):
    _, report = exported
    built_in = report["postprocessing"]["built_in"]
    assert set(built_in) == {"saved_model_nms", "tflite_fp32_nms"}
    for r in built_in.values():
        assert r["passed"] and r["metric"] == pytest.approx(report["keras_metric"], abs=1e-6)


def test_export_detector_writes_full_frame_artifacts_and_anchors(exported):
    out, report = exported
    assert report["input"]["shape"] == [None, *FRAME, 3]
    assert np.load(out / "anchors.npy").shape == SPEC.boxes(*FRAME).shape


def test_export_detector_tflite_nms_equals_numpy_postprocess(exported, detector):
    out, _ = exported
    _, model, _, x = detector
    meta = post.load_metadata(out / "model.onnx")
    expected = post.postprocess(model.predict(x[:1], verbose=0), meta)[0]
    got = load_runner("run_tflite.py").load(str(out / "model_fp32_nms.tflite"))
    got = got.predict_all(x[:1])
    n = int(got["num_detections"][0])
    assert n == len(expected["scores"]) > 0
    np.testing.assert_allclose(got["scores"][0, :n], expected["scores"], atol=1e-5)
    np.testing.assert_allclose(got["boxes"][0, :n], expected["boxes"], atol=1e-4)
    np.testing.assert_array_equal(got["classes"][0, :n].astype(int), expected["classes"])
    assert np.all(got["classes"][0, n:] == -1)


def test_export_detector_report_says_onnx_postprocessing_is_in_export(exported):
    out, report = exported
    left = report["postprocessing"]["left_to_export"]
    assert "ONNX" in left["formats"] and "export/run_detector.py" in left["how"]
    assert "detection_postprocess" in report["formats"]["onnx"]["postprocessing"]
    assert json.loads((out / "export_report.json").read_text())["task"] == "detection"


@pytest.mark.parametrize("artifact", ["model.onnx", "model_fp32_nms.tflite"])
def test_run_detector_cli_prints_detections_and_latency(exported, artifact):
    out, _ = exported
    proc = subprocess.run(
        [sys.executable, str(resources.deploy_dir() / "run_detector.py"), str(out / artifact)]
        + ["--runs", "2", "--warmup", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["median_ms"] > 0 and len(result["detections"]["scores"]) > 0


def test_export_detector_labels_instead_of_boxes_raises(detector, tmp_path):
    model, _, _, x = detector
    with pytest.raises(ValueError, match="packed targets"):
        detection_export.export_detector(
            model, tmp_path, anchors=SPEC, representative=x, val_x=x, val_y=np.zeros(len(x))
        )


def test_nms_same_class_overlap_suppressed_other_class_kept():
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    probs = np.array([[0.9, 0.0], [0.8, 0.7], [0.0, 0.05]])
    got = post.nms(boxes, probs, score_threshold=0.01, iou_threshold=0.45, max_detections=10)
    np.testing.assert_allclose(got["scores"], [0.9, 0.7, 0.05])
    np.testing.assert_array_equal(got["classes"], [0, 1, 1])


def test_export_detector_int8_runs_convs_in_int8_and_keeps_map(detector, tmp_path):
    model, full, anchors, x = detector
    meta = {"variances": [0.1, 0.2], "score_threshold": 0.01, "iou_threshold": 0.45}
    y = _pseudo_ground_truth(full, anchors, x, {**meta, "max_detections": 100})
    try:
        report = detection_export.export_detector(
            model, tmp_path, anchors=SPEC, formats="tflite_int8", representative=x, val_x=x,
            val_y=y,
        )  # fmt: skip
    except ExportVerificationError as e:
        report = e.report
    raw = report["formats"]["tflite_int8"]
    nms = report["postprocessing"]["built_in"]["tflite_int8_nms"]
    convs = sum(type(layer) is keras.layers.Conv2D for layer in model.layers)
    depthwise = sum(type(layer) is keras.layers.DepthwiseConv2D for layer in model.layers)
    assert nms["int8_ops"] == {"CONV_2D": {"int8": convs}, "DEPTHWISE_CONV_2D": {"int8": depthwise}}
    assert raw["passed"] and raw["max_rel_diff"] < 0.05
    assert nms["passed"] and nms["metric"] >= report["keras_metric"] - 0.05
