"""Sized rounds from a cheap probe (docs/method.md, "Probing a round's size").

A round that fades its candidates to zero and removes them ends, before any recovery, where a
network with those candidates' outputs zeroed ends once its BatchNorm statistics are
re-estimated, less what the rest of the network learnt during the fade. That network costs no
training: :func:`zero_filters` makes it in place, :func:`zeroed_metric` measures it and puts
every weight back, and :func:`bisect` halves a round's plan until the measure meets a floor.
The pruner (``Pruner._probe``) runs them before a round shrinks anything.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from afp_tf import surgery
from afp_tf.method import prc


def output_weights(analysis: surgery.ModelAnalysis, group: str) -> list[tuple[Any, int]]:
    """Every live variable of ``group``'s filters whose zeros make a filter's output 0, each with
    its channel axis: the producer kernels (``filter_weights``), the producers' biases and the
    scale and offset of the group's BatchNorms (``scale_weights``), whatever ``measure`` a round
    uses. With all of them zero a channel is 0 before and after its BatchNorms, and after any
    activation that keeps 0 at 0 (ReLU, linear, tanh, ...), so consumers see what they would
    see without it."""
    g = analysis.group(group)
    pairs = analysis.filter_weights(g) + analysis.scale_weights(g)
    for path in [p for p in g.producers if p not in g.partial] + list(g.passthrough):
        bias = getattr(analysis.layers[path], "bias", None)
        if bias is not None and tuple(bias.shape) == (g.size,):
            pairs.append((bias, 0))
    return pairs


def zero_filters(analysis: surgery.ModelAnalysis, candidates: Mapping[str, Sequence[int]]) -> None:
    """Sets :func:`output_weights` of ``candidates`` (group name -> filter indices) to 0 in
    ``analysis.model`` itself."""
    for name, idx in candidates.items():
        idx = np.asarray(list(idx), dtype=np.int64)
        for var, axis in output_weights(analysis, name):
            value = np.array(keras.ops.convert_to_numpy(var))
            value[(slice(None),) * (axis % value.ndim) + (idx,)] = 0
            var.assign(value)


@contextlib.contextmanager
def restored(model: keras.Model) -> Iterator[None]:
    """Every weight of ``model`` (BatchNorm statistics included) back as it was on exit."""
    saved = [(v, keras.ops.convert_to_numpy(v)) for v in model.weights]
    try:
        yield
    finally:
        for var, value in saved:
            var.assign(value)


def zeroed_metric(
    analysis: surgery.ModelAnalysis,
    candidates: Mapping[str, Sequence[int]],
    recalibrate: Callable[[], None],
    evaluate: Callable[[], float],
) -> float:
    """``evaluate()`` of ``analysis.model`` with ``candidates`` zeroed (:func:`zero_filters`)
    after ``recalibrate()`` (BatchNorm statistics re-estimated); the model is left as it was."""
    with restored(analysis.model):
        zero_filters(analysis, candidates)
        recalibrate()
        return float(evaluate())


def bisect(
    plan: prc.RoundPlan,
    candidates: Mapping[str, Sequence[int]],
    select: Callable[[prc.RoundPlan], dict[str, list[int]]],
    measure: Callable[[Mapping[str, Sequence[int]]], float],
    floor: float,
    bisections: int,
) -> tuple[prc.RoundPlan, Mapping[str, Sequence[int]], list[dict]]:
    """The largest of ``plan``, ``plan.halved()``, ... (at most ``bisections`` halvings) whose
    candidates' ``measure`` is finite and at least ``floor``, else the smallest probed.

    ``candidates`` are ``select(plan)``. Stops early where a halved plan selects nothing or no
    fewer filters. Returns ``(plan, its candidates, probes)``, ``probes`` one
    ``{"filters": count, "metric": measure}`` per probe, the last the chosen one.
    """
    probes = []
    while True:
        metric = float(measure(candidates))
        count = sum(len(v) for v in candidates.values())
        probes.append({"filters": count, "metric": metric})
        if (math.isfinite(metric) and metric >= floor) or len(probes) > bisections:
            return plan, candidates, probes
        smaller_plan = plan.halved()
        smaller = select(smaller_plan)
        if not smaller or sum(len(v) for v in smaller.values()) >= count:
            return plan, candidates, probes
        plan, candidates = smaller_plan, smaller
