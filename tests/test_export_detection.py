"""Detector export: raw artifacts checked by mAP, NMS inside TFLite/SavedModel, NumPy NMS."""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import artifact_float_types

from afp_tf import resources
from afp_tf.detection import export as detection_export
from afp_tf.detection.anchors import AnchorSpec
from afp_tf.export import checks
from afp_tf.export.artifacts import convert, write_saved_model
from afp_tf.export.checks import FORMATS, ExportVerificationError, load_runner
from afp_tf.models.ssd import at_input_size, build_ssd
from afp_tf.train import precision

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


def test_export_detector_mixed_precision_model_writes_float32_artifacts(
    detector, exported, tmp_path
):
    model, full, anchors, x = detector
    with precision.policy("mixed_bfloat16"):
        mixed = build_ssd((CROP, CROP, 3), CLASSES, "mobilenet", width=0.25)
    mixed.set_weights(model.get_weights())
    meta = {"variances": [0.1, 0.2], "score_threshold": 0.01, "iou_threshold": 0.45}
    y = _pseudo_ground_truth(full, anchors, x, {**meta, "max_detections": 100})
    report = detection_export.export_detector(
        mixed, tmp_path, anchors=SPEC, formats="tflite_fp32", val_x=x, val_y=y
    )
    assert report["passed"] and report["formats"]["tflite_fp32"]["max_rel_diff"] <= 1e-4
    # Checked against the float32 copy: the float32 detector's mAP.
    assert report["keras_metric"] == exported[1]["keras_metric"]
    for name in ("model_fp32.tflite", "model_fp32_nms.tflite"):
        assert artifact_float_types(tmp_path / name) == {"float32"}, name


def _convert_tflite(model, endpoint, tmp_path):
    """``endpoint`` of ``model`` as a batch-1 TFLite artifact, loaded by the deploy runner."""
    saved, path = tmp_path / "saved", tmp_path / "model.tflite"
    write_saved_model(model, model.input_shape[1:], saved, "out", endpoint=endpoint, batch=1)
    convert("tflite_fp32", saved, path, None, [])
    return load_runner("run_tflite.py").load(str(path))


def test_nms_function_breaks_exact_score_ties_in_tflite_as_numpy_does(tmp_path):
    # A constant head: all 16 anchors (disjoint boxes) score 0.42 in both classes, bit for bit.
    # TFLite's NON_MAX_SUPPRESSION_V5 alone returns such ties in heap order.
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.AveragePooling2D(8),
        keras.layers.Conv2D(7, 1, kernel_initializer="zeros",
                            bias_initializer=keras.initializers.Constant([0] * 5 + [1, 1])),
        keras.layers.Reshape((-1, 7)),
    ])  # fmt: skip
    cells = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    anchors = np.concatenate([cells, cells + 0.8], axis=1)[:, [1, 0, 3, 2]] / 4.0
    meta = {"anchors": anchors.astype(np.float32), "variances": [0.1, 0.2],
            "score_threshold": 0.01, "iou_threshold": 0.45, "max_detections": 10}  # fmt: skip
    x = np.zeros((1, 32, 32, 3), np.float32)
    expected = post.postprocess(model.predict(x, verbose=0), meta)[0]
    assert np.ptp(expected["scores"]) == 0 and len(expected["scores"]) == 10  # all tied, cut
    got = _convert_tflite(model, detection_export.nms_function(model, meta), tmp_path)
    got = got.predict_all(x)
    assert int(got["num_detections"][0]) == 10
    np.testing.assert_array_equal(got["classes"][0].astype(int), expected["classes"])
    np.testing.assert_allclose(got["boxes"][0], expected["boxes"], atol=1e-6)
    np.testing.assert_allclose(got["scores"][0], expected["scores"], atol=1e-6)


_RUNNER = type("Runner", (), {"runtime": {"name": "fake"}})()
_NMS = {"score_threshold": 0.01, "iou_threshold": 0.5, "max_detections": 100}
# Candidates of one image, one box for both classes: b1 overlaps b0 (IoU 0.95) and ties it to
# 1e-7 in class 0; b3 scores below the threshold. Greedy NMS keeps b0 (class 0), b2 (class 1).
B0, B1, B2, B3 = [0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0, 0, 0.1, 0.1]
CANDIDATES = {
    "boxes": np.array([B0, B1, B2, B3])[:, None, :],
    "scores": np.array([[0.5, 0.0], [0.5 - 1e-7, 0.0], [0.0, 0.4], [0.005, 0.0]]),
}


def _dets(*rows):
    """Detections from ``(class, score, box)`` rows."""
    return {
        "classes": np.array([r[0] for r in rows], int),
        "scores": np.array([r[1] for r in rows]),
        "boxes": np.array([r[2] for r in rows]).reshape(-1, 4),
    }


def _detector_row(tmp_path, fmt, got, candidates, map50=0.5, keras_map50=0.5):
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"12345")
    return checks.detector_checked(
        fmt, artifact, _RUNNER, got, candidates, map50=map50, keras_map50=keras_map50,
        against="Keras", nms=_NMS,
    )  # fmt: skip


@pytest.mark.parametrize(
    "rows, max_detections, mismatched",
    [
        ([(0, 0.5, B0), (1, 0.4, B2)], 100, 0),  # what NumPy NMS keeps
        ([(0, 0.5 - 1e-7, B1), (1, 0.4, B2)], 100, 0),  # the near tie the other way round
        ([(0, 0.5, B0)], 1, 0),  # the cut: the rest score no higher than the last kept
        ([(0, 0.5 + 1e-3, B0), (1, 0.4, B2)], 100, 1),  # a score 1e-3 off
        ([(0, 0.5, [0.1, 0.1, 0.5, 0.501]), (1, 0.4, B2)], 100, 1),  # a box 1e-3 off
        ([(1, 0.5, B0), (1, 0.4, B2)], 100, 3),  # wrong class: b0, b1 left in class 0
        ([(1, 0.4, B2)], 100, 2),  # b0 missing: b0 and b1 neither kept nor suppressed
        ([(0, 0.5, B0), (0, 0.5 - 1e-7, B1), (1, 0.4, B2)], 100, 1),  # b1 not suppressed
        ([(1, 0.4, B2), (0, 0.5, B0)], 100, 1),  # out of score order
        ([(0, 0.5, B0), (1, 0.4, B2), (0, 0.005, B3)], 100, 1),  # below the threshold
    ],
    ids=["kept", "tie", "cut", "score", "box", "class", "missing", "overlap", "order", "low"],
)
def test_check_detections_accepts_any_greedy_nms_of_near_tied_scores_only(
    rows, max_detections, mismatched
):
    summary = checks.check_detections(
        [_dets(*rows)], [CANDIDATES], atol=1e-4,
        **{**_NMS, "max_detections": max_detections},
    )  # fmt: skip
    assert summary["mismatched"] == mismatched and summary["detections"] == len(rows)
    assert (summary["first_mismatch"] is None) == (mismatched == 0)


def test_detector_checked_fp32_passes_detections_whose_map_over_images_flips(tmp_path):
    # A true positive of image 0 and a false positive of image 1 tie to 1e-7: round-off
    # reorders them across images, and mAP@0.5 over the two images moves by 0.17.
    gt = np.array([[[0.1, 0.1, 0.4, 0.4, 0]], [[0.5, 0.5, 0.9, 0.9, 0]]])
    tp0, fp1, tp1 = [0.1, 0.1, 0.4, 0.4], [0.0, 0.6, 0.2, 0.9], [0.5, 0.5, 0.9, 0.9]
    candidates = [
        {"boxes": np.array([tp0])[:, None], "scores": np.array([[0.2000002]])},
        {"boxes": np.array([fp1, tp1])[:, None], "scores": np.array([[0.2000001], [0.2]])},
    ]
    keras = [_dets((0, 0.2000002, tp0)), _dets((0, 0.2000001, fp1), (0, 0.2, tp1))]
    got = [_dets((0, 0.2000000, tp0)), _dets((0, 0.2000002, fp1), (0, 0.2, tp1))]
    keras_map, got_map = (detection_export._map(d, gt) for d in (keras, got))
    assert keras_map - got_map > 0.15
    row = _detector_row(tmp_path, FORMATS["tflite_fp32"], got, candidates, got_map, keras_map)
    assert row["passed"] and row["failures"] == [] and row["metric"] == got_map
    assert row["detections"]["matched"] == 3 and row["detections"]["max_abs_diff"] <= 2.1e-7
    assert row["thresholds"] == {"max_rel_diff": 1e-4, "max_metric_drop": None}


def test_detector_checked_fp32_mismatch_fails_naming_the_detection(tmp_path):
    got = [_dets((0, 0.5, [0.1, 0.1, 0.5, 0.6]), (1, 0.4, B2))]
    row = _detector_row(tmp_path, FORMATS["tflite_fp32"], got, [CANDIDATES])
    assert not row["passed"] and row["status"] == "failed"
    assert row["failures"] == [
        "1 violations of NMS over the candidates of Keras (within 0.0001); first: "
        "image 0: detection 0 is no candidate: class 0 score 0.5 box [0.1, 0.1, 0.5, 0.6]"
    ]


@pytest.mark.parametrize("map50, passed", [(0.80, True), (0.81, True), (0.794, False)])
def test_detector_checked_format_with_metric_drop_is_held_to_map_below_keras(
    tmp_path, map50, passed
):
    fmt = dataclasses.replace(FORMATS["tflite_int8"], max_metric_drop=0.005)
    other = [_dets((0, 0.3, [0.0, 0.0, 0.2, 0.2]))]  # int8 changes detections by design
    row = _detector_row(tmp_path, fmt, other, [CANDIDATES], map50, 0.80)
    assert row["passed"] is passed and row["detections"] is None
    assert row["size_bytes"] == 5 and row["keras_metric"] == 0.80
    assert row["failures"] == ([] if passed else [
        f"mAP@0.5 {map50:.4f} more than 0.005 below Keras 0.8000"
    ])  # fmt: skip
