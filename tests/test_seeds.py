"""benchmarks/seeds.py: the result file's exact keys, mean ± sd and the honesty count."""

import json
import sys
from pathlib import Path

import ml_collections
import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402

KEYS = {
    "method",
    "seed",
    "tolerance",
    "baseline_val",
    "baseline_test",
    "val",
    "test",
    "macs",
    "params",
    "baseline_macs",
    "baseline_params",
    "epochs",
    "wall_seconds",
}


def _seeds():
    return load_benchmark("seeds")


def _record(method, seed, test, macs, eps=0.01):
    return {
        "method": method,
        "seed": seed,
        "tolerance": eps,
        "baseline_val": 0.9,
        "baseline_test": 0.89,
        "val": 0.895,
        "test": test,
        "macs": macs,
        "params": macs // 10,
        "baseline_macs": 1_000_000,
        "baseline_params": 100_000,
        "epochs": 30,
        "wall_seconds": 100.0 + seed,
    }


def test_write_result_has_exact_keys_and_summary(tmp_path, monkeypatch):
    seeds = _seeds()
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    work = tmp_path / "work"
    runs = [
        _record("afp_tf", 0, 0.885, 100_000),
        _record("afp_tf", 1, 0.875, 50_000),  # drop 1.5 points > 1 + 0.3
        _record("uniform_l1", 0, 0.88, 100_000),
    ]
    for r in runs:
        path = work / f"seed{r['seed']}" / f"{r['method']}_eps0.01" / "run.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(r))
    cfg = ml_collections.ConfigDict({"name": "x"})
    out = seeds._write("seeds_x", "x", cfg, work)
    assert {"config", "command", "date", "machine", "runs"} <= set(out)
    assert out["config"] == "x"
    assert all(set(r) >= KEYS for r in out["runs"])
    assert [(r["method"], r["seed"]) for r in out["runs"]] == [
        ("afp_tf", 0),
        ("afp_tf", 1),
        ("uniform_l1", 0),
    ]
    afp = out["summary"][0]
    assert (afp["method"], afp["n"]) == ("afp_tf", 2)
    assert afp["test"]["mean"] == pytest.approx(0.88)
    assert afp["test"]["sd"] == pytest.approx(0.00707107, rel=1e-4)
    assert afp["macs_reduction"]["mean"] == pytest.approx(15.0)
    assert afp["test_drop_within_tolerance_plus_0.3pt"] == 1
    assert out["summary"][1]["test"]["sd"] == 0.0
    assert (tmp_path / "results" / "seeds_x.png").stat().st_size > 1000


def test_readme_renders_mean_sd_and_honesty(tmp_path):
    readme = load_benchmark("readme_results")
    seeds = _seeds()
    runs = [_record("afp_tf", 0, 0.885, 100_000), _record("afp_tf", 1, 0.875, 50_000)]
    d = {
        "config_values": {
            "model": {"name": "lenet5", "width": 1.0},
            "data": {"name": "fashion_mnist", "train_subset": 5000, "accept_fraction": 0.2},
            "prune": {"margin_z": 1.0},
            "train": {"baseline_epochs": 15},
        },
        "runs": runs,
        "summary": seeds.summarize(runs),
    }
    text = readme._seeds(d)
    d["config_values"]["data"]["image_size"] = 32
    d["config_values"]["train"]["learning_rate"] = 0.02
    d["config_values"]["prune"].update(
        max_rounds=3, recovery_epochs=2, finetune_epochs=1, learning_rate=0.0
    )
    recipe = readme._seeds(d)
    assert recipe.startswith("lenet5 on fashion_mnist padded to 32×32 (reduced for CPU time: ")
    assert (
        "15 baseline epochs); at most 3 rounds, 2 recovery and 1 fine-tune epochs at learning "
        "rate 0.02; acceptance split 0.2" in recipe
    )
    assert "| 0.01 | afp_tf | 2 | 88.00 ± 0.71 | 1.00 ± 0.71 | 15.00 ± 7.07× |" in text
    assert "- Honesty: 1 of 2 afp_tf seed × ε runs ended with a test drop within ε + 0.3 " in text
    assert "(50%; ≥ 90%: **missed**)" in text
    assert "train subset 5000, 15 baseline epochs" in text
    d["config_values"]["train"].update(lr_schedule="cosine", warmup_epochs=1)
    assert "15 baseline epochs (cosine learning rate, 1 warmup)); at most" in readme._seeds(d)


def _targets():
    return load_benchmark("seeds_targets")


def _result(model, runs):
    return {
        "config_values": {"model": {"name": model}, "train": {"baseline_epochs": 15}},
        "runs": runs,
        "summary": _seeds().summarize(runs),
    }


def test_seeds_targets_lenet_mean_reductions_met_and_uniform_gap_missed():
    runs = [
        {**_record("afp_tf", 0, 0.885, 50_000), "params": 4_000},  # 20×, 25×, drop 0.5
        {**_record("afp_tf", 1, 0.875, 100_000), "params": 6_000},  # 10×, 16.7×, drop 1.5
        _record("uniform_l1", 0, 0.89, 50_000),
        _record("uniform_l1", 1, 0.88, 100_000),
    ]
    line = _targets().lines(_result("lenet5", runs))[0]
    assert "MACs ↓ 15.00× (per seed 20.0×, 10.0×: 1 of 2 ≥ 15×; at the mean MACs 13.3×; " in line
    assert "mean ≥ 15×: **met**)" in line
    assert "params ↓ 20.8× (per seed 25.0×, 16.7×: 1 of 2 ≥ 20×; at the mean params 20.0×" in line
    assert "test drop 1.00 points (≤ 1: **met**)" in line
    assert (
        "afp_tf − uniform_l1 test -0.50 points at 1.00× afp_tf's mean MACs (≥ 0: **missed**)"
        in line
    )


def test_seeds_targets_cifar_form_win_needs_one_point():
    runs = [_record("afp_tf", 0, 0.885, 50_000), _record("uniform_l1", 0, 0.876, 60_000)]
    line = _targets().lines(_result("vgg16", runs))[0]
    assert "afp_tf − uniform_l1 test +0.90 points" in line
    assert "uniform_l1 at 1.20× afp_tf's mean MACs); ≥ +1 point: **missed**" in line
    runs[1]["test"] = 0.875
    assert "+1.00 points" in _targets().lines(_result("resnet56", runs))[0]
    assert "≥ +1 point: **met**" in _targets().lines(_result("resnet56", runs))[0]


def test_seeds_targets_without_uniform_run_says_open_and_counts_cost():
    runs = [_record("afp_tf", 0, 0.90, 50_000), _record("afp_tf", 1, 0.85, 50_000, eps=0.02)]
    lines = _targets().lines(_result("resnet56", runs))
    assert lines[0] == "- no uniform_l1 run at ε = 0.01 yet: the +1 point target is open"
    assert "1 of 2 afp_tf seed × ε runs" in lines[1]  # drop 4 points > 2 + 0.3 at ε = 0.02
    assert lines[2].startswith("- afp_tf's mean test drop is negative (-1.00 points)")
    assert "(15 epochs)" in lines[2]
    assert lines[3].endswith("afp_tf 30.0 epochs, 100 s.")  # no matched method: no budget note
