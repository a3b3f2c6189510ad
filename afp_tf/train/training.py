"""The custom training loop: compiled train/eval steps, aware of any ``tf.distribute`` strategy.

    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = build_model()
    trainer = Trainer(model, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], optimizer=lambda: make_optimizer("sgd", 0.01),
                      strategy=strategy, extra_losses=[penalty], global_batch_size=128)
    logs = trainer.train_epoch(train_ds)  # epochs: afp_tf.train.epochs.run_epochs
    val = trainer.evaluate(val_ds)

Datasets yield ``(x, y)`` or ``(x, y, sample_weight)`` batched with the GLOBAL batch size; the
strategy splits every batch over its replicas (and workers).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from afp_tf.train.distillation import Distillation
from afp_tf.train.distribute import check_created_in_scope, is_chief, make_strategy
from afp_tf.train.precision import computes_in_float16

__all__ = [
    "NonFiniteLossError",
    "StepOptions",
    "Trainer",
    "make_optimizer",
    "make_strategy",
]

_SUM = tf.distribute.ReduceOp.SUM
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the model's weights are no longer usable."""

    def __init__(self, value: float, step: int, epoch: int | None):
        where = f"step {step}" if epoch is None else f"epoch {epoch}, step {step}"
        super().__init__(f"Non-finite training loss {value} at {where}.")
        self.value, self.step, self.epoch = value, step, epoch


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    decay_steps: int = 0,
    decay_rate: float = 0.1,
    warmup_steps: int = 0,
) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name; create it under ``strategy.scope()`` (or give Trainer a factory).

    Args:
      name: ``"sgd"``, ``"adam"`` or ``"adamw"``.
      learning_rate: the (initial) learning rate, > 0.
      momentum, nesterov: SGD only (Adam's β1 plays that role; ignored there).
      weight_decay: decoupled weight decay (Keras applies it as in AdamW for every optimizer).
      schedule: ``"constant"``, ``"cosine"`` (decays to 0 over ``decay_steps``) or ``"step"``
        (multiplies by ``decay_rate`` every ``decay_steps`` steps).
      decay_steps: optimizer steps of the schedule, required unless ``schedule="constant"``.
      decay_rate: ``"step"`` schedule only.
      warmup_steps: ``"cosine"`` only: the first of the ``decay_steps`` raise the rate linearly
        from 0 to ``learning_rate``; the cosine decay spans the rest.
    """
    if name not in OPTIMIZERS:
        close = difflib.get_close_matches(str(name), OPTIMIZERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.{hint}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}.")
    if not 0 <= momentum < 1 or weight_decay < 0:
        raise ValueError(
            f"Need 0 <= momentum < 1 and weight_decay >= 0, got {momentum}, {weight_decay}."
        )
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")
    if schedule != "constant" and decay_steps <= 0:
        raise ValueError(f"The {schedule!r} schedule needs decay_steps > 0, got {decay_steps}.")
    if warmup_steps and (schedule != "cosine" or not 0 <= warmup_steps < decay_steps):
        raise ValueError(
            f"warmup_steps={warmup_steps} needs the cosine schedule and must be in "
            f"[0, decay_steps={decay_steps})."
        )
    lr: Any = learning_rate
    if schedule == "cosine" and warmup_steps:
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps - warmup_steps, warmup_target=learning_rate, warmup_steps=warmup_steps
        )
    elif schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    elif schedule == "step":
        lr = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps, decay_rate, staircase=True
        )
    if name == "sgd":
        return keras.optimizers.SGD(
            lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay or None
        )
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=weight_decay or None)
    return keras.optimizers.AdamW(lr, weight_decay=weight_decay)


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """How the compiled steps run (``train.jit_compile``, ``train.steps_per_execution``).

    Attributes:
      jit_compile: compile each replica's step with XLA.
      steps_per_execution: batches per compiled call; the host reads the losses (and checks
        them for NaN) once per call instead of after every batch.
    """

    jit_compile: bool = False
    steps_per_execution: int = 1

    def __post_init__(self):
        n = self.steps_per_execution
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"steps_per_execution must be an int >= 1, got {n!r}.")


class Trainer:
    """Trains and evaluates one model under one strategy with compiled, distributed steps.

    Build a new Trainer for every new model (e.g. after surgery): construction is cheap (no
    tracing; steps are compiled at their first use) and holds no global state.

    Args:
      model: a built Keras model whose variables were created under ``strategy.scope()``
        (build or load it inside ``with strategy.scope():``).
      loss: a ``keras.losses.Loss``, a loss name, or a callable ``(y_true, y_pred)`` returning
        per-example losses (shape ``[batch, ...]``; extra axes are averaged).
      metrics: Keras metric objects or names; ``"accuracy"`` means sparse (integer-label)
        accuracy, valid for logits and probabilities. Metric objects created outside the
        strategy's scope are re-created (from their config) under it.
      optimizer: a Keras optimizer created under ``strategy.scope()``, or a zero-argument factory
        (called under the scope).
      strategy: the ``tf.distribute`` strategy, e.g. from ``make_strategy``.
      extra_losses: zero-argument callables returning scalar tensors added to the loss in the
        compiled step (penalties). To change them without retracing, they must read
        ``tf.Variable``s, not Python numbers.
      global_batch_size: the batch size the datasets are batched with (all replicas together).
      options: XLA and steps per compiled call.
      after_train_calls: callables run after every compiled training call with the number of
        steps it ran, outside the replica context (they may assign to variables, e.g.
        ``regularizers.TargetedFade``).
      distillation: a frozen teacher whose softened outputs the training loss also matches
        (:class:`~afp_tf.train.distillation.Distillation`: one more forward pass, the
        teacher's, per step); its weights must live under ``strategy`` too. Evaluation reports
        the task loss alone.

    A model with float16 layers (``precision.policy("mixed_float16")``) gets its optimizer
    wrapped in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling); its outputs are
    cast to float32 before the loss and the metrics.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        loss: keras.losses.Loss | str | Callable,
        metrics: Sequence[keras.metrics.Metric | str] = (),
        optimizer: keras.optimizers.Optimizer | Callable[[], keras.optimizers.Optimizer],
        strategy: tf.distribute.Strategy,
        extra_losses: Sequence[Callable[[], tf.Tensor]] = (),
        global_batch_size: int,
        options: StepOptions = StepOptions(),
        after_train_calls: Sequence[Callable[[int], None]] = (),
        distillation: Distillation | None = None,
    ):
        if not model.built or not model.weights:
            raise ValueError(
                f"Model {model.name!r} is not built; build it (call it on an input "
                "or give it an Input) under strategy.scope() first."
            )
        if not isinstance(global_batch_size, int) or global_batch_size <= 0:
            raise ValueError(
                f"global_batch_size must be a positive int, got {global_batch_size!r}."
            )
        bad = [f for f in extra_losses if not callable(f)]
        if bad:
            raise TypeError(f"extra_losses must be zero-argument callables, got {bad!r}.")
        check_created_in_scope(strategy, model.weights, f"model {model.name!r}")
        if distillation is not None:
            check_created_in_scope(strategy, distillation.teacher.weights, "distillation teacher")
        self.model, self.strategy = model, strategy
        self.distillation = distillation
        self.global_batch_size, self.options = global_batch_size, options
        self.extra_losses = tuple(extra_losses)
        self.after_train_calls = tuple(after_train_calls)
        self._loss = _per_example_loss(loss)
        with strategy.scope():
            self.optimizer = optimizer
            if not isinstance(optimizer, keras.optimizers.Optimizer):
                self.optimizer = optimizer() if callable(optimizer) else optimizer
            if not isinstance(self.optimizer, keras.optimizers.Optimizer):
                raise TypeError(
                    "optimizer must be a keras optimizer or a factory returning one, "
                    f"got {self.optimizer!r}."
                )
            check_created_in_scope(strategy, [self.optimizer.iterations], "optimizer")
            if computes_in_float16(model) and not isinstance(
                self.optimizer, keras.optimizers.LossScaleOptimizer
            ):
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            if not self.optimizer.built:
                self.optimizer.build(model.trainable_variables)
            self.metrics = [_metric_in_scope(m, strategy) for m in metrics]
            self._eval_loss = keras.metrics.Mean(name="loss")
        self._functions: dict[str, list[tuple[Any, Any]]] = {"train": [], "eval": []}

    # ------------------------------------------------------------------ public loop
    def train_epoch(
        self,
        dataset: tf.data.Dataset,
        *,
        steps: int | None = None,
        epoch: int | None = None,
        progress: bool = True,
    ) -> dict[str, float]:
        """One pass over ``dataset``, or at most ``steps`` batches of it.

        ``epoch`` only labels error messages; ``progress`` shows a ``keras.utils.Progbar`` (only
        on a terminal, and only on the chief worker).

        Returns:
          ``loss`` (= ``task_loss + penalty``), ``task_loss`` (mean per-example loss over the
          epoch; with ``distillation``, the blended loss trained on), ``penalty`` (mean of extra
          losses + model regularisation losses per step) and the metrics over the epoch.

        Raises:
          NonFiniteLossError: naming the first step whose loss is NaN or infinite (checked after
            every compiled call, i.e. every ``options.steps_per_execution`` steps).
        """
        for m in self.metrics:
            m.reset_state()
        bar = self._progbar(dataset, steps, progress)
        task_sum = penalty_sum = examples = 0.0
        done = 0
        for done, (task, penalty, n) in enumerate(self._run("train", dataset, steps), start=1):
            task, penalty, n = float(task), float(penalty), float(n)
            if not math.isfinite(task + penalty):
                raise NonFiniteLossError(task + penalty, done, epoch)
            if done == 1 and n > self.global_batch_size:
                raise ValueError(
                    f"The dataset yields batches of {int(n)} examples, more than "
                    f"global_batch_size={self.global_batch_size}. Batch it with the global batch "
                    "size (the strategy splits batches over replicas)."
                )
            task_sum += task * n
            penalty_sum += penalty
            examples += n
            if bar is not None:
                bar.update(done, [("loss", task_sum / examples + penalty_sum / done)])
        if not done:
            raise ValueError("The training dataset yielded no batches.")
        logs = {"task_loss": task_sum / examples, "penalty": penalty_sum / done}
        logs = {"loss": logs["task_loss"] + logs["penalty"], **logs, **_results(self.metrics)}
        if bar is not None:
            bar.update(done, list(logs.items()), finalize=True)
        return logs

    def evaluate(self, dataset: tf.data.Dataset, *, steps: int | None = None) -> dict[str, float]:
        """Mean per-example task ``loss`` and the metrics over ``dataset``, exact for a partial last
        batch and reduced over all replicas and workers (penalties are not included)."""
        for m in (self._eval_loss, *self.metrics):
            m.reset_state()
        done = sum(1 for _ in self._run("eval", dataset, steps))
        if not done:
            raise ValueError("The evaluation dataset yielded no batches.")
        return {"loss": float(self._eval_loss.result()), **_results(self.metrics)}

    def tracing_counts(self) -> dict[str, int]:
        """How often the train and eval steps were traced (once per dataset element spec)."""
        return {
            kind: sum(fn.experimental_get_tracing_count() for _, fn in fns)
            for kind, fns in self._functions.items()
        }

    # ------------------------------------------------------------------ compiled steps
    def _run(self, kind: str, dataset: tf.data.Dataset, steps: int | None):
        """Yields one ``(task, penalty, examples)`` row per step (zeros for eval), running up to
        ``steps_per_execution`` steps per compiled call."""
        dist = self.strategy.experimental_distribute_dataset(dataset)
        fn = self._compiled(kind, dist.element_spec)
        iterator, done, per_call = iter(dist), 0, self.options.steps_per_execution
        while steps is None or done < steps:
            count = per_call if steps is None else min(per_call, steps - done)
            rows = fn(iterator, tf.constant(count)).numpy()
            if kind == "train" and len(rows):
                for hook in self.after_train_calls:
                    hook(len(rows))
            yield from rows
            done += len(rows)
            if len(rows) < count:
                return

    def _compiled(self, kind: str, spec: Any):
        """The ``tf.function`` running ``kind`` steps from an iterator of this element spec; its
        batch dimension is unknown, so partial batches do not retrace."""
        for known, fn in self._functions[kind]:
            if known == spec:
                return fn
        replica = self._replica_train_step if kind == "train" else self._replica_eval_step

        def steps(iterator, count):
            rows = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[3])
            for i in tf.range(count):
                batch = iterator.get_next_as_optional()
                if not batch.has_value():
                    break
                outputs = self.strategy.run(replica, args=(batch.get_value(),))
                reduced = [self.strategy.reduce(_SUM, v, axis=None) for v in outputs]
                rows = rows.write(i, tf.stack(reduced))
            return rows.stack()

        fn = tf.function(steps)
        self._functions[kind].append((spec, fn))
        return fn

    def _replica_train_step(self, batch):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        n = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
        global_n = tf.distribute.get_replica_context().all_reduce(_SUM, n)
        task, penalty, grads, y_pred = self._xla(self._gradients)(x, y, sample_weight, global_n)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        for m in self.metrics:
            m.update_state(y, y_pred, sample_weight)
        return task, penalty, n

    def _gradients(self, x, y, sample_weight, global_n):
        """Task loss, penalty, gradients and predictions of one replica's batch (no collective
        ops and no variable updates, so XLA can compile it under any strategy)."""
        variables = self.model.trainable_variables
        soft = self.distillation
        y_teacher = soft.teacher_outputs(x) if soft is not None else None
        with tf.GradientTape() as tape:
            y_pred = _to_float32(self.model(x, training=True))
            losses = self._loss(y, y_pred)
            if soft is not None:
                losses = soft.blend(losses, y_pred, y_teacher)
            task = tf.nn.compute_average_loss(
                losses, sample_weight, global_batch_size=tf.cast(global_n, tf.int32)
            )
            penalty = tf.nn.scale_regularization_loss(self._penalty())
            scaled = self.optimizer.scale_loss(task + penalty)
        return task, penalty, tape.gradient(scaled, variables), y_pred

    def _predict(self, x):
        return _to_float32(self.model(x, training=False))

    def _xla(self, fn):
        """``fn`` compiled with XLA when ``options.jit_compile`` (traced once per replica)."""
        return tf.function(fn, jit_compile=True) if self.options.jit_compile else fn

    def _penalty(self) -> tf.Tensor:
        terms = [f() for f in self.extra_losses] + list(self.model.losses)
        terms = [tf.reduce_sum(tf.cast(t, tf.float32)) for t in terms]
        return tf.add_n(terms) if terms else tf.constant(0.0)

    def _replica_eval_step(self, batch):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        y_pred = self._xla(self._predict)(x)
        self._eval_loss.update_state(self._loss(y, y_pred), sample_weight)
        for m in self.metrics:
            m.update_state(y, y_pred, sample_weight)
        return (tf.constant(0.0),) * 3

    def _progbar(self, dataset, steps: int | None, progress: bool) -> keras.utils.Progbar | None:
        if not (progress and sys.stdout.isatty() and is_chief(self.strategy)):
            return None
        if steps is None:
            cardinality = int(dataset.cardinality())
            steps = cardinality if cardinality > 0 else None
        names = ["loss", "task_loss", "penalty", *(m.name for m in self.metrics)]
        return keras.utils.Progbar(steps, stateful_metrics=names)


def _to_float32(outputs):
    return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), outputs)


def _per_example_loss(loss) -> Callable[[Any, Any], tf.Tensor]:
    """A ``(y_true, y_pred) -> [batch]`` float32 per-example loss from a Keras loss, name or fn."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        loss = copy.copy(loss)
        loss.reduction = None  # per-example values; the trainer does the (distributed) reduction
    elif not callable(loss):
        raise TypeError(f"loss must be a keras loss, a loss name or a callable, got {loss!r}.")

    def per_example(y_true, y_pred):
        values = tf.cast(loss(y_true, y_pred), tf.float32)
        if values.shape.rank == 0:
            raise ValueError(
                f"The loss {loss!r} returned a scalar; it must return one value per "
                "example (a keras Loss, or a function without reduction)."
            )
        if values.shape.rank > 1:
            values = tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)
        return values

    return per_example


def _metric_in_scope(metric, strategy: tf.distribute.Strategy) -> keras.metrics.Metric:
    """``metric`` as a Metric whose variables live under ``strategy`` (call inside its scope)."""
    if isinstance(metric, str):
        if metric in ("accuracy", "acc"):
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        found = keras.metrics.get(metric)
        return (
            found
            if isinstance(found, keras.metrics.Metric)
            else (keras.metrics.MeanMetricWrapper(found, name=metric))
        )
    if not isinstance(metric, keras.metrics.Metric):
        raise TypeError(f"metrics must be keras metrics or names, got {metric!r}.")
    extended = strategy.extended
    if all(extended.variable_created_in_scope(v.value) for v in metric.variables):
        return metric
    try:
        return type(metric).from_config(metric.get_config())
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Metric {metric.name!r} was created outside the strategy's scope and "
            f"cannot be re-created from its config ({e}); create it inside "
            "strategy.scope()."
        ) from e


def _results(metrics: Sequence[keras.metrics.Metric]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in metrics:
        result = m.result()
        if isinstance(result, dict):
            out.update({k: float(v) for k, v in result.items()})
        else:
            out[m.name] = float(result)
    return out
