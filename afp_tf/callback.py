"""``AFPCallback``: adaptive filter pruning for users of ``model.fit``.

During ``fit`` the callback applies the orthogonality regulariser and the targeted ℓ1 penalty
(strength and candidates chosen each epoch by the pruning-rate controller from the monitored
validation metric). After ``fit``, :attr:`AFPCallback.pruned_model` holds the model with the last
candidates physically removed; evaluate it, and fine-tune if needed.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from afp_tf import afp, prc, regularizers, surgery


class _FilterPenalty(keras.regularizers.Regularizer):
    """λ·Σ_f mask[f]·‖w_f‖₁ + β·orth(w) for one producer kernel; λ and mask are variables."""

    def __init__(self, strength: tf.Variable, mask: tf.Variable, axis: int, beta: float):
        self.strength, self.mask, self.axis, self.beta = strength, mask, axis, beta

    def __call__(self, x):
        axes = [i for i in range(len(x.shape)) if i != self.axis % len(x.shape)]
        l1 = tf.reduce_sum(tf.abs(x), axis=axes)
        penalty = self.strength * tf.reduce_sum(self.mask * l1)
        if self.beta:
            penalty += self.beta * regularizers.orthogonality_penalty(x, filter_axis=self.axis)
        return penalty

    def get_config(self):  # not saved with the model: the callback detaches it after fit
        return {}


class AFPCallback(keras.callbacks.Callback):
    """Selects and shrinks the least important filters during ``fit``; removes them after.

    Args:
      tolerance: accepted drop of ``monitor`` from its value after ``warmup_epochs``.
      monitor: the validation metric in the epoch logs (higher is better).
      warmup_epochs: epochs of plain (orthogonality-regularised) training before selection.
      p_max, lambda_max, rule, min_filters: as in the ``prune`` config section.
      orth_beta: orthogonality strength (0 = off).
    """

    def __init__(
        self,
        tolerance: float = 0.01,
        monitor: str = "val_accuracy",
        warmup_epochs: int = 1,
        p_max: float = 0.2,
        lambda_max: float = 1e-3,
        rule: str = "scale_free",
        min_filters: int = 1,
        orth_beta: float = 1e-3,
    ):
        super().__init__()
        self.tolerance, self.monitor, self.warmup_epochs = tolerance, monitor, warmup_epochs
        self.p_max, self.lambda_max, self.rule = p_max, lambda_max, rule
        self.min_filters, self.orth_beta = min_filters, orth_beta
        self.controller: prc.PruningRateController | None = None
        self.candidates: dict[str, list[int]] = {}
        self.pruned_model: keras.Model | None = None

    def on_train_begin(self, logs=None):
        groups = [g for g in surgery.find_channel_groups(self.model) if g.prunable]
        self._weights = {g.name: surgery.filter_weights(self.model, g) for g in groups}
        self._strength = tf.Variable(0.0, trainable=False, name="afp_strength")
        self._masks = {}
        self._attached = []
        for name, pairs in self._weights.items():
            size = next(g.size for g in groups if g.name == name)
            mask = tf.Variable(
                tf.zeros([size]), trainable=False, name=f"afp_mask_{len(self._masks)}"
            )
            self._masks[name] = mask
            for var, axis in pairs:
                if var.regularizer is not None:
                    logging.warning("%s already has a regularizer; AFP leaves it alone.", var.path)
                    continue
                var.regularizer = _FilterPenalty(self._strength, mask, axis, self.orth_beta)
                self._attached.append(var)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"AFPCallback monitors {self.monitor!r}, not in the epoch logs "
                f"({', '.join(logs)}); pass validation_data to fit or set monitor=."
            )
        value = float(logs[self.monitor])
        if epoch + 1 < self.warmup_epochs:
            return
        if self.controller is None:
            self.controller = prc.PruningRateController(
                baseline=value,
                tolerance=self.tolerance,
                rule=self.rule,
                p_max=self.p_max,
                lambda_max=self.lambda_max,
            )
        plan = self.controller.plan(value)
        importance = afp.filter_importance(self._weights)
        self.candidates = (
            {}
            if plan.recover_only
            else afp.select_candidates(
                importance,
                quantile=plan.quantile,
                threshold=plan.threshold,
                min_filters=self.min_filters,
            )
        )
        self._strength.assign(plan.strength)
        for name, mask in self._masks.items():
            values = [0.0] * mask.shape[0]
            for i in self.candidates.get(name, []):
                values[i] = 1.0
            mask.assign(values)
        logging.info(
            "AFP epoch %d: %s %.4f, %d candidates, lambda %.3g",
            epoch + 1,
            self.monitor,
            value,
            sum(map(len, self.candidates.values())),
            plan.strength,
        )

    def on_train_end(self, logs=None):
        for var in self._attached:
            var.regularizer = None
        self.pruned_model = surgery.remove_filters(self.model, self.candidates)
