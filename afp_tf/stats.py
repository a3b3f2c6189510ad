"""Parameters and multiply-accumulates (MACs) of a Keras model, total and per layer.

Convention (the pruning literature's): one multiply-add is one MAC, and FLOPs = 2 × MACs.
MACs are counted for the layers that do the arithmetic that filter pruning removes:

- ``Conv1D/2D/3D`` (``groups`` included): output positions × kernel size;
- ``DepthwiseConv1D/2D``: output positions × kernel size (``depth_multiplier`` included);
- ``SeparableConv1D/2D``: depthwise plus pointwise part, on the output positions;
- ``Conv1D/2D/3DTranspose``: input positions × kernel size;
- ``Dense``: kernel size × every leading dim of its input except the batch.

Bias additions, BatchNormalization, activations, pooling, merges (``Add`` etc.), reshapes and
any layer without a rule count 0 MACs. ``register_mac_rule`` adds rules for other layers.
Nested functional/Sequential sub-models and composite layers (subclassed layers made of
layers, traced as in :mod:`afp_tf.surgery.composite`) are walked and their layers listed as
``outer/inner``.
Shapes are those a layer actually sees in the graph, propagated from the model inputs; a layer
called several times counts the MACs of all its calls. The batch dimension is excluded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence

import keras

from afp_tf.surgery import composite
from afp_tf.surgery.graph import is_submodel, nodes_in_order
from afp_tf.surgery.keras_internals import Functional, outputs_struct, sequential_graph
from afp_tf.surgery.rules import Boundary

MacRule = Callable[[keras.layers.Layer, Sequence, Sequence], int]

_MAC_RULES: dict[type, MacRule] = {}


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """One layer: ``name`` is its path (``outer/inner`` inside sub-models)."""

    name: str
    class_name: str
    params: int
    macs: int
    output_shape: tuple  # without batch, of one call (the first walked); tuple of shapes if several

    @property
    def flops(self) -> int:
        """2 × MACs."""
        return 2 * self.macs


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Totals and the per-layer breakdown, in graph order."""

    params: int
    trainable_params: int
    macs: int
    per_layer: tuple[LayerStats, ...]

    @property
    def flops(self) -> int:
        """2 × MACs (one multiply and one add per MAC)."""
        return 2 * self.macs

    def to_dict(self) -> dict:
        """A JSON-ready dict with totals, ``flops`` and a list of per-layer dicts."""
        return {
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops": self.flops,
            "per_layer": [
                {**dataclasses.asdict(s), "output_shape": _as_lists(s.output_shape)}
                for s in self.per_layer
            ],
        }

    def summary(self) -> str:
        """A readable text table; see ``format_table``."""
        return format_table(self)


def register_mac_rule(*layer_classes: type) -> Callable[[MacRule], MacRule]:
    """Decorator registering ``rule(layer, input_shapes, output_shapes) -> MACs``.

    Shapes include the batch dimension (``None``). The rule applies to subclasses too; the
    most specific registered class wins.
    """

    def decorator(rule: MacRule) -> MacRule:
        for cls in layer_classes:
            _MAC_RULES[cls] = rule
        return rule

    return decorator


def _positions(shape: Sequence, data_format: str) -> int:
    """Spatial positions of a conv input/output shape (batch and channel axes dropped)."""
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    return math.prod(spatial)


def _size(variable) -> int:
    return math.prod(variable.shape)


@register_mac_rule(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
@register_mac_rule(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
def _conv_macs(layer, inputs, outputs) -> int:
    del inputs
    return _positions(outputs[0], layer.data_format) * _size(layer.kernel)


@register_mac_rule(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
def _separable_macs(layer, inputs, outputs) -> int:
    del inputs
    kernels = _size(layer.depthwise_kernel) + _size(layer.pointwise_kernel)
    return _positions(outputs[0], layer.data_format) * kernels


@register_mac_rule(
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose
)
def _transpose_macs(layer, inputs, outputs) -> int:
    del outputs
    return _positions(inputs[0], layer.data_format) * _size(layer.kernel)


@register_mac_rule(keras.layers.Dense)
def _dense_macs(layer, inputs, outputs) -> int:
    del outputs
    return math.prod(inputs[0][1:-1]) * _size(layer.kernel)


def _rule_for(layer) -> MacRule | None:
    for cls in type(layer).__mro__:
        if cls in _MAC_RULES:
            return _MAC_RULES[cls]
    return None


def _graph(model) -> Functional:
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Sequential) and sequential_graph(model) is not None:
        return sequential_graph(model)
    raise TypeError(
        f"model_stats needs a functional or built Sequential model; '{model.name}' "
        f"({type(model).__name__}) has no layer graph. Build it with keras.Input first."
    )


class _Counter:
    """Walks a graph with propagated shapes and accumulates per-layer records."""

    def __init__(self):
        self.records: dict[str, dict] = {}
        self.traces: dict[int, Functional | None] = {}

    def run(self, model, inputs: list, prefix: str = "") -> list:
        graph = _graph(model)
        tensors = {id(ref): x for ref, x in zip(graph.inputs, inputs, strict=True)}
        for node in nodes_in_order(graph):
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = self._call(node, args, kwargs, prefix)
            for ref, x in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
                tensors[id(ref)] = x
        return [tensors[id(ref)] for ref in graph.outputs]

    def _composite(self, op, node) -> Functional | None:
        """The traced graph of a composite layer without a MAC rule (see surgery), or None."""
        if id(op) not in self.traces:
            self.traces[id(op)] = None
            if _rule_for(op) is None:
                with contextlib.suppress(Boundary):  # else: a layer without MACs
                    self.traces[id(op)] = composite.trace(op, node)
        return self.traces[id(op)]

    def _call(self, node, args, kwargs, prefix: str):
        op = node.operation
        path = f"{prefix}/{op.name}" if prefix else op.name
        if is_submodel(op):
            inputs = args[0] if args else kwargs["inputs"]
            outputs = self.run(op, keras.tree.flatten(inputs), path)
            return keras.tree.pack_sequence_as(outputs_struct(_graph(op)), outputs)
        inner = self._composite(op, node)
        if inner is not None:
            inputs = [x for x in keras.tree.flatten((args, kwargs)) if _is_tensor(x)]
            outputs = self.run(inner, inputs, path)
            return outputs[0] if len(outputs) == 1 else outputs
        outputs = op.compute_output_spec(*args, **kwargs)
        in_shapes = [tuple(x.shape) for x in keras.tree.flatten((args, kwargs)) if _is_tensor(x)]
        out_shapes = [tuple(x.shape) for x in keras.tree.flatten(outputs)]
        rule = _rule_for(op)
        macs = 0
        if rule is not None:
            unknown = [s for s in in_shapes + out_shapes if None in s[1:]]
            if unknown:
                raise ValueError(
                    f"Layer '{path}' sees shape {unknown[0]} with unknown dimensions, so its MACs "
                    "are undefined: pass model_stats(model, input_shape=...) with a full shape."
                )
            macs = int(rule(op, in_shapes, out_shapes))
        record = self.records.get(path)
        if record is None:
            shapes = tuple(s[1:] for s in out_shapes)
            self.records[path] = {
                "name": path,
                "class_name": type(op).__name__,
                "params": op.count_params() if isinstance(op, keras.layers.Layer) else 0,
                "macs": macs,
                "output_shape": shapes[0] if len(shapes) == 1 else shapes,
            }
        else:
            record["macs"] += macs
        return outputs


def _is_tensor(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def model_stats(model: keras.Model, input_shape: Sequence[int] | None = None) -> ModelStats:
    """Parameters and MACs of ``model``, total and per layer (see the module docstring).

    Args:
        model: a functional or built Sequential model (nested sub-models allowed).
        input_shape: shape of one example without batch, for a single-input model whose
            graph has unknown dimensions (e.g. ``(None, None, 3)`` inputs); default: the
            model's own input shapes.

    Raises:
        TypeError: for a subclassed or unbuilt model.
        ValueError: if a counted layer's shape is not fully known.
    """
    graph = _graph(model)
    if input_shape is None:
        inputs = list(graph.inputs)
    elif len(graph.inputs) == 1:
        ref = graph.inputs[0]
        inputs = [keras.KerasTensor((None, *input_shape), dtype=ref.dtype)]
    else:
        raise ValueError(
            f"input_shape is only for single-input models; '{model.name}' has "
            f"{len(graph.inputs)} inputs."
        )
    counter = _Counter()
    counter.run(model, inputs)
    per_layer = tuple(LayerStats(**r) for r in counter.records.values())
    return ModelStats(
        params=int(model.count_params()),
        trainable_params=sum(math.prod(w.shape) for w in model.trainable_weights),
        macs=sum(s.macs for s in per_layer),
        per_layer=per_layer,
    )


def format_table(stats: ModelStats) -> str:
    """A text table: one row per layer (name, class, output shape, params, MACs), then totals."""
    rows = [("layer", "class", "output shape", "params", "MACs")]
    rows += [
        (s.name, s.class_name, str(s.output_shape), f"{s.params:,}", f"{s.macs:,}")
        for s in stats.per_layer
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]

    def line(row) -> str:
        left = [c.ljust(w) for c, w in zip(row[:3], widths[:3], strict=True)]
        right = [c.rjust(w) for c, w in zip(row[3:], widths[3:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(rows[0]))
    footer = (
        f"params: {stats.params:,} (trainable {stats.trainable_params:,})  "
        f"MACs: {stats.macs:,}  FLOPs (2×MACs): {stats.flops:,}"
    )
    return "\n".join([line(rows[0]), rule, *map(line, rows[1:]), rule, footer])


def _as_lists(shape):
    return [_as_lists(s) for s in shape] if isinstance(shape, tuple) else shape
