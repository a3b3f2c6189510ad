"""Pruner rounds with a fake trainer (scripted metrics, no training): every controller branch."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from afp_tf import stats, surgery
from afp_tf.method import prc, regularizers, round_weights
from afp_tf.method.options import PruneOptions
from afp_tf.method.pruner import Pruner, PruneState, filters_per_group, macs_per_filter
from afp_tf.train import training
from afp_tf.train.task import Task

VAL, ACCEPT = "val-data", "accept-data"  # sentinels: the fake trainer tells splits apart by them


def _model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(10, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(10, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


class FakeTrainer:
    """Training does nothing but count (or raise); evaluation is ``score(filters, epochs)``."""

    def __init__(self, model, penalty, script, after_train_calls=()):
        self.model, self.penalty, self.script, self.epochs = model, penalty, script, 0
        self.after_train_calls = after_train_calls

    def train_epoch(self, data, *, steps=None, epoch=None, progress=True):
        if self.script.get("nonfinite_calls", 0) > 0:
            self.script["nonfinite_calls"] -= 1
            raise training.NonFiniteLossError(float("nan"), 1, epoch)
        if self.penalty is not None and self.script.get("decay"):
            for name, mask in self.penalty.masks.items():  # shrink the even candidates
                idx = np.flatnonzero(mask.numpy())
                for var, axis in self.penalty.weights[name]:
                    w = np.moveaxis(var.numpy(), axis, 0)
                    for i in idx:
                        if i % 2 == 0:
                            w[i] *= 0.01
                    var.assign(np.moveaxis(w, 0, axis))
        for hook in self.after_train_calls:  # one "compiled call" of all the epoch's steps
            hook(steps)
        self.epochs += 1
        return {"loss": 0.0}

    def evaluate(self, data):
        filters = sum(filters_per_group(self.model).values())
        value = self.script["score"](filters, self.epochs)
        if data == ACCEPT:
            value += self.script.get("accept_offset", 0.0)
        return {"accuracy": value}


class FakePruner(Pruner):
    def __init__(self, script, accept=False, **options):
        super().__init__(
            options=PruneOptions(
                **{"p_max": 0.3, "recovery_epochs": 2, "recovery_schedule": "constant", **options}
            ),
            task=Task(loss=None, metrics=lambda: []),
            train_data="train-data",
            val_data=VAL,
            accept_data=ACCEPT if accept else None,
            accept_size=script.get("accept_size", 0),
            strategy=tf.distribute.get_strategy(),
            optimizer_factory=lambda: keras.optimizers.SGD(0.01, momentum=0.9),
            global_batch_size=1,
            steps_per_epoch=4,
            progress=False,
        )
        self.script = script

    def make_trainer(self, model, penalty=None, orth_beta=None, optimizer_factory=None, **kw):
        if optimizer_factory is not None:
            self.script.setdefault("optimizers", []).append(optimizer_factory())
        return FakeTrainer(model, penalty, self.script, kw.get("after_train_calls", ()))


def _run(script, accept=False, **options):
    pruner = FakePruner(script, accept=accept, **options)
    model = _model()
    state = pruner.start(model, baseline_macs=1000)
    pruned, state = pruner.run(model, state)
    return pruned, state


def _free(filters, epochs):
    return 0.9  # pruning costs nothing


def test_run_free_pruning_accepted_every_round_until_round_budget():
    pruned, state = _run({"score": _free}, max_rounds=3, rule="fixed")
    assert [h["outcome"] for h in state.history] == ["accepted"] * 3
    # Round 1: the 0.3-quantile of 20 scores has 6 below it; later rounds work on what is left.
    removed = [h["removed"] for h in state.history]
    assert removed[0] == 6 and all(r > 0 for r in removed)
    assert [h["filters"] for h in state.history] == [20, 14, 14 - removed[1]]
    assert sum(filters_per_group(pruned).values()) == 20 - sum(removed)
    assert state.stop_reason == "round budget" and state.round == 3


def test_run_costly_pruning_fails_backs_off_and_stops():
    def score(filters, epochs):  # every removed filter costs 2 points, recovery cannot help
        return 0.9 - 0.02 * (20 - filters)

    model_before = _model()
    pruned, state = _run({"score": score}, max_rounds=10, rule="fixed", max_failures=3)
    assert [h["outcome"] for h in state.history] == ["failed"] * 3
    # The retry targets the least important half of what failed: bisection by importance.
    assert [h["quantile"] for h in state.history] == pytest.approx([0.3, 0.15, 0.075])
    assert [h["removed"] for h in state.history] == [6, 3, 2]
    assert [h["recovery_epochs"] for h in state.history] == [2, 4, 4]  # retries recover longer
    assert state.stop_reason == "recovery failed" and state.round == 0
    assert filters_per_group(pruned) == filters_per_group(model_before)


def test_run_failed_round_then_smaller_retry_accepted():
    def score(filters, epochs):  # up to 3 filters are free, more cost 5 points
        return 0.9 if filters >= 17 else 0.85

    _, state = _run({"score": score}, max_rounds=2, rule="fixed")
    assert [h["outcome"] for h in state.history] == ["failed", "accepted"]
    assert [h["removed"] for h in state.history] == [6, 3]
    assert state.round == 1 and state.stop_reason == "round budget"


def test_run_recovery_reaches_floor_accepted_with_epochs_used():
    def score(filters, epochs):  # removal costs 3 points, each recovery epoch gives 1 back
        return 0.9 if filters == 20 else min(0.9, 0.87 + 0.01 * epochs)

    _, state = _run({"score": score}, max_rounds=1, rule="fixed", recovery_epochs=4)
    (h,) = state.history
    assert h["outcome"] == "accepted"
    # The floor is 0.89; recovery aims at floor + 0.5 * 0.01 = 0.895 and stops there.
    assert h["recovery_epochs"] == 3
    assert h["metric"] == pytest.approx(0.90)


def test_run_cosine_recovery_runs_all_epochs_annealed_to_zero():
    def score(filters, epochs):  # back above the target after 3 of the 4 epochs
        return 0.9 if filters == 20 else min(0.9, 0.87 + 0.01 * epochs)

    script = {"score": score}
    _, state = _run(
        script, max_rounds=1, rule="fixed", recovery_epochs=4, recovery_schedule="cosine"
    )
    (h,) = state.history
    assert h["outcome"] == "accepted" and h["recovery_epochs"] == 4
    (optimizer,) = script["optimizers"]  # 4 epochs of 4 steps: 0.01 decayed to 0 at step 16
    rate = optimizer.get_config()["learning_rate"]
    schedule = keras.optimizers.schedules.deserialize(rate)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(16)) == 0.0
    assert optimizer.momentum == 0.9


def test_run_no_candidates_left_stops():
    _, state = _run({"score": _free}, min_filters=10, rule="fixed")
    assert [h["outcome"] for h in state.history] == ["no candidates"]
    assert state.stop_reason == "no candidates left"


def test_run_nonfinite_round_rolled_back_and_retried_at_half_rate():
    # The penalty epoch of the first round diverges.
    script = {"score": _free, "nonfinite_calls": 1}
    pruned, state = _run(script, max_rounds=2, rule="fixed")
    assert [h["outcome"] for h in state.history] == ["non-finite", "accepted"]
    assert state.history[1]["quantile"] == pytest.approx(0.15)
    assert sum(filters_per_group(pruned).values()) == 17


def test_run_nonfinite_persisting_stops():
    script = {"score": _free, "nonfinite_calls": 100}
    _, state = _run(script, rule="fixed", max_nonfinite_retries=1)
    assert [h["outcome"] for h in state.history] == ["non-finite", "non-finite"]
    assert state.stop_reason == "non-finite loss persisted"


def test_run_decayed_removal_removes_only_shrunk_candidates():
    _, state = _run(
        {"score": _free, "decay": True}, max_rounds=1, rule="fixed", removal="decayed", shrink="l1"
    )
    (h,) = state.history
    # 6 candidates (3 per group); the fake penalty shrinks those with an even index only.
    assert 0 < h["removed"] < 6
    assert h["removed"] == sum(h["removed_per_group"].values())


def test_run_accept_split_decides_not_recovery_split():
    # Recovery's split looks fine; the held-out split shows the damage: rejected.
    def score(filters, epochs):
        return 0.9

    script = {"score": score, "accept_offset": 0.0}
    _, ok = _run(script, accept=True, max_rounds=1, rule="fixed")
    assert ok.history[0]["outcome"] == "accepted"

    def hurt(filters, epochs):
        return 0.9 if filters == 20 else 0.9

    class Hurt(FakeTrainer):
        def evaluate(self, data):
            filters = sum(filters_per_group(self.model).values())
            return {"accuracy": 0.9 if data == VAL or filters == 20 else 0.88}

    pruner = FakePruner({"score": hurt}, accept=True, max_rounds=1, rule="fixed")
    pruner.make_trainer = lambda model, penalty=None, **kw: Hurt(model, penalty, pruner.script)
    model = _model()
    _, state = pruner.run(model, pruner.start(model, 1000))
    assert state.history[0]["outcome"] == "failed"
    assert state.history[0]["val_metric"] == pytest.approx(0.9)
    assert state.history[0]["metric"] == pytest.approx(0.88)


def test_start_margin_is_standard_errors_of_accept_metric():
    pruner = FakePruner({"score": _free, "accept_size": 10_000}, accept=True, margin_z=2.0)
    state = pruner.start(_model(), 1000)
    ctrl = prc.PruningRateController.from_dict(state.controller)
    assert ctrl.margin == pytest.approx(2 * 0.003)
    assert ctrl.accept_floor == pytest.approx(0.9 - 0.01 + 0.006)


def test_run_margin_rejects_round_inside_the_noise():
    def score(filters, epochs):  # removal costs 0.8 points: within ε = 1, not within ε − margin
        return 0.9 if filters == 20 else 0.892

    script = {"score": score, "accept_size": 10_000}
    _, plain = _run({"score": score}, accept=True, max_rounds=1, rule="fixed")
    _, noisy = _run(script, accept=True, max_rounds=1, rule="fixed", margin_z=1.0)
    assert plain.history[0]["outcome"] == "accepted"
    assert noisy.history[0]["outcome"] == "failed"  # 0.892 < 0.89 + 0.003


def test_run_adaptive_rule_shrinks_rate_after_a_costly_round():
    def score(filters, epochs):  # 0.1 point per filter removed
        return 0.9 - 0.001 * (20 - filters)

    _, state = _run({"score": score}, max_rounds=2, rule="adaptive", p_min=0.02)
    first, second = state.history
    assert first["quantile"] == pytest.approx(0.3)  # nothing measured yet: p_max
    # cost = 0.006 / 0.3 = 0.02 per fraction; R = 0.004: p = 0.004 / 0.04 = 0.1
    assert second["quantile"] == pytest.approx(0.1)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    """A real tiny run: killed after its first round and resumed from the checkpoint, it ends
    with the weights an uninterrupted run ends with."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 64).astype("int32")

    def train_data(epoch):
        return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=epoch).batch(16)

    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    def make():
        return Pruner(
            options=PruneOptions(tolerance=0.3, max_rounds=2, rule="fixed", recovery_epochs=1),
            task=Task(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            ),
            train_data=train_data,
            val_data=val,
            strategy=tf.distribute.get_strategy(),
            optimizer_factory=lambda: keras.optimizers.SGD(0.05),
            global_batch_size=16,
            orth_beta=1e-3,
            progress=False,
            seed=7,
        )

    keras.utils.set_random_seed(0)
    base = _model()
    base.save(tmp_path / "base.keras")
    straight, s_state = make().run(base, make().start(base, 1000))

    class Kill(Exception):
        pass

    def kill_after_first(state, model, changed):
        (tmp_path / "state.json").write_text(__import__("json").dumps(state.to_dict()))
        model.save(tmp_path / "round.keras")
        raise Kill

    first = keras.saving.load_model(tmp_path / "base.keras")
    keras.utils.set_random_seed(123)  # whatever the process did before the kill
    with pytest.raises(Kill):
        make().run(first, make().start(first, 1000), on_round_end=kill_after_first)
    keras.utils.set_random_seed(999)  # a new process
    state = PruneState.from_dict(__import__("json").loads((tmp_path / "state.json").read_text()))
    resumed, r_state = make().run(keras.saving.load_model(tmp_path / "round.keras"), state)
    assert [h["outcome"] for h in r_state.history] == [h["outcome"] for h in s_state.history]
    assert filters_per_group(resumed) == filters_per_group(straight)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert surgery.find_channel_groups(resumed)  # still a prunable, well-formed model


def _killed_after_round_1(baseline_macs=1000):
    """The state and last good model of a 3-round run (no MACs target) killed after round 1."""
    first = FakePruner({"score": _free}, max_rounds=3, rule="fixed")
    model = _model()
    saved = []

    def kill(state, good, changed):
        saved.append((copy.deepcopy(state), good))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.run(model, first.start(model, baseline_macs=baseline_macs), on_round_end=kill)
    state, good = saved[0]
    assert state.stop_reason is None and state.round == 1
    return state, good


@pytest.mark.parametrize("max_rounds, rounds", [(1, 1), (2, 2)])
def test_run_resumed_follows_current_config_round_budget(max_rounds, rounds):
    """Killed after round 1 of a 3-round run, resumed with a different max_rounds."""
    state, good = _killed_after_round_1()
    resumed = FakePruner({"score": _free}, max_rounds=max_rounds, rule="fixed")
    _, state = resumed.run(good, state)
    assert [h["outcome"] for h in state.history] == ["accepted"] * rounds
    assert state.stop_reason == "round budget"


@pytest.mark.parametrize("known_macs, stop, rounds", [(True, "macs target", 1), (False, None, 3)])
def test_run_resumed_macs_target_follows_config_when_baseline_macs_known(known_macs, stop, rounds):
    """A target round 1 already met stops the resumed run before another round; a state without
    the baseline's MACs cannot scale the fraction and keeps its saved (absent) target."""
    state, good = _killed_after_round_1(stats.model_stats(_model()).macs)
    if not known_macs:
        state.baseline_macs = 0
    resumed = FakePruner({"score": _free}, max_rounds=3, rule="fixed", macs_target=0.99)
    _, state = resumed.run(good, state)
    assert len(state.history) == rounds
    assert state.stop_reason == (stop or "round budget")


@pytest.mark.parametrize("measure, exact", [("outputs", True), ("kernels", False)])
def test_measured_weights_fade_to_zero_makes_removal_exact_only_with_outputs(measure, exact):
    """Under a BatchNorm a faded kernel still leaves the channel's offset ``β``; fading the
    BatchNorm's scale and offset too (``measure="outputs"``) makes the removal exact."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(0)
    for v in model.get_layer("bn").weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    analysis = surgery.analyze(model)
    measured, shrunk = round_weights.measured(analysis, measure)
    bn = model.get_layer("bn")
    want = [bn.gamma, bn.beta] if measure == "outputs" else [model.get_layer("c1").kernel]
    assert [v.path for v, _ in measured["c1"]] == [v.path for v in want]
    penalty = regularizers.TargetedL1Penalty(shrunk)
    penalty.set_candidates({"c1": [1, 4]})
    regularizers.TargetedFade(penalty, steps=3)(3)
    x = rng.normal(size=(4, 8, 8, 2)).astype("float32")
    pruned = surgery.remove_filters(model, {"c1": [1, 4]})
    err = np.abs(np.asarray(pruned(x)) - np.asarray(model(x))).max()
    assert (err < 1e-5) == exact


def test_macs_per_filter_counts_the_filter_and_what_reads_it():
    model = _model()
    macs = macs_per_filter(model, surgery.analyze(model))
    # c1: its 6×6 outputs × 3×3 kernel, plus c2's input channel (4×4 × 3×3 × 10 filters);
    # c2: its 4×4 × 3×3 × 10 inputs, plus one input of the 3-unit Dense (after pooling).
    assert macs == {"c1": 36 * 9 + 16 * 9 * 10, "c2": 16 * 9 * 10 + 3}


def test_run_cost_macs_divides_importance_by_the_macs_per_filter():
    # Filter ℓ1 norms: c1 five at 9 and five at 90, c2 five at 8.1 and five at 90. By importance
    # c2's five weak filters go; per MAC (c1 1764, c2 1443) c1's weak ones cost more than they
    # are worth (9 / 1764 < 8.1 / 1443) and go instead.
    def removed(cost):
        pruner = FakePruner(
            {"score": _free}, max_rounds=1, rule="fixed", importance="none", cost=cost
        )
        model = _model()
        for name, weak, fan_in in (("c1", 1.0, 1), ("c2", 0.9, 10)):
            kernel = model.get_layer(name).kernel
            norms = np.array([weak] * 5 + [10.0] * 5, np.float32) / fan_in
            kernel.assign(np.ones(kernel.shape, np.float32) * norms)
        _, state = pruner.run(model, pruner.start(model, baseline_macs=1000))
        return state.history[0]["removed_per_group"]

    assert removed("none") == {"c2": 5}
    assert removed("macs") == {"c1": 5}


def _near_miss(filters, epochs):  # removal costs 2.5 points; each epoch of a trainer gives 0.5
    return 0.9 if filters == 20 else min(0.9, 0.875 + 0.005 * epochs)


def test_run_near_miss_round_extended_then_accepted():
    _, state = _run({"score": _near_miss}, max_rounds=1, rule="fixed", extend_epochs=4)
    (h,) = state.history
    # Recovery (2 epochs) ends at 0.885, below the floor 0.89 by less than the budget: 4 more
    # epochs of a fresh trainer reach 0.895.
    assert h["metric_before_extension"] == pytest.approx(0.885)
    assert h["outcome"] == "accepted" and h["metric"] == pytest.approx(0.895)
    assert h["recovery_epochs"] == 6


def test_run_near_miss_round_fails_without_extension():
    _, state = _run({"score": _near_miss}, max_rounds=1, rule="fixed")
    (h,) = state.history
    assert h["outcome"] == "failed" and h["metric"] == pytest.approx(0.885)
    assert h["recovery_epochs"] == 2 and "metric_before_extension" not in h


def test_run_far_miss_round_not_extended():
    def score(filters, epochs):  # 5 points lost, more than the whole budget: not worth it
        return 0.9 if filters == 20 else 0.85

    _, state = _run({"score": score}, max_rounds=1, rule="fixed", extend_epochs=4)
    (h,) = state.history
    assert h["outcome"] == "failed" and h["recovery_epochs"] == 2
    assert "metric_before_extension" not in h


def test_run_round_saving_too_few_macs_stops_before_training():
    keras.utils.set_random_seed(0)
    _, state = _run({"score": _free}, max_rounds=1, rule="fixed", min_round_macs=1e-9)
    (h,) = state.history  # the saving is measured on the candidates: what the round removed
    assert h["outcome"] == "accepted"
    assert h["macs_saved_fraction"] == pytest.approx(
        1 - h["macs"] / stats.model_stats(_model()).macs
    )
    script = {"score": _free}
    pruned, state = _run(script, max_rounds=3, rule="fixed", min_round_macs=0.99)
    assert [h["outcome"] for h in state.history] == ["too small"]
    assert state.stop_reason == "rounds too small" and state.round == 0
    assert "optimizers" not in script  # no trainer was built for training
    assert sum(filters_per_group(pruned).values()) == 20


def test_run_stops_when_an_accepted_round_leaves_too_little_headroom():
    def score(filters, epochs):  # every removed filter costs 0.1 point
        return 0.9 - 0.001 * (20 - filters)

    _, state = _run({"score": score}, max_rounds=3, rule="fixed", min_headroom=0.5)
    # Round 1 removes 6 filters: 0.894, 0.004 above the floor 0.89 = 40 % of the budget.
    assert [h["outcome"] for h in state.history] == ["accepted"]
    assert state.stop_reason == "tolerance spent" and state.round == 1
    _, state = _run({"score": score}, max_rounds=3, rule="fixed", min_headroom=0.3)
    assert state.history[1]["metric_before"] == pytest.approx(0.894)
