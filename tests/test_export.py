"""Export to SavedModel / TFLite / ONNX, verification in each runtime, atomicity, CLI, latency."""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import artifact_float_types

from afp_tf import export, resources
from afp_tf.export import calibration, checks, latency
from afp_tf.export.artifacts import write_saved_model
from afp_tf.train import precision

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


def test_export_model_tolerance_override_fails_check_raises_and_reports(trained, tmp_path):
    model, rep, val_x, val_y = trained
    with pytest.raises(export.ExportVerificationError, match="tflite_fp16: relative difference"):
        export.export_model(
            model,
            tmp_path,
            formats=["tflite_fp32", "tflite_fp16"],
            representative=rep,
            val_x=val_x,
            val_y=val_y,
            tolerances=export.parse_tolerances("tflite_fp16.max_rel_diff=1e-12"),
        )
    report = json.loads((tmp_path / export.REPORT_NAME).read_text())
    assert not report["passed"]
    fp16 = report["formats"]["tflite_fp16"]
    assert fp16["status"] == "failed" and fp16["thresholds"]["max_rel_diff"] == 1e-12
    assert report["formats"]["tflite_fp32"]["passed"]


def test_export_model_without_calibration_skips_int8_with_note(trained, tmp_path):
    model, _, val_x, val_y = trained
    report = export.export_model(
        model, tmp_path, formats="tflite_fp32,tflite_int8", val_x=val_x, val_y=val_y
    )
    int8 = report["formats"]["tflite_int8"]
    assert report["passed"] and report["skipped"] == ["tflite_int8"]
    assert int8["status"] == "skipped" and "no calibration data" in int8["note"]
    assert not (tmp_path / "model_int8.tflite").exists()
    assert (tmp_path / "model_fp32.tflite").exists()
    assert "skipped" in export.summary_table(report).splitlines()[3]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_export_model_mixed_precision_model_writes_float32_artifacts(trained, tmp_path, policy):
    model, _, val_x, val_y = trained
    with precision.policy(policy):
        mixed = _tiny_classifier()
    mixed.set_weights(model.get_weights())
    formats = ["saved_model", "tflite_fp32", "tflite_fp16", "onnx"]
    report = export.export_model(mixed, tmp_path, formats=formats, val_x=val_x, val_y=val_y)
    assert report["passed"] and report["model_precision"] == policy
    # Checked against the float32 copy: the float32 model's accuracy, to the sample.
    logits = model.predict(val_x, verbose=0)
    assert report["keras_metric"] == np.mean(np.argmax(logits, -1) == val_y)
    for name in ("saved_model", "tflite_fp32", "onnx"):
        assert report["formats"][name]["max_rel_diff"] <= 1e-4, name
        assert artifact_float_types(tmp_path / export.FORMATS[name].filename) == {"float32"}
    assert report["formats"]["tflite_fp16"]["passed"]
    assert mixed.get_layer("conv_a").compute_dtype == policy.removeprefix("mixed_")


@keras.saving.register_keras_serializable(package="afp_tf_test")
class _BesselLayer(keras.layers.Layer):
    """An op neither TFLite builtins nor ONNX have."""

    def call(self, x):
        return tf.math.bessel_i1e(x)


def test_export_model_unsupported_op_fails_that_format_and_writes_the_others(tmp_path):
    inputs = keras.Input((6, 6, 1))
    x = _BesselLayer(name="odd_layer")(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    x = np.random.default_rng(0).random((8, 6, 6, 1), dtype=np.float32)
    with pytest.raises(export.ExportError, match=r"tf\.BesselI1e in layer\(s\) odd_layer") as e:
        export.export_model(
            model, tmp_path, formats="saved_model,tflite_fp32,onnx", val_x=x, val_y=None
        )
    formats = e.value.report["formats"]
    assert [formats[n]["status"] for n in ("saved_model", "tflite_fp32", "onnx")] == [
        "passed",
        "failed",
        "failed",
    ]
    for name in ("tflite_fp32", "onnx"):
        assert "odd_layer" in formats[name]["failures"][0]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [export.REPORT_NAME, "saved_model"]  # nothing partial, no temporaries
    table = export.summary_table(e.value.report)
    assert "failed" in table and "BesselI1e" in table


def test_export_model_unwritable_out_dir_raises_clear_error(trained, tmp_path):
    model, rep, val_x, val_y = trained
    (tmp_path / "a_file").write_text("")
    with pytest.raises(export.ExportError, match="Cannot write to export directory"):
        export.export_model(
            model, tmp_path / "a_file" / "out", representative=rep, val_x=val_x, val_y=val_y
        )


def test_parse_tolerances_items_and_none_parsed():
    got = export.parse_tolerances("tflite_int8.max_metric_drop=0.02, onnx.max_rel_diff=none")
    assert got == {"tflite_int8": {"max_metric_drop": 0.02}, "onnx": {"max_rel_diff": None}}
    fmts = checks.resolve_formats(["onnx", "tflite_int8"], got)
    assert [(f.max_rel_diff, f.max_metric_drop) for f in fmts] == [(None, None), (None, 0.02)]


@pytest.mark.parametrize(
    "spec", ["onnx.max_diff=1", "onnx2.max_rel_diff=1", "onnx.max_rel_diff=-1", "onnx=1"]
)
def test_parse_tolerances_bad_item_raises_naming_it(spec):
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        export.parse_tolerances(spec)


def test_resolve_formats_unmeasured_holds_every_format_to_its_outputs():
    tolerances = export.parse_tolerances("tflite_fp16.max_rel_diff=0.05,onnx.max_metric_drop=0.1")
    fmts = checks.resolve_formats(export.ALL_FORMATS, tolerances, measured=False)
    assert {f.name: f.max_rel_diff for f in fmts} == {
        "saved_model": 1e-4,
        "tflite_fp32": 1e-4,
        "tflite_fp16": 0.05,
        "tflite_dynamic_int8": 0.1,
        "tflite_int8": 0.1,
        "onnx": 1e-4,
    }
    assert all(f.max_metric_drop is None for f in fmts)  # nothing measures it


def test_export_model_labels_without_metric_raise(trained, tmp_path):
    model, _, val_x, val_y = trained
    with pytest.raises(ValueError, match="measure_metric=False"):
        export.export_model(model, tmp_path, val_x=val_x, val_y=val_y, measure_metric=False)


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
    script = resources.deploy_dir() / export.FORMATS[fmt].runner
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
        ("measure_latency_table.py", "ai_edge_litert"),
        ("deploy_common.py", None),
        ("__init__.py", None),
    ],
)
def test_deploy_scripts_import_only_numpy_stdlib_and_their_runtime(script, runtime):
    siblings = {p.stem for p in resources.deploy_dir().glob("*.py")}
    roots, todo = set(), [script]
    while todo:  # the script's imports and those of the runners beside it that it imports
        found = _imported_roots(resources.deploy_dir() / todo.pop())
        todo += [f"{m}.py" for m in found & siblings - roots]
        roots |= found
    allowed = set(sys.stdlib_module_names) | {"numpy", runtime} | siblings
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


def _cli(*args, cwd=None, before=None):
    """Runs ``afp-tf-export args``; ``before``: Python code run first in the same process."""
    command = ["-m", "afp_tf.export"]
    if before is not None:
        command = ["-c", f"{before}\nimport sys\nfrom afp_tf.export import cli\n"
                   "sys.exit(cli.main(sys.argv[1:]))"]  # fmt: skip
    return subprocess.run(
        [sys.executable, *command, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_cli_with_npz_data_calibrates_int8_and_checks_labels(trained, tmp_path):
    model, rep, val_x, val_y = trained
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=val_x, y=val_y, x_rep=rep[:64])
    proc = _cli(
        "--model", tmp_path / "m.keras", "--out", tmp_path / "out",
        "--formats", "tflite_int8,onnx", "--data", tmp_path / "d.npz",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / export.REPORT_NAME).read_text())
    assert report["passed"] and set(report["formats"]) == {"tflite_int8", "onnx"}
    assert report["labels"] == "given" and report["calibration"] == "64 inputs"
    assert report["formats"]["tflite_int8"]["metric"] >= report["keras_metric"] - 0.01
    assert "tflite_int8  passed" in proc.stdout
    assert "I0000" not in proc.stderr and "cudart" not in proc.stderr  # TF C++ logs: log file
    assert "Exported" in (tmp_path / "out" / "afp_tf.log").read_text()


def test_cli_without_data_skips_int8_exits_zero(trained, tmp_path):
    model, *_ = trained
    model.save(tmp_path / "m.keras")
    proc = _cli("--model", tmp_path / "m.keras", "--out", tmp_path / "out", "--samples", "32")
    report = json.loads((tmp_path / "out" / export.REPORT_NAME).read_text())
    assert proc.returncode == 0 and report["passed"] and report["skipped"] == ["tflite_int8"]
    assert report["labels"] == "none" and "random" in report["data"]
    assert report["samples"] == 32 and report["formats"]["tflite_fp32"]["metric"] is None
    assert all(report["formats"][n]["passed"] for n in export.ALL_FORMATS if n != "tflite_int8")


def _near_tie_classifier(scale=1.0):
    """A classifier whose logits of random inputs sit near ties: dynamic int8's normal ~1 %
    change of them flips a top-1 in every ~60 inputs. ``scale`` multiplies its weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.set_weights([w * scale for w in model.get_weights()])
    return model


def test_cli_without_data_near_ties_passes_on_numerics_accuracy_not_measured(tmp_path):
    model = _near_tie_classifier()
    model.save(tmp_path / "m.keras")
    noise = calibration.random_inputs((16, 16, 1), 256)  # the CLI's inputs without --data
    # Their top-1 agreement with Keras, what the CLI used to check: below 0.99.
    with pytest.raises(export.ExportVerificationError, match="dynamic_int8: accuracy 0.98"):
        export.export_model(
            model, tmp_path / "old", formats=["tflite_dynamic_int8"], val_x=noise.x, val_y=None
        )
    out = tmp_path / "out"
    proc = _cli(
        "--model", tmp_path / "m.keras", "--out", out,
        "--formats", "tflite_fp32,tflite_dynamic_int8",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    report = json.loads((out / export.REPORT_NAME).read_text())
    assert report["passed"] and report["labels"] == "none" and report["keras_metric"] is None
    dynamic = report["formats"]["tflite_dynamic_int8"]
    assert dynamic["metric"] is None and 0 < dynamic["max_rel_diff"] <= 0.1
    assert dynamic["thresholds"] == {"max_rel_diff": 0.1, "max_metric_drop": None}
    assert report["formats"]["tflite_fp32"]["thresholds"]["max_rel_diff"] == 1e-4
    assert re.search(r"tflite_dynamic_int8\s+passed\s.*\snot measured", proc.stdout)
    assert "Keras accuracy: not measured on 256 samples (random" in proc.stdout


def test_cli_without_data_artifact_with_wrong_numerics_fails(tmp_path):
    _near_tie_classifier().save(tmp_path / "m.keras")
    write_saved_model(_near_tie_classifier(1.5), (16, 16, 1), tmp_path / "other", "logits")
    # The dynamic int8 converter is handed the SavedModel of other weights.
    other = str(tmp_path / "other")
    before = (
        "from afp_tf.export import artifacts as a\n"
        "to_tflite = a._to_tflite\n"
        "a._to_tflite = lambda name, saved_model, rep: to_tflite(\n"
        f"    name, {other!r} if name == 'tflite_dynamic_int8' else saved_model, rep\n"
        ")"
    )
    out = tmp_path / "out"
    proc = _cli(
        "--model", tmp_path / "m.keras", "--out", out,
        "--formats", "tflite_fp32,tflite_dynamic_int8", before=before,
    )  # fmt: skip
    report = json.loads((out / export.REPORT_NAME).read_text())
    assert proc.returncode == 1 and not report["passed"], proc.stderr[-2000:]
    dynamic = report["formats"]["tflite_dynamic_int8"]
    assert dynamic["status"] == "failed" and dynamic["max_rel_diff"] > 0.5
    assert dynamic["failures"] == [f"relative difference {dynamic['max_rel_diff']:.3g} > 0.1"]
    assert report["formats"]["tflite_fp32"]["passed"]


def test_cli_int8_asked_without_data_is_a_usage_error(trained, tmp_path):
    proc = _cli("--model", tmp_path / "m.keras", "--out", tmp_path, "--formats", "tflite_int8")
    assert proc.returncode == 2 and "pass --data" in proc.stderr


def test_cli_failing_check_exits_one_and_writes_the_rest(trained, tmp_path):
    model, *_ = trained
    model.save(tmp_path / "m.keras")
    proc = _cli(
        "--model", tmp_path / "m.keras", "--out", tmp_path / "out",
        "--formats", "tflite_fp32,tflite_fp16", "--samples", "32",
        "--tolerance", "tflite_fp16.max_rel_diff=1e-12",
    )  # fmt: skip
    report = json.loads((tmp_path / "out" / export.REPORT_NAME).read_text())
    assert proc.returncode == 1 and not report["passed"]
    assert "relative difference" in proc.stdout  # the cause, in the summary table
    assert report["formats"]["tflite_fp32"]["passed"]
    assert (tmp_path / "out" / "model_fp16.tflite").exists()  # written, reported as failing
