"""The per-layer rule interface and the registry that maps layer classes to rules.

A rule tells surgery two things about one layer class: how channels (the last axis) flow
from the layer's inputs to its outputs (:meth:`Rule.propagate`), and how to rebuild the layer
when some channels of its inputs or outputs are removed (:meth:`Rule.rebuild`). A layer class
without a rule is a *boundary*: channel groups that reach it are reported unprunable.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import keras
import numpy as np

Labels = np.ndarray  # one integer channel id per position of a tensor's last axis


class Boundary(Exception):  # noqa: N818 - a signal between rules and the walker, not an error
    """Raised by :meth:`Rule.propagate`: this layer (configured like this) mixes channels."""


class Context(Protocol):
    """What a rule may ask of the graph walk while propagating one layer call."""

    path: str  # path of the layer ("outer/inner" inside sub-models)
    input_shapes: list[tuple]  # shapes of the call's input tensors, batch axis included
    output_shapes: list[tuple]  # shapes of the call's output tensors
    constants: list  # the call's non-tensor arguments (e.g. the 3.0 of ``x + 3.0``)

    def new_space(self, size: int, output: int = 0) -> Labels:
        """Fresh channel ids for filters this layer produces (the same ids on every call)."""

    def unify(self, a: Labels, b: Labels) -> None:
        """Declare channels ``a[i]`` and ``b[i]`` the same channel (removed together)."""

    def block(self, labels: Labels, reason: str) -> None:
        """Make every group with a channel in ``labels`` unprunable, because of ``reason``."""

    def passthrough(self, labels: Labels) -> None:
        """Record that this layer has per-channel filter weights for channels ``labels``."""

    def scales(self, labels: Labels) -> None:
        """Record that this layer sets the scale of channels ``labels`` (e.g. a BatchNorm)."""

    def divide(self, labels: Labels, divisions: int) -> None:
        """Removals from ``labels`` must take the same count from each of ``divisions`` equal
        consecutive divisions."""


@dataclasses.dataclass(frozen=True)
class Keep:
    """Kept positions along the last axis of each input and output tensor of one layer call.

    An entry is ``None`` for a tensor without a channel axis.
    """

    inputs: list[np.ndarray | None]
    outputs: list[np.ndarray | None]


class Rule:
    """Base rule: the layer is channel-wise (identity-like) with no per-channel weights.

    Subclasses override what differs. Attributes:
        consistent_calls: for a layer called more than once, whether the inputs of all calls
            must lose the same channels (true whenever weights or config depend on channels).
    """

    consistent_calls = True

    def propagate(self, layer: keras.layers.Layer, inputs: list, ctx: Context) -> list:
        """Channel labels of each output, given those of each input (``None``: no channels).

        Raises:
            Boundary: when this layer (as configured) mixes channels.
        """
        check_channels_last(layer)
        return [inputs[0]] * len(ctx.output_shapes)

    def rebuild(
        self, layer: keras.layers.Layer, config: dict, weights: list[np.ndarray], keep: Keep
    ) -> tuple[dict, list[np.ndarray]]:
        """The config and weights of the smaller layer (inputs are ``np`` copies to slice)."""
        return config, weights

    def rebuild_op(self, op: Any, keep: Keep, input_shapes: list[tuple]) -> Any:
        """For a ``keras.ops`` operation (not a layer): a callable for the kept channels."""
        return op

    def filter_weights(self, layer: keras.layers.Layer) -> list[tuple[Any, int]]:
        """Live variables holding this layer's output filters, each with its filter axis."""
        return []

    def scale_weights(self, layer: keras.layers.Layer) -> list[tuple[Any, int]]:
        """Live per-channel variables that set the scale of the channels through this layer
        (a BatchNorm's scale and offset), each with its channel axis."""
        return []


_REGISTRY: dict[type, Rule] = {}


def register_rule(layer_cls: type, rule: Rule | None = None) -> Rule | Callable:
    """Registers ``rule`` for layers of exactly class ``layer_cls`` (usable as a decorator).

    A rule subclasses :class:`Rule` and overrides some of:

    * ``propagate(layer, inputs, ctx) -> list[labels]``: ``inputs`` holds, per input tensor,
      an int array with one channel id per position of its last axis (``None`` if it has none).
      Return one such array per output. A producer returns ``ctx.new_space(n)``; a layer whose
      inputs must lose the same channels calls ``ctx.unify(a, b)``; a layer that cannot keep
      some channels calls ``ctx.block(labels, reason)``; a grouped layer calls
      ``ctx.divide(labels, groups)``; a layer that mixes channels raises :class:`Boundary`
      with the reason.
    * ``rebuild(layer, config, weights, keep) -> (config, weights)``: slice the layer's config
      (e.g. ``filters``) and its ``get_weights()`` arrays to the kept positions ``keep.inputs``
      / ``keep.outputs`` (only called when something of this layer is removed); for a
      ``keras.ops`` operation, ``rebuild_op(op, keep, input_shapes) -> callable`` instead.
    * ``filter_weights(layer) -> [(variable, axis)]``: for producers, the live kernels in
      which index ``i`` along ``axis`` is output channel ``i``.
    * ``consistent_calls``: see :class:`Rule`.

    Args:
        layer_cls: the layer class (subclasses are not matched: they may change the maths).
        rule: the rule instance; omit it to use this as a class decorator on the rule.

    Returns:
        The rule (or the decorator).
    """
    if rule is None:

        def decorator(rule_cls):
            register_rule(layer_cls, rule_cls())
            return rule_cls

        return decorator
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an afp_tf.surgery.Rule instance, got {type(rule).__name__}")
    _REGISTRY[layer_cls] = rule
    return rule


def rule_for(layer: Any) -> Rule | None:
    """The rule registered for the exact class of ``layer``, or ``None`` (a boundary)."""
    return _REGISTRY.get(type(layer))


def check_channels_last(layer: keras.layers.Layer) -> None:
    """Raises :class:`Boundary` unless the layer keeps channels on the last axis."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise Boundary("it uses data_format='channels_first' (channels must be the last axis)")


def take(weights: np.ndarray, index: np.ndarray | None, axis: int) -> np.ndarray:
    """``weights`` restricted to ``index`` along ``axis`` (unchanged when ``index`` is None)."""
    return weights if index is None else np.take(weights, index, axis=axis)


def register_many(classes: Sequence[type], rule: Rule) -> None:
    """Registers the same rule for several layer classes."""
    for cls in classes:
        register_rule(cls, rule)
