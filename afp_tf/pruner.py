"""The pruning rounds: AFP proposes and removes filters, the PRC sets how hard (ALGORITHM.md).

:class:`Pruner` is shared by the main job (``pipeline``) and the Python API (``afp_tf.prune``);
it knows nothing of files except through the ``on_round_end`` hook the caller gives it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from afp_tf import afp, prc, regularizers, stats, surgery, training
from afp_tf.epochs import run_epochs
from afp_tf.task import Task


@dataclasses.dataclass
class PruneState:
    """Everything a pruning run needs to resume; JSON-serialisable via :meth:`to_dict`."""

    controller: dict
    round: int = 0
    epoch: int = 0
    metric: float = math.nan
    failures: int = 0
    nonfinite: int = 0
    stop_reason: str | None = None
    history: list[dict] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PruneState:
        return cls(**d)


class Pruner:
    """Runs pruning rounds on a model until the PRC stops them.

    Args:
      prune_cfg: the ``prune`` section of the config (see ``config_lib.base_config``).
      task: loss, metrics and the decision metric.
      train_data, val_data: datasets; decisions use ``val_data`` only.
      strategy: the ``tf.distribute`` strategy models and variables live under.
      optimizer_factory: zero-argument callable returning a fresh optimizer.
      global_batch_size: batch size summed over replicas.
      orth_beta: strength of the orthogonality regulariser (0 = off).
      steps_per_epoch: None for a full pass over ``train_data``.
      record: ``(phase, step, values)`` sink for metrics (e.g. ``RunLog.record``).
      progress: show per-epoch progress bars.
      step_options: XLA and steps per compiled call of every trainer.
    """

    def __init__(
        self,
        *,
        prune_cfg,
        task: Task,
        train_data: tf.data.Dataset,
        val_data: tf.data.Dataset,
        strategy: tf.distribute.Strategy,
        optimizer_factory: Callable[[], keras.optimizers.Optimizer],
        global_batch_size: int,
        orth_beta: float = 0.0,
        steps_per_epoch: int | None = None,
        record: Callable[[str, int, dict], None] | None = None,
        progress: bool = True,
        step_options: training.StepOptions | None = None,
    ):
        self.cfg = prune_cfg
        self.task = task
        self.train_data = train_data
        self.val_data = val_data
        self.strategy = strategy
        self.optimizer_factory = optimizer_factory
        self.global_batch_size = global_batch_size
        self.orth_beta = orth_beta
        self.steps_per_epoch = steps_per_epoch
        self._record = record or (lambda phase, step, values: None)
        self.progress = progress
        self.step_options = step_options or training.StepOptions()

    # ----------------------------------------------------------------- building blocks
    def make_trainer(
        self,
        model: keras.Model,
        penalty=None,
        orth_beta: float | None = None,
        optimizer_factory: Callable[[], keras.optimizers.Optimizer] | None = None,
    ) -> training.Trainer:
        """A fresh trainer (new optimizer, new compiled steps) for ``model``.

        ``orth_beta`` and ``optimizer_factory`` override the pruner's (e.g. for baseline training).
        """
        beta = self.orth_beta if orth_beta is None else orth_beta
        extra = [penalty] if penalty is not None else []
        if beta > 0:  # built at the first training step: evaluate-only trainers never walk it
            orth = functools.cache(lambda: orthogonality_loss(model, beta))
            extra.append(lambda: orth()())
        return training.Trainer(
            model,
            loss=self.task.loss,
            metrics=self.task.metrics(),
            optimizer=optimizer_factory or self.optimizer_factory,
            strategy=self.strategy,
            extra_losses=extra,
            global_batch_size=self.global_batch_size,
            options=self.step_options,
        )

    def evaluate(self, trainer: training.Trainer) -> dict:
        """Validation metrics of ``trainer.model``."""
        if self.task.evaluate is not None:
            return self.task.evaluate(trainer, self.val_data)
        return trainer.evaluate(self.val_data)

    def train_epochs(
        self,
        trainer: training.Trainer,
        state: PruneState,
        epochs: int,
        phase: str,
        until: Callable[[float], bool] | None = None,
        **options: Any,
    ) -> float | None:
        """Trains up to ``epochs`` epochs; with ``until``, evaluates each epoch and stops early.

        ``options`` go to :func:`afp_tf.epochs.run_epochs` (``keep_best``, ``start_metric``,
        ``stop_on_nonfinite``). Returns the validation metric of the weights the model is left
        with when it was evaluated (``until`` or ``keep_best``), else None.
        """

        def record(epoch: int, logs: dict) -> None:
            state.epoch = epoch
            self._record(phase, epoch, {"round": state.round, **logs})

        evaluated = until is not None or options.get("keep_best", False)
        result = run_epochs(
            trainer,
            self.train_data,
            epochs,
            steps=self.steps_per_epoch,
            first_epoch=state.epoch,
            progress=self.progress,
            evaluate=self.evaluate if evaluated else None,
            metric_name=self.task.metric_name,
            until=until,
            on_epoch_end=record,
            **options,
        )
        return result.best_metric if options.get("keep_best") else result.metric

    # ----------------------------------------------------------------- the rounds
    def run(
        self,
        model: keras.Model,
        state: PruneState,
        on_round_end: Callable[[PruneState, keras.Model, bool], None] | None = None,
    ) -> tuple[keras.Model, PruneState]:
        """Prunes ``model`` round by round; returns the last model that met the floor.

        ``model`` must meet the floor (it is the baseline, or the last good model of a resumed
        run). ``on_round_end(state, last_good_model, changed)`` is called after every round,
        accepted or not, for checkpointing; ``changed`` says whether the model is a new one.
        """
        controller = prc.PruningRateController.from_dict(state.controller)
        if math.isnan(state.metric):
            state.metric = float(self.evaluate(self.make_trainer(model))[self.task.metric_name])
        while state.stop_reason is None:
            state.stop_reason = controller.should_stop()
            if state.stop_reason is not None:
                break
            started = time.time()
            try:
                outcome, candidate, info = self._round(model, state, controller)
            except training.NonFiniteLossError as e:
                state.nonfinite += 1
                controller.backoff()
                info = {"outcome": "non-finite loss", "error": str(e)}
                logging.warning(
                    "Round %d: %s; rolled back to the last good model, controller backs off "
                    "(%d/%d).",
                    state.round + 1,
                    e,
                    state.nonfinite,
                    self.cfg.max_nonfinite_retries,
                )
                if state.nonfinite > self.cfg.max_nonfinite_retries:
                    state.stop_reason = "non-finite loss persisted"
                outcome = "rolled back"
            info.update(round=state.round + 1, seconds=round(time.time() - started, 1))
            state.history.append(info)
            self._record("round", state.epoch, info)
            if outcome == "accepted":
                model = candidate
                state.metric = info["metric"]
                state.round += 1
                controller.observe(
                    metric=info["metric"], macs=info["macs"], removed=info["removed"]
                )
                _log_round(info, controller)
            elif outcome == "no candidates":
                state.stop_reason = "no candidates left"
            elif outcome == "failed":
                state.failures += 1
                controller.backoff()
                logging.info(
                    "Round %d: recovery did not reach the floor %.4f (got %.4f); reverted to the "
                    "last good model (%d/%d failures).",
                    state.round + 1,
                    controller.floor,
                    info["metric"],
                    state.failures,
                    self.cfg.max_failures,
                )
                if state.failures >= self.cfg.max_failures:
                    state.stop_reason = "recovery failed"
            state.controller = controller.to_dict()
            if on_round_end is not None:
                on_round_end(state, model, outcome == "accepted")
        logging.info("Pruning stopped after %d rounds: %s.", state.round, state.stop_reason)
        return model, state

    def _round(self, model: keras.Model, state: PruneState, controller) -> tuple:
        """One round on a copy; returns (outcome, new model or None, round info)."""
        plan = controller.plan(state.metric)
        info: dict[str, Any] = {
            "metric_before": state.metric,
            "remaining": plan.remaining,
            "threshold": plan.threshold,
            "quantile": plan.quantile,
            "strength": plan.strength,
        }
        groups = [g for g in surgery.find_channel_groups(model) if g.prunable]
        # Work on a copy so a failed round leaves ``model`` untouched.
        with self.strategy.scope():
            work = surgery.remove_filters(model, {})
            weights = {g.name: surgery.filter_weights(work, g) for g in groups}
            penalty = regularizers.TargetedL1Penalty(weights)
        before = afp.filter_importance(weights, normalize=self.cfg.importance)
        candidates: dict[str, list[int]] = {}
        if not plan.recover_only:
            candidates = afp.select_candidates(
                before,
                quantile=plan.quantile,
                threshold=plan.threshold,
                min_filters=self.cfg.min_filters,
                round_to=self.cfg.round_to,
                max_fraction=self.cfg.max_group_fraction,
            )
            if not candidates:
                return "no candidates", None, {**info, "outcome": "no candidates"}
        penalty.set_candidates(candidates)
        penalty.set_strength(plan.strength)
        start_norms = afp.filter_importance(weights, normalize="none")
        trainer = self.make_trainer(work, penalty)
        self.train_epochs(trainer, state, self.cfg.penalty_epochs, "penalty")
        if self.cfg.removal == "decayed" and candidates:
            end_norms = afp.filter_importance(weights, normalize="none")
            candidates = afp.decayed(
                start_norms,
                end_norms,
                candidates,
                self.cfg.decay_fraction,
                round_to=self.cfg.round_to,
            )
        with self.strategy.scope():
            pruned = surgery.remove_filters(work, candidates)
        trainer = self.make_trainer(pruned)
        metric = float(self.evaluate(trainer)[self.task.metric_name])
        info["metric_after_removal"] = metric
        recovery_epochs = 0
        # Recover to a margin above the floor (if r epochs allow) so the next round has some
        # tolerance to spend; reaching the floor itself is what accepts the round.
        target = controller.floor + self.cfg.recovery_margin * controller.budget
        if metric < target:
            epoch0 = state.epoch
            metric = self.train_epochs(
                trainer, state, self.cfg.recovery_epochs, "recover", until=lambda m: m >= target
            )
            metric = info["metric_after_removal"] if metric is None else metric
            recovery_epochs = state.epoch - epoch0
        model_stats = stats.model_stats(pruned)
        info.update(
            metric=metric,
            recovery_epochs=recovery_epochs,
            removed=sum(len(v) for v in candidates.values()),
            removed_per_group={k: len(v) for k, v in candidates.items()},
            macs=model_stats.macs,
            params=model_stats.params,
        )
        outcome = "accepted" if controller.meets_floor(metric) else "failed"
        info["outcome"] = outcome
        return outcome, pruned, info


def make_controller(prune_cfg, baseline: float, baseline_macs: int) -> prc.PruningRateController:
    """The pruning-rate controller the ``prune`` config section describes."""
    p = prune_cfg
    return prc.PruningRateController(
        baseline=baseline,
        tolerance=p.tolerance,
        relative=p.relative,
        rule=p.rule,
        p_max=p.p_max,
        lambda_max=p.lambda_max,
        delta_w=p.delta_w,
        delta_lambda=p.delta_lambda,
        max_rounds=p.max_rounds if p.enabled else 0,
        macs_target=p.macs_target * baseline_macs if p.macs_target else None,
    )


def orthogonality_loss(model: keras.Model, beta: float) -> Callable[[], tf.Tensor]:
    """``beta`` times the orthogonality penalty of every prunable group's producer kernels."""
    pairs = [
        pair
        for group in surgery.find_channel_groups(model)
        if group.prunable
        for pair in surgery.filter_weights(model, group)
    ]

    def loss() -> tf.Tensor:
        if not pairs:
            return tf.constant(0.0)
        return beta * tf.add_n(
            [regularizers.orthogonality_penalty(v, filter_axis=a) for v, a in pairs]
        )

    return loss


def filters_per_group(model: keras.Model) -> dict[str, int]:
    """Channel count of every prunable group, by group name."""
    return {g.name: g.size for g in surgery.find_channel_groups(model) if g.prunable}


def _log_round(info: dict, controller) -> None:
    logging.info(
        "round %d | metric %.4f (floor %.4f, remaining %.4f) | threshold %s | lambda %.3g | "
        "removed %d filters | MACs %s",
        info["round"],
        info["metric"],
        controller.floor,
        info["remaining"],
        _fmt(info["quantile"], info["threshold"]),
        info["strength"],
        info["removed"],
        f"{info['macs']:,}",
    )


def _fmt(quantile: float | None, threshold: float | None) -> str:
    return f"q={quantile:.3f}" if quantile is not None else f"W={threshold:.4g}"
