"""Tests of afp_tf.train.training: the compiled, strategy-aware Trainer and make_optimizer."""

import gc
import time
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_trainer

from afp_tf.train import precision, training

NUM_EXAMPLES, BATCH, CLASSES = 37, 8, 3  # 4 full batches and a partial one of 5


def _data(n=NUM_EXAMPLES):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    return x, y


def _dataset(batch=BATCH):
    return tf.data.Dataset.from_tensor_slices(_data()).batch(batch)


def _model(kernel_regularizer=None):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", kernel_regularizer=kernel_regularizer),
            keras.layers.Dense(CLASSES),
        ]
    )


def _trainer(model, strategy=None, optimizer=None, metrics=("accuracy",), **kw):
    optimizer = optimizer or (lambda: training.make_optimizer("sgd", 0.1, momentum=0.9))
    return classifier_trainer(
        model,
        global_batch_size=BATCH,
        strategy=strategy,
        metrics=metrics,
        optimizer=optimizer,
        **kw,
    )


def _numpy_metrics(model):
    """Mean cross-entropy and accuracy computed in numpy from the model's logits."""
    x, y = _data()
    logits = np.asarray(model(x, training=False), np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean(), (logits.argmax(axis=1) == y).mean()


def test_train_epoch_one_step_changes_weights():
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    logs = _trainer(model).train_epoch(_dataset(), steps=1, progress=False)
    assert np.isfinite(logs["loss"])
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize("kind", ["default", "mirrored"])
def test_evaluate_partial_last_batch_matches_numpy(kind):
    strategy = training.make_strategy(kind)
    with strategy.scope():
        model = _model()
    # A metric object made outside the scope is re-created under it.
    metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    logs = _trainer(model, strategy, metrics=[metric]).evaluate(_dataset())
    loss, accuracy = _numpy_metrics(model)
    assert logs["loss"] == pytest.approx(loss, rel=1e-6)
    assert logs["accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_train_epoch_zero_learning_rate_task_loss_is_exact_example_mean():
    model = _model()
    trainer = _trainer(model, optimizer=lambda: keras.optimizers.SGD(0.0))
    logs = trainer.train_epoch(_dataset(), progress=False)
    loss, accuracy = _numpy_metrics(model)
    assert logs["task_loss"] == pytest.approx(loss, rel=1e-6)
    assert logs["accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_train_epoch_model_regularizer_counts_as_penalty():
    model = _model(kernel_regularizer=keras.regularizers.L2(0.01))
    expected = 0.01 * np.sum(np.square(model.layers[0].kernel.numpy()))
    logs = _trainer(model).train_epoch(_dataset(), steps=1, progress=False)
    assert logs["penalty"] == pytest.approx(expected, rel=1e-5)
    assert logs["loss"] == pytest.approx(logs["task_loss"] + logs["penalty"])


def test_trainer_extra_loss_variable_changes_not_retraced():
    model = _model()
    strength = tf.Variable(0.0, trainable=False)
    penalty = lambda: strength * tf.reduce_sum(tf.abs(model.layers[0].kernel))
    trainer = _trainer(model, extra_losses=[penalty])
    penalties = []
    for epoch, value in enumerate([0.0, 0.1, 0.0]):
        strength.assign(value)
        penalties.append(trainer.train_epoch(_dataset(), epoch=epoch, progress=False)["penalty"])
        trainer.evaluate(_dataset())
    assert trainer.tracing_counts() == {"train": 1, "eval": 1}
    assert penalties[0] == penalties[2] == 0.0 and penalties[1] > 0.0


@pytest.mark.parametrize(
    "options",
    [training.StepOptions(), training.StepOptions(jit_compile=True, steps_per_execution=4)],
    ids=["default_step", "xla_4_steps_per_call"],
)
def test_trainer_mirrored_two_cpus_matches_default(options):
    # Same initial weights, data (with a partial last batch) and global batch; 10 SGD steps.
    init = _model().get_weights()
    results = []
    for kind, opts in (("default", training.StepOptions()), ("mirrored", options)):
        strategy = training.make_strategy(kind)
        with strategy.scope():
            model = _model()
            model.set_weights(init)
        trainer = _trainer(model, strategy, options=opts)
        for _ in range(2):
            trainer.train_epoch(_dataset(), progress=False)
        results.append(model.get_weights())
    assert strategy.num_replicas_in_sync == 2
    for single, mirrored in zip(*results, strict=True):
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)


def test_train_epoch_absurd_learning_rate_raises_nonfinite():
    trainer = _trainer(_model(), optimizer=lambda: training.make_optimizer("sgd", 1e12))
    start = time.monotonic()
    with pytest.raises(training.NonFiniteLossError, match=r"epoch 3, step \d") as info:
        trainer.train_epoch(_dataset().repeat(), steps=50, epoch=3, progress=False)
    assert info.value.step <= 3 and info.value.epoch == 3
    assert time.monotonic() - start < 20


def test_trainer_model_outside_mirrored_scope_raises():
    model = _model()
    with pytest.raises(ValueError, match=r"strategy.scope\(\)"):
        _trainer(model, training.make_strategy("mirrored"))


def test_trainer_optimizer_outside_mirrored_scope_raises():
    strategy = training.make_strategy("mirrored")
    with strategy.scope():
        model = _model()
    with pytest.raises(ValueError, match="optimizer"):
        _trainer(model, strategy, optimizer=keras.optimizers.SGD(0.1))


def test_train_epoch_batches_larger_than_global_batch_raise():
    with pytest.raises(ValueError, match="global_batch_size=8"):
        _trainer(_model()).train_epoch(_dataset(batch=16), progress=False)


def test_trainer_discarded_after_training_is_garbage_collected():
    model = _model()
    trainer = _trainer(model)
    trainer.train_epoch(_dataset(), steps=2, progress=False)
    trainer.evaluate(_dataset(), steps=1)
    ref = weakref.ref(trainer)
    del trainer
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("sgd", {"momentum": 0.9, "nesterov": True}, keras.optimizers.SGD),
        ("adam", {"schedule": "cosine", "decay_steps": 100}, keras.optimizers.Adam),
        (
            "adamw",
            {"weight_decay": 1e-4, "schedule": "step", "decay_steps": 10},
            keras.optimizers.AdamW,
        ),
    ],
)
def test_make_optimizer_known_names_return_optimizer(name, kw, expected):
    optimizer = training.make_optimizer(name, 0.01, **kw)
    assert type(optimizer) is expected


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("adm", {}, "Did you mean 'adam'"),
        ("sgd", {"schedule": "cosine"}, "decay_steps > 0"),
        ("sgd", {"schedule": "linear"}, "Unknown schedule"),
        ("sgd", {"momentum": 1.5}, "momentum"),
        ("sgd", {"schedule": "step", "decay_steps": 4, "warmup_steps": 2}, "warmup_steps"),
        ("sgd", {"schedule": "cosine", "decay_steps": 4, "warmup_steps": 4}, "warmup_steps"),
    ],
)
def test_make_optimizer_bad_arguments_raise(name, kw, message):
    with pytest.raises(ValueError, match=message):
        training.make_optimizer(name, 0.01, **kw)


def test_make_optimizer_step_schedule_decays_learning_rate():
    optimizer = training.make_optimizer("sgd", 0.1, schedule="step", decay_steps=2, decay_rate=0.5)
    assert float(optimizer.learning_rate) == pytest.approx(0.1)
    optimizer.iterations.assign(4)
    assert float(optimizer.learning_rate) == pytest.approx(0.025)


def test_make_optimizer_cosine_warmup_rises_then_decays_to_zero():
    optimizer = training.make_optimizer(
        "adam", 0.1, schedule="cosine", decay_steps=12, warmup_steps=2
    )
    rates = []
    for step in (0, 1, 2, 7, 12):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    # linear from 0 to 0.1 over 2 steps, then cosine over the other 10: half-way at step 7
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-6)


def _train_twice(options, epochs=2, data=None):
    """The same initial model trained ``epochs`` epochs with ``options``: weights, logs, trainer."""
    keras.utils.set_random_seed(0)
    model = _model()
    trainer = _trainer(model, options=options)
    logs = [trainer.train_epoch(data or _dataset(), progress=False) for _ in range(epochs)]
    return model.get_weights(), logs, trainer


@pytest.mark.parametrize(
    "options",
    [training.StepOptions(steps_per_execution=4), training.StepOptions(jit_compile=True)],
    ids=["steps_per_execution_4", "jit_compile"],
)
def test_trainer_step_options_same_weights_and_logs_as_default(options):
    weights, logs, _ = _train_twice(training.StepOptions())
    got, got_logs, trainer = _train_twice(options)
    for a, b in zip(got, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [g["task_loss"] for g in got_logs] == pytest.approx([g["task_loss"] for g in logs])
    assert int(trainer.optimizer.iterations) == 10  # 5 batches (4 full, 1 partial) x 2 epochs
    assert trainer.tracing_counts() == {"train": 1, "eval": 0}


def test_trainer_steps_per_execution_stops_at_steps():
    trainer = _trainer(_model(), options=training.StepOptions(steps_per_execution=4))
    trainer.train_epoch(_dataset().repeat(), steps=6, progress=False)
    assert int(trainer.optimizer.iterations) == 6
    logs = trainer.evaluate(_dataset())
    loss, accuracy = _numpy_metrics(trainer.model)
    assert logs["loss"] == pytest.approx(loss, rel=1e-6)
    assert logs["accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_trainer_steps_per_execution_nonfinite_names_same_step_as_one():
    steps = []
    for per_call in (1, 4):
        keras.utils.set_random_seed(0)
        trainer = _trainer(
            _model(),
            optimizer=lambda: training.make_optimizer("sgd", 1e12),
            options=training.StepOptions(steps_per_execution=per_call),
        )
        with pytest.raises(training.NonFiniteLossError) as info:
            trainer.train_epoch(_dataset().repeat(), steps=50, epoch=2, progress=False)
        steps.append(info.value.step)
    assert steps[0] == steps[1] <= 3


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_step_options_bad_steps_per_execution_raise(bad):
    with pytest.raises(ValueError, match="steps_per_execution"):
        training.StepOptions(steps_per_execution=bad)


def test_precision_policy_mixed_float16_scales_loss_and_restores_policy():
    with precision.policy("mixed_float16"):
        model = _model()
    assert keras.config.dtype_policy().name == "float32"
    assert model.layers[0].compute_dtype == "float16" and model.layers[0].kernel.dtype == "float32"
    trainer = _trainer(model)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    before = model.get_weights()
    logs = trainer.train_epoch(_dataset(), progress=False)
    loss, _ = _numpy_metrics(model)
    assert np.isfinite(logs["task_loss"]) and not np.array_equal(before[0], model.get_weights()[0])
    assert trainer.evaluate(_dataset())["loss"] == pytest.approx(loss, rel=1e-2)


def test_precision_policy_bfloat16_keeps_optimizer_unscaled():
    with precision.policy("mixed_bfloat16"):
        model = _model()
    trainer = _trainer(model)
    assert model.layers[0].compute_dtype == "bfloat16"
    assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(trainer.train_epoch(_dataset(), progress=False)["loss"])


def _nested_model(head_dtype=None):
    inputs = keras.Input((6,))
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")], name="inner")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inner(inputs))
    return keras.Model(inputs, keras.layers.Dense(CLASSES, dtype=head_dtype, name="head")(x))


def test_precision_as_float32_rebuilds_nested_reduced_layers_with_the_same_weights():
    with precision.policy("mixed_bfloat16"):
        model = _nested_model(head_dtype="bfloat16")  # pure bfloat16: bfloat16 variables
        model.compile("sgd", "mse")
    assert precision.reduced_policies(model) == {"mixed_bfloat16", "bfloat16"}
    copy = precision.as_float32(model)
    layers = [copy, *copy.layers, *copy.get_layer("inner").layers]
    assert {layer.dtype_policy.name for layer in layers} == {"float32"}
    assert {w.dtype for w in copy.weights} == {"float32"} and not copy.compiled
    reference = _nested_model()  # built in float32, given the same (cast) weights
    reference.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    x = _data()[0]
    np.testing.assert_array_equal(copy.predict(x, verbose=0), reference.predict(x, verbose=0))
    assert model.get_layer("head").kernel.dtype == "bfloat16"  # the original is untouched
    assert precision.as_float32(reference) is reference


def test_precision_policy_unknown_name_suggests():
    policy = precision.policy("mixed_float61")
    with pytest.raises(ValueError, match="Did you mean 'mixed_float16'"):
        policy.__enter__()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.mixed_precision=mixed_float61", "Did you mean 'mixed_float16'"),
        ("train.steps_per_execution=0", "steps_per_execution=0 must be >= 1"),
        ("train.optimizer=adm", "Did you mean 'adam'"),
        ("train.strategy=mirored", "Did you mean 'mirrored'"),
    ],
)
def test_config_train_section_bad_values_raise(override, message):
    from afp_tf.run import config_lib

    cfg = config_lib.base_config()
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.apply_overrides(cfg, [override])


def test_trainer_after_train_calls_get_steps_of_each_compiled_call():
    seen = []
    trainer = _trainer(
        _model(),
        options=training.StepOptions(steps_per_execution=2),
        after_train_calls=[seen.append],
    )
    trainer.train_epoch(_dataset(), progress=False)  # 5 batches: calls of 2, 2 and 1 steps
    trainer.evaluate(_dataset())  # evaluation runs no hook
    assert seen == [2, 2, 1]
