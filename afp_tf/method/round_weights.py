"""The weights a pruning round works on: what importance is measured on and what a round
shrinks (docs/method.md, steps 2 and 3). The orthogonality loss over the filters is
:func:`afp_tf.method.regularizers.orthogonality_loss`."""

from __future__ import annotations

from afp_tf import surgery


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
