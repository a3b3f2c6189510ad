"""Penalties used while training and pruning (docs/method.md, steps 3 and 5).

* :func:`orthogonality_penalty` / :class:`OrthogonalRegularizer`: ``||M̂ M̂ᵀ − I||_F²`` over the
  filters of a kernel, making the filters of a layer less redundant; :func:`orthogonality_loss`:
  ``β`` times its sum over every prunable group's producer kernels of a model (``L_orth``).
* :class:`TargetedL1Penalty`: ``λ · Σ_{f ∈ S_t} ||f||_1``, the ℓ1 pull on the pruning candidates,
  with ``λ`` and the candidate masks held in variables so a compiled step never retraces.
* :class:`TargetedFade`: the candidates of such a penalty scaled linearly to zero over a number
  of training steps, while the rest of the network trains to do without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from afp_tf import surgery

MODES = ("filters", "depthwise", "transpose")
_MODE_AXIS = {"filters": -1, "transpose": -2}


def filter_matrix(kernel: Any, filter_axis: int = -1, *, depthwise: bool = False) -> tf.Tensor:
    """Reshapes ``kernel`` into a matrix with one row per filter.

    Args:
      kernel: a tensor or variable of rank >= 2.
      filter_axis: the axis indexing filters (``-1`` for Dense ``(in, out)`` and conv
        ``(..., c_in, c_out)`` kernels, ``-2`` for transposed convs ``(..., out, in)``).
      depthwise: treat ``kernel`` as a depthwise kernel ``(*spatial, c_in, mult)``: every one of
        the ``c_in · mult`` spatial filters is a row of ``prod(spatial)`` weights; ``filter_axis``
        is ignored.

    Returns:
      A float32 ``(num_filters, weights_per_filter)`` tensor.
    """
    x = tf.cast(tf.convert_to_tensor(kernel), tf.float32)
    rank = x.shape.rank
    if depthwise:
        if rank < 3:
            raise ValueError(
                f"A depthwise kernel has shape (*spatial, c_in, multiplier); got rank {rank} "
                f"shape {x.shape}. Use depthwise=False for dense or conv kernels."
            )
        perm = [rank - 2, rank - 1, *range(rank - 2)]
        x = tf.transpose(x, perm)
        return tf.reshape(x, [x.shape[0] * x.shape[1], -1])
    if rank < 2:
        raise ValueError(f"filter_matrix needs a kernel of rank >= 2, got shape {x.shape}.")
    if not -rank <= filter_axis < rank:
        raise ValueError(f"filter_axis={filter_axis} is out of range for kernel shape {x.shape}.")
    axis = filter_axis % rank
    x = tf.transpose(x, [axis, *(i for i in range(rank) if i != axis)])
    return tf.reshape(x, [x.shape[0], -1])


def orthogonality_penalty(
    kernel: Any,
    filter_axis: int = -1,
    *,
    normalize: bool = True,
    depthwise: bool = False,
    epsilon: float = 1e-4,
) -> tf.Tensor:
    """``||M̂ M̂ᵀ − I||_F²`` with ``M`` the filter matrix of ``kernel`` (one row per filter).

    Rows are ℓ2-normalised as ``m / sqrt(||m||² + epsilon)``: a smooth normalisation that maps a
    zero row to zero (no NaN) and bounds the gradient of rows shorter than ``sqrt(epsilon)``, so
    filters that the targeted ℓ1 drives to zero are not kicked back by this term. When there are
    more filters than weights per filter (e.g. ``c_out > kh·kw·c_in``, or depthwise kernels with
    more channels than ``kh·kw``) ``M̂ M̂ᵀ`` cannot be ``I``; the minimum is then positive and the
    penalty spreads the filters evenly instead. The smaller Gram matrix is used in that case
    (``||MMᵀ − I||² = ||MᵀM||² − 2||M||² + n``), so cost is ``min(n, d)²``.

    Rank-1 variables (biases, BatchNorm scales) hold one number per filter, which has no direction
    to decorrelate: their penalty is 0.

    Args:
      kernel: tensor or (live) variable; gradients flow to it.
      filter_axis: see :func:`filter_matrix`.
      normalize: ℓ2-normalise the rows first (the default; otherwise norms are pulled to 1 too).
      depthwise: see :func:`filter_matrix`. With multiplier 1 this equals ``filter_axis=-2``.
      epsilon: > 0, the smoothing of the row norms.

    Returns:
      A float32 scalar.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0 (it keeps zero filters finite), got {epsilon}.")
    if len(kernel.shape) == 1 and not depthwise:
        return tf.constant(0.0)
    m = filter_matrix(kernel, filter_axis, depthwise=depthwise)
    if normalize:
        m = m * tf.math.rsqrt(tf.reduce_sum(tf.square(m), axis=1, keepdims=True) + epsilon)
    n, d = m.shape
    if n <= d:
        gram = tf.matmul(m, m, transpose_b=True)
        return tf.reduce_sum(tf.square(gram - tf.eye(n)))
    gram = tf.matmul(m, m, transpose_a=True)
    return tf.reduce_sum(tf.square(gram)) - 2.0 * tf.reduce_sum(tf.square(m)) + float(n)


@keras.saving.register_keras_serializable(package="afp_tf")
class OrthogonalRegularizer(keras.regularizers.Regularizer):
    """``factor · ||M̂ M̂ᵀ − I||_F²`` over the filters of a dense, conv or depthwise kernel.

    Unlike ``keras.regularizers.OrthogonalRegularizer`` (rank-2 only) this accepts Dense
    ``(in, out)``, Conv1D/2D/3D ``(..., c_in, c_out)``, depthwise ``(..., c_in, mult)`` and
    transposed-conv ``(..., out, in)`` kernels. See :func:`orthogonality_penalty`.

    Args:
      factor: the strength ``β`` (>= 0).
      mode: ``"filters"`` (filters on the last axis: Dense, Conv), ``"depthwise"`` (rows are the
        ``c_in · mult`` individual spatial filters of ``kh·kw`` weights each: orthogonalising only
        the ``mult`` filters of one input channel would be a no-op for the common multiplier 1)
        or ``"transpose"`` (filters on axis -2: Conv1D/2D/3DTranspose).
      normalize: ℓ2-normalise the filters first.
      epsilon: smoothing of the row norms (> 0).
    """

    def __init__(
        self,
        factor: float = 0.01,
        mode: str = "filters",
        normalize: bool = True,
        epsilon: float = 1e-4,
    ):
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}.")
        if not factor >= 0:
            raise ValueError(f"factor must be >= 0, got {factor}.")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        self.factor = float(factor)
        self.mode = mode
        self.normalize = bool(normalize)
        self.epsilon = float(epsilon)

    def __call__(self, x):
        penalty = orthogonality_penalty(
            x,
            _MODE_AXIS.get(self.mode, -1),
            normalize=self.normalize,
            depthwise=self.mode == "depthwise",
            epsilon=self.epsilon,
        )
        return self.factor * penalty

    def get_config(self) -> dict:
        return {
            "factor": self.factor,
            "mode": self.mode,
            "normalize": self.normalize,
            "epsilon": self.epsilon,
        }


def orthogonality_loss(
    model: keras.Model, beta: float, analysis: surgery.ModelAnalysis | None = None
) -> Callable[[], tf.Tensor]:
    """``beta`` times the orthogonality penalty of every prunable group's producer kernels."""
    analysis = analysis or surgery.analyze(model)
    pairs = [pair for group in analysis.prunable for pair in analysis.filter_weights(group)]

    def loss() -> tf.Tensor:
        if not pairs:
            return tf.constant(0.0)
        return beta * tf.add_n([orthogonality_penalty(v, filter_axis=a) for v, a in pairs])

    return loss


class TargetedL1Penalty:
    """``λ · Σ_groups Σ_(var, axis) Σ_f mask[f] · ||var[..., f, ...]||_1`` on live variables.

    ``λ`` and one float32 mask per group (1 for candidates, 0 otherwise) are non-trainable
    ``tf.Variable``s, created in the caller's current variable scope: construct the penalty inside
    ``strategy.scope()`` when training under ``tf.distribute``. Changing candidates or strength
    only assigns to them, so a ``tf.function`` calling the penalty is not retraced; it can be
    called inside ``strategy.run``.

    Args:
      weights: group name -> ``(variable, axis)`` pairs: the live variables producing the group's
        filters and the axis along which index ``i`` is filter ``i`` (as returned by
        ``afp_tf.surgery.filter_weights``). All producers of a group must agree on its size.
    """

    def __init__(self, weights: Mapping[str, Sequence[tuple[Any, int]]]):
        self.weights = {name: list(pairs) for name, pairs in weights.items()}
        self.sizes: dict[str, int] = {}
        for name, pairs in self.weights.items():
            sizes = {int(v.shape[a]) for v, a in pairs}
            if len(sizes) != 1:
                raise ValueError(
                    f"Group {name!r}: its producers must have the same size along their filter "
                    f"axes, got {sorted(sizes) or 'no producers'} "
                    f"({[(getattr(v, 'path', getattr(v, 'name', '?')), a) for v, a in pairs]})."
                )
            self.sizes[name] = sizes.pop()
        self.strength = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="afp_l1_strength")
        self.masks = {
            name: tf.Variable(
                tf.zeros([size]), trainable=False, dtype=tf.float32, name=f"afp_l1_mask_{i}"
            )
            for i, (name, size) in enumerate(self.sizes.items())
        }

    def set_candidates(self, candidates: Mapping[str, Sequence[int]]) -> None:
        """Marks ``candidates`` (group -> filter indices) for the penalty; all others unmarked."""
        unknown = sorted(set(candidates) - set(self.masks))
        if unknown:
            raise ValueError(
                f"Unknown channel groups {unknown}; the penalty was built for {sorted(self.masks)}."
            )
        for name, mask in self.masks.items():
            values = np.zeros(self.sizes[name], np.float32)
            idx = np.asarray(list(candidates.get(name, ())), dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.sizes[name]):
                raise ValueError(
                    f"Group {name!r} has {self.sizes[name]} filters; candidate indices "
                    f"{idx.tolist()} are out of range."
                )
            values[idx] = 1.0
            mask.assign(values)

    def set_strength(self, strength: float) -> None:
        """Sets ``λ`` (>= 0, finite)."""
        if not (np.isfinite(strength) and strength >= 0):
            raise ValueError(f"The ℓ1 strength must be finite and >= 0, got {strength}.")
        self.strength.assign(float(strength))

    def clear(self) -> None:
        """No candidates and ``λ = 0``."""
        self.set_candidates({})
        self.strength.assign(0.0)

    def __call__(self) -> tf.Tensor:
        terms = [
            self.term(var, name, axis)
            for name, pairs in self.weights.items()
            for var, axis in pairs
        ]
        if not terms:
            return tf.constant(0.0)
        return tf.convert_to_tensor(self.strength) * tf.add_n(terms)

    def term(self, x, group: str, axis: int) -> tf.Tensor:
        """``Σ_f mask[f] · ||x[..., f, ...]||_1`` for one producer ``x`` of ``group`` (no ``λ``)."""
        l1 = tf.abs(tf.cast(tf.convert_to_tensor(x), tf.float32))
        rank = l1.shape.rank
        l1 = tf.reduce_sum(l1, axis=[i for i in range(rank) if i != axis % rank])
        return tf.tensordot(l1, tf.convert_to_tensor(self.masks[group]), axes=1)


class TargetedFade:
    """Scales the candidates of ``penalty`` (its masks and weights) linearly to zero.

    Called after every compiled training call with the steps it ran (``Trainer``'s
    ``after_train_calls``), it multiplies each candidate's weights by ``1 − n / left``, ``left``
    the steps still to go: a candidate the optimiser leaves alone is at ``1 − t / steps`` of its
    start after step ``t``, and every candidate is exactly zero after ``steps`` steps (and stays
    so), whatever the optimiser did in between. Unlike an ℓ1 term, how fast it shrinks does not
    depend on the learning rate, the optimiser or a BatchNorm after the filter.

    Args:
      penalty: gives the weights (group -> ``(variable, axis)``) and the candidate masks.
      steps: training steps to reach zero, >= 1.
    """

    def __init__(self, penalty: TargetedL1Penalty, steps: int):
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"A fade needs steps >= 1, got {steps!r}.")
        self.penalty = penalty
        self.left = steps
        self._scale = tf.function(self._scale_all)

    def __call__(self, steps: int) -> None:
        fraction = 1.0 if steps >= self.left else steps / self.left
        self.left = max(self.left - steps, 0)
        self._scale(tf.constant(fraction, tf.float32))

    def _scale_all(self, fraction: tf.Tensor) -> None:
        for name, pairs in self.penalty.weights.items():
            keep = 1.0 - fraction * tf.convert_to_tensor(self.penalty.masks[name])
            for var, axis in pairs:
                rank = len(var.shape)
                shape = [-1 if i == axis % rank else 1 for i in range(rank)]
                var.assign(var * tf.cast(tf.reshape(keep, shape), var.dtype))
