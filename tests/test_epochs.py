"""afp_tf.train.epochs.run_epochs: the epoch loop with keep-best, early stop and recording."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import classifier_trainer

from afp_tf.train import training
from afp_tf.train.epochs import run_epochs


def _dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    y = rng.integers(0, 2, 24).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


def _trainer(learning_rate=0.1):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    return classifier_trainer(model, global_batch_size=8, learning_rate=learning_rate)


def _scripted(values):
    """An ``evaluate`` returning ``values`` one call after the other."""
    it = iter(values)
    return lambda trainer: {"metric": next(it)}


def test_run_epochs_until_true_stops_after_first_epoch_and_records_it():
    seen = []
    result = run_epochs(
        _trainer(),
        _dataset(),
        5,
        first_epoch=3,
        progress=False,
        evaluate=lambda t: t.evaluate(_dataset()),
        metric_name="accuracy",
        until=lambda metric: True,
        on_epoch_end=lambda epoch, logs: seen.append((epoch, sorted(logs))),
    )
    keys = ["accuracy", "loss", "penalty", "task_loss", "val_accuracy", "val_loss"]
    assert seen == [(4, keys)]
    assert [h["epoch"] for h in result.history] == [4]
    assert result.metric == result.history[0]["val_accuracy"]


def test_run_epochs_keep_best_leaves_weights_of_best_epoch():
    trainer = _trainer()
    snapshots = {}
    result = run_epochs(
        trainer,
        _dataset(),
        3,
        progress=False,
        evaluate=_scripted([0.5, 0.6, 0.9, 0.7]),  # before training, then epochs 1..3
        metric_name="metric",
        keep_best=True,
        on_epoch_end=lambda epoch, logs: snapshots.update({epoch: trainer.model.get_weights()}),
    )
    assert (result.start_metric, result.best_metric, result.best_epoch) == (0.5, 0.9, 2)
    assert result.metric == 0.7
    for kept, best in zip(trainer.model.get_weights(), snapshots[2], strict=True):
        np.testing.assert_array_equal(kept, best)
    assert not np.array_equal(trainer.model.get_weights()[0], snapshots[3][0])


def test_run_epochs_keep_best_start_metric_best_restores_start_weights():
    trainer = _trainer()
    start = trainer.model.get_weights()
    result = run_epochs(
        trainer,
        _dataset(),
        2,
        progress=False,
        evaluate=_scripted([0.1, 0.2]),
        metric_name="metric",
        keep_best=True,
        start_metric=0.3,
    )
    assert (result.best_metric, result.best_epoch) == (0.3, 0)
    for kept, before in zip(trainer.model.get_weights(), start, strict=True):
        np.testing.assert_array_equal(kept, before)


def test_run_epochs_stop_on_nonfinite_keeps_finite_best():
    trainer = _trainer(learning_rate=1e12)
    start = trainer.model.get_weights()
    result = run_epochs(
        trainer,
        _dataset().repeat(50),
        3,
        progress=False,
        evaluate=_scripted([0.5]),
        metric_name="metric",
        keep_best=True,
        stop_on_nonfinite=True,
    )
    assert isinstance(result.error, training.NonFiniteLossError) and result.history == []
    assert result.best_epoch == 0
    np.testing.assert_array_equal(trainer.model.get_weights()[0], start[0])


def test_run_epochs_nonfinite_without_stop_raises_with_global_epoch():
    with pytest.raises(training.NonFiniteLossError, match="epoch 7"):
        run_epochs(_trainer(1e12), _dataset().repeat(50), 1, first_epoch=7, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": lambda m: True}, "need evaluate"),
        ({"keep_best": True, "evaluate": _scripted([])}, "need evaluate"),
        ({"stop_on_nonfinite": True}, "needs keep_best"),
    ],
)
def test_run_epochs_inconsistent_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_epochs(_trainer(), _dataset(), 1, progress=False, **kwargs)


def test_pruner_make_trainer_walks_graph_for_orthogonality_only_when_training(monkeypatch):
    from afp_tf.method import pruner as pruner_lib
    from afp_tf.method import regularizers
    from afp_tf.method.options import PruneOptions
    from afp_tf.train.task import Task

    built = []
    real = regularizers.orthogonality_loss
    monkeypatch.setattr(
        regularizers, "orthogonality_loss", lambda m, b, a=None: built.append(b) or real(m, b, a)
    )
    task = Task(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    pruner = pruner_lib.Pruner(
        options=PruneOptions(),
        task=task,
        train_data=_dataset(),
        val_data=_dataset(),
        strategy=tf.distribute.get_strategy(),
        optimizer_factory=lambda: keras.optimizers.SGD(0.1),
        global_batch_size=8,
        orth_beta=0.5,
        progress=False,
    )
    model = _trainer().model
    evaluated = pruner.evaluate(pruner.make_trainer(model))
    assert built == [] and set(evaluated) == {"loss", "accuracy"}
    logs = pruner.make_trainer(model).train_epoch(_dataset(), progress=False)
    assert built == [0.5] and logs["penalty"] > 0
