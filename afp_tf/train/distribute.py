"""Creating ``tf.distribute`` strategies and checking that objects live under them."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Sequence

import keras
import tensorflow as tf

STRATEGY_KINDS = ("default", "mirrored", "multi_worker")

_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'
)


def make_strategy(kind: str, *, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """Returns the ``tf.distribute`` strategy named ``kind``.

    Args:
      kind: ``"default"`` (the default strategy: one device, no distribution), ``"mirrored"``
        (synchronous data parallelism over the devices of this machine) or ``"multi_worker"``
        (synchronous data parallelism over the workers described by the ``TF_CONFIG``
        environment variable; create it before any other TensorFlow operation runs).
      devices: ``"mirrored"`` only: the devices to replicate over, e.g. ``["/cpu:0", "/cpu:1"]``.
        Default: all GPUs, or all logical CPUs when there is no GPU.

    Raises:
      ValueError: unknown ``kind``, ``devices`` given for another kind, or a missing or invalid
        ``TF_CONFIG`` for ``"multi_worker"``.
    """
    if kind not in STRATEGY_KINDS:
        close = difflib.get_close_matches(str(kind), STRATEGY_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown strategy {kind!r}; choose one of {STRATEGY_KINDS}.{hint}")
    if devices is not None and kind != "mirrored":
        raise ValueError(f"devices= is only used by the 'mirrored' strategy, not {kind!r}.")
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        devices = list(devices)
        # TF's default for CPU-only replicas, RING collectives, intermittently pairs different
        # variables' all-reduces across replicas ("Shape mismatch in the collective instance");
        # reducing on one device is exact and costs nothing on a single machine's CPUs.
        cpu_only = all("gpu" not in d.lower() for d in devices)
        cross = tf.distribute.ReductionToOneDevice() if cpu_only else None
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross)
    _check_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver()
        )
    except RuntimeError as e:
        raise RuntimeError(
            f"Could not create MultiWorkerMirroredStrategy: {e}. Create it first thing in the "
            "program, before any other TensorFlow operation runs."
        ) from e


def _check_tf_config() -> None:
    """Validates ``TF_CONFIG`` for a multi-worker cluster; raises ValueError naming the problem."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(
            "The 'multi_worker' strategy needs the TF_CONFIG environment variable describing the "
            f"cluster and this process's task, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'. On a single "
            "machine use the 'mirrored' strategy instead."
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}.") from e
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise ValueError(
            f"TF_CONFIG needs a 'cluster' with a non-empty 'worker' (or 'chief') address list, "
            f"got {raw!r}; example: {_TF_CONFIG_EXAMPLE}"
        )
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise ValueError(
                f"TF_CONFIG cluster[{job!r}] must be a list of 'host:port' strings, "
                f"got {addresses!r}."
            )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            f"TF_CONFIG needs a 'task' whose 'type' is one of the cluster's jobs "
            f"{sorted(cluster)}, got task={task!r}."
        )
    index, size = task.get("index"), len(cluster[task["type"]])
    if not isinstance(index, int) or not 0 <= index < size:
        raise ValueError(
            f"TF_CONFIG task index must be an integer in [0, {size}) for job {task['type']!r}, "
            f"got {index!r}."
        )


def _is_address(address: object) -> bool:
    host, sep, port = str(address).rpartition(":")
    return isinstance(address, str) and bool(host) and bool(sep) and port.isdigit()


def check_created_in_scope(
    strategy: tf.distribute.Strategy, variables: Iterable, what: str
) -> None:
    """Raises ValueError if any of ``variables`` was not created under ``strategy.scope()``.

    Args:
      strategy: the strategy the variables must belong to.
      variables: Keras or TensorFlow variables.
      what: names the owner in the error message, e.g. ``"model 'lenet5'"``.
    """
    extended = strategy.extended
    for v in variables:
        if not extended.variable_created_in_scope(v.value if isinstance(v, keras.Variable) else v):
            raise ValueError(
                f"The {what} has variable {getattr(v, 'path', v.name)!r} that was not created "
                f"under this strategy's scope ({type(strategy).__name__}). Build it inside "
                "`with strategy.scope():` (e.g. build or load the model there, and pass the "
                "optimizer as a zero-argument factory)."
            )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that should log and write files (the only one without multi-worker)."""
    return bool(strategy.extended.should_checkpoint)
