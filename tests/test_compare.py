"""benchmarks/compare.py end to end on tiny IDX data, and the README results generator."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402


@pytest.fixture(scope="module")
def compare_result(tmp_path_factory, tiny_fashion_mnist):
    results = tmp_path_factory.mktemp("results")
    workdir = tmp_path_factory.mktemp("compare")
    mp = pytest.MonkeyPatch()
    mp.setattr(common, "RESULTS", results)
    overrides = [
        f"data.data_dir={tiny_fashion_mnist}",
        "data.source=local",
        "data.batch_size=64",
        "data.train_subset=800",
        "data.val_subset=0",
        "data.test_subset=0",
        "train.baseline_epochs=2",
        "train.learning_rate=0.05",
        "train.progress=false",
        "prune.tolerance=0.2",
        "prune.max_rounds=1",
        "prune.p_max=0.3",
        "prune.recovery_epochs=1",
        "prune.finetune_epochs=1",
        "export.samples=64",
    ]
    argv = ["lenet5_fashion_mnist:quick", "--workdir", str(workdir), "--latency-runs", "3"]
    argv += ["--methods", "a,b,c,d,e"]
    argv += [a for o in overrides for a in ("--override", o)]
    out = load_benchmark("compare").main(argv)
    yield out, results, workdir, argv
    mp.undo()


def test_compare_tiny_run_all_methods_recorded_with_equal_macs(compare_result):
    out, results, _, _ = compare_result
    assert set(out["methods"]) == {"a", "b", "c", "d", "e"}
    a = out["methods"]["a"]
    assert a["macs"] < out["baseline"]["macs"], "afp_tf pruned nothing on the tiny set"
    for key in ("b", "c"):
        assert abs(out["methods"][key]["macs"] - a["macs"]) <= 0.1 * a["macs"], key
        assert out["methods"][key]["epochs_used"] == out["budget_epochs"]
    for name, r in out["methods"].items():
        correct = r["test"] * 300  # accuracy over the 300 test images: a whole count
        assert abs(correct - round(correct)) < 1e-6 and r["latency"]["median_ms"] > 0, name
    # The recorded verdict is the one the recorded numbers give.
    assert out["target"] == load_benchmark("compare").target_verdict(out["methods"])
    assert (results / "compare_lenet5_fashion_mnist.json").is_file()
    assert (results / "compare_lenet5_fashion_mnist.png").stat().st_size > 1000


def test_compare_rerun_same_workdir_reuses_finished_methods(compare_result):
    out, _, workdir, argv = compare_result
    before = (workdir / "b" / "result.json").stat().st_mtime_ns
    latency = (workdir / "b" / "tflite_pruned" / "latency.json").stat().st_mtime_ns
    again = load_benchmark("compare").main([*argv, "--methods", "a,b"])
    assert (workdir / "b" / "tflite_pruned" / "latency.json").stat().st_mtime_ns == latency
    assert (workdir / "b" / "result.json").stat().st_mtime_ns == before
    assert again["methods"]["b"]["test"] == out["methods"]["b"]["test"]
    assert again["wall_seconds"] > out["wall_seconds"]  # the rerun's time is added


def test_wall_clock_sums_invocations_including_a_failed_one(tmp_path, monkeypatch):
    now = iter([100.0, 103.0, 200.0, 202.0, 300.0, 350.0])
    monkeypatch.setattr(common.time, "time", lambda: next(now))
    with pytest.raises(RuntimeError), common.wall_clock(tmp_path):
        raise RuntimeError("killed mid-round")
    with common.wall_clock(tmp_path) as wall:
        pass
    assert wall["seconds"] == 5.0
    with common.wall_clock(tmp_path, count=False) as wall:
        pass
    assert wall["seconds"] == 5.0


def test_wall_clock_sigterm_counts_the_invocation_and_restores_handler(tmp_path, monkeypatch):
    now = iter([100.0, 104.0])
    monkeypatch.setattr(common.time, "time", lambda: next(now))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, common.wall_clock(tmp_path):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert exc.value.code == 143
    assert json.loads((tmp_path / "benchmark_wall.json").read_text())["seconds"] == 4.0
    assert signal.getsignal(signal.SIGTERM) is before


def test_compare_methods_without_a_exits_with_message():
    with pytest.raises(SystemExit, match="a is required"):
        load_benchmark("compare").main(["lenet5_fashion_mnist", "--methods", "b"])


def test_readme_results_same_inputs_byte_identical(compare_result, tmp_path):
    _, results, _, _ = compare_result
    readme_results = load_benchmark("readme_results")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Results\n\n<!-- results:start -->\n<!-- results:end -->\n\nend\n")
    readme_results.update_readme(readme, results)
    first = readme.read_bytes()
    readme_results.update_readme(readme, results)
    assert readme.read_bytes() == first
    text = first.decode()
    assert "compare_lenet5_fashion_mnist" in text and text.endswith("\nend\n")
    assert "uniform ℓ1" in text


def test_readme_results_missing_markers_raises(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:start"):
        load_benchmark("readme_results").update_readme(readme, tmp_path)


def test_compare_target_gain_over_one_point_met_else_not():
    target = load_benchmark("compare").target_verdict
    a = {"test": 0.900, "macs": 100}
    near = target({"a": a, "b": {"test": 0.895, "macs": 101}, "b15": {"test": 0.91, "macs": 150}})
    assert not near["met"] and "NOT met" in near["verdict"]
    assert near["equal_macs"]["gain_points"] == pytest.approx(0.5)
    far = target({"a": a, "b": {"test": 0.885, "macs": 99}})
    assert far["met"] and far["equal_macs"]["met"]
    fewer = target({"a": a, "b": {"test": 0.9, "macs": 100}, "b15": {"test": 0.89, "macs": 150}})
    assert fewer["met"] and fewer["equal_accuracy"]["met"] and not fewer["equal_macs"]["met"]


def test_readme_results_ssd_renders_splits_macs_and_latency():
    model = {"params": 1000}
    maps = {s: {"map50": 0.9, "map": 0.5} for s in ("val", "accept", "test")}
    scored = {"scored": ["danger", "mandatory"], "map50_all": 0.7}
    maps["test"] |= {**scored, "ap_per_class": {"danger": 0.95, "mandatory": 0.85, "other": 0.3}}
    small = {**maps, "test": {"map50": 0.885, "map": 0.45, **scored}}
    small["test"]["ap_per_class"] = {"danger": 0.9, "mandatory": 0.87, "other": 0.2}
    lat = {"baseline_ms": 30.0, "pruned_ms": 10.0, "speedup": 3.0}
    result = {
        "data": "synthetic",
        "map": {"baseline": maps, "pruned": small},
        "macs_per_frame": {"frame": [320, 544], "baseline": 4e8, "pruned": 1e8},
        "baseline": model,
        "pruned": {"params": 250},
        "tolerance": 0.01,
        "decision_metric": "map50 on acceptance",
        "macs_reduction": 4.0,
        "params_reduction": 4.0,
        "rounds": 3,
        "stop_reason": "MACs target reached",
        "wall_seconds": 100.0,
        "latency": [{"format": "tflite_int8", **lat}],
        "detection_latency": [{"artifact": "model_int8_nms.tflite", **lat}],
        "export_passed": {"tflite_int8": True, "onnx": False},
    }
    text = load_benchmark("readme_results")._renderer("ssd_gtsdb_synthetic")(result)
    assert "| pruned | 0.900 | 0.900 | 0.885 | 0.700 | 0.450 | 100.000 M | 250 |" in text
    assert "scored categories (danger, mandatory)" in text
    assert "| baseline | 0.950 | 0.850 | 0.300 |" in text  # test AP per category
    assert "| pruned | 0.900 | 0.870 | 0.200 |" in text
    assert "| model_int8_nms.tflite | 30.0 | 10.0 | 3.00× |" in text
    assert "MACs ↓ 4.00×" in text and "onnx NO, tflite_int8 yes" in text
