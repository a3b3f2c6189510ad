"""Channel surgery: find the channel groups of a functional Keras model and remove filters.

Public API: :class:`ChannelGroup`, :func:`find_channel_groups`, :func:`remove_filters`,
:func:`filter_weights`, :func:`get_layer`, :func:`register_rule` (with :class:`Rule`,
:class:`Keep`, :class:`Boundary` to write rules) and :class:`SurgeryError`.
"""

from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.graph import get_layer
from afp_tf.surgery.groups import ChannelGroup, filter_weights, find_channel_groups
from afp_tf.surgery.rebuild import remove_filters
from afp_tf.surgery.rules import Boundary, Keep, Rule, register_rule

__all__ = [
    "Boundary",
    "ChannelGroup",
    "Keep",
    "Rule",
    "SurgeryError",
    "filter_weights",
    "find_channel_groups",
    "get_layer",
    "register_rule",
    "remove_filters",
]
