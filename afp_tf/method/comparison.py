"""The standard pruning methods afp_tf is compared against (benchmarks/compare.py).

* :func:`uniform_l1` — Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017): remove
  the same fraction of lowest-ℓ1 filters from every prunable group in one shot, the fraction
  found by bisection so the pruned model has a given MACs count, then fine-tune.
* :func:`iterative_global_l1` — prune a fixed fraction of all prunable filters per round by one
  global ℓ1 ranking (importance normalised per layer, as AFP's), train between rounds, stop at
  a MACs target, then fine-tune with what is left of the epoch budget.

Both keep the fine-tuning epoch with the best *validation* metric (the test split is never
looked at) and return a :class:`ComparisonResult`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from afp_tf import stats, surgery
from afp_tf.method import afp
from afp_tf.train import training
from afp_tf.train.epochs import run_epochs


@dataclasses.dataclass
class FineTuner:
    """How a baseline trains and judges a model.

    Attributes:
      make_trainer: ``model -> Trainer`` with a fresh optimizer (no pruning penalty).
      evaluate: ``trainer -> validation metric`` (higher is better).
      train_data: the training dataset.
      strategy: the ``tf.distribute`` strategy models are rebuilt under.
      steps_per_epoch: None for a full pass over ``train_data``.
      progress: show per-epoch progress bars.
      make_final_trainer: ``(model, epochs) -> Trainer`` for the final fine-tune, e.g. with the
        learning rate decayed over those epochs as afp_tf's own fine-tune does (default:
        ``make_trainer``).
    """

    make_trainer: Callable[[keras.Model], training.Trainer]
    evaluate: Callable[[training.Trainer], float]
    train_data: tf.data.Dataset
    strategy: tf.distribute.Strategy = dataclasses.field(default_factory=tf.distribute.get_strategy)
    steps_per_epoch: int | None = None
    progress: bool = False
    make_final_trainer: Callable[[keras.Model, int], training.Trainer] | None = None

    def train(
        self, model: keras.Model, epochs: int, *, final: bool = False
    ) -> tuple[keras.Model, list[dict]]:
        """Trains ``model`` ``epochs`` epochs; keeps the weights of the best validation epoch.

        Epoch 0 (before training) is a candidate too. Returns the model (same object, best
        weights loaded) and one ``{"epoch", "val", "loss"}`` entry per epoch.
        """
        if final and epochs > 0 and self.make_final_trainer is not None:
            trainer = self.make_final_trainer(model, epochs)
        else:
            trainer = self.make_trainer(model)
        result = run_epochs(
            trainer,
            self.train_data,
            epochs,
            steps=self.steps_per_epoch,
            progress=self.progress,
            evaluate=lambda tr: {"metric": self.evaluate(tr)},
            metric_name="metric",
            keep_best=True,
        )
        history = [{"epoch": 0, "val": result.start_metric}]
        history += [
            {"epoch": h["epoch"], "val": h["val_metric"], "loss": h["loss"]} for h in result.history
        ]
        return model, history

    def prune(self, model: keras.Model, removal: dict[str, list[int]]) -> keras.Model:
        """``surgery.remove_filters`` under the strategy's scope."""
        with self.strategy.scope():
            return surgery.remove_filters(model, removal)


@dataclasses.dataclass
class ComparisonResult:
    """A pruned and fine-tuned model and how it was obtained.

    Attributes:
      model: the final model (best validation epoch of the fine-tuning).
      val: its validation metric.
      macs: its MACs.
      epochs: training epochs spent (between rounds and fine-tuning).
      best_epoch: the chosen fine-tuning epoch (0 = none helped).
      info: method-specific details (ratio, rounds, history), JSON-serialisable.
    """

    model: keras.Model
    val: float
    macs: int
    epochs: int
    best_epoch: int
    info: dict[str, Any]


def uniform_l1(
    model: keras.Model,
    macs_target: float,
    tuner: FineTuner,
    epochs: int,
    *,
    min_filters: int = 1,
) -> ComparisonResult:
    """Li et al. (2017): one-shot uniform ℓ1 filter pruning to ``macs_target``, then fine-tuning.

    Args:
      model: the trained model (not modified).
      macs_target: MACs of the pruned model to aim at; the ratio whose model is closest wins.
      tuner: how to train and evaluate.
      epochs: fine-tuning epochs.
      min_filters: never leave a group with fewer filters.
    """
    _check_target(model, macs_target)
    ratio, pruned, macs = uniform_ratio_for_macs(model, macs_target, tuner, min_filters)
    logging.info("uniform l1: ratio %.4f -> %s MACs (target %s).", ratio, macs, macs_target)
    pruned, history = tuner.train(pruned, epochs, final=True)
    return _result(pruned, history, epochs, {"ratio": ratio, "finetune": history})


def uniform_l1_fraction(
    model: keras.Model,
    fraction: float,
    tuner: FineTuner,
    epochs: int,
    *,
    min_filters: int = 1,
) -> ComparisonResult:
    """Li et al. (2017) at a given ``fraction`` of every group's lowest-ℓ1 filters, one shot,
    then ``epochs`` of fine-tuning (a point of the uniform ladder in ``benchmarks/frontier.py``)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    weights, divisions = _group_weights(model)
    importance = afp.filter_importance(weights, normalize="none")
    pruned = tuner.prune(model, afp.uniform_selection(importance, fraction, min_filters, divisions))
    pruned, history = tuner.train(pruned, epochs, final=True)
    return _result(pruned, history, epochs, {"ratio": fraction, "finetune": history})


def uniform_ratio_for_macs(
    model: keras.Model, macs_target: float, tuner: FineTuner, min_filters: int = 1, steps: int = 24
) -> tuple[float, keras.Model, int]:
    """Bisects the per-group ratio; returns ``(ratio, pruned model, MACs)`` closest to target."""
    weights, divisions = _group_weights(model)
    importance = afp.filter_importance(weights, normalize="none")

    def build(ratio: float) -> tuple[keras.Model, int]:
        removal = afp.uniform_selection(importance, ratio, min_filters, divisions)
        pruned = tuner.prune(model, removal)
        return pruned, stats.model_stats(pruned).macs

    lo, hi = 0.0, 1.0 - 1e-9
    tried = {lo: build(lo)}
    for _ in range(steps):
        mid = (lo + hi) / 2
        tried[mid] = build(mid)
        if tried[mid][1] > macs_target:
            lo = mid
        else:
            hi = mid
    ratio = min(tried, key=lambda r: (abs(tried[r][1] - macs_target), tried[r][1]))
    return ratio, *tried[ratio]


def iterative_global_l1(
    model: keras.Model,
    macs_target: float,
    tuner: FineTuner,
    epochs: int,
    *,
    rate: float = 0.1,
    epochs_per_round: int = 1,
    importance: str = "layer_mean",
    min_filters: int = 1,
    max_group_fraction: float = 0.5,
) -> ComparisonResult:
    """Global ℓ1 pruning of a fixed fraction ``rate`` of the filters per round, to ``macs_target``.

    Each round removes the ``rate`` quantile of all filters' (normalised) ℓ1 importance, then
    trains ``epochs_per_round`` epochs while the budget lasts; a round that would overshoot the
    target prunes a smaller quantile (bisected) so the final MACs land close to it. The epochs
    left of ``epochs`` fine-tune the final model.
    """
    _check_target(model, macs_target)
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}.")
    spent, rounds = 0, []
    macs = stats.model_stats(model).macs
    while macs > macs_target:
        weights, divisions = _group_weights(model)
        scores = afp.filter_importance(weights, normalize=importance)

        def build(
            q: float, scores=scores, model=model, divisions=divisions
        ) -> tuple[keras.Model, int]:
            removal = afp.select_candidates(
                scores,
                quantile=q,
                min_filters=min_filters,
                max_fraction=max_group_fraction,
                divisions=divisions,
            )
            pruned = tuner.prune(model, removal)
            return pruned, stats.model_stats(pruned).macs

        quantile = rate
        pruned, new_macs = build(rate)
        if new_macs < macs_target:  # last round: bisect the quantile onto the target
            lo, hi, best = 0.0, rate, (rate, pruned, new_macs)
            for _ in range(16):
                mid = (lo + hi) / 2
                p, m = build(mid)
                if abs(m - macs_target) < abs(best[2] - macs_target):
                    best = (mid, p, m)
                lo, hi = (mid, hi) if m > macs_target else (lo, mid)
            quantile, pruned, new_macs = best
        if new_macs >= macs:
            logging.warning("global l1: no filter left to remove at %s MACs; stopping.", macs)
            break
        model, macs = pruned, new_macs
        reached = macs <= macs_target * (1 + 1e-9) or abs(macs - macs_target) <= 0.01 * macs_target
        train = 0 if reached else min(epochs_per_round, epochs - spent)
        if train:
            model, _ = tuner.train(model, train)  # between rounds: keep the best of them
        spent += train
        rounds.append({"quantile": quantile, "macs": macs, "epochs": train})
        logging.info("global l1 round %d: q=%.3f -> %s MACs.", len(rounds), quantile, macs)
        if reached:
            break
    model, history = tuner.train(model, epochs - spent, final=True)
    return _result(model, history, epochs, {"rate": rate, "rounds": rounds, "finetune": history})


def _result(model: keras.Model, history: list[dict], epochs: int, info: dict) -> ComparisonResult:
    best = max(history, key=lambda h: (h["val"], -h["epoch"]))
    return ComparisonResult(
        model=model,
        val=float(best["val"]),
        macs=stats.model_stats(model).macs,
        epochs=epochs,
        best_epoch=int(best["epoch"]),
        info=info,
    )


def _group_weights(model: keras.Model) -> tuple[dict, dict[str, int]]:
    """The prunable groups' filter weights and their ``divisions`` (grouped convolutions)."""
    groups = [g for g in surgery.find_channel_groups(model) if g.prunable]
    if not groups:
        raise ValueError(f"Model {model.name!r} has no prunable channel group.")
    return {g.name: surgery.filter_weights(model, g) for g in groups}, {
        g.name: g.divisions for g in groups
    }


def _check_target(model: keras.Model, macs_target: float) -> None:
    macs = stats.model_stats(model).macs
    if not (math.isfinite(macs_target) and 0 < macs_target <= macs):
        raise ValueError(
            f"macs_target={macs_target} must be in (0, {macs}] (the model's MACs); give the MACs "
            "of the model to match, e.g. the AFP-pruned one."
        )
