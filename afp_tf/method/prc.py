"""The pruning rate controller (PRC, docs/method.md): how hard a round prunes, when to stop.

The PRC turns the remaining error budget ``R_t = A_t − accept_floor`` into the fraction of the
prunable filters the next round targets, and owns every count that decides a stop. Rules:

* ``"adaptive"`` (default): aim each round at half of the remaining budget, using what the last
  attempt cost: ``p_t = clip(R_t / (2 · c), p_min, p_max)`` with ``c`` the measured drop of the
  decision metric per fraction of filters removed (``p_max`` before anything was measured, or
  when removal cost nothing), and never more than twice the fraction the last accepted round
  removed (a free small round is weak evidence); ``λ_t = λ_max · p_t / p_max``;
* ``"scale_free"``: ``p_t = p_max · min(1, R_t / ε')``, ``λ_t = λ_max · min(1, R_t / ε')``;
* ``"linear"`` (the paper's): threshold ``W_t = δ_w · R_t`` on importances, ``λ_t = δ_λ · R_t``;
* ``"fixed"`` (the ablation without a controller): ``p_t = p_max``, ``λ_t = λ_max``.

``ε`` is the absolute budget ``E − floor``; ``margin`` (e.g. a standard error of the decision
metric) raises the floor a round must meet to ``accept_floor = floor + margin``, leaving
``ε' = ε − margin`` to spend. When ``R_t ≤ 0`` the round is recovery only.

Failures: a failed round (recovery missed ``accept_floor``) or a non-finite loss is rolled back
by the caller and reported with :meth:`PruningRateController.observe`; it halves a persistent
``scale`` that multiplies ``p_t`` (or ``W_t``) and ``λ_t``, so the retry targets the least
important half of what failed (the same model, the same ranking: a bisection of the candidate
set) under every rule but adaptive, where the failed round's own cost also replaces ``c`` (the
retry is then smaller than half: a miss cost more than ``R_t``); it doubles the retry's
recovery (:meth:`recovery_epochs`). An accepted round doubles
``scale`` back (capped at 1) and resets the consecutive-failure count. Pruning stops after
``max_failures`` consecutive failed rounds, more than ``max_nonfinite`` consecutive non-finite
ones, a round without candidates, the MACs target, the latency target (the predicted latency
of the last accepted model, or of the baseline, at or below it) or ``max_rounds`` attempts.
The endgame (both off by default): a round whose candidates would save less than
``min_round_macs`` of the current MACs is not run ("rounds too small"), and once an accepted
round leaves less than ``min_headroom`` of the spendable budget ``ε'`` pruning stops
("tolerance spent"): a round started that close to the floor passes only on the decision
metric's noise.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from absl import logging

RULES = ("adaptive", "scale_free", "linear", "fixed")
OUTCOMES = ("accepted", "failed", "no candidates", "too small", "non-finite")
STOP_REASONS = (
    "recovery failed",
    "no candidates left",
    "rounds too small",
    "tolerance spent",
    "macs target",
    "latency target",
    "round budget",
    "non-finite loss persisted",
)
_BACKOFF = 0.5


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """What the next round may do.

    Attributes:
      remaining: ``R_t = A_t − accept_floor``.
      quantile: all rules but linear: fraction of the prunable filters to target (0 when
        recovering); None under the linear rule.
      threshold: linear rule: absolute importance threshold ``W_t`` (0 when recovering); None
        under the other rules.
      strength: the targeted-ℓ1 strength ``λ_t``.
      recover_only: ``R_t ≤ 0``: no new candidates, only recovery training.
    """

    remaining: float
    quantile: float | None
    threshold: float | None
    strength: float
    recover_only: bool

    def halved(self) -> RoundPlan:
        """This plan with the quantile (or threshold) and the strength scaled as a retry after a
        failure scales them: on the same model, a subset of the least important of its
        candidates (about half of them for a quantile)."""

        def half(v):
            return None if v is None else v * _BACKOFF

        return dataclasses.replace(
            self,
            quantile=half(self.quantile),
            threshold=half(self.threshold),
            strength=self.strength * _BACKOFF,
        )


class PruningRateController:
    """Sets the pruning rate of each round from the remaining tolerance; decides when to stop.

    Args:
      baseline: ``E``, the decision metric of the unpruned model (higher is better).
      tolerance: ``ε``, the accepted drop: absolute (0 < ε < E) or, with ``relative``, a fraction
        of ``E`` in (0, 1).
      relative: interpret ``tolerance`` as a fraction of ``baseline``.
      rule: one of ``RULES`` (see module docstring).
      p_max: largest fraction of the remaining prunable filters one round may target, in (0, 1].
      p_min: adaptive rule: smallest fraction a round targets before backoff, in (0, p_max].
      lambda_max: largest ℓ1 strength (all rules but linear), >= 0.
      delta_w, delta_lambda: linear rule, ``W_t = delta_w · R_t``, ``λ_t = delta_lambda · R_t``.
      max_rounds: most rounds attempted, accepted or not (>= 0; 0 stops at once).
      macs_target: stop once the model's MACs are at or below this (absolute); None = off.
      latency_target: stop once the predicted latency (ms) of the last accepted model (or the
        one the caller sets as ``last_latency`` before the first round) is at or below this;
        None = off.
      margin: absolute safety margin added to the floor for accepting a round, in [0, ε).
      max_failures: stop after this many consecutive failed rounds (>= 1).
      max_nonfinite: stop after more than this many consecutive non-finite rounds (>= 0).
      min_headroom: stop once the decision metric is less than this fraction of ``ε'`` above
        ``accept_floor``, in [0, 1); 0 = off.
      min_round_macs: a round whose candidates save less than this fraction of the current
        MACs is reported ``"too small"`` by the caller and stops the run, in [0, 1); 0 = off.
    """

    def __init__(
        self,
        baseline: float,
        tolerance: float,
        *,
        relative: bool = False,
        rule: str = "adaptive",
        p_max: float = 0.2,
        p_min: float = 0.02,
        lambda_max: float = 1e-3,
        delta_w: float = 0.5,
        delta_lambda: float = 0.05,
        max_rounds: int = 20,
        macs_target: float | None = None,
        latency_target: float | None = None,
        margin: float = 0.0,
        max_failures: int = 3,
        max_nonfinite: int = 2,
        min_headroom: float = 0.0,
        min_round_macs: float = 0.0,
    ):
        _check(math.isfinite(baseline), f"baseline metric must be finite, got {baseline}.")
        if relative:
            _check(
                0 < tolerance < 1,
                f"A relative tolerance is a fraction of the baseline in (0, 1), got {tolerance}.",
            )
        else:
            _check(
                tolerance > 0,
                f"An absolute tolerance must be > 0, got {tolerance}. For a fraction of the "
                "baseline set relative=True.",
            )
            if tolerance >= baseline:  # e.g. a smoke run of a barely trained detector
                logging.warning(
                    "Tolerance %.4g is not below the baseline metric %.4g: every round meets "
                    "the floor, so pruning stops only at the round budget or MACs target.",
                    tolerance,
                    baseline,
                )
        if rule not in RULES:
            hint = difflib.get_close_matches(str(rule), RULES, n=1)
            raise ValueError(
                f"Unknown pruning rule {rule!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else ".")
                + f" Choose one of {', '.join(RULES)}."
            )
        _check(0 < p_max <= 1, f"p_max must be in (0, 1], got {p_max}.")
        _check(0 < p_min <= p_max, f"p_min must be in (0, p_max={p_max}], got {p_min}.")
        _check(lambda_max >= 0, f"lambda_max must be >= 0, got {lambda_max}.")
        _check(delta_w > 0, f"delta_w must be > 0, got {delta_w}.")
        _check(delta_lambda >= 0, f"delta_lambda must be >= 0, got {delta_lambda}.")
        _check(_is_int(max_rounds, 0), f"max_rounds must be an int >= 0, got {max_rounds!r}.")
        _check(
            macs_target is None or macs_target > 0,
            f"macs_target must be > 0 MACs or None (off), got {macs_target}.",
        )
        _check(
            latency_target is None or latency_target > 0,
            f"latency_target must be > 0 ms or None (off), got {latency_target}.",
        )
        _check(_is_int(max_failures, 1), f"max_failures must be an int >= 1, got {max_failures!r}.")
        _check(
            _is_int(max_nonfinite, 0), f"max_nonfinite must be an int >= 0, got {max_nonfinite!r}."
        )
        self.baseline = float(baseline)
        self.tolerance = float(tolerance)
        self.relative = bool(relative)
        _check(
            0 <= margin < self.budget,
            f"margin={margin:.4g} must be in [0, tolerance={self.budget:.4g}): the decision "
            "metric is too noisy for this tolerance; use a larger acceptance split, a larger "
            "tolerance or a smaller prune.margin_z.",
        )
        _check(0 <= min_headroom < 1, f"min_headroom must be in [0, 1), got {min_headroom}.")
        _check(0 <= min_round_macs < 1, f"min_round_macs must be in [0, 1), got {min_round_macs}.")
        self.min_headroom, self.min_round_macs = float(min_headroom), float(min_round_macs)
        self.rule = rule
        self.p_max, self.p_min = float(p_max), float(p_min)
        self.lambda_max = float(lambda_max)
        self.delta_w, self.delta_lambda = float(delta_w), float(delta_lambda)
        self.max_rounds = max_rounds
        self.macs_target = None if macs_target is None else float(macs_target)
        self.latency_target = None if latency_target is None else float(latency_target)
        self.margin = float(margin)
        self.max_failures, self.max_nonfinite = max_failures, max_nonfinite
        # Mutable state.
        self.attempts = 0
        self.accepted = 0
        self.failures = 0  # consecutive failed rounds
        self.nonfinite = 0  # consecutive non-finite rounds
        self.scale = 1.0
        self.cost: float | None = None  # drop of the metric per fraction of filters removed
        self.last_fraction: float | None = None  # of the filters, removed by the last accepted
        self.last_macs: float | None = None
        self.last_latency: float | None = None  # predicted ms of the last accepted model
        self.metric = self.baseline  # the decision metric of the last accepted model
        self.stop_reason: str | None = None

    @property
    def budget(self) -> float:
        """The absolute tolerance ``ε = E − floor``."""
        return self.baseline * self.tolerance if self.relative else self.tolerance

    @property
    def floor(self) -> float:
        """``E − ε`` (or ``E · (1 − ε)`` when relative): what the user accepts."""
        return self.baseline - self.budget

    @property
    def accept_floor(self) -> float:
        """``floor + margin``: what a round's decision metric must reach to be accepted."""
        return self.floor + self.margin

    def meets_floor(self, metric: float) -> bool:
        """Whether ``metric`` is finite and at least ``accept_floor`` (up to float round-off)."""
        f = self.accept_floor
        return math.isfinite(metric) and metric >= f - 1e-12 * max(1.0, abs(f))

    def guarantee(self, metric: float, split: str) -> str:
        """What the tolerance promises for a model whose decision metric is ``metric``."""
        held = "meets" if self.meets_floor(metric) else "MISSES"
        return (
            f"Decision metric {metric:.4f} on the {split} split {held} the accept floor "
            f"{self.accept_floor:.4f} = baseline {self.baseline:.4f} - tolerance {self.budget:.4f}"
            f" + margin {self.margin:.4f}. The test split is reported, never used to decide."
        )

    def plan(self, metric: float) -> RoundPlan:
        """The plan of the next round given the current decision metric ``A_t``."""
        _check(math.isfinite(metric), f"plan() needs a finite metric, got {metric}.")
        remaining = metric - self.accept_floor
        if remaining <= 0:
            quantile, threshold = (None, 0.0) if self.rule == "linear" else (0.0, None)
            return RoundPlan(remaining, quantile, threshold, 0.0, True)
        if self.rule == "linear":
            w, lam = self.delta_w * remaining, self.delta_lambda * remaining
            return RoundPlan(remaining, None, w * self.scale, lam * self.scale, False)
        p = self.p_max
        if self.rule == "scale_free":
            p *= min(1.0, remaining / (self.budget - self.margin))
        elif self.rule == "adaptive":
            if self.cost:
                p = min(self.p_max, max(self.p_min, remaining / (2.0 * self.cost)))
            if self.last_fraction:
                p = min(p, max(self.p_min, 2.0 * self.last_fraction))
        p *= self.scale
        return RoundPlan(remaining, p, None, self.lambda_max * p / self.p_max, False)

    def recovery_epochs(self, base: int) -> int:
        """Recovery epochs of the next round: ``base``, doubled for a retry after a failure."""
        return base * (2 if self.failures else 1)

    def observe(
        self,
        outcome: str,
        *,
        before: float | None = None,
        metric: float | None = None,
        removed_fraction: float = 0.0,
        macs: float | None = None,
        latency: float | None = None,
    ) -> str | None:
        """Records a finished round; returns the stop reason, or None to go on.

        Args:
          outcome: one of ``OUTCOMES``.
          before, metric: decision metric before the round and after its recovery (accepted and
            failed rounds), for the adaptive rule's cost estimate.
          removed_fraction: fraction of the prunable filters the round removed.
          macs: MACs of the model after an accepted round (for ``macs_target``).
          latency: its predicted latency in ms (for ``latency_target``).
        """
        _check(outcome in OUTCOMES, f"outcome must be one of {OUTCOMES}, got {outcome!r}.")
        self.attempts += 1
        if outcome in ("accepted", "failed") and removed_fraction > 0 and before is not None:
            drop = before - metric if metric is not None and math.isfinite(metric) else self.budget
            self.cost = max(drop, 0.0) / removed_fraction
        if outcome == "accepted":
            self.accepted += 1
            self.last_fraction = removed_fraction or self.last_fraction
            self.failures = self.nonfinite = 0
            self.scale = min(1.0, self.scale / _BACKOFF)
            self.last_macs = None if macs is None else float(macs)
            self.last_latency = None if latency is None else float(latency)
            if metric is not None:
                self.metric = float(metric)
        elif outcome == "failed":
            self.failures += 1
            self.scale *= _BACKOFF
        elif outcome == "non-finite":
            self.nonfinite += 1
            self.scale *= _BACKOFF
        self.stop_reason = self._stop_reason(outcome)
        return self.stop_reason

    def _stop_reason(self, outcome: str | None) -> str | None:
        if outcome == "no candidates":
            return "no candidates left"
        if outcome == "too small":
            return "rounds too small"
        spendable = self.budget - self.margin
        if self.min_headroom and self.metric - self.accept_floor < self.min_headroom * spendable:
            return "tolerance spent"
        if self.failures >= self.max_failures:
            return "recovery failed"
        if self.nonfinite > self.max_nonfinite:
            return "non-finite loss persisted"
        target, macs = self.macs_target, self.last_macs
        if target is not None and macs is not None and macs <= target:
            return "macs target"
        target, ms = self.latency_target, self.last_latency
        if target is not None and ms is not None and ms <= target:
            return "latency target"
        if self.attempts >= self.max_rounds:
            return "round budget"
        return None

    def should_stop(self) -> str | None:
        """The stop reason so far (one of ``STOP_REASONS``), or None to run another round; every
        limit is checked again (a resumed run may have changed them)."""
        if self.stop_reason is None:
            self.stop_reason = self._stop_reason(None)
        return self.stop_reason

    LIMITS = (
        "max_rounds",
        "max_failures",
        "max_nonfinite",
        "macs_target",
        "latency_target",
        "min_headroom",
        "min_round_macs",
    )

    def update_limits(
        self, other: PruningRateController, names: tuple[str, ...] = LIMITS
    ) -> dict[str, tuple[Any, Any]]:
        """Takes ``other``'s stopping limits ``names`` (a resumed run follows its current
        config's budget); returns ``{name: (old, new)}`` for those that changed."""
        changed = {}
        for name in names:
            old, new = getattr(self, name), getattr(other, name)
            if old != new:
                changed[name] = (old, new)
                setattr(self, name, new)
        return changed

    _CONFIG = (
        "baseline",
        "tolerance",
        "relative",
        "rule",
        "p_max",
        "p_min",
        "lambda_max",
        "delta_w",
        "delta_lambda",
        "max_rounds",
        "macs_target",
        "latency_target",
        "margin",
        "max_failures",
        "max_nonfinite",
        "min_headroom",
        "min_round_macs",
    )
    # absent from older checkpoints: defaults
    _ADDED = ("min_headroom", "min_round_macs", "latency_target")
    _STATE = (
        "attempts",
        "accepted",
        "failures",
        "nonfinite",
        "scale",
        "cost",
        "last_fraction",
        "last_macs",
        "last_latency",
        "metric",
        "stop_reason",
    )

    def to_dict(self) -> dict[str, Any]:
        """Configuration and state as a JSON-serialisable dict."""
        return {k: getattr(self, k) for k in self._CONFIG + self._STATE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruningRateController:
        """Inverse of :meth:`to_dict`."""
        unknown = sorted(set(d) - set(cls._CONFIG + cls._STATE))
        missing = sorted(set(cls._CONFIG) - set(d) - set(cls._ADDED))
        if unknown or missing:
            raise ValueError(
                f"Not a PruningRateController state: unknown keys {unknown}, missing {missing}."
            )
        ctrl = cls(**{k: d[k] for k in cls._CONFIG if k in d})
        for k in cls._STATE:
            if k in d:
                setattr(ctrl, k, d[k])
        return ctrl


def standard_error(metric: float, n: int) -> float:
    """Standard error of a proportion ``metric`` (e.g. accuracy) measured on ``n`` examples."""
    _check(n >= 1, f"n must be >= 1, got {n}.")
    p = min(max(metric, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n)


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
