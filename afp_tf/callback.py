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

from afp_tf import afp, prc, regularizers, surgery
from afp_tf.api import compile_like
from afp_tf.options import PruneOptions

_SELECTION = (
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
)


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
    metric still met the floor at its end. So ``fit`` needs at least ``warmup_epochs + 1`` epochs
    to remove anything.

    Args:
      tolerance: accepted drop of ``monitor`` from its value after ``warmup_epochs`` (absolute).
      monitor: the validation metric in the epoch logs (higher is better).
      warmup_epochs: epochs of plain (orthogonality-regularised) training before selection.
      orth_beta: orthogonality strength (0 = off).
      **options: fields of ``afp_tf.options.PruneOptions`` that apply to selection
        (``p_max``, ``p_min``, ``lambda_max``, ``rule``, ``importance``, ``min_filters``,
        ``round_to``, ``max_group_fraction``, ``delta_w``, ``delta_lambda``); each epoch is
        reported to the controller as a round (accepted while the floor holds).

    Attributes:
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
        **options,
    ):
        super().__init__()
        if warmup_epochs < 1:
            raise ValueError(f"warmup_epochs must be >= 1 (the baseline), got {warmup_epochs}.")
        unknown = sorted(set(options) - set(_SELECTION))
        if unknown:
            raise TypeError(
                f"AFPCallback got an unknown option {unknown[0]!r}; valid: {', '.join(_SELECTION)}."
            )
        self.options = PruneOptions(tolerance=tolerance, **options)
        self.tolerance, self.monitor, self.warmup_epochs = tolerance, monitor, warmup_epochs
        self.orth_beta = orth_beta
        self.controller: prc.PruningRateController | None = None
        self.candidates: dict[str, list[int]] = {}
        self.removal: dict[str, list[int]] = {}
        self.pruned_model: keras.Model | None = None
        self.history: list[dict] = []
        self._attached: list[tuple[keras.Variable, object]] = []

    def on_train_begin(self, logs=None):
        groups = [g for g in surgery.find_channel_groups(self.model) if g.prunable]
        self._weights = {g.name: surgery.filter_weights(self.model, g) for g in groups}
        self._blocks = {g.name: g.blocks for g in groups}
        self._filters = sum(g.size for g in groups)
        self.controller, self._last = None, None
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
            self.controller = opts.controller(value, baseline_macs=1)
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
            self.candidates = afp.select_candidates(
                afp.filter_importance(self._weights, normalize=opts.importance),
                quantile=plan.quantile,
                threshold=plan.threshold,
                min_filters=opts.min_filters,
                round_to=opts.round_to,
                max_fraction=opts.max_group_fraction,
                blocks=self._blocks,
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

    def _detach(self) -> None:
        """Gives every variable back its own regularizer."""
        for var, base in self._attached:
            var.regularizer = base
        self._attached = []
