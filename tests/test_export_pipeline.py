"""The main job exports baseline and pruned models; verification and latency reach the report."""

import json

import keras
import pytest
from conftest import tiny_job_config

from afp_tf import export
from afp_tf.export import latency_model
from afp_tf.method.pruner import filters_per_group
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


class _PerFilterTable:
    """A fake latency table (the real one is measured in tests/test_latency_model.py)."""

    format, threads = "tflite_fp32", 1

    def predict(self, model):
        return 0.01 * sum(filters_per_group(model).values())


@pytest.mark.slow
def test_latency_budget_reports_the_prediction_beside_both_artifacts_timed_together(
    tmp_path, tiny_fashion_mnist, monkeypatch
):
    monkeypatch.setattr(latency_model, "load_or_measure", lambda *a, **k: _PerFilterTable())
    cfg = tiny_job_config(
        tiny_fashion_mnist,
        "prune.max_rounds=1",
        "prune.latency_target_ms=0.01",
        "export.enabled=true",
        "export.formats=tflite_fp32",
        "export.latency_runs=3",
    )
    pipeline.run(cfg, tmp_path)
    budget = json.loads((tmp_path / "report.json").read_text())["pruned"]["latency"]
    pruned = keras.saving.load_model(tmp_path / "pruned.keras", compile=False)
    assert budget["predicted_ms"] == pytest.approx(_PerFilterTable().predict(pruned))
    assert budget["stopped_by"] == "round budget" and budget["target_ms"] == 0.01
    ratio = budget["baseline_predicted_ms"] / budget["predicted_ms"]
    assert budget["predicted_speedup"] == pytest.approx(ratio)
    ratio = budget["baseline_measured_ms"] / budget["measured_ms"]
    assert budget["measured_speedup"] == pytest.approx(ratio)
    timed = json.loads((tmp_path / "export" / "latency_timing" / "timed.json").read_text())
    assert [p["file"] for p in timed["probes"]] == ["artifact0.tflite", "artifact1.tflite"]
    assert timed["probes"][1]["median_ms"] == budget["measured_ms"] and timed["block"] == 10
