"""Tests of ``afp_tf.AFPCallback``: candidates penalised during ``model.fit``, removed after it."""

import zipfile

import keras
import numpy as np
import pytest
from test_api import LOSS, NegativeSquares, build_model, make_data

import afp_tf
from afp_tf import callback, surgery
from afp_tf.method import afp
from afp_tf.surgery.keras_internals import Functional

EPOCHS = 3


class _Recorder(keras.callbacks.Callback):
    """Per epoch end: the filter ℓ1 norms, the AFP candidates and how often penalties ran."""

    def __init__(self, afp_callback, calls):
        super().__init__()
        self.afp, self.calls, self.epochs = afp_callback, calls, []

    def on_epoch_end(self, epoch, logs=None):
        norms = afp.filter_importance(self.afp._weights, normalize="none")
        self.epochs.append((norms, dict(self.afp.candidates), len(self.calls)))


@pytest.fixture(scope="module")
def fitted():
    """A fresh model fit for EPOCHS epochs with the callback; the penalty's Python calls (one
    per traced regularizer) are counted."""
    keras.utils.set_random_seed(0)
    (xt, yt), (xv, yv) = make_data(512, 1), make_data(256, 2)
    calls = []
    original = callback._FilterPenalty.__call__
    callback._FilterPenalty.__call__ = lambda self, x: calls.append(1) or original(self, x)
    try:
        model = build_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"])
        cb = afp_tf.AFPCallback(tolerance=0.05, lambda_max=0.05, p_max=0.3)
        recorder = _Recorder(cb, calls)
        history = model.fit(
            xt,
            yt,
            batch_size=64,
            epochs=EPOCHS,
            validation_data=(xv, yv),
            callbacks=[cb, recorder],
            verbose=0,
        )
    finally:
        callback._FilterPenalty.__call__ = original
    return model, cb, recorder, history, (xv, yv)


def test_callback_penalty_shrinks_candidates_more_than_others(fitted):
    _, cb, recorder, _, _ = fitted
    (norms0, candidates, _), (norms1, _, _) = recorder.epochs[0], recorder.epochs[1]
    assert sum(map(len, candidates.values())) > 0
    ratio_cand, ratio_rest = [], []
    for name, idx in candidates.items():
        ratio = norms1[name] / norms0[name]
        mask = np.zeros(ratio.size, bool)
        mask[idx] = True
        ratio_cand.extend(ratio[mask])
        ratio_rest.extend(ratio[~mask])
    assert np.mean(ratio_cand) < 0.8 * np.mean(ratio_rest)
    assert cb.history[0]["strength"] == pytest.approx(0.05)


def test_callback_penalties_not_retraced_across_epochs(fitted):
    _, cb, recorder, _, _ = fitted
    counts = [c for _, _, c in recorder.epochs]
    assert counts[0] > 0
    assert counts == [counts[0]] * EPOCHS  # candidates and λ changed; nothing was traced again
    assert len(cb.history) == EPOCHS


def test_callback_pruned_model_smaller_and_predicts(fitted):
    model, cb, _, history, (xv, yv) = fitted
    pruned = cb.pruned_model
    assert type(pruned) is Functional
    assert sum(map(len, cb.removal.values())) > 0
    sizes = {g.name: g.size for g in surgery.find_channel_groups(pruned) if g.prunable}
    for g in surgery.find_channel_groups(model):
        if g.prunable:
            assert sizes[g.name] == g.size - len(cb.removal.get(g.name, []))
    assert pruned.count_params() < model.count_params()
    logits = pruned.predict(xv, verbose=0)
    assert logits.shape == (len(xv), 4)
    assert history.history["val_accuracy"][-1] >= cb.controller.floor
    assert np.mean(np.argmax(logits, -1) == yv) > 0.5


def test_callback_pruned_model_compiled_like_input(fitted):
    _, cb, _, _, (xv, yv) = fitted
    assert cb.pruned_model.compiled
    assert type(cb.pruned_model.optimizer) is keras.optimizers.Adam
    logs = cb.pruned_model.evaluate(xv, yv, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}


def test_callback_detaches_penalties_after_fit(fitted, tmp_path):
    model, cb, _, _, _ = fitted
    assert all(v.regularizer is None for v in model.weights)
    assert all(v.regularizer is None for v in cb.pruned_model.weights)
    assert len(model.losses) == 0
    path = tmp_path / "fitted.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        assert b"afp_tf" not in z.read("config.json")
    assert keras.saving.load_model(path).count_params() == model.count_params()


def test_callback_keeps_and_restores_user_regularizer():
    (xt, yt), (xv, yv) = make_data(128, 1), make_data(64, 2)
    inp = keras.Input((28, 28, 1))
    l2 = keras.regularizers.L2(1e-3)
    x = keras.layers.Conv2D(4, 3, strides=4, kernel_regularizer=l2, name="conv")(inp)
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(x)))
    model.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"])
    kernel = model.get_layer("conv").kernel
    seen = []

    class _Peek(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(kernel.regularizer)

    cb = afp_tf.AFPCallback(tolerance=0.2)  # above the margin of 64 validation examples
    model.fit(xt, yt, epochs=2, validation_data=(xv, yv), callbacks=[cb, _Peek()], verbose=0)
    assert isinstance(seen[0], callback._FilterPenalty) and seen[0].base is l2
    assert kernel.regularizer is l2


def test_callback_missing_monitor_raises_and_detaches():
    (xt, yt) = make_data(128, 1)
    model = build_model()
    model.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"])
    with pytest.raises(ValueError, match="monitors 'val_accuracy'.*pass validation_data"):
        model.fit(xt, yt, epochs=1, callbacks=[afp_tf.AFPCallback()], verbose=0)
    assert all(v.regularizer is None for v in model.weights)


def test_callback_bad_warmup_raises():
    with pytest.raises(ValueError, match="warmup_epochs"):
        afp_tf.AFPCallback(warmup_epochs=0)


def test_callback_counts_validation_examples_and_reports_the_accept_floor(fitted):
    _, cb, _, history, (xv, _) = fitted
    baseline = history.history["val_accuracy"][0]  # warmup_epochs=1: the baseline epoch
    assert cb.examples == len(xv) == 256
    assert cb.margin == pytest.approx(np.sqrt(baseline * (1 - baseline) / 256))
    assert cb.accept_floor == pytest.approx(baseline - 0.05 + cb.margin)
    assert cb.accept_floor == cb.controller.accept_floor


def _two_scale_model():
    """Conv "big" on 32×32 positions, Conv "small" on 4×4: a filter of "big" costs ~8× the MACs
    of one of "small". Within each group half the filters have 1/3 of the others' ℓ1 norm
    ("big") or 1/9 ("small"), so by importance alone "small" loses filters first."""
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="big")(inp)
    x = keras.layers.MaxPooling2D(8)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="small")(x)
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(x)))
    big = np.ones((3, 3, 1, 8), np.float32) * np.array([0.5] * 4 + [1.5] * 4, np.float32)
    small = np.ones((3, 3, 8, 8), np.float32) * np.array([0.2] * 4 + [1.8] * 4, np.float32)
    model.get_layer("big").kernel.assign(big * 0.01)
    model.get_layer("small").kernel.assign(small * 0.01)
    return model


def _chance_data():
    """64 random images with random labels (of 4): accuracy near chance, never 0 or 1."""
    rng = np.random.default_rng(0)
    return rng.random((64, 32, 32, 1), np.float32), rng.integers(0, 4, 64)


def _fit_two_scale(epochs=1, metrics=("accuracy",), validation_steps=None, **kwargs):
    """``_two_scale_model`` fit with the callback (``kwargs``) at learning rate 0: candidates are
    chosen on the weights it was built with."""
    x, y = _chance_data()
    model = _two_scale_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS, metrics=list(metrics))
    cb = afp_tf.AFPCallback(**{"tolerance": 0.5, "orth_beta": 0.0, **kwargs})
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=epochs,
        validation_data=(x, y),
        validation_steps=validation_steps,
        callbacks=[cb],
        verbose=0,
    )
    return cb


def test_callback_cost_macs_changes_the_candidates():
    kw = {"rule": "fixed", "p_max": 0.25}
    by_importance = _fit_two_scale(cost="none", **kw).candidates
    by_cost = _fit_two_scale(cost="macs", **kw).candidates
    assert by_importance == {"small": [0, 1, 2, 3]}
    assert by_cost == {"big": [0, 1, 2, 3]}


def test_callback_margin_is_one_standard_error_of_the_examples_validated():
    cb = _fit_two_scale(validation_steps=1)  # one batch of 32 of the 64 validation examples
    baseline = cb.controller.baseline
    assert 0 < baseline < 1
    assert cb.examples == 32
    assert cb.margin == pytest.approx(np.sqrt(baseline * (1 - baseline) / 32))
    assert cb.accept_floor == pytest.approx(baseline - 0.5 + cb.margin)


def test_callback_validation_size_argument_sets_the_margin():
    cb = _fit_two_scale(validation_size=1000)
    baseline = cb.controller.baseline
    assert cb.examples == 1000
    assert cb.margin == pytest.approx(np.sqrt(baseline * (1 - baseline) / 1000))


def test_callback_metric_without_example_count_has_no_margin():
    cb = _fit_two_scale(metrics=(NegativeSquares(name="score"),), monitor="val_score")
    assert (cb.examples, cb.margin) == (0, 0.0)
    assert cb.accept_floor == pytest.approx(cb.controller.baseline - 0.5)


def test_callback_margin_not_below_tolerance_raises_and_detaches():
    x, y = _chance_data()
    model = _two_scale_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS, metrics=["accuracy"])
    cb = afp_tf.AFPCallback(tolerance=0.01, validation_size=10)
    with pytest.raises(ValueError, match="margin=.*must be in"):
        model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=[cb], verbose=0)
    assert all(v.regularizer is None for v in model.weights)


def test_callback_bad_validation_size_raises():
    with pytest.raises(ValueError, match="validation_size"):
        afp_tf.AFPCallback(validation_size=0)
