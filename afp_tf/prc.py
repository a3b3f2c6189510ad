"""The pruning rate controller (PRC, ALGORITHM.md step 1, 5 and 6). Pure Python.

The PRC turns the remaining error budget ``R_t = A_t − floor`` into how hard the next round may
prune, and says when to stop. Three rules:

* ``"scale_free"`` (default): prune the ``p_t = p_max · min(1, R_t / ε)`` quantile of filter
  importances, with ℓ1 strength ``λ_t = λ_max · min(1, R_t / ε)``;
* ``"linear"`` (the paper's): threshold ``W_t = δ_w · R_t`` on importances and
  ``λ_t = δ_λ · R_t`` (unclamped);
* ``"fixed"`` (the ablation without a controller): ``p_t = p_max`` and ``λ_t = λ_max`` whenever
  ``R_t > 0``, however much of the budget is left (the backoff below still applies).

``ε`` here is always the absolute budget ``E − floor``. When ``R_t ≤ 0`` the round is recovery
only (no candidates, ``λ = 0``).

Backoff: :meth:`PruningRateController.backoff` (after a non-finite loss or a failed round)
multiplies a persistent ``scale`` by ``factor``; ``scale`` multiplies ``p_t`` (or ``W_t``) and
``λ_t`` of every later plan (recovery-only plans stay at zero). Each round observed as recovered
then doubles ``scale`` back up, capped at 1, so the controller creeps back to full speed: one good
round undoes one default (0.5) backoff.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

RULES = ("scale_free", "linear", "fixed")
STOP_REASONS = ("recovery failed", "no candidates", "macs target", "round budget")


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """What the next round may do.

    Attributes:
      remaining: ``R_t = A_t − floor``.
      quantile: scale-free and fixed rules: fraction of the prunable filters to target (0 when
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


class PruningRateController:
    """Sets the pruning rate of each round from the remaining tolerance; decides when to stop.

    Args:
      baseline: ``E``, the validation metric of the unpruned model (higher is better).
      tolerance: ``ε``, the accepted drop: absolute (0 < ε < E) or, with ``relative``, a fraction
        of ``E`` in (0, 1).
      relative: interpret ``tolerance`` as a fraction of ``baseline``.
      rule: ``"scale_free"``, ``"linear"`` or ``"fixed"`` (see module docstring).
      p_max: largest fraction of the remaining prunable filters one round may target, in (0, 1].
      lambda_max: largest ℓ1 strength (scale-free and fixed rules), >= 0.
      delta_w: linear rule, ``W_t = delta_w · R_t`` (> 0).
      delta_lambda: linear rule, ``λ_t = delta_lambda · R_t`` (>= 0).
      max_rounds: round budget (>= 0; 0 stops at once).
      macs_target: stop once a round's MACs are at or below this (absolute MACs); None = off.
      max_failed_recoveries: stop after this many rounds whose recovery missed the floor (>= 1).
    """

    def __init__(
        self,
        baseline: float,
        tolerance: float,
        *,
        relative: bool = False,
        rule: str = "scale_free",
        p_max: float = 0.2,
        lambda_max: float = 1e-3,
        delta_w: float = 0.5,
        delta_lambda: float = 0.05,
        max_rounds: int = 20,
        macs_target: float | None = None,
        max_failed_recoveries: int = 1,
    ):
        _check(math.isfinite(baseline), f"baseline metric must be finite, got {baseline}.")
        if relative:
            _check(
                0 < tolerance < 1,
                f"A relative tolerance is a fraction of the baseline in (0, 1), got {tolerance}.",
            )
        else:
            _check(
                0 < tolerance < baseline,
                f"An absolute tolerance must be > 0 and < the baseline metric {baseline}, got "
                f"{tolerance}. For a fraction of the baseline set relative=True.",
            )
        if rule not in RULES:
            hint = difflib.get_close_matches(str(rule), RULES, n=1)
            raise ValueError(
                f"Unknown pruning rule {rule!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else ".")
                + f" Choose one of {', '.join(RULES)}."
            )
        _check(0 < p_max <= 1, f"p_max must be in (0, 1], got {p_max}.")
        _check(lambda_max >= 0, f"lambda_max must be >= 0, got {lambda_max}.")
        _check(delta_w > 0, f"delta_w must be > 0, got {delta_w}.")
        _check(delta_lambda >= 0, f"delta_lambda must be >= 0, got {delta_lambda}.")
        _check(
            isinstance(max_rounds, int) and max_rounds >= 0,
            f"max_rounds must be an int >= 0, got {max_rounds!r}.",
        )
        _check(
            macs_target is None or macs_target > 0,
            f"macs_target must be > 0 MACs or None (off), got {macs_target}.",
        )
        _check(
            isinstance(max_failed_recoveries, int) and max_failed_recoveries >= 1,
            f"max_failed_recoveries must be an int >= 1, got {max_failed_recoveries!r}.",
        )
        self.baseline = float(baseline)
        self.tolerance = float(tolerance)
        self.relative = bool(relative)
        self.rule = rule
        self.p_max = float(p_max)
        self.lambda_max = float(lambda_max)
        self.delta_w = float(delta_w)
        self.delta_lambda = float(delta_lambda)
        self.max_rounds = max_rounds
        self.macs_target = None if macs_target is None else float(macs_target)
        self.max_failed_recoveries = max_failed_recoveries
        # Mutable state.
        self.rounds = 0
        self.failed_recoveries = 0
        self.scale = 1.0
        self.last_metric: float | None = None
        self.last_macs: float | None = None
        self.last_removed: int | None = None
        self.last_recover_only = False

    @property
    def budget(self) -> float:
        """The absolute tolerance ``ε = E − floor``."""
        return self.baseline * self.tolerance if self.relative else self.tolerance

    @property
    def floor(self) -> float:
        """``E − ε`` (or ``E · (1 − ε)`` when relative)."""
        return self.baseline - self.budget

    def meets_floor(self, metric: float) -> bool:
        """Whether ``metric`` is finite and at least the floor (up to float round-off)."""
        return math.isfinite(metric) and metric >= self.floor - 1e-12 * max(1.0, abs(self.floor))

    def plan(self, metric: float) -> RoundPlan:
        """The plan of the next round given the current validation metric ``A_t``."""
        _check(math.isfinite(metric), f"plan() needs a finite metric, got {metric}.")
        remaining = metric - self.floor
        recover = remaining <= 0
        self.last_recover_only = recover
        if recover:
            zero = 0.0
            quantile, threshold = (None, zero) if self.rule == "linear" else (zero, None)
            return RoundPlan(remaining, quantile, threshold, 0.0, True)
        if self.rule != "linear":
            frac = self.scale
            if self.rule == "scale_free":
                frac *= min(1.0, remaining / self.budget)
            return RoundPlan(remaining, self.p_max * frac, None, self.lambda_max * frac, False)
        return RoundPlan(
            remaining,
            None,
            self.delta_w * remaining * self.scale,
            self.delta_lambda * remaining * self.scale,
            False,
        )

    def observe(
        self,
        metric: float,
        macs: float | None = None,
        removed: int = 0,
        recovered: bool | None = None,
    ) -> None:
        """Records a finished round.

        Args:
          metric: validation metric after removal and recovery.
          macs: MACs of the model after the round (for ``macs_target``).
          removed: number of filters removed this round.
          recovered: whether recovery met the floor; defaults to ``meets_floor(metric)``.
        """
        recovered = self.meets_floor(metric) if recovered is None else bool(recovered)
        self.rounds += 1
        self.last_metric = float(metric) if math.isfinite(metric) else None
        self.last_macs = None if macs is None else float(macs)
        self.last_removed = int(removed)
        if recovered:
            self.scale = min(1.0, self.scale * 2.0)
        else:
            self.failed_recoveries += 1

    def backoff(self, factor: float = 0.5) -> None:
        """Scales ``p``/``W`` and ``λ`` of later plans by ``factor`` (see module docstring)."""
        _check(0 < factor < 1, f"backoff factor must be in (0, 1), got {factor}.")
        self.scale *= factor

    def should_stop(self) -> str | None:
        """The reason to stop (one of ``STOP_REASONS``), or None to run another round."""
        if self.failed_recoveries >= self.max_failed_recoveries:
            return "recovery failed"
        if self.last_removed == 0 and not self.last_recover_only:
            return "no candidates"
        if (
            self.macs_target is not None
            and self.last_macs is not None
            and self.last_macs <= self.macs_target
        ):
            return "macs target"
        if self.rounds >= self.max_rounds:
            return "round budget"
        return None

    _CONFIG = (
        "baseline",
        "tolerance",
        "relative",
        "rule",
        "p_max",
        "lambda_max",
        "delta_w",
        "delta_lambda",
        "max_rounds",
        "macs_target",
        "max_failed_recoveries",
    )
    _STATE = (
        "rounds",
        "failed_recoveries",
        "scale",
        "last_metric",
        "last_macs",
        "last_removed",
        "last_recover_only",
    )

    def to_dict(self) -> dict[str, Any]:
        """Configuration and state as a JSON-serialisable dict."""
        return {k: getattr(self, k) for k in self._CONFIG + self._STATE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruningRateController:
        """Inverse of :meth:`to_dict`."""
        unknown = sorted(set(d) - set(cls._CONFIG + cls._STATE))
        missing = sorted(set(cls._CONFIG) - set(d))
        if unknown or missing:
            raise ValueError(
                f"Not a PruningRateController state: unknown keys {unknown}, missing {missing}."
            )
        ctrl = cls(**{k: d[k] for k in cls._CONFIG})
        for k in cls._STATE:
            if k in d:
                setattr(ctrl, k, d[k])
        return ctrl


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
