"""``PruneOptions``: every pruning default and its validation, in one frozen dataclass.

``config_lib`` builds it from the ``prune`` config section, ``afp_tf.prune`` and ``AFPCallback``
from keyword arguments; the pruner and the controller read nothing else. Choice lists live where
they are implemented (``prc.RULES``, ``afp.NORMALIZATIONS``, ``afp.COSTS``; ``REMOVALS``,
``MEASURES``, ``SHRINKS``, ``RECOVERY_SCHEDULES`` and ``LATENCY_FORMATS`` here).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from afp_tf.method import afp, prc

REMOVALS = ("all", "decayed")
MEASURES = ("outputs", "kernels")
SHRINKS = ("fade", "l1")
RECOVERY_SCHEDULES = ("cosine", "constant")
# The TFLite formats a latency table (afp_tf.export.latency_model) is measured in.
LATENCY_FORMATS = ("tflite_fp32", "tflite_int8")
# Options renamed since a release: old name -> new name (an old name is refused naming the new).
RENAMED = {"penalty_epochs": "shrink_epochs"}


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """How a pruning run behaves (docs/method.md gives each choice and its config key).

    Attributes:
      enabled: prune at all (the main job trains and exports a baseline only when False).
      tolerance: accepted drop of the decision metric, absolute (0.01 = one point) or relative.
      relative: ``tolerance`` is a fraction of the baseline metric.
      rule: the controller's rule, one of ``prc.RULES``.
      p_max, p_min: largest and (adaptive rule) smallest fraction of the filters a round targets.
      lambda_max: largest targeted-ℓ1 strength.
      delta_w, delta_lambda: the linear rule's slopes (``W_t``, ``λ_t`` per unit of ``R_t``).
      shrink_epochs: ``k``, epochs per round that drive the candidates towards zero (the fade or
        the targeted ℓ1 term, ``shrink``); formerly ``penalty_epochs``.
      recovery_epochs: ``r``, most recovery epochs per round (``2r`` for a retry after a
        failed round).
      recovery_margin: recovery stops early once the recovery metric is this fraction of the
        spendable budget above the floor (``recovery_schedule="constant"`` only).
      recovery_schedule: ``"cosine"``: recovery runs all its epochs with the learning rate
        decayed to 0 over them, so each round ends annealed like the baseline; ``"constant"``:
        the rate stays and recovery stops early (``recovery_margin``).
      extend_epochs: most extra recovery epochs (a fresh cosine schedule) a round that missed the
        accept floor by no more than the spendable budget gets before it counts as failed; the
        decision split is then measured a second time; 0 = off.
      max_rounds: most rounds attempted, accepted or not.
      macs_target: stop once MACs <= this fraction of the baseline's; 0 = off.
      latency_target_ms: stop once the predicted batch-1 latency of the last accepted model (or
        the baseline) is at or below this many ms, the tolerance still binding; 0 = off. Needs
        a latency table (``latency_table``, else measured on this machine).
      latency_format: the TFLite format latency is predicted and measured in, one of
        ``LATENCY_FORMATS``.
      latency_table: path of a latency table measured elsewhere (e.g. on the target device
        with ``export/measure_latency_table.py``); "" = measured on this machine.
      min_filters: never leave a group with fewer filters.
      round_to: keep filter counts multiples of this (hardware rounding).
      measure: which weights give a filter's ℓ1 importance: ``"outputs"`` (the scale and offset of
        the BatchNorms on its channel where it has them, else its kernels) or ``"kernels"``.
      shrink: how a round drives its candidates towards zero before removal: ``"fade"`` (scaled
        linearly to exactly zero over the penalty epochs, BatchNorm scale and offset included
        with ``measure="outputs"``) or ``"l1"`` (the paper's targeted ℓ1 term of strength λ).
      recalibrate_batches: after each removal, BatchNorm statistics are re-estimated on this many
        training batches (0 = off).
      importance: normalisation of ℓ1 importance, one of ``afp.NORMALIZATIONS``.
      cost: per-filter cost the importance is divided by, one of ``afp.COSTS``: ``"macs"`` the
        MACs, ``"latency"`` the predicted ms one filter's removal saves (needs a latency table).
      max_group_fraction: most of a group one round may remove.
      probe_rounds: before shrinking, probe the round: the decision metric of the model with the
        candidates' outputs zeroed and BatchNorm statistics re-estimated (``recalibrate_batches``
        training batches), no training; while it is below the probe floor ``accept_floor −
        probe_slack · ε'`` (``ε'`` the spendable tolerance, ``ε`` minus the margin) the round's
        quantile or threshold is halved and probed again, at most ``probe_bisections`` times; a
        round whose smallest probe still misses runs at that size (``afp_tf.method.probe``).
      probe_bisections: most halvings of a probed round (0 = probe and record only).
      probe_slack: how far below the accept floor a probe may be, in units of ``ε'``: what
        shrinking and recovery are expected to win back.
      removal: ``"all"`` candidates, or only those ``"decayed"`` below ``decay_fraction`` of
        their starting norm.
      decay_fraction: see ``removal``.
      finetune_epochs: epochs of the main job's final fine-tune.
      max_failures: stop after this many consecutive failed rounds.
      min_headroom: stop once an accepted round leaves less than this fraction of the spendable
        tolerance (``ε`` minus the margin) above the accept floor; 0 = off.
      min_round_macs: stop instead of running a round whose candidates would save less than this
        fraction of the current MACs; 0 = off.
      max_nonfinite_retries: stop after more consecutive non-finite rounds than this.
      learning_rate: learning rate of pruning and recovery; 0 = the training one.
      margin_z: a round is accepted only ``margin_z`` standard errors of the decision metric
        above the floor (accuracy-like metrics with a known acceptance-set size; else 0).
      distill: weight ``w`` of distillation from the unpruned model (the teacher) in every
        shrink, recovery and fine-tune step: ``(1 − w)·task + w·T²·KL(softmax(teacher/T) ‖
        softmax(student/T))``; in [0, 1], 0 = off. Classifiers only (a (sparse) categorical
        cross-entropy task loss).
      distill_temperature: ``T`` of ``distill``, > 0.
    """

    enabled: bool = True
    tolerance: float = 0.01
    relative: bool = False
    rule: str = "adaptive"
    p_max: float = 0.2
    p_min: float = 0.02
    lambda_max: float = 1e-3
    delta_w: float = 0.5
    delta_lambda: float = 0.05
    shrink_epochs: int = 1
    recovery_epochs: int = 2
    recovery_margin: float = 0.5
    recovery_schedule: str = "cosine"
    extend_epochs: int = 0
    max_rounds: int = 20
    macs_target: float = 0.0
    latency_target_ms: float = 0.0
    latency_format: str = "tflite_fp32"
    latency_table: str = ""
    min_filters: int = 1
    round_to: int = 1
    measure: str = "outputs"
    shrink: str = "fade"
    recalibrate_batches: int = 50
    importance: str = "layer_mean"
    cost: str = "none"
    max_group_fraction: float = 0.5
    probe_rounds: bool = False
    probe_bisections: int = 4
    probe_slack: float = 1.0
    removal: str = "all"
    decay_fraction: float = 0.5
    finetune_epochs: int = 2
    max_failures: int = 3
    min_headroom: float = 0.0
    min_round_macs: float = 0.0
    max_nonfinite_retries: int = 2
    learning_rate: float = 0.0
    margin_z: float = 1.0
    distill: float = 0.0
    distill_temperature: float = 4.0

    def __post_init__(self):
        _choice("rule", self.rule, prc.RULES)
        _choice("importance", self.importance, afp.NORMALIZATIONS)
        _choice("cost", self.cost, afp.COSTS)
        _choice("removal", self.removal, REMOVALS)
        _choice("measure", self.measure, MEASURES)
        _choice("shrink", self.shrink, SHRINKS)
        _choice("recovery_schedule", self.recovery_schedule, RECOVERY_SCHEDULES)
        _choice("latency_format", self.latency_format, LATENCY_FORMATS)
        for key in (
            "shrink_epochs",
            "recovery_epochs",
            "extend_epochs",
            "finetune_epochs",
            "max_rounds",
            "max_nonfinite_retries",
            "recalibrate_batches",
            "probe_bisections",
        ):
            _check(_is_int(getattr(self, key), 0), f"{key}={getattr(self, key)!r} must be >= 0.")
        for key in ("min_filters", "round_to", "max_failures"):
            _check(_is_int(getattr(self, key), 1), f"{key}={getattr(self, key)!r} must be >= 1.")
        _check(
            0 < self.tolerance < 1,
            f"tolerance={self.tolerance} must be in (0, 1): an absolute drop of the metric "
            "(0.01 = one point of accuracy or mAP), or a fraction of it with relative=True.",
        )
        _check(0 < self.p_max <= 1, f"p_max={self.p_max} must be in (0, 1].")
        _check(0 < self.p_min <= self.p_max, f"p_min={self.p_min} must be in (0, p_max].")
        _check(self.lambda_max >= 0, f"lambda_max={self.lambda_max} must be >= 0.")
        _check(self.delta_w > 0, f"delta_w={self.delta_w} must be > 0.")
        _check(self.delta_lambda >= 0, f"delta_lambda={self.delta_lambda} must be >= 0.")
        _check(0 <= self.macs_target < 1, f"macs_target={self.macs_target} must be in [0, 1).")
        _check(
            math.isfinite(self.latency_target_ms) and self.latency_target_ms >= 0,
            f"latency_target_ms={self.latency_target_ms} must be >= 0 ms (0 = off).",
        )
        _check(
            0 <= self.recovery_margin <= 1,
            f"recovery_margin={self.recovery_margin} must be in [0, 1].",
        )
        _check(
            0 < self.max_group_fraction <= 1,
            f"max_group_fraction={self.max_group_fraction} must be in (0, 1].",
        )
        _check(0 < self.decay_fraction <= 1, f"decay_fraction={self.decay_fraction} not in (0, 1].")
        for key in ("min_headroom", "min_round_macs"):
            value = getattr(self, key)
            _check(0 <= value < 1, f"{key}={value} must be in [0, 1) (0 = off).")
        _check(self.learning_rate >= 0, f"learning_rate={self.learning_rate} must be >= 0.")
        _check(
            isinstance(self.probe_rounds, bool),
            f"probe_rounds={self.probe_rounds!r} must be True or False.",
        )
        _check(
            math.isfinite(self.probe_slack) and self.probe_slack >= 0,
            f"probe_slack={self.probe_slack} must be >= 0 (in units of the spendable tolerance).",
        )
        _check(
            math.isfinite(self.margin_z) and self.margin_z >= 0,
            f"margin_z={self.margin_z} must be >= 0.",
        )
        _check(
            math.isfinite(self.distill) and 0 <= self.distill <= 1,
            f"distill={self.distill} must be in [0, 1] (the weight of the distillation term; "
            "0 = off).",
        )
        _check(
            math.isfinite(self.distill_temperature) and self.distill_temperature > 0,
            f"distill_temperature={self.distill_temperature} must be > 0.",
        )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PruneOptions:
        """From a dict (e.g. the ``prune`` config section); unknown keys raise TypeError."""
        check_renamed(values)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise TypeError(
                f"Unknown pruning option {unknown[0]!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f". Valid options: {', '.join(known)}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def needs_latency(self) -> bool:
        """Whether pruning needs a latency table (``cost="latency"`` or a latency target)."""
        return self.enabled and (self.cost == "latency" or self.latency_target_ms > 0)

    def controller(
        self, baseline: float, baseline_macs: int, margin: float = 0.0
    ) -> prc.PruningRateController:
        """The pruning-rate controller these options describe."""
        return prc.PruningRateController(
            baseline=baseline,
            tolerance=self.tolerance,
            relative=self.relative,
            rule=self.rule,
            p_max=self.p_max,
            p_min=self.p_min,
            lambda_max=self.lambda_max,
            delta_w=self.delta_w,
            delta_lambda=self.delta_lambda,
            max_rounds=self.max_rounds if self.enabled else 0,
            macs_target=self.macs_target * baseline_macs if self.macs_target else None,
            latency_target=self.latency_target_ms or None,
            margin=margin,
            max_failures=self.max_failures,
            max_nonfinite=self.max_nonfinite_retries,
            min_headroom=self.min_headroom,
            min_round_macs=self.min_round_macs,
        )


def check_renamed(keys, prefix: str = "") -> None:
    """Raises TypeError naming the new name of the first renamed option among ``keys``."""
    for key in keys:
        if key in RENAMED:
            raise TypeError(f"{prefix}{key} was renamed {prefix}{RENAMED[key]}.")


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        raise ValueError(
            f"{key}={value!r} is not one of {', '.join(choices)}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
