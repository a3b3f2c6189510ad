"""Channel groups: which output filters of a functional model must be removed together.

Every producer (conv, dense, ...) creates a *channel space*, one integer id per filter.
Walking the graph in topological order, each layer's rule maps the ids of its input channels
to its output channels; element-wise merges unify ids (a union-find), concatenation joins
them with offsets, layers without a rule block every id that reaches them. A channel group
is a connected set of spaces; its channel ``i`` is channel ``i`` of its first producer.
"""

import dataclasses
from typing import Any

import keras
import numpy as np

from afp_tf.surgery import builtin  # noqa: F401 - registers the built-in rules
from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.graph import as_functional, get_layer, is_submodel, join, nodes_in_order
from afp_tf.surgery.rules import Boundary, Labels, rule_for


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that can only be removed together.

    Attributes:
        name: path of the group's first producer in topological order (stable across surgery).
        size: number of channels.
        producers: paths of the layers whose output filters are these channels
            ("outer/inner" for a layer inside a nested sub-model).
        prunable: whether channels of this group may be removed.
        reason: for an unprunable group, the layer that blocks it and why.
        passthrough: paths of depthwise layers the channels pass through, whose per-channel
            kernel slices belong to the filters too.
    """

    name: str
    size: int
    producers: tuple[str, ...]
    prunable: bool
    reason: str | None = None
    passthrough: tuple[str, ...] = ()


@dataclasses.dataclass
class _Space:
    name: str
    path: str
    start: int
    size: int


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.fromiter((self.find(i) for i in range(len(self.parent))), np.int64)


class _Walk:
    """The graph walk; also the ``Context`` handed to rules (see ``rules.Context``)."""

    def __init__(self):
        self.count = 0
        self.spaces: list[_Space] = []
        self.space_labels: dict[tuple[str, int], Labels] = {}
        self.edges: list[tuple[Labels, Labels]] = []
        self.blocks: list[tuple[Labels, str]] = []
        self.passthroughs: list[tuple[str, Labels]] = []
        self.labels: dict[int, Labels | None] = {}
        self.first_inputs: dict[int, list] = {}
        self.boundary_calls: dict[str, int] = {}
        self.path = ""
        self.input_shapes: list[tuple] = []
        self.output_shapes: list[tuple] = []
        self.node = None  # the layer call being propagated

    # -- Context --
    def new_space(self, size: int, output: int = 0) -> Labels:
        key = (self.path, output)
        if key not in self.space_labels:
            self.space_labels[key] = self._space(
                f"{self.path}:{output}" if output else self.path, size
            )
        return self.space_labels[key]

    def _space(self, name: str, size: int) -> Labels:
        """A fresh space of ``size`` channel ids owned by the current layer."""
        self.spaces.append(_Space(name, self.path, self.count, size))
        self.count += size
        return np.arange(self.count - size, self.count)

    def unify(self, a: Labels, b: Labels) -> None:
        self.edges.append((a, b))

    def block(self, labels: Labels, reason: str) -> None:
        self.blocks.append((labels, reason))

    @property
    def constants(self) -> list:
        """The call's arguments that are not symbolic tensors (scalars, arrays, flags)."""
        args = keras.tree.flatten((self.node.arguments.args, self.node.arguments.kwargs))
        return [a for a in args if not isinstance(a, keras.KerasTensor)]

    def passthrough(self, labels: Labels) -> None:
        self.passthroughs.append((self.path, labels))

    # -- walk --
    def run(self, model: keras.Model) -> None:
        graph = as_functional(model)
        for tensor in graph.inputs:
            name = tensor._keras_history.operation.name
            self.path, labels = name, None
            if _has_channels(tensor.shape):
                labels = self.new_space(tensor.shape[-1])
                self.block(labels, f"it comes from model input '{name}'")
            self.labels[id(tensor)] = labels
        self.walk(graph, "")
        for tensor in graph.outputs:
            labels = self.labels.get(id(tensor))
            if labels is not None:
                name = tensor._keras_history.operation.name
                self.block(labels, f"it reaches the model output of '{name}'")

    def walk(self, graph, prefix: str) -> None:
        for node in nodes_in_order(graph):
            if any(id(x) not in self.labels for x in node.input_tensors):
                continue  # not computable from the model inputs
            op = node.operation
            self.path = join(prefix, op.name)
            self.input_shapes = [x.shape for x in node.input_tensors]
            self.output_shapes = [y.shape for y in node.outputs]
            self.node = node
            inputs = [self.labels[id(x)] for x in node.input_tensors]
            rule = rule_for(op)
            if is_submodel(op) or getattr(rule, "consistent_calls", False):
                self._tie_calls(op, inputs)
            if is_submodel(op):
                outputs = self._submodel(op, inputs, self.path)
            else:
                outputs = self._propagate(op, rule, inputs)
            for tensor, labels in zip(node.outputs, outputs, strict=True):
                self.labels[id(tensor)] = labels if _has_channels(tensor.shape) else None

    def _tie_calls(self, op, inputs: list) -> None:
        """A layer called again must lose the same channels on every call."""
        first = self.first_inputs.setdefault(id(op), inputs)
        if first is inputs:
            return
        for a, b in zip(first, inputs, strict=True):
            if a is None or b is None:
                continue
            if len(a) == len(b):
                self.unify(a, b)
            else:
                reason = f"shared layer '{self.path}' is called on different channel counts"
                self.block(a, reason)
                self.block(b, reason)

    def _submodel(self, op, inputs: list, path: str) -> list:
        inner = as_functional(op)
        for tensor, labels in zip(inner.inputs, inputs, strict=True):
            self.labels[id(tensor)] = labels
        self.walk(inner, path)
        return [self.labels[id(t)] for t in inner.outputs]

    def _state(self) -> tuple:
        lists = (self.spaces, self.edges, self.blocks, self.passthroughs)
        return self.count, set(self.space_labels), tuple(len(x) for x in lists)

    def _restore(self, state: tuple) -> None:
        self.count, keys, sizes = state
        for key in set(self.space_labels) - keys:
            del self.space_labels[key]
        for items, size in zip(
            (self.spaces, self.edges, self.blocks, self.passthroughs), sizes, strict=True
        ):
            del items[size:]

    def _propagate(self, op, rule, inputs: list) -> list:
        kind = type(op).__name__
        if rule is None:
            why = "no surgery rule is registered for its class (see afp_tf.surgery.register_rule)"
        else:
            saved = self._state()
            try:
                outputs = rule.propagate(op, inputs, self)
                _check_counts(outputs, self.output_shapes)
                return outputs
            except Boundary as err:
                self._restore(saved)  # forget what the rule did before giving up
                why = str(err)
        for labels in inputs:
            if labels is not None:
                self.block(labels, f"it reaches '{self.path}' ({kind}): {why}")
        # A fresh space per call of a boundary: its calls may differ in shape.
        call = self.boundary_calls[self.path] = self.boundary_calls.get(self.path, -1) + 1
        outputs = []
        for i, shape in enumerate(self.output_shapes):
            labels = None
            if _has_channels(shape):
                name = self.path + (f":{i}" if i else "") + (f"@{call}" if call else "")
                labels = self._space(name, shape[-1])
                self.block(labels, f"it is produced by boundary '{self.path}' ({kind}): {why}")
            outputs.append(labels)
        return outputs


def _has_channels(shape: tuple) -> bool:
    return len(shape) >= 2 and shape[-1] is not None


def _check_counts(outputs: list, shapes: list[tuple]) -> None:
    """Raises Boundary unless a rule gave one label array per output, of the right size."""
    if len(outputs) != len(shapes):
        raise Boundary(f"its rule gave channels for {len(outputs)} of {len(shapes)} outputs")
    for labels, shape in zip(outputs, shapes, strict=True):
        if labels is not None and _has_channels(shape) and len(labels) != shape[-1]:
            raise Boundary(f"its rule gave {len(labels)} channels for an output of {shape[-1]}")


@dataclasses.dataclass
class Analysis:
    """The result of one graph walk: groups, and the channel ids of every tensor."""

    groups: list[ChannelGroup]
    labels: dict[int, Labels | None]  # id(KerasTensor) -> channel ids of its last axis
    roots: np.ndarray  # channel id -> canonical id of its coupled channel
    orders: dict[str, np.ndarray]  # group name -> canonical id of each group channel


def analyze(model: keras.Model) -> Analysis:
    """Walks ``model`` and resolves its channel groups."""
    walk = _Walk()
    walk.run(model)
    channels = _UnionFind(walk.count)
    for a, b in walk.edges:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            channels.union(x, y)
    roots = channels.roots()
    coupled = _UnionFind(walk.count)  # roots of channels that share a space
    members: dict[int, list[_Space]] = {}
    for space in walk.spaces:
        r = roots[space.start : space.start + space.size].tolist()
        for x in r[1:]:
            coupled.union(r[0], x)
    for space in walk.spaces:
        members.setdefault(coupled.find(int(roots[space.start])), []).append(space)
    first_block = np.full(walk.count, len(walk.blocks))
    for i, (labels, _) in enumerate(walk.blocks):
        r = roots[labels]
        first_block[r] = np.minimum(first_block[r], i)
    through: dict[int, list[str]] = {}
    for path, labels in walk.passthroughs:
        through.setdefault(coupled.find(int(roots[labels[0]])), []).append((path, labels))
    groups, orders = [], {}
    for key, spaces in members.items():
        group, order = _resolve(spaces, roots, first_block, walk.blocks, through.get(key, []))
        groups.append(group)
        orders[group.name] = order
    return Analysis(groups, walk.labels, roots, orders)


def _resolve(spaces, roots, first_block, blocks, through) -> tuple[ChannelGroup, np.ndarray]:
    first = spaces[0]
    order = roots[first.start : first.start + first.size]
    reason = None
    block = min(int(first_block[roots[s.start : s.start + s.size]].min()) for s in spaces)
    if block < len(blocks):
        reason = blocks[block][1]
    elif len(np.unique(order)) != len(order):
        reason = f"channels of '{first.path}' are coupled to each other"
    else:
        for s in spaces[1:]:
            if not np.array_equal(roots[s.start : s.start + s.size], order):
                reason = (
                    f"channels of '{s.path}' are coupled to those of '{first.path}' only in part "
                    "or in another order (e.g. through a concatenation)"
                )
                break
    passthrough = []
    for path, labels in through:
        if path not in passthrough and np.array_equal(roots[labels], order):
            passthrough.append(path)
    producers = tuple(dict.fromkeys(s.path for s in spaces))
    group = ChannelGroup(
        name=first.name,
        size=len(order),
        producers=producers,
        prunable=reason is None,
        reason=reason,
        passthrough=tuple(passthrough),
    )
    return group, order


def find_channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The channel groups of a functional model, in topological order of their first producer.

    Raises:
        SurgeryError: for a subclassed model.
    """
    return analyze(model).groups


def filter_weights(model: keras.Model, group: ChannelGroup | str) -> list[tuple[Any, int]]:
    """The live variables holding a prunable group's filters, each with its channel axis.

    Includes the output kernel of every producer (Conv/Dense kernel; SeparableConv pointwise
    kernel; ConvTranspose kernel on axis -2) and the kernel of every DepthwiseConv the channels
    pass through (axis -2, the input-channel axis). Biases and BatchNorm parameters are not
    included. Index ``i`` along the axis is channel ``i`` of the group.

    Raises:
        SurgeryError: for an unknown or unprunable group.
    """
    if isinstance(group, str):
        by_name = {g.name: g for g in find_channel_groups(model)}
        if group not in by_name:
            raise SurgeryError(f"No channel group '{group}' in model '{model.name}'.")
        group = by_name[group]
    if not group.prunable:
        raise SurgeryError(f"Channel group '{group.name}' is not prunable: {group.reason}")
    pairs = []
    for path in group.producers + group.passthrough:
        layer = get_layer(model, path)
        pairs.extend(rule_for(layer).filter_weights(layer))
    return pairs
