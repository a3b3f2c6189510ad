"""``AFPCallback``: adaptive filter pruning for users of ``model.fit``.

During ``fit`` the callback applies the orthogonality regulariser and the targeted ℓ1 penalty
(strength and candidates chosen at each epoch end by the pruning-rate controller from the
monitored validation metric) as regularizers on the producer kernels. After ``fit`` it detaches
them and :attr:`AFPCallback.pruned_model` holds the model without the filters penalised during the
last epoch; evaluate it, and fine-tune if needed.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from afp_tf import surgery
from afp_tf.api import compile_like, is_proportion
from afp_tf.method import prc, regularizers
from afp_tf.method.options import PruneOptions, check_renamed
from afp_tf.method.pruner import macs_per_filter, round_candidates

_OPTIONS = (
    "p_max",
    "p_min",
    "lambda_max",
    "rule",
    "importance",
    "min_filters",
    "round_to",
    "max_group_fraction",
    "delta_w",
    "delta_lambda",
    "cost",
    "margin_z",
)
# Options afp_tf.prune and the main job take and the callback cannot honour, with the reason.
_LATENCY = "pruning to latency needs a latency table of the whole model"
_DISTILL = (
    "fit trains on the model's compiled loss, which a callback does not change, so it cannot "
    "distil from the unpruned model"
)
_PROBE = (
    "probing a round evaluates the model with its candidates zeroed before the round trains, "
    "and fit's epochs leave no such step"
)
_UNSUPPORTED = {
    **dict.fromkeys(("latency_target_ms", "latency_format", "latency_table"), _LATENCY),
    **dict.fromkeys(("distill", "distill_temperature"), _DISTILL),
    **dict.fromkeys(("probe_rounds", "probe_bisections", "probe_slack"), _PROBE),
}


class _FilterPenalty(keras.regularizers.Regularizer):
    """One kernel's share of the callback's ``TargetedL1Penalty``, plus ``β·orth(w)`` and the
    variable's own regularizer.

    The penalty's λ and masks are variables, so changing them does not retrace the compiled train
    step. Not serialisable: the callback gives the variable its own regularizer back after ``fit``.
    """

    def __init__(self, penalty, group: str, axis: int, beta: float, base):
        self.penalty, self.group, self.axis, self.beta, self.base = penalty, group, axis, beta, base

    def __call__(self, x):
        strength = tf.convert_to_tensor(self.penalty.strength)
        penalty = strength * self.penalty.term(x, self.group, self.axis)
        if self.beta:
            penalty += self.beta * regularizers.orthogonality_penalty(x, filter_axis=self.axis)
        if self.base is not None:
            penalty += self.base(x)
        return penalty


class AFPCallback(keras.callbacks.Callback):
    """Selects and shrinks the least important filters during ``fit``; removes them after.

    Candidates chosen at the end of epoch ``e`` are penalised during epoch ``e + 1``; after
    ``fit`` the candidates penalised during the last epoch are removed, provided the monitored
    metric still met the accept floor at its end. So ``fit`` needs at least
    ``warmup_epochs + 1`` epochs to remove anything.

    Decisions use ``monitor``, the validation metric (not held out from early stopping or
    checkpoint selection on it, unlike ``afp_tf.prune``'s ``accept_data``). As in
    ``afp_tf.prune``, an epoch counts only if it stays ``margin_z`` standard errors of the
    baseline above ``baseline − tolerance`` (:attr:`accept_floor`); the standard error
    ``√(E(1−E)/n)`` needs the number ``n`` of validation examples: ``validation_size``, or else
    the example count of the monitored Keras accuracy metric after the baseline epoch (what its
    value averaged over, so ``validation_steps`` is respected). Without either (a metric that is
    not a Keras accuracy, e.g. AUC, or a custom ``test_step``) there is no margin:
    :attr:`examples` is 0 and a warning is logged.

    Args:
      tolerance: accepted drop of ``monitor`` from its value after ``warmup_epochs`` (absolute).
      monitor: the validation metric in the epoch logs (higher is better).
      warmup_epochs: epochs of plain (orthogonality-regularised) training before selection.
      orth_beta: orthogonality strength (0 = off).
      validation_size: validation examples ``monitor`` is measured on, a proportion of them
        (e.g. accuracy); None = counted as above.
      **options: fields of ``afp_tf.method.options.PruneOptions`` that apply to selection and
        acceptance (``p_max``, ``p_min``, ``lambda_max``, ``rule``, ``importance``, ``cost``,
        ``min_filters``, ``round_to``, ``max_group_fraction``, ``delta_w``, ``delta_lambda``,
        ``margin_z``); each epoch is reported to the controller as a round (accepted while the
        accept floor holds). ``cost="macs"`` divides importance by the MACs one filter of each
        group costs, measured once when ``fit`` begins. ``cost="latency"`` and the latency
        options (``latency_target_ms``, ...) are not supported here (a ValueError): they need a
        latency table, which ``afp_tf.prune`` and the main job measure. Neither is ``distill``
        (a ValueError): ``fit`` trains on the compiled loss; nor ``probe_rounds`` and the other
        probe options (a ValueError): ``fit`` has no step between epochs to probe a round in.

    Attributes:
      margin, accept_floor: after the baseline epoch, the margin (0 = none) and
        ``floor + margin``, the floor an epoch's ``monitor`` must meet (None before).
      examples: the validation examples the margin was computed from (0 = unknown, no margin).
      candidates: group name -> filter indices selected at the last epoch end.
      removal: what :attr:`pruned_model` lacks (candidates penalised during the last epoch).
      pruned_model: after ``fit``, the smaller model, compiled like the input if it was.
      history: one dict per epoch after warm-up (metric, strength, number of candidates).
    """

    def __init__(
        self,
        tolerance: float = 0.01,
        monitor: str = "val_accuracy",
        warmup_epochs: int = 1,
        orth_beta: float = 1e-3,
        validation_size: int | None = None,
        **options,
    ):
        super().__init__()
        if warmup_epochs < 1:
            raise ValueError(f"warmup_epochs must be >= 1 (the baseline), got {warmup_epochs}.")
        if validation_size is not None and not (
            isinstance(validation_size, int) and validation_size >= 1
        ):
            raise ValueError(
                f"validation_size must be an int >= 1 or None, got {validation_size!r}."
            )
        check_renamed(options)
        unsupported = sorted(set(options) & set(_UNSUPPORTED))
        if options.get("cost") == "latency" or unsupported:
            what = unsupported[0] if unsupported else "cost='latency'"
            raise ValueError(
                f"AFPCallback does not support {what}: {_UNSUPPORTED.get(what, _LATENCY)}; use "
                "afp_tf.prune or the main job (afp-tf) instead."
            )
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise TypeError(
                f"AFPCallback got an unknown option {unknown[0]!r}; valid: {', '.join(_OPTIONS)}."
            )
        self.options = PruneOptions(tolerance=tolerance, **options)
        self.tolerance, self.monitor, self.warmup_epochs = tolerance, monitor, warmup_epochs
        self.orth_beta, self.validation_size = orth_beta, validation_size
        self.examples = 0
        self.controller: prc.PruningRateController | None = None
        self.candidates: dict[str, list[int]] = {}
        self.removal: dict[str, list[int]] = {}
        self.pruned_model: keras.Model | None = None
        self.history: list[dict] = []
        self._attached: list[tuple[keras.Variable, object]] = []

    @property
    def margin(self) -> float | None:
        return None if self.controller is None else self.controller.margin

    @property
    def accept_floor(self) -> float | None:
        return None if self.controller is None else self.controller.accept_floor

    def on_train_begin(self, logs=None):
        analysis = surgery.analyze(self.model)
        groups = analysis.prunable
        self._weights = {g.name: analysis.filter_weights(g) for g in groups}
        self._divisions = {g.name: g.divisions for g in groups}
        self._filters = sum(g.size for g in groups)
        self._macs = None
        if self.options.cost == "macs":
            with self.model.distribute_strategy.scope():
                self._macs = macs_per_filter(self.model, analysis)
        self.controller, self._last, self.examples = None, None, 0
        self._penalty = regularizers.TargetedL1Penalty(self._weights)
        self.candidates, self.removal, self.pruned_model = {}, {}, None
        for name, pairs in self._weights.items():
            for var, axis in pairs:
                base = var.regularizer
                var.regularizer = _FilterPenalty(self._penalty, name, axis, self.orth_beta, base)
                self._attached.append((var, base))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            self._detach()
            raise ValueError(
                f"AFPCallback monitors {self.monitor!r}, not in the epoch logs "
                f"({', '.join(logs)}); pass validation_data to fit or set monitor=."
            )
        value = float(logs[self.monitor])
        if epoch + 1 < self.warmup_epochs:
            return
        opts = self.options
        if self.controller is None:
            self.examples = self.validation_size or self._counted_examples()
            margin = (
                opts.margin_z * prc.standard_error(value, self.examples) if self.examples else 0
            )
            try:
                self.controller = opts.controller(value, baseline_macs=1, margin=margin)
            except ValueError:  # e.g. a margin not below the tolerance
                self._detach()
                raise
        else:  # the epoch with the last candidates penalised was a round
            penalised = sum(map(len, self.candidates.values())) / max(self._filters, 1)
            outcome = "accepted" if self.controller.meets_floor(value) else "failed"
            self.controller.observe(
                outcome, before=self._last, metric=value, removed_fraction=penalised
            )
        self._last = value
        self.removal = self.candidates if self.controller.meets_floor(value) else {}
        plan = self.controller.plan(value)
        self.candidates = {}
        if not plan.recover_only:
            self.candidates = round_candidates(
                self._weights, plan, opts, divisions=self._divisions, filter_cost=self._macs
            )
        self._penalty.set_strength(plan.strength)
        self._penalty.set_candidates(self.candidates)
        count = sum(map(len, self.candidates.values()))
        self.history.append(
            {
                "epoch": epoch + 1,
                self.monitor: value,
                "strength": plan.strength,
                "candidates": count,
            }
        )
        logging.info(
            "AFP epoch %d: %s %.4f, %d candidates, lambda %.3g",
            epoch + 1,
            self.monitor,
            value,
            count,
            plan.strength,
        )

    def on_train_end(self, logs=None):
        self._detach()
        with self.model.distribute_strategy.scope():
            self.pruned_model = surgery.remove_filters(self.model, self.removal)
            if self.model.compiled:
                compile_like(self.model, self.pruned_model)

    def _counted_examples(self) -> int:
        """The examples the monitored accuracy averaged over in the last evaluation (its state
        after ``fit``'s validation pass), or 0 (with a warning) when it is not one."""
        name = self.monitor.removeprefix("val_")
        found = [
            m
            for top in self.model.metrics
            for m in (top, *getattr(top, "metrics", ()))
            if m.name == name and is_proportion(m)
        ]
        count = float(keras.ops.convert_to_numpy(found[0].count)) if found else 0.0
        if count < 1 and self.options.margin_z:
            logging.warning(
                "AFPCallback: no acceptance margin: the number of validation examples behind %r "
                "is unknown (no Keras accuracy metric of the model by that name counted any); "
                "pass validation_size= if it is a proportion of them.",
                self.monitor,
            )
        return round(count)

    def _detach(self) -> None:
        """Gives every variable back its own regularizer."""
        for var, base in self._attached:
            var.regularizer = base
        self._attached = []
