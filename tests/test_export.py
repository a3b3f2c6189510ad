"""Export to SavedModel / TFLite / ONNX, verification in each runtime, atomicity, CLI, latency."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from afp_tf import export, latency

CLASSES = 4
SIZE = 12


def _quadrant_images(n, seed):
    """Class = the quadrant holding a bright patch; learnt in a few epochs by a tiny conv net."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.random((n, SIZE, SIZE, 1), dtype=np.float32) * 0.3
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 6 * r + 1 : 6 * r + 5, 6 * col + 1 : 6 * col + 5] = 1.0
    return x, y


def _tiny_classifier():
    inputs = keras.Input((SIZE, SIZE, 1), name="pixels")
    x = keras.layers.Conv2D(8, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(x))


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    x, y = _quadrant_images(512, 1)
    model = _tiny_classifier()
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=64, epochs=4, verbose=0)
    val_x, val_y = _quadrant_images(256, 2)
    return model, x, val_x, val_y


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, rep, val_x, val_y = trained
    out = tmp_path_factory.mktemp("export")
    report = export.export_model(model, out, representative=rep, val_x=val_x, val_y=val_y)
    return out, report


def test_export_model_all_formats_written_and_verified(exported):
    out, report = exported
    assert report["passed"]
    assert report["keras_metric"] > 0.9  # the int8 check below is meaningful
    for name, fmt in export.FORMATS.items():
        assert (out / fmt.filename).exists(), name
        assert report["formats"][name]["passed"], report["formats"][name]
    for name in ("saved_model", "tflite_fp32", "onnx"):
        assert report["formats"][name]["max_rel_diff"] <= 1e-4
    for name in ("tflite_int8", "tflite_dynamic_int8"):
        assert report["formats"][name]["metric"] >= report["keras_metric"] - 0.01
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_export_report_json_contents_match_artifacts(exported):
    out, report = exported
    on_disk = json.loads((out / export.REPORT_NAME).read_text())
    assert on_disk["samples"] == 256 and on_disk["labels"] == "given"
    int8 = on_disk["formats"]["tflite_int8"]
    assert int8["size_bytes"] == (out / "model_int8.tflite").stat().st_size
    assert int8["thresholds"] == {"max_rel_diff": None, "max_metric_drop": 0.01}
    assert int8["runtime"]["name"] == "ai-edge-litert"
    assert on_disk["formats"]["onnx"]["runtime"]["name"] == "onnxruntime"
    assert on_disk["formats"]["saved_model"]["thresholds"]["max_rel_diff"] == 1e-4
    assert on_disk["formats"]["tflite_fp16"]["max_abs_diff"] > 0
    # int8 files are smaller than fp32 ones: the weights really are 8-bit.
    assert int8["size_bytes"] < on_disk["formats"]["tflite_fp32"]["size_bytes"]


def test_export_model_forced_verification_failure_raises_and_reports(
    trained, tmp_path, monkeypatch
):
    model, rep, val_x, val_y = trained
    strict = dataclasses.replace(export.FORMATS["tflite_fp16"], max_rel_diff=1e-12)
    monkeypatch.setitem(export.FORMATS, "tflite_fp16", strict)
    with pytest.raises(export.ExportVerificationError, match="tflite_fp16: relative difference"):
        export.export_model(
            model,
            tmp_path,
            formats=["tflite_fp32", "tflite_fp16"],
            representative=rep,
            val_x=val_x,
            val_y=val_y,
        )
    report = json.loads((tmp_path / export.REPORT_NAME).read_text())
    assert not report["passed"]
    assert not report["formats"]["tflite_fp16"]["passed"]
    assert report["formats"]["tflite_fp16"]["failures"]
    assert report["formats"]["tflite_fp32"]["passed"]


@keras.saving.register_keras_serializable(package="afp_tf_test")
class _BesselLayer(keras.layers.Layer):
    """An op neither TFLite builtins nor ONNX have."""

    def call(self, x):
        return tf.math.bessel_i1e(x)


@pytest.mark.parametrize("fmt", ["tflite_fp32", "onnx"])
def test_export_model_unsupported_op_leaves_no_file_and_names_layer(fmt, tmp_path):
    inputs = keras.Input((6, 6, 1))
    x = _BesselLayer(name="odd_layer")(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    x = np.random.default_rng(0).random((8, 6, 6, 1), dtype=np.float32)
    with pytest.raises(export.ExportError, match=r"tf\.BesselI1e in layer\(s\) odd_layer"):
        export.export_model(model, tmp_path, formats=[fmt], representative=x, val_x=x, val_y=None)
    assert list(tmp_path.iterdir()) == []


def test_export_model_unwritable_out_dir_raises_clear_error(trained, tmp_path):
    model, rep, val_x, val_y = trained
    (tmp_path / "a_file").write_text("")
    with pytest.raises(export.ExportError, match="Cannot write to export directory"):
        export.export_model(
            model, tmp_path / "a_file" / "out", representative=rep, val_x=val_x, val_y=val_y
        )


def test_parse_formats_all_and_unknown():
    assert export.parse_formats("all") == export.ALL_FORMATS
    assert export.parse_formats("onnx, tflite_int8") == ("onnx", "tflite_int8")
    with pytest.raises(ValueError, match="Unknown export format.*tflite_int4"):
        export.parse_formats("onnx,tflite_int4")


@pytest.mark.parametrize("fmt", ["tflite_fp32", "tflite_int8", "onnx", "saved_model"])
def test_deploy_runner_subprocess_prints_timing_and_keras_predictions(
    fmt, exported, trained, tmp_path
):
    out, _ = exported
    model, _, val_x, _ = trained
    np.save(tmp_path / "x.npy", val_x[:16])
    script = export.DEPLOY_DIR / export.FORMATS[fmt].runner
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(out / export.FORMATS[fmt].filename),
            "--inputs",
            str(tmp_path / "x.npy"),
            "--runs",
            "5",
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 < result["median_ms"] <= result["p90_ms"]
    assert result["threads"] == 1 and result["runs"] == 5
    keras_pred = np.argmax(model.predict(val_x[:16], verbose=0), -1)
    agreement = np.mean(np.asarray(result["predictions"]) == keras_pred)
    assert agreement == 1.0 if fmt != "tflite_int8" else agreement >= 14 / 16


def _imported_roots(path):
    import ast

    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "script,runtime",
    [
        ("run_tflite.py", "ai_edge_litert"),
        ("run_onnx.py", "onnxruntime"),
        ("run_saved_model.py", "tensorflow"),
        ("deploy_common.py", None),
    ],
)
def test_deploy_scripts_import_only_numpy_stdlib_and_their_runtime(script, runtime):
    roots = _imported_roots(export.DEPLOY_DIR / script)
    allowed = set(sys.stdlib_module_names) | {"numpy", "deploy_common", runtime}
    assert roots - allowed == set()
    assert not roots & {"afp_tf", "keras", "tf2onnx"}
    if runtime:
        assert runtime in roots


def test_latency_table_rows_per_common_format(exported, tmp_path):
    out, _ = exported
    for side in ("baseline", "pruned"):
        (tmp_path / side).mkdir()
        for name in ("model_fp32.tflite", "model.onnx", export.REPORT_NAME):
            shutil.copy(out / name, tmp_path / side / name)
    rows = latency.latency_table(
        tmp_path / "baseline",
        tmp_path / "pruned",
        macs_baseline=300,
        macs_pruned=100,
        runs=5,
        warmup=1,
    )
    assert [r["format"] for r in rows] == ["tflite_fp32", "onnx"]
    for r in rows:
        assert r["macs_reduction"] == 3.0
        assert r["baseline_ms"] > 0 and r["pruned_ms"] > 0
        assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["pruned_ms"])


def test_measure_latency_unknown_artifact_name_raises(tmp_path):
    with pytest.raises(ValueError, match="not an exported artifact"):
        latency.measure_latency(tmp_path / "model.bin")


def test_cli_round_trip_on_saved_keras_model(trained, tmp_path):
    model, rep, val_x, val_y = trained
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=val_x, y=val_y, x_rep=rep[:64])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "afp_tf.export",
            "--model",
            str(tmp_path / "m.keras"),
            "--out",
            str(tmp_path / "out"),
            "--formats",
            "tflite_int8,onnx",
            "--data",
            str(tmp_path / "d.npz"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=Path(export.__file__).parents[1],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / export.REPORT_NAME).read_text())
    assert report["passed"] and set(report["formats"]) == {"tflite_int8", "onnx"}
    assert report["labels"] == "given"


def test_cli_without_data_verifies_on_random_inputs_and_says_so(trained, tmp_path):
    model, *_ = trained
    model.save(tmp_path / "m.keras")
    export.main(
        [
            "--model",
            str(tmp_path / "m.keras"),
            "--out",
            str(tmp_path / "out"),
            "--formats",
            "tflite_fp32",
            "--samples",
            "32",
        ]
    )
    report = json.loads((tmp_path / "out" / export.REPORT_NAME).read_text())
    assert report["labels"] == "keras_argmax" and "random" in report["data"]
    assert report["samples"] == 32 and report["formats"]["tflite_fp32"]["metric"] == 1.0
