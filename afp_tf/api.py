"""``afp_tf.prune``: adaptive filter pruning inside an existing Keras pipeline."""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf import stats, surgery
from afp_tf.export import latency_model
from afp_tf.method import prc
from afp_tf.method.options import PruneOptions, check_renamed
from afp_tf.method.pruner import Pruner, distilled_outputs, filters_per_group
from afp_tf.train import precision, training
from afp_tf.train.task import Task

# PruneOptions fields that only the main job uses (it fine-tunes and sets the
# learning rate itself); ``prune()`` takes the optimizer from the model instead.
_PIPELINE_ONLY = ("enabled", "finetune_epochs", "learning_rate")

_ACCURACY = {
    "sparsecategoricalcrossentropy": keras.metrics.SparseCategoricalAccuracy,
    "categoricalcrossentropy": keras.metrics.CategoricalAccuracy,
    "binarycrossentropy": keras.metrics.BinaryAccuracy,
}

# Metrics that are a proportion of the examples, whose standard error sets the acceptance margin.
_PROPORTIONS = (
    keras.metrics.Accuracy,
    keras.metrics.BinaryAccuracy,
    keras.metrics.CategoricalAccuracy,
    keras.metrics.SparseCategoricalAccuracy,
    keras.metrics.TopKCategoricalAccuracy,
    keras.metrics.SparseTopKCategoricalAccuracy,
)


@dataclasses.dataclass
class PruneResult:
    """What :func:`prune` returns.

    Attributes:
      model: the pruned plain functional ``keras.Model`` (compiled like the input if it was);
        it loads and exports without afp_tf.
      baseline_metric, metric: validation metric before and after.
      floor: the lowest metric the tolerance allowed (``baseline − ε``); ``metric >= floor``.
      margin: ``margin_z`` standard errors of the baseline metric on the decision data
        (``accept_data``, else ``val_data``); 0 for a metric that is not an accuracy.
      accept_floor: ``floor + margin``, what every accepted round's metric reached.
      params, macs: ``(before, after)`` pairs.
      filters: per prunable group, ``(before, after)`` filter counts.
      rounds, stop_reason, history: how the pruning went, round by round (``stop_reason``
        names the limit that stopped it, e.g. ``"latency target"``).
      predicted_ms: the returned model's batch-1 latency in ``latency_format`` predicted by the
        latency table (None without one: neither ``cost="latency"`` nor a latency target).
      latency_target_ms: the latency target (None: off).
    """

    model: keras.Model
    baseline_metric: float
    metric: float
    floor: float
    margin: float
    accept_floor: float
    params: tuple[int, int]
    macs: tuple[int, int]
    filters: dict[str, tuple[int, int]]
    rounds: int
    stop_reason: str | None
    history: list[dict[str, Any]]
    predicted_ms: float | None = None
    latency_target_ms: float | None = None


def prune(
    model: keras.Model,
    train_data,
    val_data=None,
    *,
    accept_data=None,
    tolerance: float = 0.01,
    relative: bool = False,
    metric: str | keras.metrics.Metric | None = None,
    loss=None,
    optimizer: keras.optimizers.Optimizer | None = None,
    batch_size: int = 128,
    steps_per_epoch: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    orth_beta: float = 1e-3,
    progress: bool = True,
    **prune_options: Any,
) -> PruneResult:
    """Prunes whole filters of ``model`` while its decision metric stays within ``tolerance``.

    Every accept/reject decision is taken on ``accept_data``, or on ``val_data`` without it
    (which recovery also early-stops on, so the floor is then less honest about unseen data).
    A round counts only if that metric stays ``margin_z`` (default 1) standard errors of the
    baseline above ``baseline − tolerance``: ``√(E(1−E)/n)`` for an accuracy ``E`` on ``n``
    examples (arrays: their length; datasets: counted in one pass); other metrics get no margin.

    Args:
      model: a functional Keras model, trained; it is not modified. Its compiled loss, first
        metric and optimizer are used unless given here.
      train_data: a batched ``tf.data.Dataset`` of ``(x, y)`` or a tuple of arrays ``(x, y)``.
      val_data: the same for validation: recovery training stops early on it, and without
        ``accept_data`` every decision is taken on it too. Required.
      accept_data: optional held-out data for accept/reject decisions only (never trained or
        early-stopped on), which keeps the tolerance honest on unseen data.
      tolerance: accepted drop of the metric (absolute, e.g. 0.01 = one point; or a fraction of
        the baseline with ``relative=True``).
      metric: decision metric (higher is better); default: the model's first compiled metric.
      loss, optimizer: override the compiled ones (the optimizer is re-created after surgery).
      batch_size: for array inputs.
      steps_per_epoch: batches per training epoch; None for a full pass over ``train_data``.
      strategy: a ``tf.distribute`` strategy; ``model`` must have been built under its scope.
      orth_beta: strength of the orthogonality regulariser (0 = off).
      progress: show progress bars.
      **prune_options: any field of ``afp_tf.method.options.PruneOptions`` (``p_max``,
        ``shrink_epochs``, ``recovery_epochs``, ``max_rounds``, ``rule``, ...). With
        ``cost="latency"`` or ``latency_target_ms`` the latency table is ``latency_table`` (a
        JSON measured elsewhere, e.g. on the target device), else measured on this machine
        first (``afp_tf.export.latency_model.measure_table``, into a temporary folder).
        ``distill=w`` (a classifier's loss: a (sparse) categorical cross-entropy) trains every
        shrink and recovery step partly towards ``model``'s own softened outputs
        (``distill_temperature``), at one more forward pass of ``model`` per step.

    Returns:
      A :class:`PruneResult`; ``result.model`` never scores below ``result.accept_floor`` on
      the decision data.

    Raises:
      ValueError: missing ``val_data``, no loss or metric to use, unbatched or infinite
        decision data, a bad option value, ``distill`` with a loss that is not a cross-entropy
        of classes, a margin not below the tolerance, a latency table
        of another model or format; ``afp_tf.surgery.SurgeryError`` for a model the surgery
        cannot handle.
      TypeError: an unknown option, or data of an unsupported type.
    """
    if val_data is None:
        raise ValueError("val_data is required: pruning decisions are taken on a validation set.")
    valid = sorted(f for f in PruneOptions().to_dict() if f not in _PIPELINE_ONLY)
    check_renamed(prune_options)
    for key in prune_options:
        if key not in valid:
            raise TypeError(
                f"prune() got an unknown option {key!r}; valid options: {', '.join(valid)}."
            )
    options = PruneOptions(tolerance=tolerance, relative=relative, **prune_options)
    surgery.find_channel_groups(model)  # a clear SurgeryError for models it cannot handle
    strategy = strategy or tf.distribute.get_strategy()
    task = _task_from_model(model, loss, metric)
    distilled_outputs(options, task)  # a loss distillation cannot work with: before any work
    make_optimizer = _optimizer_factory(model, optimizer)
    rank = len(model.inputs[0].shape)
    train_ds, global_batch = _as_dataset(train_data, batch_size, rank, shuffle=True)
    val_ds, _ = _as_dataset(val_data, batch_size, rank, shuffle=False)
    accept_ds = None
    if accept_data is not None:
        accept_ds, _ = _as_dataset(accept_data, batch_size, rank, shuffle=False)
    for name, ds in (("val_data", val_ds), ("accept_data", accept_ds)):
        if ds is not None and ds.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                f"{name} is an infinite dataset (repeat()?); every evaluation is one full pass "
                "over it: give a finite one."
            )
    decision_size = 0
    if options.margin_z and is_proportion(task.metrics()[0]):
        decided = (accept_data, accept_ds) if accept_data is not None else (val_data, val_ds)
        decision_size = _examples(*decided)
    latency = None
    if options.needs_latency:
        with tempfile.TemporaryDirectory(prefix="afp_tf_latency_") as tmp:
            latency = latency_model.load_or_measure(
                precision.as_float32(model),
                options.latency_format,
                tmp,
                table=options.latency_table,
            )

    pruner = Pruner(
        options=options,
        task=task,
        train_data=train_ds,
        val_data=val_ds,
        accept_data=accept_ds,
        accept_size=decision_size,
        strategy=strategy,
        optimizer_factory=make_optimizer,
        global_batch_size=global_batch,
        orth_beta=orth_beta,
        steps_per_epoch=steps_per_epoch,
        progress=progress,
        latency=latency,
    )
    stats_before = stats.model_stats(model)
    state = pruner.start(model, stats_before.macs)
    baseline = state.metric
    controller = prc.PruningRateController.from_dict(state.controller)
    pruned, state = pruner.run(model, state)
    with strategy.scope():
        if pruned is model:  # nothing accepted: still hand back a separate, plain copy
            pruned = surgery.copy_model(model)
        if model.compiled:
            compile_like(model, pruned)
    stats_after = stats.model_stats(pruned)
    before, after = filters_per_group(model), filters_per_group(pruned)
    return PruneResult(
        model=pruned,
        baseline_metric=baseline,
        metric=state.metric,
        floor=controller.floor,
        margin=controller.margin,
        accept_floor=controller.accept_floor,
        params=(stats_before.params, stats_after.params),
        macs=(stats_before.macs, stats_after.macs),
        filters={k: (v, after.get(k, 0)) for k, v in before.items()},
        rounds=state.round,
        stop_reason=state.stop_reason,
        history=state.history,
        predicted_ms=None if latency is None else latency.predict(pruned),
        latency_target_ms=options.latency_target_ms or None,
    )


def compile_like(source: keras.Model, target: keras.Model) -> None:
    """Compiles ``target`` with ``source``'s compile config (fresh optimizer and metrics).

    Call under the strategy scope ``target`` lives in. Logs a warning when the config cannot be
    rebuilt (e.g. unregistered custom objects); ``target`` then stays uncompiled.
    """
    try:
        config = source.get_compile_config()
        if type(target).compile is keras.Model.compile:
            target.compile_from_config(config)
        else:  # its own compile() (a keras-hub task), which compile_from_config skips
            target.compile(**keras.saving.deserialize_keras_object(config))
    except (TypeError, ValueError) as e:
        logging.warning("Could not compile the pruned model like the input: %s", e)


def is_proportion(metric) -> bool:
    """Whether ``metric`` (a Keras metric) is a proportion of the examples (an accuracy)."""
    return isinstance(metric, _PROPORTIONS)


def _task_from_model(model: keras.Model, loss, metric) -> Task:
    """The user's compiled loss and first metric, or the ones given."""
    compiled = (model.get_compile_config() or {}) if model.compiled else {}
    if loss is None:
        loss = compiled.get("loss")
        if loss is None:
            raise ValueError("Pass loss=... or compile the model: no loss to train with.")
        loss = keras.losses.deserialize(loss) if isinstance(loss, dict) else keras.losses.get(loss)
    if metric is None:
        metrics = compiled.get("metrics") or []
        if not metrics:
            raise ValueError("Pass metric=... or compile the model with a metric to decide on.")
        metric = metrics[0]
    make_metric = _metric_factory(metric, loss)
    return Task(loss=loss, metrics=lambda: [make_metric()], metric_name=make_metric().name)


def _metric_factory(metric, loss):
    """A zero-argument factory of fresh instances of ``metric``."""
    if isinstance(metric, keras.metrics.Metric):
        config, cls = metric.get_config(), type(metric)
        return lambda: cls.from_config(config)
    if isinstance(metric, dict):
        return lambda: keras.metrics.deserialize(metric)
    if metric in ("accuracy", "acc"):  # as Keras resolves it: by the loss
        name = getattr(loss, "__name__", type(loss).__name__) if not isinstance(loss, str) else loss
        cls = _ACCURACY.get(name.lower().replace("_", ""), keras.metrics.SparseCategoricalAccuracy)
        return lambda: cls(name="accuracy")
    return lambda: keras.metrics.get(metric)


def _optimizer_factory(model: keras.Model, optimizer):
    source = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if source is None:
        return lambda: training.make_optimizer("sgd", 0.01, momentum=0.9)
    config, cls = source.get_config(), type(source)
    return lambda: cls.from_config(config)


def _as_dataset(
    data, batch_size: int, input_rank: int, *, shuffle: bool
) -> tuple[tf.data.Dataset, int]:
    """``data`` as a batched dataset of ``(x, y)`` and its (global) batch size."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        first = spec[0] if isinstance(spec, tuple) else spec
        if isinstance(first, tf.TensorSpec) and first.shape.rank != input_rank:
            raise ValueError(
                f"Datasets must be batched and yield (x, y) with x of rank {input_rank} (the "
                f"model's input with its batch axis), got x spec {first}; use dataset.batch(n)."
            )
        return data, _batch_of(data, batch_size)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (np.asarray(a) for a in data)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=0, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), batch_size
    raise TypeError(
        f"Data must be a batched tf.data.Dataset of (x, y) or a tuple (x, y) of arrays, got "
        f"{type(data).__name__}."
    )


def _examples(data, ds: tf.data.Dataset) -> int:
    """The number of examples of ``data`` (arrays: their length; a dataset: one pass over
    ``ds``, finite, summing its batch sizes)."""
    if not isinstance(data, tf.data.Dataset):
        return len(data[0])

    def add(count, batch):
        return count + tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0]

    return int(ds.reduce(tf.constant(0, tf.int64), add))


def _batch_of(ds: tf.data.Dataset, default: int) -> int:
    """The batch size of a batched dataset (its first batch), for loss scaling."""
    for x, *_ in ds.take(1):
        return int(tf.shape(x)[0])
    return default
