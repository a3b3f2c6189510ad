"""The weights a pruning round works on: what importance is measured on, what a round shrinks,
and the orthogonality loss over the filters (docs/method.md, steps 2, 3 and 5)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from afp_tf import surgery
from afp_tf.method import regularizers


def measured(analysis: surgery.ModelAnalysis, measure: str) -> tuple[dict, dict]:
    """Per prunable group, the weights its importance is measured on and those a round shrinks.

    ``measure="outputs"``: importance from the group's BatchNorm scale and offset where it has
    any (they, not the kernels before them, set a channel's output), shrinking those and the
    kernels; ``"kernels"``: the filter kernels for both.
    """
    importance, shrunk = {}, {}
    for g in analysis.prunable:
        kernels = analysis.filter_weights(g)
        scales = analysis.scale_weights(g) if measure == "outputs" else []
        importance[g.name] = scales or kernels
        shrunk[g.name] = kernels + scales
    return importance, shrunk


def orthogonality_loss(
    model: keras.Model, beta: float, analysis: surgery.ModelAnalysis | None = None
) -> Callable[[], tf.Tensor]:
    """``beta`` times the orthogonality penalty of every prunable group's producer kernels."""
    analysis = analysis or surgery.analyze(model)
    pairs = [pair for group in analysis.prunable for pair in analysis.filter_weights(group)]

    def loss() -> tf.Tensor:
        if not pairs:
            return tf.constant(0.0)
        return beta * tf.add_n(
            [regularizers.orthogonality_penalty(v, filter_axis=a) for v, a in pairs]
        )

    return loss
