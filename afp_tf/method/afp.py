"""AFP filter selection (docs/method.md, steps 2 and 4): importance, candidates, what to remove.

All functions work on numpy copies of the weights; none touches a model. Group weights are given
as ``group name -> [(variable, axis), ...]`` (``afp_tf.surgery.filter_weights``): the variables
producing the group's filters and the axis along which index ``i`` is filter ``i``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NORMALIZATIONS = ("layer_mean", "fan_in", "none")
COSTS = ("none", "macs", "latency")


def filter_importance(
    weights: Mapping[str, Sequence[tuple[Any, int]]], normalize: str | bool = "layer_mean"
) -> dict[str, np.ndarray]:
    """ℓ1 norm of every filter, summed over all producers of its group.

    Args:
      weights: group name -> ``(variable, axis)`` pairs.
      normalize: how one global threshold is made comparable across layers:
        ``"layer_mean"`` divides by the group's mean filter norm (a filter's norm relative to
        its layer's: robust to each layer's initialisation scale); ``"fan_in"`` (or True)
        divides by the number of weights per filter (the sum of the producers' fan-ins);
        ``"none"`` (or False) keeps raw ℓ1 norms (the paper's absolute threshold).

    Returns:
      Group name -> float64 array of shape ``[group size]``.
    """
    out = {}
    for name, pairs in weights.items():
        if not pairs:
            raise ValueError(f"Group {name!r} has no producer weights to measure.")
        total, count = None, 0
        for var, axis in pairs:
            a = np.abs(np.asarray(_numpy(var), dtype=np.float64))
            if a.ndim == 0:
                raise ValueError(f"Group {name!r}: a scalar weight has no filter axis.")
            a = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
            if total is not None and a.shape[0] != total.shape[0]:
                raise ValueError(
                    f"Group {name!r}: producers disagree on the number of filters "
                    f"({total.shape[0]} vs {a.shape[0]} along axis {axis})."
                )
            l1 = a.sum(axis=1)
            total = l1 if total is None else total + l1
            count += a.shape[1]
        out[name] = _normalized(total, count, normalize)
    return out


def _numpy(var: Any) -> np.ndarray:
    if hasattr(var, "numpy"):
        return var.numpy()
    return np.asarray(var)


def _normalized(l1: np.ndarray, fan_in: int, mode: str | bool) -> np.ndarray:
    mode = {True: "fan_in", False: "none"}.get(mode, mode)
    if mode == "layer_mean":
        mean = l1.mean()
        return l1 / mean if mean > 0 else l1
    if mode == "fan_in":
        return l1 / fan_in
    if mode == "none":
        return l1
    raise ValueError(f"normalize={mode!r} is not one of {', '.join(NORMALIZATIONS)}.")


def per_cost(
    importance: Mapping[str, np.ndarray], cost: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Importance per unit of cost: each group's scores divided by its per-filter cost relative
    to the mean cost of all filters (so a filter that costs 10× the average must be 10× as
    important to survive the same threshold).

    Args:
      importance: group name -> importance per filter.
      cost: group name -> what removing one of its filters saves (e.g. MACs), > 0.
    """
    sizes = {k: np.asarray(v).size for k, v in importance.items()}
    bad = {k: cost.get(k) for k in importance if not (cost.get(k, 0) > 0)}
    if bad:
        raise ValueError(f"Every group needs a cost > 0 per filter; got {bad}.")
    mean = sum(cost[k] * n for k, n in sizes.items()) / max(sum(sizes.values()), 1)
    return {k: np.asarray(v, dtype=np.float64) * mean / cost[k] for k, v in importance.items()}


def select_candidates(
    importance: Mapping[str, np.ndarray],
    *,
    quantile: float | None = None,
    threshold: float | None = None,
    min_filters: int = 1,
    round_to: int = 1,
    max_fraction: float = 1.0,
    divisions: Mapping[str, int] | None = None,
) -> dict[str, list[int]]:
    """The filters with importance below a global threshold ``W_t``.

    Args:
      importance: group name -> importance per filter (e.g. :func:`filter_importance`).
      quantile: ``W_t`` is this quantile (in [0, 1]) of all importances; 0 selects nothing.
      threshold: ``W_t`` itself (>= 0). Give exactly one of ``quantile`` and ``threshold``.
      min_filters: never leave a group with fewer than ``max(min_filters, 1)`` filters; the most
        important ones are kept.
      round_to: keep the number of filters remaining in a group a multiple of this (hardware
        rounding): fewer are removed rather than more, and a group whose candidates cannot reach
        a multiple loses none.
      max_fraction: at most this fraction of a group's filters is selected (the least important
        first), so one round cannot strip a layer whose whole scale sits below the threshold.
      divisions: group name -> ``ChannelGroup.divisions`` (grouped convolutions): the same
        number of filters is taken from each of that many equal consecutive divisions, the least
        important of each; groups not named have one division.

    Returns:
      Group name -> sorted filter indices, only for groups with candidates.
    """
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}.")
    if (quantile is None) == (threshold is None):
        raise ValueError("Give exactly one of quantile= and threshold=.")
    _check_counts(min_filters, round_to)
    scores = {k: _scores(k, v) for k, v in importance.items()}
    if quantile is not None:
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}.")
        if quantile == 0 or not scores:
            return {}
        cut = float(np.quantile(np.concatenate(list(scores.values())), quantile))
    else:
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be finite and >= 0, got {threshold}.")
        cut = threshold
    out = {}
    for name, s in scores.items():
        below = np.flatnonzero(s < cut)
        below = below[np.argsort(s[below], kind="stable")]  # least important first
        cap = math.floor(max_fraction * s.size + 1e-9)
        k = _allowed(s.size, min(below.size, cap), min_filters, round_to)
        chosen = _per_division(below, k, s.size, (divisions or {}).get(name, 1), round_to)
        if chosen:
            out[name] = chosen
    return out


def decayed(
    importance_before: Mapping[str, np.ndarray],
    importance_now: Mapping[str, np.ndarray],
    candidates: Mapping[str, Sequence[int]],
    fraction: float,
    *,
    round_to: int = 1,
    divisions: Mapping[str, int] | None = None,
) -> dict[str, list[int]]:
    """The candidates whose importance fell to at most ``fraction`` of its starting value.

    ``<=`` (not ``<``) so a filter that started at zero and stayed there is removed. With
    ``round_to`` > 1 the remaining count of each group stays a multiple of it (the least decayed
    candidates are kept first); groups must then have been aligned by :func:`select_candidates`.
    ``divisions`` as for :func:`select_candidates`.

    Returns:
      Group name -> sorted filter indices, only for groups with survivors of the test.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    _check_counts(1, round_to)
    out = {}
    for name, idx in candidates.items():
        before = _scores(name, importance_before[name])
        now = _scores(name, importance_now[name])
        idx = np.asarray(list(idx), dtype=np.int64)
        ok = idx[now[idx] <= fraction * before[idx]]
        ratio = now[ok] / np.maximum(before[ok], np.finfo(np.float64).tiny)
        ok = ok[np.argsort(ratio, kind="stable")]  # most decayed first
        k = _allowed(before.size, ok.size, 1, round_to)
        chosen = _per_division(ok, k, before.size, (divisions or {}).get(name, 1), round_to)
        if chosen:
            out[name] = chosen
    return out


def uniform_selection(
    importance: Mapping[str, np.ndarray],
    ratio: float,
    min_filters: int = 1,
    divisions: Mapping[str, int] | None = None,
) -> dict[str, list[int]]:
    """The ``floor(ratio · size)`` lowest-importance filters of every group (Li et al., 2017).

    Never leaves a group with fewer than ``max(min_filters, 1)`` filters; ``divisions`` as for
    :func:`select_candidates`.

    Returns:
      Group name -> sorted filter indices, only for non-empty selections.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}.")
    _check_counts(min_filters, 1)
    out = {}
    for name, v in importance.items():
        s = _scores(name, v)
        k = min(math.floor(ratio * s.size + 1e-9), max(s.size - max(min_filters, 1), 0))
        order = np.argsort(s, kind="stable")
        chosen = _per_division(order, k, s.size, (divisions or {}).get(name, 1))
        if chosen:
            out[name] = chosen
    return out


def _allowed(size: int, available: int, min_filters: int, round_to: int) -> int:
    """How many of ``available`` candidates a group of ``size`` filters may lose."""
    keep_min = max(min_filters, 1)
    k = min(available, max(size - keep_min, 0))
    if round_to > 1 and k:
        remain = math.ceil((size - k) / round_to) * round_to
        k = size - remain if remain <= size else 0
    return k


def _per_division(
    order: np.ndarray, k: int, size: int, divisions: int, round_to: int = 1
) -> list[int]:
    """At most ``k`` of ``order`` (candidates, least important first), sorted; with
    ``divisions`` > 1 the same number from each division (the least important of each), the
    remaining count kept a multiple of ``round_to``."""
    if divisions <= 1:
        return sorted(int(i) for i in order[:k])
    if size % divisions:
        raise ValueError(f"A group of {size} filters cannot form {divisions} equal divisions.")
    division_of = np.asarray(order, dtype=np.int64) // (size // divisions)
    per = min(k // divisions, *(int(np.sum(division_of == d)) for d in range(divisions)))
    while per and (size - per * divisions) % round_to:
        per -= 1
    chosen = np.asarray(order)
    return sorted(int(i) for d in range(divisions) for i in chosen[division_of == d][:per])


def _scores(name: str, values: Any) -> np.ndarray:
    s = np.asarray(values, dtype=np.float64)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise ValueError(
            f"Importance of group {name!r} must be a finite 1-D array, got shape {s.shape}"
            + ("" if s.ndim != 1 else " with non-finite values")
            + "."
        )
    return s


def _check_counts(min_filters: int, round_to: int) -> None:
    if not (isinstance(min_filters, int) and min_filters >= 0):
        raise ValueError(f"min_filters must be an int >= 0, got {min_filters!r}.")
    if not (isinstance(round_to, int) and round_to >= 1):
        raise ValueError(f"round_to must be an int >= 1, got {round_to!r}.")
