"""Distillation from the unpruned model: the loss, the trainer, the options, the entry points."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_trainer, tiny_job_config

import afp_tf
from afp_tf.method.options import PruneOptions
from afp_tf.method.pruner import Pruner
from afp_tf.run import checkpoint, config_lib, pipeline
from afp_tf.train import distillation
from afp_tf.train.task import Task

CLASSES, BATCH = 3, 8


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, rng.integers(0, CLASSES, n).astype(np.int32)


def _dataset(n=24):
    return tf.data.Dataset.from_tensor_slices(_data(n)).batch(BATCH)


def _model(seed=0, batchnorm=False):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6,)), keras.layers.Dense(5, activation="relu")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential([*layers, keras.layers.Dense(CLASSES)])


def test_soft_loss_hand_computed_logits_both_output_kinds():
    # T = 2. Example 1: teacher (2, 0) -> p = (e, 1)/(e + 1), student (0, 0) -> q = (1/2, 1/2):
    # T² KL = 4 [p1 ln(2 p1) + p2 ln(2 p2)]. Example 2: teacher (0, 0) -> p = (1/2, 1/2),
    # student (2 ln 3, 0) -> q = (3/4, 1/4): T² KL = 4 · ½ [ln(2/3) + ln 2] = 2 ln(4/3).
    p1 = math.e / (math.e + 1)
    expected = [
        4 * (p1 * math.log(2 * p1) + (1 - p1) * math.log(2 * (1 - p1))),
        2 * math.log(4 / 3),
    ]
    teacher = tf.constant([[2.0, 0.0], [0.0, 0.0]])
    student = tf.constant([[0.0, 0.0], [2 * math.log(3.0), 0.0]])
    logits = distillation.Distillation(None, 0.25, temperature=2.0)
    assert logits.soft_loss(teacher, student).numpy() == pytest.approx(expected, rel=1e-5)
    probs = distillation.Distillation(None, 0.25, temperature=2.0, outputs="probabilities")
    soft = probs.soft_loss(tf.nn.softmax(teacher), tf.nn.softmax(student)).numpy()
    assert soft == pytest.approx(expected, rel=1e-4)
    blended = logits.blend(tf.constant([1.0, 2.0]), student, teacher).numpy()
    assert blended == pytest.approx([0.75 + 0.25 * expected[0], 1.5 + 0.25 * expected[1]])


def test_soft_loss_same_outputs_is_zero():
    y = tf.constant([[1.0, -2.0, 0.5]])
    assert distillation.Distillation(None, 1.0).soft_loss(y, y).numpy() == pytest.approx([0.0])


@pytest.mark.parametrize(
    ("loss", "outputs"),
    [
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), "logits"),
        (keras.losses.CategoricalCrossentropy(), "probabilities"),
        ("sparse_categorical_crossentropy", "probabilities"),
        (keras.losses.categorical_crossentropy, "probabilities"),
        (keras.losses.MeanSquaredError(), None),
        ("no_such_loss", None),
        (lambda y, p: p, None),
        (None, None),
    ],
)
def test_class_outputs_read_from_the_loss(loss, outputs):
    assert distillation.class_outputs(loss) == outputs


def _train_one_epoch(model, soft, learning_rate=0.1):
    trainer = classifier_trainer(
        model, global_batch_size=BATCH, learning_rate=learning_rate, distillation=soft
    )
    return trainer.train_epoch(_dataset(), progress=False)


def test_trainer_distill_weight_zero_trains_exactly_on_the_task_loss():
    plain, distilled = _model(), _model()
    teacher = _model(seed=1)
    logs = _train_one_epoch(plain, None)
    logs_distilled = _train_one_epoch(distilled, distillation.Distillation(teacher, 0.0))
    assert logs_distilled["task_loss"] == logs["task_loss"]
    for a, b in zip(plain.get_weights(), distilled.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trainer_distill_loss_is_the_blend_and_the_teacher_is_not_trained():
    student, teacher = _model(), _model(seed=1, batchnorm=True)
    before = [w.copy() for w in teacher.get_weights()]  # BatchNorm moving statistics included
    x, y = _data()
    soft = distillation.Distillation(teacher, 0.3, temperature=3.0)
    ce = keras.losses.sparse_categorical_crossentropy(y, student(x), from_logits=True).numpy()
    kl = soft.soft_loss(teacher(x, training=False), student(x)).numpy()
    logs = _train_one_epoch(student, soft, learning_rate=0.0)
    assert logs["task_loss"] == pytest.approx(np.mean(0.7 * ce + 0.3 * kl), rel=1e-5)
    assert kl.mean() > 0.01  # the two models disagree: the term counts
    _train_one_epoch(student, soft)
    for a, b in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"distill": 1.5}, "distill=1.5 must be in"),
        ({"distill": -0.1}, "distill=-0.1 must be in"),
        ({"distill": math.nan}, "distill=nan must be in"),
        ({"distill_temperature": 0.0}, "distill_temperature=0.0 must be > 0"),
    ],
)
def test_options_bad_distill_values_raise(options, message):
    with pytest.raises(ValueError, match=message):
        PruneOptions(**options)


def test_config_bad_distill_names_the_key():
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    with pytest.raises(config_lib.ConfigError, match="prune.distill=2.0 must be in"):
        config_lib.apply_overrides(cfg, ["prune.distill=2.0"])


def _pruner(loss, cls=Pruner, **options):
    return cls(
        options=PruneOptions(**options),
        task=Task(
            loss=loss,
            metrics=lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        ),
        train_data=_dataset(),
        val_data=_dataset(),
        strategy=tf.distribute.get_strategy(),
        optimizer_factory=lambda: keras.optimizers.SGD(0.01),
        global_batch_size=BATCH,
        steps_per_epoch=1,
        progress=False,
    )


class BoxLoss(keras.losses.Loss):
    """A detector's loss stand-in: its model's outputs are not class scores."""

    def call(self, y_true, y_pred):
        return tf.reduce_sum(tf.abs(y_pred), axis=-1)


def test_pruner_distill_on_a_loss_without_class_scores_raises_up_front():
    with pytest.raises(ValueError, match=r"prune.distill=0.5 .*BoxLoss"):
        _pruner(BoxLoss(), distill=0.5)
    assert _pruner(BoxLoss()).teacher is None  # off: any task


def test_pruner_run_without_a_teacher_raises():
    pruner = _pruner(keras.losses.SparseCategoricalCrossentropy(from_logits=True), distill=0.5)
    with pytest.raises(ValueError, match="teacher"):
        pruner.run(_model(), None)


def test_pruner_every_round_trainer_distils_from_the_model_it_started_from():
    class Recording(Pruner):
        def make_trainer(self, model, *args, **kwargs):
            trainer = super().make_trainer(model, *args, **kwargs)
            self.made.append((model, trainer.distillation))
            return trainer

    pruner = _pruner(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        Recording,
        distill=0.4,
        distill_temperature=2.0,
        tolerance=0.5,
        max_rounds=1,
        recovery_epochs=1,
        recalibrate_batches=0,
        margin_z=0.0,
    )
    pruner.made = []
    baseline = _model()
    before = [w.copy() for w in baseline.get_weights()]
    state = pruner.start(baseline, baseline_macs=1000)
    assert pruner.teacher is baseline
    pruner.run(baseline, state)
    trained = [(m, d) for m, d in pruner.made if m is not baseline]  # shrink and recovery
    assert len(trained) >= 2
    assert all(
        d.teacher is baseline and (d.weight, d.temperature) == (0.4, 2.0) for _, d in trained
    )
    assert {d.outputs for _, d in trained} == {"logits"}
    for a, b in zip(before, baseline.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_prune_api_distill_with_a_loss_without_class_scores_raises():
    model = _model()
    model.compile(loss="mse", metrics=["mae"])
    x, y = _data()
    with pytest.raises(ValueError, match="prune.distill"):
        afp_tf.prune(model, (x, y), (x, y), distill=0.5, progress=False)


@pytest.mark.parametrize("option", ["distill", "distill_temperature"])
def test_callback_refuses_distillation(option):
    with pytest.raises(ValueError, match=f"does not support {option}"):
        afp_tf.AFPCallback(**{option: 0.5})


def test_pipeline_resumed_run_distils_from_its_baseline_file(
    tmp_path, tiny_fashion_mnist, monkeypatch
):
    cfg = tiny_job_config(tiny_fashion_mnist, "prune.distill=0.5")
    workdir = tmp_path / "run"
    baseline = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    workdir.mkdir()
    baseline.save(workdir / "baseline.keras")
    checkpoint.RunStore(workdir).save({"phase": "finetune", "epoch": 0}, model=baseline)
    seen = {}

    def finetune(run):
        seen["teacher"] = run.pruner.teacher
        run.state["phase"] = "done"

    monkeypatch.setattr(pipeline.Run, "_finetune", finetune)
    monkeypatch.setattr(pipeline.report, "write", lambda *a: {})
    pipeline.run(cfg, workdir)
    teacher = seen["teacher"]
    assert teacher is not None and teacher is not baseline
    for a, b in zip(baseline.get_weights(), teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
