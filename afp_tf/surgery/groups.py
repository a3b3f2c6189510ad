"""Channel groups of a model and the variables holding their filters (thin public wrappers).

The work is done once per model by :func:`afp_tf.surgery.analysis.analyze`; these functions
take its result through ``analysis=`` to avoid walking the same model again.
"""

from typing import Any

import keras

from afp_tf.surgery.analysis import ChannelGroup, ModelAnalysis, aligned, analyze
from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.graph import get_layer
from afp_tf.surgery.rules import rule_for

__all__ = ["ChannelGroup", "filter_weights", "find_channel_groups"]


def checked(model: keras.Model, analysis: ModelAnalysis | None) -> ModelAnalysis:
    """``analysis`` if it is ``model``'s, a fresh one if None; SurgeryError otherwise."""
    if analysis is None:
        return analyze(model)
    if analysis.model is not model:
        raise SurgeryError(
            f"The analysis passed is of model '{analysis.model.name}', not of '{model.name}': "
            "analyse each model (surgery.analyze) before using it."
        )
    return analysis


def find_channel_groups(
    model: keras.Model, *, analysis: ModelAnalysis | None = None
) -> list[ChannelGroup]:
    """The channel groups of a functional model, in topological order of their first producer.

    Raises:
        SurgeryError: for a subclassed model.
    """
    return checked(model, analysis).groups


def filter_weights(
    model: keras.Model, group: ChannelGroup | str, *, analysis: ModelAnalysis | None = None
) -> list[tuple[Any, int]]:
    """The live variables holding a prunable group's filters (see
    :meth:`ModelAnalysis.filter_weights`, which this is without an analysis at hand).

    Raises:
        SurgeryError: for an unknown or unprunable group.
    """
    if analysis is None and isinstance(group, ChannelGroup) and group.prunable:
        try:  # a group of a plain functional graph: its layers are found by path
            layers = [get_layer(model, p) for p in aligned(group)]
            return [pair for layer in layers for pair in rule_for(layer).filter_weights(layer)]
        except SurgeryError:
            pass  # a layer inside a composite layer: the analysis knows where it is
    return checked(model, analysis).filter_weights(group)
