"""Knowledge distillation from a frozen teacher (Hinton, Vinyals and Dean, 2015).

A trainer given a :class:`Distillation` trains on, per example,

    (1 − w) · task + w · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

where ``teacher`` and ``student`` are the two models' class logits (probabilities are turned
into log-probabilities first) and ``T`` the temperature; ``T²`` keeps the gradient of the soft
term on the scale of the task loss's. The teacher runs in inference mode (BatchNorm statistics
and dropout frozen) and no gradient reaches it. docs/method.md ("Distillation from the unpruned
model") says how the pruner uses it.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

# What a classifier's outputs are: what the softened distributions are computed from.
OUTPUTS = ("logits", "probabilities")
_CROSS_ENTROPIES = (
    keras.losses.SparseCategoricalCrossentropy,
    keras.losses.CategoricalCrossentropy,
)
_CROSS_ENTROPY_FNS = (
    keras.losses.sparse_categorical_crossentropy,
    keras.losses.categorical_crossentropy,
)


def class_outputs(loss) -> str | None:
    """What a model trained with ``loss`` outputs, as far as the loss says.

    ``"logits"`` or ``"probabilities"`` for a (sparse) categorical cross-entropy, by its
    ``from_logits`` (a loss given by name or as the plain function takes probabilities); None
    for any other loss, whose model's outputs are not known to be class scores (a detector's).
    """
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return None
    if isinstance(loss, _CROSS_ENTROPIES):
        return "logits" if loss.get_config().get("from_logits") else "probabilities"
    if any(loss is fn for fn in _CROSS_ENTROPY_FNS):
        return "probabilities"
    return None


@dataclasses.dataclass(frozen=True)
class Distillation:
    """A frozen teacher and how much of the training loss matches it.

    Attributes:
      teacher: the model whose outputs the student is trained towards; built under the
        trainer's strategy scope, never trained.
      weight: ``w`` in [0, 1]; 0 leaves the task loss exactly as it is.
      temperature: ``T`` > 0, how much both distributions are softened.
      outputs: what both models output, one of :data:`OUTPUTS`.
    """

    teacher: keras.Model
    weight: float
    temperature: float = 4.0
    outputs: str = "logits"

    def __post_init__(self):
        if self.outputs not in OUTPUTS:
            raise ValueError(f"outputs={self.outputs!r} is not one of {', '.join(OUTPUTS)}.")

    def teacher_outputs(self, x) -> tf.Tensor:
        """The teacher's float32 outputs on ``x`` in inference mode, without gradient."""
        y = self.teacher(x, training=False)
        return tf.stop_gradient(tf.cast(y, tf.float32))

    def soft_loss(self, y_teacher: tf.Tensor, y_student: tf.Tensor) -> tf.Tensor:
        """Per-example ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))`` (classes on the
        last axis; any other axis after the batch one is averaged)."""
        t = self.temperature
        log_p = tf.nn.log_softmax(self._logits(y_teacher) / t, axis=-1)
        log_q = tf.nn.log_softmax(self._logits(y_student) / t, axis=-1)
        kl = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
        if kl.shape.rank > 1:
            kl = tf.reduce_mean(tf.reshape(kl, [tf.shape(kl)[0], -1]), axis=1)
        return t * t * kl

    def blend(self, task: tf.Tensor, y_student: tf.Tensor, y_teacher: tf.Tensor) -> tf.Tensor:
        """Per-example ``(1 − w) · task + w · soft_loss``, ``task`` the per-example task loss."""
        w = self.weight
        return (1.0 - w) * task + w * self.soft_loss(y_teacher, y_student)

    def _logits(self, y: tf.Tensor) -> tf.Tensor:
        if self.outputs == "logits":
            return y
        return tf.math.log(tf.clip_by_value(y, keras.config.epsilon(), 1.0))
