"""Tests of ``afp_tf.prune``: a compiled Keras model and its data in, a plain smaller model out."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import learnable_images

import afp_tf
from afp_tf import surgery
from afp_tf.surgery.keras_internals import Functional
from afp_tf.train import distribute

SIZE, CLASSES = 28, 4
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_data(n, seed):
    """Float images in [0, 1] whose class (of 4) is where a bright square sits."""
    x, y = learnable_images(n, seed, size=SIZE, classes=CLASSES)
    return x[..., None].astype(np.float32) / 255.0, y.astype(np.int32)


def noisy(xy, fraction=0.2, seed=0):
    """``(x, y)`` with ``fraction`` of the labels moved to the next class: accuracy below 1."""
    x, y = xy
    flip = np.random.default_rng(seed).random(len(y)) < fraction
    return x, np.where(flip, (y + 1) % CLASSES, y).astype(y.dtype)


class NegativeSquares(keras.metrics.Mean):
    """Minus the mean squared logit: a higher-is-better metric that is not a proportion."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(-keras.ops.mean(y_pred**2, axis=-1), sample_weight)


def build_model():
    """A small functional net with BatchNormalization, a residual Add and Flatten -> Dense."""
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 1))
    x = L.Conv2D(12, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Add()([x, L.Conv2D(12, 3, padding="same", activation="relu")(x)])
    x = L.Conv2D(12, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Flatten()(L.MaxPooling2D(2)(x))
    return keras.Model(inp, L.Dense(CLASSES)(x), name="small_resnet")


def trained_model(x, y, epochs=2):
    """``build_model()`` compiled with Adam, the loss and accuracy, trained on ``(x, y)``."""
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def data():
    return make_data(512, 1), make_data(256, 2)


@pytest.fixture(scope="module")
def pruned(data):
    """One ``afp_tf.prune`` run on tf.data datasets; the input model and its weights before."""
    keras.utils.set_random_seed(0)
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt)
    before = [w.copy() for w in model.get_weights()]
    train = tf.data.Dataset.from_tensor_slices((xt, yt)).shuffle(512, seed=0).batch(64)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(128)
    result = afp_tf.prune(model, train, val_data=val, tolerance=0.05, max_rounds=2, progress=False)
    return model, before, result


def test_prune_functional_bn_residual_returns_smaller_model_above_floor(pruned):
    _, _, result = pruned
    assert result.params[1] < result.params[0]
    assert result.macs[1] < result.macs[0]
    assert result.rounds >= 1
    assert result.metric >= result.floor
    assert result.floor == pytest.approx(result.baseline_metric - 0.05)
    assert [h["round"] for h in result.history] == list(range(1, len(result.history) + 1))
    assert sum(h["outcome"] == "accepted" for h in result.history) == result.rounds
    assert any(after < before for before, after in result.filters.values())
    assert result.model.count_params() == result.params[1]


def test_prune_result_metric_matches_fresh_evaluation(pruned, data):
    _, _, result = pruned
    (_, _), (xv, yv) = data
    accuracy = float(np.mean(np.argmax(result.model.predict(xv, verbose=0), -1) == yv))
    assert accuracy == pytest.approx(result.metric)


def test_prune_input_model_not_mutated(pruned):
    model, before, result = pruned
    assert result.model is not model
    after = model.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prune_result_is_plain_functional_compiled_like_input(pruned, data):
    model, _, result = pruned
    assert type(result.model) is Functional
    assert result.model.compiled
    assert type(result.model.optimizer) is keras.optimizers.Adam
    assert result.model.get_compile_config()["loss"] == model.get_compile_config()["loss"]
    assert result.model.optimizer is not model.optimizer
    (xt, yt), _ = data
    history = result.model.fit(xt[:64], yt[:64], batch_size=64, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    logits = result.model.predict(xt[:64], verbose=0)
    evaluated = result.model.evaluate(xt[:64], yt[:64], verbose=0, return_dict=True)
    manual = np.mean(np.argmax(logits, -1) == np.asarray(yt[:64]).reshape(-1))
    assert evaluated["accuracy"] == pytest.approx(manual)


def test_prune_result_loads_and_predicts_without_afp_tf(pruned, data, tmp_path):
    _, _, result = pruned
    (_, _), (xv, _) = data
    path = tmp_path / "pruned.keras"
    result.model.save(path)
    np.save(tmp_path / "x.npy", xv[:16])
    np.save(tmp_path / "expected.npy", result.model.predict(xv[:16], verbose=0))
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import keras
        model = keras.saving.load_model({str(path)!r})
        assert "afp_tf" not in sys.modules, "afp_tf was imported"
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-5)
        print("OK", model.count_params())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["OK", str(result.params[1])]


def test_prune_numpy_tuples_relative_tolerance_work(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt)
    result = afp_tf.prune(
        model, (xt, yt), (xv, yv), tolerance=0.04, relative=True, max_rounds=1, progress=False
    )
    assert result.floor == pytest.approx(result.baseline_metric * 0.96)
    assert result.metric >= result.floor
    assert result.params[1] < result.params[0]


def test_prune_probe_rounds_probes_before_shrinking(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt, epochs=1)
    before = [w.copy() for w in model.get_weights()]
    result = afp_tf.prune(
        model,
        (xt, yt),
        (xv, yv),
        tolerance=0.05,
        max_rounds=1,
        recovery_epochs=1,
        recalibrate_batches=2,
        probe_rounds=True,
        progress=False,
    )
    (info,) = result.history
    assert info["probe"] and info["probe"][-1]["filters"] >= info["removed"] > 0
    assert all(np.isfinite(p["metric"]) for p in info["probe"])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_prune_accept_data_decides_and_sets_the_floor(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt)
    xa, ya = noisy(make_data(200, 3))
    result = afp_tf.prune(
        model,
        (xt, yt),
        (xv, yv),
        accept_data=(xa, ya),
        tolerance=0.05,
        max_rounds=1,
        progress=False,
    )
    on_accept = model.evaluate(xa, ya, verbose=0, return_dict=True)["accuracy"]
    assert result.baseline_metric == pytest.approx(on_accept, abs=1e-6)
    assert result.floor == pytest.approx(on_accept - 0.05, abs=1e-6)
    assert 0 < on_accept < 1
    assert result.margin == pytest.approx(np.sqrt(on_accept * (1 - on_accept) / 200), abs=1e-6)
    assert result.accept_floor == pytest.approx(result.floor + result.margin)
    assert result.metric >= result.accept_floor
    pruned = result.model
    pruned.compile(loss=LOSS, metrics=["accuracy"])
    after = pruned.evaluate(xa, ya, verbose=0, return_dict=True)["accuracy"]
    assert after == pytest.approx(result.metric, abs=1e-6)
    assert after >= result.floor


def test_prune_counts_accept_dataset_of_unknown_length_for_the_margin(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt, epochs=1)
    xa, ya = noisy(make_data(200, 3))
    accept = tf.data.Dataset.from_tensor_slices((xa, ya)).filter(lambda x, y: True).batch(64)
    assert accept.cardinality() == tf.data.UNKNOWN_CARDINALITY
    result = afp_tf.prune(
        model,
        (xt, yt),
        (xv, yv),
        accept_data=accept,
        tolerance=0.2,
        margin_z=2.0,
        max_rounds=0,
        progress=False,
    )
    e = result.baseline_metric
    assert 0 < e < 1
    assert result.margin == pytest.approx(2.0 * np.sqrt(e * (1 - e) / 200), abs=1e-6)
    assert result.rounds == 0 and result.metric == e


def test_prune_without_accept_data_margin_counts_the_val_dataset(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt, epochs=1)
    val = tf.data.Dataset.from_tensor_slices(noisy((xv, yv))).batch(100)  # 100, 100, 56
    result = afp_tf.prune(model, (xt, yt), val, tolerance=0.2, max_rounds=0, progress=False)
    e = result.baseline_metric
    assert 0 < e < 1
    assert result.margin == pytest.approx(np.sqrt(e * (1 - e) / 256), abs=1e-6)
    assert result.accept_floor == pytest.approx(result.floor + result.margin)


def test_prune_metric_not_an_accuracy_gets_no_margin(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt, epochs=1)
    result = afp_tf.prune(
        model,
        (xt, yt),
        (xv, yv),
        metric=NegativeSquares(name="score"),
        tolerance=0.5,
        max_rounds=0,
        progress=False,
    )
    assert result.margin == 0.0
    assert result.accept_floor == result.floor


@pytest.mark.parametrize("margin_z", [1.0, 0.0])
def test_prune_infinite_val_dataset_raises(data, margin_z):
    (xt, yt), (xv, yv) = data
    model = build_model()
    model.compile(loss=LOSS, metrics=["accuracy"])
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(64).repeat()
    with pytest.raises(ValueError, match="val_data is an infinite dataset"):
        afp_tf.prune(model, (xt, yt), val, margin_z=margin_z)


def test_prune_uncompiled_with_loss_and_metric_given_stays_uncompiled(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt)
    plain = keras.Model(model.inputs, model.outputs)  # same layers, never compiled
    result = afp_tf.prune(
        plain,
        (xt, yt),
        (xv, yv),
        loss=LOSS,
        metric=keras.metrics.SparseCategoricalAccuracy(name="acc"),
        optimizer=keras.optimizers.Adam(1e-3),
        tolerance=0.05,
        max_rounds=1,
        progress=False,
    )
    assert not result.model.compiled
    assert result.baseline_metric > 0.9
    assert result.metric >= result.floor


def test_prune_metric_override_decides_on_it(data):
    (xt, yt), (xv, yv) = data
    model = trained_model(xt, yt)
    top2 = keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")
    result = afp_tf.prune(
        model, (xt, yt), (xv, yv), metric=top2, tolerance=0.05, max_rounds=1, progress=False
    )
    logits = model.predict(xv, verbose=0)
    expected = float(np.mean(np.any(np.argsort(logits, -1)[:, -2:] == yv[:, None], axis=1)))
    assert result.baseline_metric == pytest.approx(expected)
    assert result.metric >= result.floor


def test_prune_uncompiled_without_loss_raises(data):
    (xt, yt), (xv, yv) = data
    with pytest.raises(ValueError, match="Pass loss=.*or compile the model"):
        afp_tf.prune(build_model(), (xt, yt), (xv, yv))


def test_prune_compiled_without_metric_raises(data):
    (xt, yt), (xv, yv) = data
    model = build_model()
    model.compile(loss=LOSS)
    with pytest.raises(ValueError, match="Pass metric="):
        afp_tf.prune(model, (xt, yt), (xv, yv))


def test_prune_missing_val_data_raises(data):
    (xt, yt), _ = data
    with pytest.raises(ValueError, match="val_data is required"):
        afp_tf.prune(build_model(), (xt, yt))


def test_prune_unknown_option_raises_type_error_naming_options(data):
    (xt, yt), (xv, yv) = data
    with pytest.raises(TypeError, match=r"unknown option 'p_maximum'.*p_max.*shrink_epochs"):
        afp_tf.prune(build_model(), (xt, yt), (xv, yv), p_maximum=0.5)


def test_prune_pipeline_only_option_rejected(data):
    (xt, yt), (xv, yv) = data
    with pytest.raises(TypeError, match="unknown option 'finetune_epochs'"):
        afp_tf.prune(build_model(), (xt, yt), (xv, yv), finetune_epochs=1)


def test_prune_bad_option_value_raises(data):
    (xt, yt), (xv, yv) = data
    with pytest.raises(ValueError, match="p_max"):
        afp_tf.prune(build_model(), (xt, yt), (xv, yv), p_max=1.5)


def test_prune_unbatched_dataset_raises(data):
    (xt, yt), (xv, yv) = data
    model = build_model()
    model.compile(loss=LOSS, metrics=["accuracy"])
    unbatched = tf.data.Dataset.from_tensor_slices((xt, yt))
    with pytest.raises(ValueError, match=r"must be batched.*dataset.batch"):
        afp_tf.prune(model, unbatched, (xv, yv))


def test_prune_list_data_raises_type_error(data):
    (xt, yt), (xv, yv) = data
    model = build_model()
    model.compile(loss=LOSS, metrics=["accuracy"])
    with pytest.raises(TypeError, match="got list"):
        afp_tf.prune(model, [xt, yt], (xv, yv))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)
        self.flat = keras.layers.Flatten()
        self.head = keras.layers.Dense(CLASSES)

    def call(self, x):
        return self.head(self.flat(self.conv(x)))


def test_prune_subclassed_model_raises_surgery_error(data):
    (xt, yt), (xv, yv) = data
    model = _Subclassed()
    model(xt[:1])
    model.compile(loss=LOSS, metrics=["accuracy"])
    with pytest.raises(surgery.SurgeryError, match="subclassed"):
        afp_tf.prune(model, (xt, yt), (xv, yv))


def test_prune_grouped_conv_removes_equal_counts_per_group(data):
    """Filters feeding a Conv2D(groups=2) leave in equal numbers from each half."""
    keras.utils.set_random_seed(0)
    (xt, yt), (xv, yv) = data
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="a")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, groups=2, padding="same", name="g")(x)
    x = keras.layers.Flatten()(keras.layers.ReLU()(x))
    model = keras.Model(inp, keras.layers.Dense(CLASSES)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"])
    model.fit(xt, yt, batch_size=64, epochs=2, verbose=0)
    result = afp_tf.prune(model, (xt, yt), (xv, yv), tolerance=0.2, max_rounds=1, progress=False)
    assert result.rounds == 1
    before, after = result.filters["a"]
    assert (before, after % 2) == (8, 0) and after < 8
    assert result.model.get_layer("g").groups == 2


@pytest.mark.slow  # about 10 s of CPU, but two replicas on a shared machine can take much longer
def test_prune_mirrored_strategy_two_devices_prunes(data):
    (xt, yt), (xv, yv) = data
    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = trained_model(xt, yt)
    result = afp_tf.prune(
        model, (xt, yt), (xv, yv), strategy=strategy, tolerance=0.05, max_rounds=1, progress=False
    )
    assert result.params[1] < result.params[0]
    assert result.metric >= result.floor
    assert result.model.compiled
    assert all(strategy.extended.variable_created_in_scope(v.value) for v in result.model.weights)


def test_prune_model_outside_strategy_scope_raises(data):
    (xt, yt), (xv, yv) = data
    model = build_model()
    model.compile(loss=LOSS, metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"not created under this strategy's scope"):
        afp_tf.prune(model, (xt, yt), (xv, yv), strategy=distribute.make_strategy("mirrored"))


def test_prune_renamed_option_names_the_new_one(data):
    (xt, yt), (xv, yv) = data
    with pytest.raises(TypeError, match=r"penalty_epochs was renamed shrink_epochs"):
        afp_tf.prune(build_model(), (xt, yt), (xv, yv), penalty_epochs=1)
