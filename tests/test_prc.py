"""Tests of the pruning rate controller (numbers worked out by hand)."""

import json
import math

import pytest

from afp_tf.method import prc


def _ctrl(**kw):
    args = dict(baseline=0.9, tolerance=0.02, rule="scale_free", p_max=0.2, lambda_max=1e-3)
    args.update(kw)
    return prc.PruningRateController(**args)


def test_floor_absolute_is_baseline_minus_tolerance():
    c = _ctrl()
    assert c.floor == pytest.approx(0.88)
    assert c.budget == pytest.approx(0.02)


def test_floor_relative_is_fraction_of_baseline():
    c = _ctrl(baseline=0.8, tolerance=0.05, relative=True)
    assert c.floor == pytest.approx(0.76)
    assert c.budget == pytest.approx(0.04)


def test_floor_tolerance_above_zero_baseline_accepts_any_finite_metric():
    c = _ctrl(baseline=0.0, tolerance=0.9)  # a barely trained detector's smoke run
    assert c.floor == pytest.approx(-0.9)
    assert c.meets_floor(0.0)
    assert not c.meets_floor(math.nan)


@pytest.mark.parametrize(
    "metric, remaining, quantile, strength",
    [
        (0.90, 0.02, 0.2, 1e-3),  # R = eps: full rate
        (0.89, 0.01, 0.1, 5e-4),  # R = eps / 2: half rate
        (0.885, 0.005, 0.05, 2.5e-4),
        (0.95, 0.07, 0.2, 1e-3),  # R > eps: clamped at min(1, R / eps) = 1
    ],
)
def test_plan_scale_free_scales_with_remaining_and_clamps(metric, remaining, quantile, strength):
    plan = _ctrl().plan(metric)
    assert plan.remaining == pytest.approx(remaining)
    assert plan.quantile == pytest.approx(quantile)
    assert plan.threshold is None
    assert plan.strength == pytest.approx(strength)
    assert not plan.recover_only


def test_plan_relative_uses_absolute_budget_for_ratio():
    plan = _ctrl(baseline=0.8, tolerance=0.05, relative=True).plan(0.78)
    assert plan.remaining == pytest.approx(0.02)
    assert plan.quantile == pytest.approx(0.1)  # 0.2 * 0.02 / 0.04


@pytest.mark.parametrize("metric, threshold, strength", [(0.9, 0.01, 1e-3), (0.95, 0.035, 3.5e-3)])
def test_plan_linear_is_proportional_and_unclamped(metric, threshold, strength):
    plan = _ctrl(rule="linear", delta_w=0.5, delta_lambda=0.05).plan(metric)
    assert plan.quantile is None
    assert plan.threshold == pytest.approx(threshold)
    assert plan.strength == pytest.approx(strength)


@pytest.mark.parametrize("rule", ["scale_free", "linear"])
@pytest.mark.parametrize("metric", [0.88, 0.87, 0.5])
def test_plan_at_or_below_floor_is_recovery_only(rule, metric):
    plan = _ctrl(rule=rule).plan(metric)
    assert plan.recover_only
    assert plan.strength == 0.0
    assert (plan.quantile or 0.0) == 0.0 and (plan.threshold or 0.0) == 0.0
    assert plan.remaining == pytest.approx(metric - 0.88)


def test_plan_nonfinite_metric_raises():
    with pytest.raises(ValueError, match="finite"):
        _ctrl().plan(math.nan)


def test_meets_floor_boundary_and_nan():
    c = _ctrl(baseline=0.9, tolerance=0.01)
    assert c.meets_floor(0.89)  # 0.9 - 0.01 in floats
    assert c.meets_floor(0.95)
    assert not c.meets_floor(0.8899)
    assert not c.meets_floor(math.nan)


def test_should_stop_fresh_controller_none():
    assert _ctrl().should_stop() is None


def test_should_stop_zero_round_budget_stops_at_once():
    assert _ctrl(max_rounds=0).should_stop() == "round budget"


def test_observe_round_budget_counts_failed_attempts_too():
    c = _ctrl(max_rounds=3)
    assert c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.1) is None
    assert c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.1) is None
    assert c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.05) == "round budget"
    assert (c.attempts, c.accepted) == (3, 2)


def test_observe_consecutive_failures_stop_at_max_failures():
    c = _ctrl(max_failures=2)
    assert c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.1) is None
    assert c.observe("failed", before=0.9, metric=0.86, removed_fraction=0.05) == "recovery failed"
    assert c.should_stop() == "recovery failed"


def test_observe_accepted_round_resets_failure_count():
    c = _ctrl(max_failures=2)
    c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.1)
    c.observe("accepted", before=0.9, metric=0.89, removed_fraction=0.05)
    assert c.failures == 0
    assert c.observe("failed", before=0.89, metric=0.85, removed_fraction=0.1) is None


def test_observe_no_candidates_stops():
    assert _ctrl().observe("no candidates") == "no candidates left"


def test_observe_nonfinite_stops_after_more_than_max():
    c = _ctrl(max_nonfinite=1)
    assert c.observe("non-finite") is None
    assert c.scale == pytest.approx(0.5)
    assert c.observe("non-finite") == "non-finite loss persisted"


def test_observe_macs_target_reached():
    c = _ctrl(macs_target=1000.0)
    assert c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.1, macs=1500) is None
    assert c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.1, macs=1000) == (
        "macs target"
    )


def test_every_stop_reason_emitted_is_listed():
    reasons = {
        _ctrl(max_rounds=0).should_stop(),
        _ctrl().observe("no candidates"),
        _ctrl(max_failures=1).observe("failed", before=0.9, metric=0.8, removed_fraction=0.1),
        _ctrl(max_nonfinite=0).observe("non-finite"),
        _ctrl(macs_target=10.0).observe("accepted", before=0.9, metric=0.9, macs=5),
        _ctrl(latency_target=2.0).observe("accepted", before=0.9, metric=0.9, latency=1.5),
        _ctrl().observe("too small"),
        _ctrl(min_headroom=0.5).observe("accepted", before=0.9, metric=0.885),
    }
    assert reasons == set(prc.STOP_REASONS)


def test_failure_halves_rate_and_accepted_rounds_restore_it():
    c = _ctrl()
    c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.2)
    plan = c.plan(0.9)
    assert plan.quantile == pytest.approx(0.1)  # scale_free: 0.2 * 1 * 0.5
    assert plan.strength == pytest.approx(5e-4)
    c.observe("failed", before=0.9, metric=0.86, removed_fraction=0.1)
    assert c.plan(0.9).quantile == pytest.approx(0.05)
    c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.05)
    assert c.plan(0.9).quantile == pytest.approx(0.1)
    c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.1)
    c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.1)
    assert c.plan(0.9).quantile == pytest.approx(0.2)  # capped at full speed


def test_adaptive_retry_after_a_failure_is_its_new_estimate_times_the_halved_scale():
    c = _ctrl(rule="adaptive", p_max=0.3, p_min=0.01)
    assert c.plan(0.9).quantile == pytest.approx(0.3)  # R = 0.02, nothing measured yet
    c.observe("failed", before=0.9, metric=0.87, removed_fraction=0.3)  # missed: drop 0.03
    assert c.cost == pytest.approx(0.1)
    # R / (2c) = 0.1, times the halved scale: 0.05, a sixth of what failed (not half)
    assert c.plan(0.9).quantile == pytest.approx(0.05)


def test_failure_linear_scales_threshold_and_strength():
    c = _ctrl(rule="linear", delta_w=0.5, delta_lambda=0.05)
    c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.1)
    plan = c.plan(0.9)
    assert plan.threshold == pytest.approx(0.005)  # 0.5 * 0.02 * 0.5
    assert plan.strength == pytest.approx(5e-4)


def test_recovery_epochs_doubled_for_retries():
    c = _ctrl()
    assert c.recovery_epochs(2) == 2
    c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.1)
    assert c.recovery_epochs(2) == 4
    c.observe("failed", before=0.9, metric=0.85, removed_fraction=0.05)
    assert c.recovery_epochs(2) == 4
    c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.02)
    assert c.recovery_epochs(2) == 2


def test_adaptive_plan_full_rate_until_a_cost_is_measured():
    c = _ctrl(rule="adaptive", p_max=0.3)
    assert c.plan(0.885).quantile == pytest.approx(0.3)
    c.observe("accepted", before=0.9, metric=0.901, removed_fraction=0.3)  # recovery absorbed it
    assert c.cost == 0.0
    assert c.plan(0.885).quantile == pytest.approx(0.3)  # 2 × 0.3 capped at p_max


def test_adaptive_plan_aims_at_half_the_remaining_budget():
    c = _ctrl(rule="adaptive", p_max=0.3, p_min=0.02)
    c.observe("accepted", before=0.9, metric=0.89, removed_fraction=0.2)  # 0.01 per 0.2
    assert c.cost == pytest.approx(0.05)
    plan = c.plan(0.89)  # R = 0.01: p = 0.01 / (2 * 0.05) = 0.1
    assert plan.quantile == pytest.approx(0.1)
    assert plan.strength == pytest.approx(1e-3 * 0.1 / 0.3)
    assert c.plan(0.8801).quantile == pytest.approx(0.02)  # clipped at p_min
    assert c.plan(0.95).quantile == pytest.approx(0.3)  # clipped at p_max


def test_adaptive_plan_at_most_doubles_the_last_accepted_fraction():
    c = _ctrl(rule="adaptive", p_max=0.3, p_min=0.02)
    c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.03)  # free, but small
    assert c.plan(0.9).quantile == pytest.approx(0.06)
    c.observe("accepted", before=0.9, metric=0.9, removed_fraction=0.06)
    assert c.plan(0.9).quantile == pytest.approx(0.12)


def test_adaptive_failure_bisects_below_p_min():
    c = _ctrl(rule="adaptive", p_max=0.3, p_min=0.02)
    c.observe("failed", before=0.89, metric=0.8, removed_fraction=0.1)  # cost 0.9
    assert c.plan(0.89).quantile == pytest.approx(0.01)  # p_min * 0.5


def test_margin_raises_accept_floor_and_shrinks_spendable_budget():
    c = _ctrl(margin=0.005)
    assert c.floor == pytest.approx(0.88)
    assert c.accept_floor == pytest.approx(0.885)
    assert not c.meets_floor(0.884)
    assert c.meets_floor(0.885)
    plan = c.plan(0.8925)  # R = 0.0075 of 0.015 spendable: half rate
    assert plan.remaining == pytest.approx(0.0075)
    assert plan.quantile == pytest.approx(0.1)


def test_guarantee_states_floor_margin_and_verdict():
    c = _ctrl(margin=0.005)
    text = c.guarantee(0.886, "acceptance")
    assert "meets the accept floor 0.8850" in text
    assert "baseline 0.9000 - tolerance 0.0200 + margin 0.0050" in text
    assert "MISSES" in c.guarantee(0.884, "acceptance")


def test_margin_not_below_tolerance_raises():
    with pytest.raises(ValueError, match="too noisy"):
        _ctrl(margin=0.02)


def test_standard_error_of_accuracy():
    assert prc.standard_error(0.9, 10_000) == pytest.approx(0.003)
    assert prc.standard_error(1.2, 100) == 0.0


def test_to_dict_json_round_trip_preserves_config_and_state():
    c = _ctrl(rule="linear", macs_target=5e6, max_rounds=7, max_failures=3, margin=0.001)
    c.observe("accepted", before=0.9, metric=0.89, removed_fraction=0.1, macs=6e6)
    c.observe("failed", before=0.89, metric=0.8, removed_fraction=0.1)
    d = json.loads(json.dumps(c.to_dict()))
    c2 = prc.PruningRateController.from_dict(d)
    assert c2.to_dict() == c.to_dict()
    assert c2.plan(0.9) == c.plan(0.9)
    assert c2.should_stop() == c.should_stop()
    assert (c2.failures, c2.attempts, c2.scale) == (1, 2, pytest.approx(0.5))


def test_from_dict_unknown_key_raises():
    d = _ctrl().to_dict()
    d["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        prc.PruningRateController.from_dict(d)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(tolerance=0.0), "absolute tolerance"),
        (dict(tolerance=-0.1), "absolute tolerance"),
        (dict(tolerance=1.0, relative=True), "relative tolerance"),
        (dict(tolerance=0.0, relative=True), "relative tolerance"),
        (dict(p_max=0.0), "p_max"),
        (dict(p_max=1.5), "p_max"),
        (dict(lambda_max=-1.0), "lambda_max"),
        (dict(delta_w=0.0), "delta_w"),
        (dict(delta_lambda=-1.0), "delta_lambda"),
        (dict(max_rounds=-1), "max_rounds"),
        (dict(max_rounds=2.5), "max_rounds"),
        (dict(macs_target=0.0), "macs_target"),
        (dict(max_failures=0), "max_failures"),
        (dict(max_nonfinite=-1), "max_nonfinite"),
        (dict(p_min=0.5), "p_min"),
        (dict(margin=-0.01), "margin"),
        (dict(baseline=math.nan), "baseline"),
    ],
)
def test_constructor_bad_argument_raises_naming_it(kw, match):
    with pytest.raises(ValueError, match=match):
        _ctrl(**kw)


def test_constructor_unknown_rule_suggests_closest():
    with pytest.raises(ValueError, match="did you mean 'scale_free'"):
        _ctrl(rule="scalefree")


def test_module_has_no_tensorflow_import():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(prc))
    names = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not names & {"tensorflow", "keras", "numpy"}


def test_min_headroom_stops_once_accepted_metric_is_near_the_accept_floor():
    c = prc.PruningRateController(0.90, 0.02, margin=0.004, min_headroom=0.25)
    # Spendable 0.016; 0.25 of it is 0.004 above the accept floor 0.884.
    assert c.observe("accepted", before=0.90, metric=0.889, removed_fraction=0.1) is None
    assert c.observe("accepted", before=0.889, metric=0.8875, removed_fraction=0.1) == (
        "tolerance spent"
    )


def test_too_small_round_stops_the_run():
    c = prc.PruningRateController(0.90, 0.02, min_round_macs=0.01)
    assert c.observe("too small") == "rounds too small" and c.should_stop() == "rounds too small"


def test_from_dict_of_a_checkpoint_before_the_endgame_options_uses_their_defaults():
    d = prc.PruningRateController(0.9, 0.01).to_dict()
    for key in ("min_headroom", "min_round_macs", "metric"):
        d.pop(key)
    c = prc.PruningRateController.from_dict(d)
    assert (c.min_headroom, c.min_round_macs, c.metric) == (0.0, 0.0, 0.9)


@pytest.mark.parametrize("key", ["min_headroom", "min_round_macs"])
def test_endgame_options_outside_unit_interval_raise(key):
    with pytest.raises(ValueError, match=key):
        prc.PruningRateController(0.9, 0.01, **{key: 1.0})
