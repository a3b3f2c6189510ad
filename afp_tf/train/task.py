"""What differs between tasks, behind one interface the generic code calls without branching.

A :class:`Task` says how a model is trained (loss, metrics), judged (its evaluation and the
decision metric) and exported; a :class:`TaskData` adds the datasets and builders of one
experiment. Task builders (``afp_tf.run.task_builders``, ``afp_tf.detection.task``) fill them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from afp_tf.train import training

# ``(model, out_dir, *, formats, representative, val_x, val_y) -> report dict``
Exporter = Callable[..., dict]


@dataclasses.dataclass(frozen=True)
class Task:
    """How a model is trained, judged and exported.

    Attributes:
      loss: a Keras loss computing per-example losses.
      metrics: a zero-argument factory of fresh Keras metrics (a new set per trainer).
      metric_name: the decision metric, a key of the evaluation dict; higher is better.
      evaluator: ``(trainer, dataset) -> dict`` for tasks whose metric is not a Keras metric
        (e.g. mAP); None evaluates with ``trainer.evaluate``.
      report_evaluator: ``(trainer, dataset) -> dict``, the evaluation the run report keeps for
        the baseline and the final model: :attr:`evaluator`'s metrics plus what is too bulky
        for every epoch's log (a detector's AP per class and confusion counts); None: the run
        report keeps only the decision metric.
      exporter: writes and verifies the deployable artifacts of a model of this task, called as
        ``exporter(model, out_dir, formats=, representative=, val_x=, val_y=, tolerances=)``
        with everything else it needs (e.g. a detector's anchors) already bound.
      deployed: ``model -> model`` as its artifacts run (a detector trained on crops,
        re-inputted at the full frame size), which the latency model probes and predicts;
        None: the model as trained.
    """

    loss: Any
    metrics: Callable[[], list]
    metric_name: str = "accuracy"
    evaluator: Callable[[training.Trainer, tf.data.Dataset], dict] | None = None
    exporter: Exporter | None = None
    report_evaluator: Callable[[training.Trainer, tf.data.Dataset], dict] | None = None
    deployed: Callable[[keras.Model], keras.Model] | None = None

    def evaluate(self, trainer: training.Trainer, dataset: tf.data.Dataset) -> dict:
        """Every metric of ``trainer.model`` on ``dataset``, the decision metric included."""
        if self.evaluator is None:
            return trainer.evaluate(dataset)
        return self.evaluator(trainer, dataset)

    def score(self, trainer: training.Trainer, dataset: tf.data.Dataset) -> float:
        """The decision metric of ``trainer.model`` on ``dataset``."""
        return float(self.evaluate(trainer, dataset)[self.metric_name])

    def export(self, model: keras.Model, out_dir, **kwargs) -> dict:
        """Runs the task's exporter (see :attr:`exporter`); returns its report."""
        if self.exporter is None:
            raise ValueError(f"This task (decision metric {self.metric_name!r}) has no exporter.")
        return self.exporter(model, out_dir, **kwargs)


@dataclasses.dataclass(frozen=True)
class TaskData:
    """The task, datasets and builders of one experiment.

    Attributes:
      sample: ``(split, n) -> (x, y)`` arrays of a split, for export calibration and checks.
      description: one line on the data, for the log.
      accept: the split accept/reject decisions use (None: decide on ``val``).
      accept_size: the size of the split decisions use (``accept``, else ``val``) when the
        metric is a proportion (sets the acceptance margin); 0 otherwise.
      train_for_epoch: ``epoch -> dataset`` of that epoch's batches, so a resumed run sees
        what an uninterrupted one would (None: ``train``).
    """

    task: Task
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    build_model: Callable[[], keras.Model]
    sample: Callable[[str, int], tuple[np.ndarray, np.ndarray]]
    description: str
    accept: tf.data.Dataset | None = None
    accept_size: int = 0
    train_for_epoch: Callable[[int], tf.data.Dataset] | None = None
