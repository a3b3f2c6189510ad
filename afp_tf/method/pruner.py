"""The pruning rounds: AFP proposes and removes filters, the PRC sets how hard (docs/method.md).

:class:`Pruner` is shared by the main job (``pipeline``) and the Python API (``afp_tf.prune``);
it knows nothing of files except through the ``on_round_end`` hook the caller gives it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from afp_tf import stats, surgery
from afp_tf.export.latency_model import MIN_SAVING_MS, LatencyTable
from afp_tf.method import afp, prc, probe, recalibration, regularizers, round_weights
from afp_tf.method.options import PruneOptions
from afp_tf.train import distillation, training
from afp_tf.train.epochs import run_epochs
from afp_tf.train.task import Task


@dataclasses.dataclass
class PruneState:
    """Everything a pruning run needs to resume; JSON-serialisable via :meth:`to_dict`.

    ``metric`` is the decision metric (acceptance split) of the current model; ``val_metric``
    and ``val_baseline`` are on the validation split recovery and early stopping look at;
    ``baseline_macs`` (0 = unknown) scales ``macs_target`` when a resumed run follows the config.
    """

    controller: dict
    baseline_macs: int = 0
    round: int = 0
    epoch: int = 0
    metric: float = math.nan
    val_metric: float = math.nan
    val_baseline: float = math.nan
    stop_reason: str | None = None
    history: list[dict] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PruneState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Pruner:
    """Runs pruning rounds on a model until the PRC stops them.

    Args:
      options: the pruning options.
      task: loss, metrics and the decision metric.
      train_data: a dataset, or ``epoch -> dataset`` (so a resumed run sees the same batches).
      val_data: what recovery and early stopping look at.
      accept_data: what accept/reject decisions (and the floor) use; never trained or early
        stopped on. None = ``val_data`` (decisions then share the recovery's split).
      accept_size: examples of the split decisions are taken on (``accept_data``, else
        ``val_data``) for an accuracy-like metric: the acceptance margin is
        ``options.margin_z`` standard errors of it; 0 = no margin (not a proportion).
      strategy: the ``tf.distribute`` strategy models and variables live under.
      optimizer_factory: zero-argument callable returning a fresh optimizer.
      global_batch_size: batch size summed over replicas.
      orth_beta: strength of the orthogonality regulariser (0 = off).
      steps_per_epoch: None for a full pass over ``train_data``.
      record: ``(phase, step, values)`` sink for metrics (e.g. ``RunLog.record``).
      progress: show per-epoch progress bars.
      seed: every round attempt reseeds the global RNGs from this and its index, so a resumed
        run draws what an uninterrupted one would.
      step_options: XLA and steps per compiled call of every trainer.
      latency: the latency table that ``cost="latency"`` and ``latency_target_ms`` need
        (``afp_tf.export.latency_model``); it predicts each round's model (``predicted_ms``).

    Attributes:
      teacher: with ``options.distill``, the unpruned model every trainer of :meth:`make_trainer`
        distils from (shrink, recovery, fine-tune): :meth:`start` sets it to the model it starts
        from; a caller resuming a run sets it to that model (the main job: its
        ``baseline.keras``). None (before): trainers train on the task loss alone.

    Raises:
      ValueError: ``options.distill`` on a task whose loss is not a (sparse) categorical
        cross-entropy (its model's outputs are not class logits or probabilities).
    """

    def __init__(
        self,
        *,
        options: PruneOptions,
        task: Task,
        train_data,
        val_data: tf.data.Dataset,
        strategy: tf.distribute.Strategy,
        optimizer_factory: Callable[[], keras.optimizers.Optimizer],
        global_batch_size: int,
        orth_beta: float = 0.0,
        steps_per_epoch: int | None = None,
        record: Callable[[str, int, dict], None] | None = None,
        progress: bool = True,
        accept_data: tf.data.Dataset | None = None,
        accept_size: int = 0,
        seed: int = 0,
        step_options: training.StepOptions | None = None,
        latency: LatencyTable | None = None,
    ):
        self.options = options
        self.task = task
        self.train_data = train_data
        self.val_data = val_data
        self.accept_data = accept_data
        self.accept_size = accept_size
        self.strategy = strategy
        self.optimizer_factory = optimizer_factory
        self.global_batch_size = global_batch_size
        self.orth_beta = orth_beta
        self.steps_per_epoch = steps_per_epoch
        self._record = record or (lambda phase, step, values: None)
        self.progress = progress
        self.seed = seed
        self.step_options = step_options or training.StepOptions()
        self.latency = latency
        self.teacher: keras.Model | None = None
        self._outputs = distilled_outputs(options, task)

    # ----------------------------------------------------------------- building blocks
    def make_trainer(
        self,
        model: keras.Model,
        penalty=None,
        orth_beta: float | None = None,
        optimizer_factory: Callable[[], keras.optimizers.Optimizer] | None = None,
        analysis: surgery.ModelAnalysis | None = None,
        after_train_calls: tuple = (),
    ) -> training.Trainer:
        """A fresh trainer (new optimizer, new compiled steps) for ``model``.

        ``orth_beta`` and ``optimizer_factory`` override the pruner's (e.g. for baseline
        training); ``analysis`` (``surgery.analyze(model)``) saves walking the graph again;
        ``after_train_calls`` go to the trainer (e.g. a ``regularizers.TargetedFade``).
        """
        beta = self.orth_beta if orth_beta is None else orth_beta
        extra = [penalty] if penalty is not None else []
        if beta > 0:  # built at the first training step: evaluate-only trainers never walk it
            orth = functools.cache(lambda: regularizers.orthogonality_loss(model, beta, analysis))
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
            after_train_calls=after_train_calls,
            distillation=self._distillation(),
        )

    def _distillation(self) -> distillation.Distillation | None:
        """What every trainer distils from: :attr:`teacher` with ``options.distill`` (None
        without either)."""
        if not self.options.distill or self.teacher is None:
            return None
        return distillation.Distillation(
            self.teacher,
            self.options.distill,
            self.options.distill_temperature,
            self._outputs,
        )

    def evaluate(self, trainer: training.Trainer, split: str = "val") -> dict:
        """Metrics of ``trainer.model`` on the ``"val"`` or ``"accept"`` split."""
        data = self.accept_data if split == "accept" and self.accept_data is not None else None
        data = data if data is not None else self.val_data
        return self.task.evaluate(trainer, data)

    def _metric(self, trainer: training.Trainer, split: str) -> float:
        return float(self.evaluate(trainer, split)[self.task.metric_name])

    def margin(self, baseline: float) -> float:
        """The acceptance margin: ``margin_z`` standard errors of the decision metric."""
        if not self.accept_size:
            return 0.0
        return self.options.margin_z * prc.standard_error(baseline, self.accept_size)

    def start(self, model: keras.Model, baseline_macs: int, epoch: int = 0) -> PruneState:
        """The initial state of a run from the unpruned (trained) ``model``; with
        ``options.distill``, ``model`` becomes the :attr:`teacher` (it is never trained)."""
        if self.options.distill:
            self.teacher = model
        trainer = self.make_trainer(model, orth_beta=0.0)  # evaluation only: no penalty to build
        val = self._metric(trainer, "val")
        accept = self._metric(trainer, "accept") if self.accept_data is not None else val
        controller = self.options.controller(accept, baseline_macs, self.margin(accept))
        logging.info(
            "Decision metric %.4f (floor %.4f, accepted from %.4f: margin %.4f); recovery "
            "split %.4f.",
            accept,
            controller.floor,
            controller.accept_floor,
            controller.margin,
            val,
        )
        return PruneState(
            controller=controller.to_dict(),
            metric=accept,
            val_metric=val,
            val_baseline=val,
            baseline_macs=int(baseline_macs),
            epoch=epoch,
        )

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

        ``options`` go to :func:`afp_tf.train.epochs.run_epochs` (``keep_best``, ``start_metric``,
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

        ``model`` must meet the floor (the baseline, or the last good model of a resumed run;
        ``state`` from :meth:`start` or a checkpoint). ``on_round_end(state, last_good_model,
        changed)`` is called after every round, accepted or not, for checkpointing; ``changed``
        says whether the model is a new one.

        Raises:
          ValueError: the options need a latency table and the pruner has none, or
            ``options.distill`` a :attr:`teacher` and it has none.
        """
        if self.options.distill and self.teacher is None:
            raise ValueError(
                "prune.distill needs the unpruned model as the teacher: Pruner.start sets it; "
                "a resumed run sets Pruner.teacher (the main job loads its baseline.keras)."
            )
        if self.options.needs_latency and self.latency is None:
            raise ValueError(
                "prune.cost='latency' and prune.latency_target_ms need a latency table: "
                "Pruner(latency=afp_tf.export.latency_model.LatencyTable...); afp_tf.prune and "
                "the main job measure one (or load prune.latency_table)."
            )
        controller = prc.PruningRateController.from_dict(state.controller)
        controller.metric = state.metric  # the last accepted model's (older checkpoints lack it)
        limits = prc.PruningRateController.LIMITS
        if not state.baseline_macs:  # a macs_target fraction cannot be scaled: keep the saved one
            limits = tuple(k for k in limits if k != "macs_target")
        current = self.options.controller(controller.baseline, state.baseline_macs or 1)
        changed = controller.update_limits(current, limits)
        if changed:
            logging.warning(
                "Resumed pruning follows the config's limits: %s.",
                ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()),
            )
        if self.latency is not None:  # a baseline already under the latency target stops here
            controller.last_latency = self.latency.predict(model)
        analysis = surgery.analyze(model)  # of the last good model; each new one is walked once
        while state.stop_reason is None:
            state.stop_reason = controller.should_stop()
            if state.stop_reason is not None:
                break
            keras.utils.set_random_seed(self.seed * 100_003 + controller.attempts + 1)
            started = time.time()
            try:
                outcome, candidate, info = self._round(model, analysis, state, controller)
            except training.NonFiniteLossError as e:
                outcome, candidate, info = "non-finite", None, {"error": str(e)}
            seconds = round(time.time() - started, 1)
            info.update(outcome=outcome, round=controller.attempts + 1, seconds=seconds)
            state.stop_reason = controller.observe(
                outcome,
                before=state.metric,
                metric=info.get("metric"),
                removed_fraction=info.get("removed", 0) / max(info.get("filters", 1), 1),
                macs=info.get("macs"),
                latency=info.get("predicted_ms"),
            )
            if outcome == "accepted":
                model, analysis = candidate
                state.metric, state.val_metric = info["metric"], info["val_metric"]
                state.round += 1
            _log_round(info, controller)
            state.history.append(info)
            self._record("round", state.epoch, info)
            state.controller = controller.to_dict()
            if on_round_end is not None:
                on_round_end(state, model, outcome == "accepted")
        logging.info("Pruning stopped after %d rounds: %s.", state.round, state.stop_reason)
        return model, state

    def _round(self, model: keras.Model, analysis, state: PruneState, controller) -> tuple:
        """One round on a copy of ``model`` (``analysis`` is its ``surgery.analyze``); returns
        ``(outcome, (new model, its analysis) or None, round info)``."""
        opts = self.options
        plan = controller.plan(state.metric)
        info: dict[str, Any] = {
            "metric_before": state.metric,
            "remaining": plan.remaining,
            "threshold": plan.threshold,
            "quantile": plan.quantile,
            "strength": plan.strength,
        }
        # Work on a copy so a failed round leaves ``model`` untouched.
        with self.strategy.scope():
            work = surgery.copy_model(model, analysis=analysis)
            work_analysis = surgery.analyze(work)
            groups = work_analysis.prunable
            weights, shrunk = round_weights.measured(work_analysis, opts.measure)
            penalty = regularizers.TargetedL1Penalty(shrunk)
        info["filters"] = sum(g.size for g in groups)
        divisions = {g.name: g.divisions for g in groups}
        candidates: dict[str, list[int]] = {}
        if not plan.recover_only:
            cost = None
            with self.strategy.scope():
                if opts.cost == "macs":
                    cost = macs_per_filter(work, work_analysis)
                elif opts.cost == "latency":
                    cost = saving_per_filter(
                        work, work_analysis, self.latency.predict, MIN_SAVING_MS
                    )
            candidates = round_candidates(
                weights, plan, opts, divisions=divisions, filter_cost=cost
            )
            if not candidates:
                return "no candidates", None, info
            if opts.probe_rounds:
                select = functools.partial(
                    round_candidates, weights, options=opts, divisions=divisions, filter_cost=cost
                )
                plan, candidates = self._probe(
                    work, work_analysis, plan, candidates, select, controller, state.epoch, info
                )
            if controller.min_round_macs:
                saved = self._macs_saved(work, work_analysis, candidates)
                info["macs_saved_fraction"] = saved
                if saved < controller.min_round_macs:
                    return "too small", None, info
        penalty.set_candidates(candidates)
        start_norms = afp.filter_importance(weights, normalize="none")
        if opts.shrink == "fade" and candidates and opts.shrink_epochs:
            fade = regularizers.TargetedFade(penalty, opts.shrink_epochs * self.epoch_steps)
            trainer = self.make_trainer(work, analysis=work_analysis, after_train_calls=[fade])
        else:
            penalty.set_strength(plan.strength)
            trainer = self.make_trainer(work, penalty, analysis=work_analysis)
        self.train_epochs(trainer, state, opts.shrink_epochs, "shrink")
        if opts.removal == "decayed" and candidates:
            end_norms = afp.filter_importance(weights, normalize="none")
            candidates = afp.decayed(
                start_norms,
                end_norms,
                candidates,
                opts.decay_fraction,
                round_to=opts.round_to,
                divisions=divisions,
            )
        with self.strategy.scope():
            pruned = surgery.remove_filters(work, candidates, analysis=work_analysis)
        pruned_analysis = surgery.analyze(pruned)
        self._recalibrate(pruned, pruned_analysis, state.epoch)
        epochs = controller.recovery_epochs(opts.recovery_epochs)
        anneal = opts.recovery_schedule == "cosine" and epochs
        factory = _annealed(self.optimizer_factory, epochs * self.epoch_steps) if anneal else None
        trainer = self.make_trainer(pruned, analysis=pruned_analysis, optimizer_factory=factory)
        val = self._metric(trainer, "val")
        info["val_after_removal"] = val
        # Recover (on the validation split) to a margin above its floor when r epochs allow, so
        # the next round has tolerance to spend; the acceptance split then decides.
        spend = controller.budget - controller.margin
        offset = controller.accept_floor - controller.baseline + opts.recovery_margin * spend
        target = state.val_baseline + offset
        epoch0 = state.epoch
        if anneal:
            val = self.train_epochs(trainer, state, epochs, "recover", until=lambda m: False)
        elif val < target:
            last = self.train_epochs(trainer, state, epochs, "recover", until=lambda m: m >= target)
            val = val if last is None else last
        metric = self._metric(trainer, "accept") if self.accept_data is not None else val
        miss = controller.accept_floor - metric
        if opts.extend_epochs and 0 < miss <= controller.budget - controller.margin:
            # A near miss: recover longer (a fresh cosine) and measure the decision split again.
            info["metric_before_extension"] = metric
            steps = opts.extend_epochs * self.epoch_steps
            factory = _annealed(self.optimizer_factory, steps)
            trainer = self.make_trainer(pruned, analysis=pruned_analysis, optimizer_factory=factory)
            val = self.train_epochs(
                trainer, state, opts.extend_epochs, "extend", until=lambda m: False
            )
            metric = self._metric(trainer, "accept") if self.accept_data is not None else val
        model_stats = stats.model_stats(pruned)
        info.update(
            metric=metric,
            val_metric=val,
            recovery_epochs=state.epoch - epoch0,
            removed=sum(len(v) for v in candidates.values()),
            removed_per_group={k: len(v) for k, v in candidates.items()},
            macs=model_stats.macs,
            params=model_stats.params,
        )
        if self.latency is not None:
            info["predicted_ms"] = self.latency.predict(pruned)
        outcome = "accepted" if controller.meets_floor(metric) else "failed"
        return outcome, (pruned, pruned_analysis), info

    def _probe(
        self, model, analysis, plan, candidates, select, controller, epoch: int, info: dict
    ) -> tuple[prc.RoundPlan, dict[str, list[int]]]:
        """The plan and candidates a round runs with after probing them (``probe_rounds``): the
        decision metric of ``model`` with the candidates zeroed and BatchNorm statistics
        re-estimated on the batches of ``epoch``, halved (``select(plan)`` picks the candidates
        of a plan) while it is below ``accept_floor − probe_slack · ε'``. ``model`` is left as
        it was; ``info`` gets ``probe_floor`` and ``probe`` (one entry per probe, the last the
        size chosen), and the chosen plan's quantile, threshold and strength."""
        opts = self.options
        floor = controller.accept_floor - opts.probe_slack * (controller.budget - controller.margin)
        trainer = self.make_trainer(model, orth_beta=0.0, analysis=analysis)  # evaluation only

        def measure(chosen) -> float:
            return probe.zeroed_metric(
                analysis,
                chosen,
                recalibrate=lambda: self._recalibrate(model, analysis, epoch),
                evaluate=lambda: self._metric(trainer, "accept"),
            )

        plan, candidates, probes = probe.bisect(
            plan, candidates, select, measure, floor, opts.probe_bisections
        )
        info.update(
            probe_floor=floor,
            probe=probes,
            quantile=plan.quantile,
            threshold=plan.threshold,
            strength=plan.strength,
        )
        return plan, candidates

    def _macs_saved(self, model: keras.Model, analysis, candidates) -> float:
        """The fraction of ``model``'s MACs that removing ``candidates`` saves."""
        with self.strategy.scope():
            smaller = surgery.remove_filters(model, candidates, analysis=analysis)
        before = stats.model_stats(model).macs
        return (before - stats.model_stats(smaller).macs) / max(before, 1)

    def _recalibrate(self, model: keras.Model, analysis, epoch: int) -> None:
        """BatchNorm statistics of ``model`` re-estimated on training batches (options)."""
        bn = keras.layers.BatchNormalization
        layers = [x for x in analysis.layers.values() if isinstance(x, bn)]
        if layers and self.options.recalibrate_batches:
            data = self.train_data(epoch) if callable(self.train_data) else self.train_data
            with self.strategy.scope():
                recalibration.recalibrate_batchnorm(
                    model, layers, data, self.options.recalibrate_batches
                )

    @functools.cached_property
    def epoch_steps(self) -> int:
        """Training steps per epoch (``steps_per_epoch``, else the dataset's known length)."""
        if self.steps_per_epoch:
            return self.steps_per_epoch
        data = self.train_data
        data = data(0) if callable(data) else data
        steps = int(data.cardinality())
        if steps <= 0:
            raise ValueError(
                "prune.shrink='fade' and recovery_schedule='cosine' need the steps of an epoch, "
                "and the training dataset's length is unknown: set steps_per_epoch "
                "(train.steps_per_epoch in a config), or shrink='l1' and "
                "recovery_schedule='constant'."
            )
        return steps


def distilled_outputs(options: PruneOptions, task: Task) -> str | None:
    """What ``options.distill`` distils for ``task`` (``distillation.OUTPUTS``), None when off.

    Raises:
      ValueError: ``options.distill`` on a task whose loss is not a (sparse) categorical
        cross-entropy: its model's outputs are not class logits or probabilities.
    """
    if not options.distill:
        return None
    outputs = distillation.class_outputs(task.loss)
    if outputs is None:
        raise ValueError(
            f"prune.distill={options.distill} distils class scores, and this task's loss "
            f"({type(task.loss).__name__}) is not a (sparse) categorical cross-entropy, so its "
            "model's outputs are not class logits or probabilities (a detector's are not): set "
            "prune.distill=0."
        )
    return outputs


def round_candidates(
    weights: Mapping[str, Sequence[tuple[Any, int]]],
    plan: prc.RoundPlan,
    options: PruneOptions,
    *,
    divisions: Mapping[str, int] | None = None,
    filter_cost: Mapping[str, float] | None = None,
) -> dict[str, list[int]]:
    """The candidates of one round, as the pruner and ``AFPCallback`` both choose them.

    The ℓ1 importance of ``weights`` normalised as ``options.importance``, divided by each
    group's cost per filter unless ``options.cost == "none"`` (:func:`afp.per_cost`), below the
    plan's quantile or threshold, within ``options``' ``min_filters``, ``round_to`` and
    ``max_group_fraction``.

    Args:
      weights: group name -> ``(variable, axis)`` pairs the importance is measured on.
      plan: the controller's plan of the round (not a recovery-only one).
      options: the pruning options.
      divisions: as for :func:`afp.select_candidates`.
      filter_cost: group name -> what one filter's removal saves, in the unit of
        ``options.cost``: MACs for ``"macs"`` (:func:`macs_per_filter`), predicted ms for
        ``"latency"`` (:func:`saving_per_filter` of ``LatencyTable.predict``); needed unless
        the cost is ``"none"``.
    """
    if plan.recover_only:
        raise ValueError("A recovery-only round selects no candidates.")
    scores = afp.filter_importance(weights, normalize=options.importance)
    if options.cost != "none":
        if filter_cost is None:
            raise ValueError(f"cost={options.cost!r} needs the cost per filter of every group.")
        scores = afp.per_cost(scores, filter_cost)
    return afp.select_candidates(
        scores,
        quantile=plan.quantile,
        threshold=plan.threshold,
        min_filters=options.min_filters,
        round_to=options.round_to,
        max_fraction=options.max_group_fraction,
        divisions=divisions,
    )


def saving_per_filter(
    model: keras.Model,
    analysis: surgery.ModelAnalysis,
    measure: Callable[[keras.Model], float],
    floor: float,
) -> dict[str, float]:
    """What removing one filter of each prunable group of ``model`` saves by ``measure`` (its
    MACs, its predicted latency), at least ``floor``; ``analysis`` is its ``surgery.analyze``.
    Call under the strategy scope of ``model``."""
    total = measure(model)
    out = {}
    for g in analysis.prunable:
        if g.size <= 1:  # its last filter cannot go: nothing to save
            out[g.name] = floor
            continue
        smaller = surgery.remove_filters(model, {g.name: [0]}, analysis=analysis)
        out[g.name] = max(total - measure(smaller), floor)
    return out


def macs_per_filter(model: keras.Model, analysis: surgery.ModelAnalysis) -> dict[str, float]:
    """MACs saved by removing one filter of each prunable group (:func:`saving_per_filter`)."""
    return saving_per_filter(model, analysis, lambda m: stats.model_stats(m).macs, 1)


def _annealed(factory: Callable[[], keras.optimizers.Optimizer], steps: int) -> Callable:
    """``factory``'s optimizer with its learning rate decayed to 0 (cosine) over ``steps`` (a
    rate that is already a schedule is kept)."""

    def make() -> keras.optimizers.Optimizer:
        optimizer = factory()
        config = optimizer.get_config()
        rate = config["learning_rate"]
        if isinstance(rate, (int, float)):
            config["learning_rate"] = keras.optimizers.schedules.CosineDecay(rate, steps)
        return type(optimizer).from_config(config)

    return make


def filters_per_group(model: keras.Model) -> dict[str, int]:
    """Channel count of every prunable group, by group name."""
    return {g.name: g.size for g in surgery.find_channel_groups(model) if g.prunable}


def _log_round(info: dict, controller) -> None:
    if "metric" not in info:
        logging.info("round %d: %s %s", info["round"], info["outcome"], info.get("error", ""))
        return
    logging.info(
        "round %d %s | metric %.4f (accept floor %.4f) | %s | lambda %.3g | removed %d "
        "filters%s | MACs %s%s | recovery %d epochs",
        info["round"],
        info["outcome"],
        info["metric"],
        controller.accept_floor,
        _fmt(info["quantile"], info["threshold"]),
        info["strength"],
        info["removed"],
        _fmt_probe(info),
        f"{info['macs']:,}",
        f" | predicted {info['predicted_ms']:.4g} ms" if "predicted_ms" in info else "",
        info["recovery_epochs"],
    )


def _fmt_probe(info: dict) -> str:
    if "probe" not in info:
        return ""
    probes = ", ".join(f"{p['filters']}: {p['metric']:.4f}" for p in info["probe"])
    return f" (probed {probes}; floor {info['probe_floor']:.4f})"


def _fmt(quantile: float | None, threshold: float | None) -> str:
    return f"q={quantile:.3f}" if quantile is not None else f"W={threshold:.4g}"
