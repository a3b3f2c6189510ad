"""benchmarks/frontier.py: the ladder interpolation, the result file's keys and the plan's order."""

import json
import math
import sys
from pathlib import Path

import ml_collections
import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402

RUN_KEYS = {
    "method",
    "seed",
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


def _frontier():
    return load_benchmark("frontier")


def test_frontier_reduction_interpolates_in_log_reduction_between_ladder_points():
    f = _frontier()
    ladder = [(0.004, 2.0), (0.02, 4.0)]  # (test drop, MACs reduction)
    # halfway in drop between 2x and 4x: sqrt(2 * 4)
    reduction, bounded = f.frontier_reduction(ladder, 0.012)
    assert reduction == pytest.approx(math.sqrt(8.0))
    assert bounded
    # between the unpruned model (0, 1x) and the first point
    assert f.frontier_reduction(ladder, 0.002)[0] == pytest.approx(math.sqrt(2.0))
    # beyond the ladder: its largest reduction, flagged as a lower bound
    assert f.frontier_reduction(ladder, 0.05) == (4.0, False)


def test_frontier_reduction_monotone_drop_and_gains_compared_at_zero():
    f = _frontier()
    # the 3x point is more accurate than the 2x one: it counts at the 2x point's drop
    ladder = [(0.01, 2.0), (0.005, 3.0), (-0.001, 1.5), (0.03, 6.0)]
    reduction, _ = f.frontier_reduction(ladder, 0.01)
    assert reduction == pytest.approx(3.0)
    # an afp_tf gain (negative drop) is compared with the ladder at no loss: 1.5x (drop <= 0)
    assert f.frontier_reduction(ladder, -0.002)[0] == pytest.approx(1.5)


def _run(method, seed, test, macs, **point):
    return {
        "method": method,
        "seed": seed,
        **point,
        "baseline_val": 0.90,
        "baseline_test": 0.88,
        "val": 0.89,
        "test": test,
        "macs": macs,
        "params": macs // 10,
        "baseline_macs": 1_200_000,
        "baseline_params": 120_000,
        "epochs": 30,
        "wall_seconds": 10.0,
    }


def test_write_result_has_required_keys_and_afp_tf_over_uniform(tmp_path, monkeypatch):
    f = _frontier()
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    work = tmp_path / "work"
    runs = [
        _run("afp_tf", 0, 0.87, 300_000, tolerance=0.01),  # 4x at drop 0.01
        _run("uniform_l1", 0, 0.876, 600_000, fraction=0.2),  # 2x at drop 0.004
        _run("uniform_l1", 0, 0.86, 300_000, fraction=0.45),  # 4x at drop 0.02
        _run("afp_tf_endgame", 0, 0.876, 400_000, tolerance=0.01),  # 3x at drop 0.004
    ]
    for r in runs:
        point = r.get("tolerance", r.get("fraction"))
        path = f._point_dir(work, 0, r["method"], point, "fraction" in r) / "run.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(r))
    cfg = ml_collections.ConfigDict(
        {"model": {"name": "vgg16", "width": 0.5}, "task": "detection", "name": "x"}
    )
    out = f._write("vgg16_x0.5", "vgg16_fashion_mnist", cfg, work)
    top = {"config", "command", "date", "machine", "model", "width", "train_examples", "runs"}
    assert top <= set(out)
    assert (out["model"], out["width"]) == ("vgg16", 0.5)
    assert all(set(r) >= RUN_KEYS for r in out["runs"])
    assert [r["method"] for r in out["runs"]] == ["afp_tf", "afp_tf_endgame", *["uniform_l1"] * 2]
    assert [r.get("fraction") for r in out["runs"]] == [None, None, 0.2, 0.45]
    row, variant = out["summary"]["afp_tf_vs_ladders"]
    assert (row["method"], variant["method"]) == ("afp_tf", "afp_tf_endgame")
    # The variant at drop 0.004 meets uniform's 2x point exactly: 3x / 2x.
    assert variant["uniform_l1"]["afp_tf_over_it"] == pytest.approx(1.5)
    assert row["macs_reduction"] == pytest.approx(4.0)
    uniform = row["uniform_l1"]
    # uniform at drop 0.01: 3/8 of the way from 2x (0.004) to 4x (0.02) in log-reduction
    assert uniform["macs_reduction_at_equal_drop"] == pytest.approx(2.0 * 2 ** (0.375))
    assert uniform["afp_tf_over_it"] == pytest.approx(4.0 / (2.0 * 2**0.375))
    assert "global_l1" not in row  # no ladder for it: nothing to compare with
    assert row["within_tolerance_plus_0.3pt"]
    assert (tmp_path / "results" / "frontier_vgg16_x0.5.png").stat().st_size > 1000


def test_main_runs_the_budget_tolerance_before_the_ladders_it_sizes(tmp_path, monkeypatch):
    f = _frontier()
    calls = []
    monkeypatch.setattr(f, "_run_one", lambda cfg, w, seed, m, p, *a: calls.append((seed, m, p)))
    monkeypatch.setattr(f, "_write", lambda *a: {})
    f.main(
        [
            "lenet5_fashion_mnist",
            "--seeds",
            "0,1",
            "--tolerances",
            "0.005,0.01",
            "--fractions",
            "0.3",
            "--reductions",
            "2",
            "--workdir",
            str(tmp_path),
            "--variant",
            "endgame:prune.min_headroom=0.25,prune.extend_epochs=2",
        ]
    )
    assert calls[:5] == [
        (0, "afp_tf", 0.01),
        (0, "uniform_l1", 0.3),
        (0, "global_l1", 2.0),
        (0, "afp_tf", 0.005),
        (0, "endgame", 0.01),
    ]
    assert calls[5][0] == 1 and len(calls) == 10


def test_parse_variant_splits_overrides_and_refuses_bad_specs():
    f = _frontier()
    assert f.parse_variant("endgame:prune.min_headroom=0.25, prune.extend_epochs=2") == (
        "endgame",
        ["prune.min_headroom=0.25", "prune.extend_epochs=2"],
    )
    for bad in ("endgame", "afp_tf:prune.p_max=0.2", "x:prune.p_max", "a-b:k=v"):
        with pytest.raises(SystemExit, match="--variant"):
            f.parse_variant(bad)


def test_main_ladder_variant_runs_the_uniform_ladder_again_after_the_others(tmp_path, monkeypatch):
    f = _frontier()
    calls = []
    monkeypatch.setattr(f, "_run_one", lambda cfg, w, seed, m, p, *a: calls.append((m, p, a[-1])))
    monkeypatch.setattr(f, "_write", lambda *a: {})
    args = ["lenet5_fashion_mnist", "--seeds", "0", "--tolerances", "0.01", "--fractions", "0.3"]
    args += ["--reductions", "2", "--workdir", str(tmp_path)]
    f.main([*args, "--ladder-variant", "uniform_l1_distill:prune.distill=0.5"])
    assert [c[:2] for c in calls] == [
        ("afp_tf", 0.01),
        ("uniform_l1", 0.3),
        ("global_l1", 2.0),
        ("uniform_l1_distill", 0.3),
    ]
    assert calls[0][2] == {"uniform_l1_distill": ["prune.distill=0.5"]}
    calls.clear()
    f.main(args)
    assert "uniform_l1_distill" not in {c[0] for c in calls}  # only with --ladder-variant
    for bad in ("uniform_l1:prune.distill=0.5", "lr_high"):
        with pytest.raises(SystemExit, match="--ladder-variant"):
            f.main([*args, "--ladder-variant", bad])
    with pytest.raises(SystemExit, match="share the names"):
        f.main([*args, "--ladder-variant", "x:prune.distill=0.5", "--variant", "x:prune.p_max=0.1"])


def test_ladder_point_applies_the_variant_and_distils_only_when_it_sets_distill(
    tmp_path, monkeypatch
):
    f = _frontier()
    seen = {}

    def comparison_run(c, data, run_dir, method_fn, teacher=None):
        seen[run_dir.name] = (c.prune.distill, c.prune.learning_rate, c.seed, teacher)
        return {}

    monkeypatch.setattr(f.compare, "comparison_run", comparison_run)
    monkeypatch.setattr(f, "load_task", lambda c: None)
    cfg = f.config_lib.load_config("lenet5_fashion_mnist")
    base = {"seed_overrides": ["seed=1"], "model": tmp_path / "baseline.keras", "macs": 100}
    variants = {
        "uniform_l1": [],
        "uniform_l1_distill": ["prune.distill=0.5"],
        "uniform_l1_lr": ["prune.learning_rate=0.02"],
    }
    for method, added in variants.items():
        f._ladder_point(cfg, base, tmp_path / method, method, 0.3, 4, 0.1, added)
    assert seen == {
        "uniform_l1": (0.0, cfg.prune.learning_rate, 1, None),
        "uniform_l1_distill": (0.5, cfg.prune.learning_rate, 1, tmp_path / "baseline.keras"),
        "uniform_l1_lr": (0.0, 0.02, 1, None),
    }
    assert cfg.prune.distill == 0.0 and cfg.seed == 0  # the config given is not changed


def _shared_baseline(f, tmp_path, monkeypatch, overrides):
    """The LeNet-5 config, with ``seeds.shared_baseline`` faked (seed 0, 1000 MACs)."""
    base = {
        "val": 0.9,
        "test": 0.88,
        "macs": 1000,
        "params": 100,
        "seed_overrides": ["seed=0"],
        "model": tmp_path / "baseline.keras",
        "overrides": overrides,
    }
    monkeypatch.setattr(f.seeds, "shared_baseline", lambda *a: base)
    return f.config_lib.load_config("lenet5_fashion_mnist")


def test_run_one_records_a_ladder_variant_in_its_own_fraction_directory(tmp_path, monkeypatch):
    f = _frontier()
    cfg = _shared_baseline(f, tmp_path, monkeypatch, overrides=[])
    budget = f._point_dir(tmp_path, 0, "afp_tf", 0.01, False) / "run.json"
    budget.parent.mkdir(parents=True)
    budget.write_text(json.dumps({"epochs": 7}))
    got = {}

    def ladder_point(c, b, run_dir, method, point, epochs, rate, added):
        got.update(run_dir=run_dir, epochs=epochs, added=added)
        return {"val": 0.89, "test": 0.87, "macs": 500, "params": 50, "epochs_used": epochs}

    monkeypatch.setattr(f, "_ladder_point", ladder_point)
    lv = {"uniform_l1_lr": ["prune.learning_rate=0.02"]}
    r = f._run_one(cfg, tmp_path, 0, "uniform_l1_lr", 0.3, 0.01, 0.1, {}, lv)
    assert got == {
        "run_dir": tmp_path / "seed0" / "uniform_l1_lr_frac0.3",
        "epochs": 7,
        "added": ["prune.learning_rate=0.02"],
    }
    assert (r["fraction"], r["overrides"], r["epochs"]) == (0.3, lv["uniform_l1_lr"], 7)
    assert json.loads((got["run_dir"] / "run.json").read_text()) == r


def test_run_one_records_an_afp_variant_with_its_round_history(tmp_path, monkeypatch):
    f = _frontier()
    cfg = _shared_baseline(f, tmp_path, monkeypatch, overrides=["seed=0"])
    rounds = [
        {
            "outcome": "failed",
            "quantile": 0.3,
            "removed": 70,
            "macs": 400,
            "metric_before": 0.9,
            "metric": 0.87,
            "recovery_epochs": 2,
            "removed_per_group": {"c": 70},
            "seconds": 5.0,
        },
        {
            "outcome": "accepted",
            "quantile": 0.05,
            "removed": 12,
            "macs": 800,
            "metric_before": 0.9,
            "metric": 0.895,
            "recovery_epochs": 4,
        },
    ]
    seen = {}

    def afp_run(c, run_dir, overrides):
        seen["overrides"] = overrides
        run_dir.mkdir(parents=True, exist_ok=True)  # as the pipeline does
        (run_dir / "report.json").write_text(json.dumps({"history": rounds}))
        return {
            "val": 0.89,
            "test": 0.875,
            "macs": 800,
            "params": 90,
            "epochs_used": 9,
            "rounds": 1,
            "stop_reason": "round budget",
        }

    monkeypatch.setattr(f.compare, "afp_run", afp_run)
    variants = {"lr_train": ["prune.learning_rate=0.02"]}
    r = f._run_one(cfg, tmp_path, 0, "lr_train", 0.01, 0.01, 0.1, variants, {})
    assert seen["overrides"] == ["seed=0", "prune.tolerance=0.01", "prune.learning_rate=0.02"]
    # the per-group counts and timings stay in the run's report
    assert r["history"][0] == {
        "outcome": "failed",
        "quantile": 0.3,
        "removed": 70,
        "macs": 400,
        "metric_before": 0.9,
        "metric": 0.87,
        "recovery_epochs": 2,
    }
    assert [h["outcome"] for h in r["history"]] == ["failed", "accepted"]
    assert (r["tolerance"], r["rounds"], r["stop"], r["epochs"]) == (0.01, 1, "round budget", 9)
    assert (tmp_path / "seed0" / "lr_train_eps0.01" / "run.json").is_file()


def test_write_compares_afp_tf_with_every_ladder_variant(tmp_path, monkeypatch):
    f = _frontier()
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    work = tmp_path / "work"
    runs = [
        _run("afp_tf_distill", 0, 0.87, 300_000, tolerance=0.01),  # 4x at drop 0.01
        _run("uniform_l1_distill", 0, 0.87, 400_000, fraction=0.2),  # 3x at 0.01
        _run("uniform_l1", 0, 0.86, 600_000, fraction=0.2),  # 2x at drop 0.02
    ]
    for r in runs:
        path = f._point_dir(
            work, 0, r["method"], r.get("tolerance", r.get("fraction")), "fraction" in r
        )
        path.mkdir(parents=True)
        (path / "run.json").write_text(json.dumps(r))
    cfg = ml_collections.ConfigDict(
        {"model": {"name": "vgg16", "width": 0.5}, "task": "detection", "name": "x"}
    )
    out = f._write("vgg16_x0.5", "vgg16_fashion_mnist", cfg, work)
    methods = [r["method"] for r in out["runs"]]
    assert methods == ["afp_tf_distill", "uniform_l1", "uniform_l1_distill"]
    kinds = [(p["method"], p["kind"]) for p in out["summary"]["points"]]
    assert kinds == [
        ("afp_tf_distill", "tolerance"),
        ("uniform_l1", "fraction"),
        ("uniform_l1_distill", "fraction"),
    ]
    (row,) = out["summary"]["afp_tf_vs_ladders"]
    assert [k for k, v in row.items() if isinstance(v, dict)] == methods[1:]
    assert row["uniform_l1_distill"]["macs_reduction_at_equal_drop"] == pytest.approx(3.0)
    assert row["uniform_l1_distill"]["afp_tf_over_it"] == pytest.approx(4.0 / 3.0)
    assert row["uniform_l1"]["macs_reduction_at_equal_drop"] == pytest.approx(2**0.5)
