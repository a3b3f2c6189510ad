"""benchmarks/recovery_drift.py: a drift run's overrides, its drift, read-back and summary."""

import json
import sys
from pathlib import Path

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402


def test_drift_runs_one_tiny_round_per_recipe_and_seed_and_read_back(tmp_path, monkeypatch):
    d = load_benchmark("recovery_drift")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    base = {"overrides": ["seed=3", "data.seed=3", "train.baseline_model=B"]}
    monkeypatch.setattr(d.seeds, "shared_baseline", lambda cfg, workdir, seed: base)
    calls = []
    after = {("slow", 0): 0.895, ("slow", 1): 0.899, ("gentle", 0): 0.903, ("gentle", 1): 0.904}

    def afp_run(cfg, run_dir, overrides):
        calls.append(overrides)
        recipe = run_dir.name.split("_")[1]
        train_seed = int(run_dir.name[-1])
        run_dir.mkdir(parents=True, exist_ok=True)
        history = [
            {
                "removed": 2,
                "outcome": "accepted",
                "metric_before": 0.905,
                "metric": after[recipe, train_seed],
                "val_after_removal": 0.9,
                "recovery_epochs": 2,
            }
        ]
        (run_dir / "report.json").write_text(json.dumps({"history": history}))
        return {"test": 0.88, "baseline": {"test": 0.89}}

    monkeypatch.setattr(d.compare, "afp_run", afp_run)
    argv = ["vgg16_fashion_mnist", "--seed=3", f"--workdir={tmp_path / 'w'}", "--name=drift"]
    argv += ["--recipe=slow:prune.learning_rate=0.002", "--recipe=gentle:prune.distill=0.5"]
    result = d.main(argv)
    assert len(calls) == 4
    # the recipe's overrides last, after the baseline's and the one-tiny-round settings
    assert calls[0][:4] == ["seed=3", "data.seed=3", "train.baseline_model=B", "seed=0"]
    assert "prune.p_max=0.001" in calls[0] and "prune.max_rounds=1" in calls[0]
    assert calls[0][-1] == "prune.learning_rate=0.002" and calls[3][-1] == "prune.distill=0.5"
    assert calls[1][3] == "seed=1"
    by = {s["recipe"]: s for s in result["summary"]}
    assert by["slow"]["drift_mean"] == pytest.approx(0.008)  # (0.010 + 0.006) / 2
    assert by["slow"]["drift_sd"] == pytest.approx(0.0028284, rel=1e-4)
    assert by["gentle"]["drift_mean"] == pytest.approx(0.0015)
    written = json.loads((tmp_path / "results" / "drift.json").read_text())
    assert written["summary"] == result["summary"] and "command" in written
    # a rerun reads every finished run back
    d.main(argv)
    assert len(calls) == 4
