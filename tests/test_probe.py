"""Probed rounds (``prune.probe_rounds``): a fake trainer scores what is live, and one real
Keras model shows the zeroed probe is exactly the removal."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from afp_tf import surgery
from afp_tf.callback import AFPCallback
from afp_tf.method import probe, recalibration
from afp_tf.method.options import PruneOptions
from afp_tf.method.pruner import Pruner
from afp_tf.train.task import Task


def _model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(10, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(10, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def _live_filters(model) -> int:
    """Filters of the prunable groups whose kernel is not all zero (a zeroed one is dead)."""
    analysis = surgery.analyze(model)
    live = 0
    for g in analysis.prunable:
        var, axis = analysis.filter_weights(g)[0]
        w = np.moveaxis(var.numpy(), axis, 0).reshape(g.size, -1)
        live += int(np.count_nonzero(np.abs(w).sum(axis=1)))
    return live


class FakeTrainer:
    """Training only runs the fade; evaluation is ``score(removed or zeroed filters)``."""

    def __init__(self, model, script, after_train_calls=()):
        self.model, self.script, self.after_train_calls = model, script, after_train_calls

    def train_epoch(self, data, *, steps=None, epoch=None, progress=True):
        for hook in self.after_train_calls:
            hook(steps)
        return {"loss": 0.0}

    def evaluate(self, data):
        return {"accuracy": self.script["score"](20 - _live_filters(self.model))}


class FakePruner(Pruner):
    def __init__(self, script, **options):
        super().__init__(
            options=PruneOptions(
                **{"p_max": 0.3, "rule": "fixed", "max_rounds": 1, "probe_rounds": True, **options}
            ),
            task=Task(loss=None, metrics=lambda: []),
            train_data="train-data",
            val_data="val-data",
            strategy=tf.distribute.get_strategy(),
            optimizer_factory=lambda: keras.optimizers.SGD(0.01),
            global_batch_size=1,
            steps_per_epoch=4,
            progress=False,
        )
        self.script = script

    def make_trainer(self, model, penalty=None, orth_beta=None, optimizer_factory=None, **kw):
        return FakeTrainer(model, self.script, kw.get("after_train_calls", ()))

    def _probe(self, model, *args):
        before = model.get_weights()
        out = super()._probe(model, *args)
        after = model.get_weights()
        self.script["untouched"] = all(
            np.array_equal(a, b) for a, b in zip(before, after, strict=True)
        )
        return out


def _run(score, **options):
    keras.utils.set_random_seed(0)
    script = {"score": score}
    pruner = FakePruner(script, **options)
    model = _model()
    state = pruner.start(model, baseline_macs=1000)
    _, state = pruner.run(model, state)
    return state, script


def test_probe_failing_at_full_size_halves_the_round():
    def score(removed):  # up to 3 filters are free, more cost 40 points
        return 0.9 if removed <= 3 else 0.5

    state, script = _run(score)
    (info,) = state.history
    # 6 candidates probe at 0.5, below 0.89 - 1 * 0.01; the least important 3 probe at 0.9.
    assert info["probe"] == [{"filters": 6, "metric": 0.5}, {"filters": 3, "metric": 0.9}]
    assert info["probe_floor"] == pytest.approx(0.88)
    assert info["removed"] == 3 and info["quantile"] == pytest.approx(0.15)
    assert info["outcome"] == "accepted"
    assert script["untouched"]  # the model being pruned is as it was before the probe
    json.dumps(state.to_dict())  # the round info stays checkpointable
    unprobed, _ = _run(score, probe_rounds=False)
    assert unprobed.history[0]["removed"] == 6 and unprobed.history[0]["outcome"] == "failed"


def test_probe_passing_removes_the_full_set():
    state, script = _run(lambda removed: 0.9)
    (info,) = state.history
    assert info["probe"] == [{"filters": 6, "metric": 0.9}]
    assert info["removed"] == 6 and info["outcome"] == "accepted" and script["untouched"]


def test_probe_failing_at_every_size_runs_the_smallest():
    state, _ = _run(lambda removed: 0.9 if removed == 0 else 0.5, probe_bisections=2)
    (info,) = state.history
    assert [p["filters"] for p in info["probe"]] == [6, 3, 2]
    assert info["removed"] == 2 and info["outcome"] == "failed"


def test_probe_without_bisections_only_records():
    state, _ = _run(lambda removed: 0.9 if removed <= 3 else 0.5, probe_bisections=0)
    (info,) = state.history
    assert info["probe"] == [{"filters": 6, "metric": 0.5}] and info["removed"] == 6


def test_probe_is_deterministic():
    def score(removed):
        return 0.9 if removed <= 3 else 0.5

    first, second = _run(score)[0].history, _run(score)[0].history
    assert [(h["probe"], h["removed"]) for h in first] == [
        (h["probe"], h["removed"]) for h in second
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"probe_rounds": "yes"},
        {"probe_bisections": -1},
        {"probe_bisections": 1.5},
        {"probe_slack": -0.1},
        {"probe_slack": float("nan")},
    ],
)
def test_probe_options_validated(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        PruneOptions(**options)


@pytest.mark.parametrize("key, value", [("probe_rounds", True), ("probe_slack", 2.0)])
def test_callback_refuses_probe_options(key, value):
    with pytest.raises(ValueError, match=f"does not support {key}"):
        AFPCallback(**{key: value})


def _bn_model():
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU()(
        L.BatchNormalization(name="bn1")(L.Conv2D(6, 3, padding="same", name="c1")(inputs))
    )
    x = L.Conv2D(5, 3, padding="same", use_bias=False, name="c2")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn2")(x))
    x = L.Conv2D(4, 3, padding="same", name="c3")(x)  # no BatchNorm: kernel and bias zeroed
    x = L.GlobalAveragePooling2D()(L.ReLU()(x))
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BatchNorms and biases far from their initial values
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n),
                               rng.uniform(0.5, 2, n)])  # fmt: skip
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
    return model


def test_zeroed_probe_predicts_the_removal_exactly_and_restores_the_model():
    keras.utils.set_random_seed(0)
    model = _bn_model()
    x = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(32))).batch(8)
    analysis = surgery.analyze(model)
    assert [g.name for g in analysis.prunable] == ["c1", "c2", "c3"]
    candidates = {"c1": [1, 4], "c2": [0, 3], "c3": [2]}
    batchnorms = [layer for layer in model.layers if "bn" in layer.name]
    before = model.get_weights()

    seen = {}

    def evaluate():
        seen["outputs"] = model(x, training=False).numpy()
        return 0.0

    probe.zeroed_metric(
        analysis,
        candidates,
        recalibrate=lambda: recalibration.recalibrate_batchnorm(model, batchnorms, data, 4),
        evaluate=evaluate,
    )
    pruned = surgery.remove_filters(model, candidates)
    recalibration.recalibrate_batchnorm(
        pruned, [layer for layer in pruned.layers if "bn" in layer.name], data, 4
    )
    np.testing.assert_allclose(seen["outputs"], pruned(x, training=False).numpy(), atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    # Not a vacuous equality: the probe changed what the model computes.
    assert not np.allclose(seen["outputs"], model(x, training=False).numpy(), atol=1e-3)
