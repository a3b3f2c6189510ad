"""The one epoch loop: baseline, penalty, recovery and fine-tune training all run through it.

    result = run_epochs(trainer, train_ds, 3, evaluate=lambda t: t.evaluate(val_ds),
                        metric_name="accuracy", keep_best=True)
    result.best_metric, result.best_epoch  # the weights the model now holds

Keeping the best epoch, stopping early and recording are options of the same loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from afp_tf.train.training import NonFiniteLossError, Trainer


@dataclasses.dataclass
class EpochResult:
    """What :func:`run_epochs` did.

    Attributes:
      history: one entry per trained epoch: ``epoch`` (the global count after it), the train
        logs and the ``val_``-prefixed evaluation.
      metric: the decision metric after the last trained epoch (``start_metric`` if none).
      start_metric: the decision metric before training (given or, with ``keep_best``, measured).
      best_metric, best_epoch: with ``keep_best``, the metric of the weights the model was left
        with and the global epoch they are from (``first_epoch`` = the weights before training).
      error: with ``stop_on_nonfinite``, the error that stopped training (else None).
    """

    history: list[dict[str, Any]]
    metric: float | None = None
    start_metric: float | None = None
    best_metric: float | None = None
    best_epoch: int | None = None
    error: NonFiniteLossError | None = None


def run_epochs(
    trainer: Trainer,
    data: tf.data.Dataset | Callable[[int], tf.data.Dataset],
    epochs: int,
    *,
    steps: int | None = None,
    first_epoch: int = 0,
    progress: bool = True,
    evaluate: Callable[[Trainer], dict[str, float]] | None = None,
    metric_name: str | None = None,
    until: Callable[[float], bool] | None = None,
    keep_best: bool = False,
    start_metric: float | None = None,
    stop_on_nonfinite: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> EpochResult:
    """Trains ``trainer.model`` up to ``epochs`` epochs over ``data``.

    Args:
      data: the training dataset, or ``epoch -> dataset`` (``epoch`` = the epochs done before
        it), so a resumed run sees the batches an uninterrupted one would.
      steps: batches per epoch; None for a full pass.
      first_epoch: epochs already done (numbers the epochs of the history and of errors).
      evaluate: ``trainer -> metrics``, run after every epoch (validation data only).
      metric_name: the key of ``evaluate``'s dict that ``until`` and ``keep_best`` decide on.
      until: ``metric -> bool``; training stops after the first epoch where it is True.
      keep_best: leave the model with the weights of its best epoch, the weights before training
        included (scored ``start_metric``, or evaluated when that is None).
      stop_on_nonfinite: with ``keep_best``, a non-finite loss ends training (the best weights so
        far are kept, the error is returned) instead of raising.
      on_epoch_end: ``(epoch, logs)`` after every epoch (recording, checkpointing); ``epoch`` is
        the global count after it.

    Raises:
      NonFiniteLossError: a training loss became NaN or infinite (unless ``stop_on_nonfinite``).
    """
    decides = until is not None or keep_best
    if decides and (evaluate is None or metric_name is None):
        raise ValueError("until= and keep_best= need evaluate= and metric_name=.")
    if stop_on_nonfinite and not keep_best:
        raise ValueError("stop_on_nonfinite= needs keep_best=: the last weights are not finite.")
    model = trainer.model
    result = EpochResult(history=[], metric=start_metric, start_metric=start_metric)
    if keep_best:
        if start_metric is None:
            start_metric = float(evaluate(trainer)[metric_name])
            result.metric = result.start_metric = start_metric
        best_weights = model.get_weights()
        result.best_metric, result.best_epoch = start_metric, first_epoch
    for epoch in range(first_epoch + 1, first_epoch + epochs + 1):
        try:
            batches = data(epoch - 1) if callable(data) else data
            logs = trainer.train_epoch(batches, steps=steps, epoch=epoch - 1, progress=progress)
        except NonFiniteLossError as e:
            if not stop_on_nonfinite:
                raise
            logging.warning("Training stopped: %s; keeping its best epoch so far.", e)
            result.error = e
            break
        if evaluate is not None:
            val = evaluate(trainer)
            logs.update({f"val_{k}": v for k, v in val.items()})
            if metric_name is not None:
                result.metric = float(val[metric_name])
        result.history.append({"epoch": epoch, **logs})
        if on_epoch_end is not None:
            on_epoch_end(epoch, logs)
        if keep_best and result.metric > result.best_metric:
            best_weights = model.get_weights()
            result.best_metric, result.best_epoch = result.metric, epoch
        if until is not None and until(result.metric):
            break
    if keep_best:
        model.set_weights(best_weights)
    return result
