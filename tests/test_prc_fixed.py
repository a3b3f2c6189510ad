"""The "fixed" pruning rule: full rate whenever tolerance remains, recovery only otherwise."""

import pytest

from afp_tf.method import prc
from afp_tf.run import config_lib


def _fixed(**kw):
    return prc.PruningRateController(0.9, 0.02, rule="fixed", p_max=0.25, lambda_max=2e-3, **kw)


@pytest.mark.parametrize("metric", [0.8801, 0.885, 0.9, 0.95])
def test_fixed_plan_any_positive_remaining_full_rate(metric):
    plan = _fixed().plan(metric)
    assert not plan.recover_only
    assert plan.quantile == pytest.approx(0.25)
    assert plan.strength == pytest.approx(2e-3)
    assert plan.threshold is None


def test_fixed_plan_scale_free_same_state_prunes_less_near_floor():
    near = 0.8805  # R_t = 0.0005 of a 0.02 budget
    scale_free = prc.PruningRateController(
        0.9, 0.02, rule="scale_free", p_max=0.25, lambda_max=2e-3
    ).plan(near)
    assert _fixed().plan(near).quantile > 10 * scale_free.quantile


@pytest.mark.parametrize("metric", [0.88, 0.87, 0.5])
def test_fixed_plan_at_or_below_floor_recover_only(metric):
    plan = _fixed().plan(metric)
    assert plan.recover_only
    assert plan.quantile == 0.0 and plan.strength == 0.0 and plan.threshold is None


def test_fixed_backoff_halves_rate_and_good_round_restores():
    ctrl = _fixed()
    ctrl.observe("failed", before=0.9, metric=0.85, removed_fraction=0.25)
    assert ctrl.plan(0.9).quantile == pytest.approx(0.125)
    ctrl.observe("accepted", before=0.9, metric=0.89, removed_fraction=0.1, macs=1.0)
    assert ctrl.plan(0.9).quantile == pytest.approx(0.25)


def test_fixed_to_dict_round_trip_keeps_rule():
    ctrl = _fixed(max_rounds=4)
    ctrl.observe("accepted", before=0.9, metric=0.89, removed_fraction=0.1, macs=10.0)
    again = prc.PruningRateController.from_dict(ctrl.to_dict())
    assert again.rule == "fixed" and again.accepted == 1
    assert again.plan(0.885) == ctrl.plan(0.885)


def test_fixed_config_rule_accepted_and_typo_suggests_it():
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    config_lib.apply_overrides(cfg, ["prune.rule=fixed"])
    assert cfg.prune.rule == "fixed"
    with pytest.raises(config_lib.ConfigError, match="fixed"):
        config_lib.apply_overrides(cfg, ["prune.rule=fixd"])
    with pytest.raises(ValueError, match="did you mean 'fixed'"):
        prc.PruningRateController(0.9, 0.02, rule="fixd")
