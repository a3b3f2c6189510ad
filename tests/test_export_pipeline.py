"""The main job exports baseline and pruned models; verification and latency reach the report."""

import json

import pytest
from conftest import tiny_job_config

from afp_tf import export
from afp_tf.run import pipeline


@pytest.mark.slow
def test_pipeline_with_export_writes_verified_artifacts_and_latency(tmp_path, tiny_fashion_mnist):
    cfg = tiny_job_config(
        tiny_fashion_mnist,
        "prune.max_rounds=2",
        "export.enabled=true",
        "export.formats=tflite_fp32,tflite_int8,onnx",
        "export.latency_runs=3",
    )
    summary = pipeline.run(cfg, tmp_path)
    for side in ("baseline", "pruned"):
        report = json.loads((tmp_path / "export" / side / export.REPORT_NAME).read_text())
        assert report["passed"] and set(report["formats"]) == {"tflite_fp32", "tflite_int8", "onnx"}
        assert (tmp_path / "export" / side / "model_int8.tflite").exists()
    rows = summary["export"]["latency"]
    assert [r["format"] for r in rows] == ["tflite_fp32", "tflite_int8", "onnx"]
    assert all(r["baseline_ms"] > 0 and r["pruned_ms"] > 0 for r in rows)
    assert "| tflite_int8 |" in (tmp_path / "report.md").read_text()
