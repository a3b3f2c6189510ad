"""Channel surgery: find the channel groups of a functional Keras model and remove filters.

Public API:

* :func:`analyze` -> :class:`ModelAnalysis`: one walk of a model's graph, computed once and
  passed on (``groups``, ``group(name)``, ``prunable``, ``consumers(name)``,
  ``filter_weights(name)``); ``find_channel_groups``, ``filter_weights`` and
  ``remove_filters`` take it as ``analysis=`` instead of walking the model again.
* :class:`ChannelGroup`, :func:`find_channel_groups`, :func:`remove_filters`,
  :func:`copy_model` (``remove_filters`` removing nothing), :func:`filter_weights`,
  :func:`get_layer`.
* :func:`register_rule` (with :class:`Rule`, :class:`Keep`, :class:`Boundary`) for new layers.
* :class:`SurgeryError` for every problem of the caller's model or request.
* :mod:`afp_tf.surgery.golden`: the exactness reference (``golden_error``).

Functional and Sequential models are walked node by node, nested models and composite
layers (subclassed layers whose ``call`` traces on symbolic tensors) included. Layers are
named by their path: the name at top level, ``outer/inner`` inside a nested model or a
composite layer. Inside a composite, that is the path of the layer's kernel variable without
``/kernel`` (``block_1_0/block_1_0_conv1``), and it stays the same in the pruned model, where
the composite became a nested functional model of the same name.
"""

from afp_tf.surgery.analysis import ChannelGroup, ModelAnalysis, analyze
from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.graph import get_layer
from afp_tf.surgery.groups import filter_weights, find_channel_groups
from afp_tf.surgery.rebuild import copy_model, remove_filters
from afp_tf.surgery.rules import Boundary, Keep, Rule, register_rule

__all__ = [
    "Boundary",
    "ChannelGroup",
    "Keep",
    "ModelAnalysis",
    "Rule",
    "SurgeryError",
    "analyze",
    "copy_model",
    "filter_weights",
    "find_channel_groups",
    "get_layer",
    "register_rule",
    "remove_filters",
]
