"""The graph walk that labels every tensor's channels; also the ``Context`` rules see.

Every producer (conv, dense, ...) creates a *channel space*, one integer id per filter.
Walking the graph in topological order, each layer's rule maps the ids of its input channels
to its output channels; element-wise merges unify ids, concatenation joins them with offsets,
layers without a rule block every id that reaches them. Nested functional models are walked
inside; composite layers (subclassed layers made of other layers) are traced and walked inside
too (see :mod:`afp_tf.surgery.composite`).
"""

import keras
import numpy as np

from afp_tf.surgery import composite, ops_rules  # noqa: F401 - ops_rules registers the rules
from afp_tf.surgery.graph import as_functional, is_submodel, join, nodes_in_order
from afp_tf.surgery.keras_internals import producer
from afp_tf.surgery.rules import Boundary, Labels, rule_for


class Space:
    """The channel ids ``start .. start+size-1`` created by the producer at ``path``."""

    __slots__ = ("name", "path", "size", "start")

    def __init__(self, name: str, path: str, start: int, size: int):
        self.name, self.path, self.start, self.size = name, path, start, size


class Walk:
    """The graph walk; also the ``Context`` handed to rules (see ``rules.Context``)."""

    def __init__(self):
        self.count = 0
        self.spaces: list[Space] = []
        self.space_labels: dict[tuple[str, int], Labels] = {}
        self.edges: list[tuple[Labels, Labels]] = []
        self.blocked: list[tuple[Labels, str]] = []  # (channel ids, why they are blocked)
        self.passthroughs: list[tuple[str, Labels]] = []
        self.scalings: list[tuple[str, Labels]] = []
        self.labels: dict[int, Labels | None] = {}
        self.first_inputs: dict[int, list] = {}
        self.boundary_calls: dict[str, int] = {}
        self.traces: dict[int, object] = {}  # id(composite layer) -> its traced graph
        self.untraceable: dict[int, str] = {}  # id(composite layer) -> why not
        self.layers: dict[str, object] = {}  # path -> layer
        self.divisions: list[tuple[Labels, int, str]] = []  # (channel ids, divisions, path)
        self.consumed: list[tuple[str, Labels]] = []  # (consumer path, input channel ids)
        self.path = ""
        self.input_shapes: list[tuple] = []
        self.output_shapes: list[tuple] = []
        self.node = None  # the layer call being propagated
        self.produced = False  # whether that call asked for a channel space

    # -- Context --
    def new_space(self, size: int, output: int = 0) -> Labels:
        self.produced = True
        key = (self.path, output)
        if key not in self.space_labels:
            self.space_labels[key] = self._space(
                f"{self.path}:{output}" if output else self.path, size
            )
        return self.space_labels[key]

    def _space(self, name: str, size: int) -> Labels:
        """A fresh space of ``size`` channel ids owned by the current layer."""
        self.spaces.append(Space(name, self.path, self.count, size))
        self.count += size
        return np.arange(self.count - size, self.count)

    def unify(self, a: Labels, b: Labels) -> None:
        self.edges.append((a, b))

    def block(self, labels: Labels, reason: str) -> None:
        self.blocked.append((labels, reason))

    @property
    def constants(self) -> list:
        """The call's arguments that are not symbolic tensors (scalars, arrays, flags)."""
        args = keras.tree.flatten((self.node.arguments.args, self.node.arguments.kwargs))
        return [a for a in args if not isinstance(a, keras.KerasTensor)]

    def passthrough(self, labels: Labels) -> None:
        self.passthroughs.append((self.path, labels))

    def scales(self, labels: Labels) -> None:
        self.scalings.append((self.path, labels))

    def divide(self, labels: Labels, divisions: int) -> None:
        self.divisions.append((labels, divisions, self.path))

    # -- walk --
    def run(self, model: keras.Model) -> None:
        graph = as_functional(model)
        for tensor in graph.inputs:
            name = producer(tensor).name
            self.path, labels = name, None
            if _has_channels(tensor.shape):
                labels = self.new_space(tensor.shape[-1])
                self.block(labels, f"it comes from model input '{name}'")
            self.labels[id(tensor)] = labels
        self.walk(graph, "")
        for tensor in graph.outputs:
            labels = self.labels.get(id(tensor))
            if labels is not None:
                name = producer(tensor).name
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
            if isinstance(op, keras.layers.Layer):
                self.layers.setdefault(self.path, op)
            inputs = [self.labels[id(x)] for x in node.input_tensors]
            rule = rule_for(op)
            inner = self.inner_graph(op, rule, node)
            if inner is not None or getattr(rule, "consistent_calls", False):
                self._tie_calls(op, inputs)
            if inner is not None:
                outputs = self._submodel(op, inner, inputs, self.path)
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

    def inner_graph(self, op, rule, node):
        """The graph inside a nested model or a traceable composite layer, else None."""
        if is_submodel(op):
            return as_functional(op)
        if rule is not None or id(op) in self.untraceable:
            return None
        if id(op) not in self.traces:
            try:
                self.traces[id(op)] = composite.trace(op, node)
            except Boundary as err:
                self.untraceable[id(op)] = str(err)
                return None
        return self.traces[id(op)]

    def _submodel(self, op, inner, inputs: list, path: str) -> list:
        for tensor, labels in zip(inner.inputs, inputs, strict=True):
            self.labels[id(tensor)] = labels
        self.walk(inner, path)
        return [self.labels[id(t)] for t in inner.outputs]

    def _state(self) -> tuple:
        lists = self._lists()
        return self.count, set(self.space_labels), tuple(len(x) for x in lists)

    def _restore(self, state: tuple) -> None:
        self.count, keys, sizes = state
        for key in set(self.space_labels) - keys:
            del self.space_labels[key]
        for items, size in zip(self._lists(), sizes, strict=True):
            del items[size:]

    def _lists(self) -> tuple:
        return (
            self.spaces,
            self.edges,
            self.blocked,
            self.passthroughs,
            self.scalings,
            self.divisions,
        )

    def _propagate(self, op, rule, inputs: list) -> list:
        kind = type(op).__name__
        if id(op) in self.untraceable:
            why = self.untraceable[id(op)]
        elif rule is None:
            why = "no surgery rule is registered for its class (see afp_tf.surgery.register_rule)"
        else:
            saved = self._state()
            self.produced = False
            try:
                outputs = rule.propagate(op, inputs, self)
                _check_counts(outputs, self.output_shapes)
                if self.produced:  # it makes channels of its own: it consumes its inputs
                    self.consumed.extend((self.path, x) for x in inputs if x is not None)
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
