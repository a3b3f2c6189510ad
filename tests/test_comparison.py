"""Comparison methods: uniform one-shot ℓ1 (Li et al.) and iterative global ℓ1 to a MACs goal."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_trainer

from afp_tf import stats, surgery
from afp_tf.method import comparison


def _model():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(40, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def _tuner(evaluate=None, data=None):
    data = data or _data()

    def make_trainer(model):
        return classifier_trainer(model, global_batch_size=32, learning_rate=0.05)

    return comparison.FineTuner(
        make_trainer=make_trainer,
        evaluate=evaluate or (lambda tr: tr.evaluate(data)["accuracy"]),
        train_data=data,
    )


def test_uniform_ratio_for_macs_half_target_lands_within_three_percent():
    model = _model()
    target = 0.5 * stats.model_stats(model).macs
    ratio, pruned, macs = comparison.uniform_ratio_for_macs(model, target, _tuner())
    assert abs(macs - target) <= 0.03 * target
    assert stats.model_stats(pruned).macs == macs
    sizes = {g.name: g.size for g in surgery.find_channel_groups(pruned) if g.prunable}
    for name, full in (("c1", 32), ("c2", 48), ("fc", 40)):
        removed = full - sizes[name]
        assert removed == int(np.floor(ratio * full + 1e-9)), name  # same ratio everywhere


def test_uniform_l1_zeroed_filters_removed_first():
    model = _model()
    kernel, bias = model.get_layer("c2").get_weights()
    kernel[..., [3, 7, 11]] = 0.0
    model.get_layer("c2").set_weights([kernel, bias])
    target = 0.8 * stats.model_stats(model).macs
    result = comparison.uniform_l1(model, target, _tuner(), epochs=0)
    pruned_kernel = result.model.get_layer("c2").get_weights()[0]
    removed = int(np.floor(result.info["ratio"] * 48 + 1e-9))
    assert removed >= 3 and pruned_kernel.shape[-1] == 48 - removed
    assert np.all(np.abs(pruned_kernel).sum(axis=(0, 1, 2)) > 0)  # the zero filters are gone
    assert model.get_layer("c2").get_weights()[0].shape[-1] == 48  # input untouched


def test_iterative_global_l1_reaches_target_and_spends_budget():
    model = _model()
    base = stats.model_stats(model).macs
    result = comparison.iterative_global_l1(
        model, 0.4 * base, _tuner(), epochs=5, rate=0.15, epochs_per_round=1
    )
    rounds = result.info["rounds"]
    # Full-rate rounds, then one bisected onto the target.
    assert [r["quantile"] for r in rounds[:-1]] == [0.15] * (len(rounds) - 1) and len(rounds) >= 2
    assert 0 < rounds[-1]["quantile"] <= 0.15
    # One c1 filter is ~1/32 of c2's MACs: the achievable MACs are that coarse.
    assert abs(result.macs - 0.4 * base) <= 0.07 * 0.4 * base
    assert result.epochs == 5
    assert sum(r["epochs"] for r in rounds) + len(result.info["finetune"]) - 1 == 5
    assert [r["macs"] for r in rounds] == sorted((r["macs"] for r in rounds), reverse=True)


def test_iterative_global_l1_only_final_finetune_uses_final_trainer():
    tuner = _tuner()
    calls = []

    def final(model, epochs):
        calls.append(epochs)
        return tuner.make_trainer(model)

    tuner.make_final_trainer = final
    model = _model()
    result = comparison.iterative_global_l1(
        model, 0.4 * stats.model_stats(model).macs, tuner, epochs=5, rate=0.15
    )
    assert calls == [len(result.info["finetune"]) - 1]


def test_finetuner_train_scripted_validation_keeps_best_epoch_weights():
    seen = []
    scores = iter([0.2, 0.9, 0.1, 0.5])
    holder = {}

    def evaluate(trainer):
        seen.append(trainer.model.get_weights())
        return next(scores)

    tuner = _tuner(evaluate=evaluate)
    model = _model()
    holder["model"], history = tuner.train(model, epochs=3)
    assert [h["val"] for h in history] == [0.2, 0.9, 0.1, 0.5]
    for got, want in zip(model.get_weights(), seen[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(model.get_weights()[0], seen[3][0])


@pytest.mark.parametrize("factor", [0.0, 1.5, float("nan")])
def test_uniform_l1_target_outside_model_raises(factor):
    model = _model()
    with pytest.raises(ValueError, match="macs_target"):
        comparison.uniform_l1(model, factor * stats.model_stats(model).macs, _tuner(), epochs=0)


def test_iterative_global_l1_bad_rate_raises():
    model = _model()
    with pytest.raises(ValueError, match="rate"):
        comparison.iterative_global_l1(
            model, 0.5 * stats.model_stats(model).macs, _tuner(), epochs=1, rate=1.5
        )
