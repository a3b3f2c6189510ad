"""Composite layers: subclassed layers whose ``call`` composes other layers.

Surgery looks inside such a layer by *tracing* it: its ``call`` runs once on symbolic
``keras.Input`` tensors shaped like the call's inputs, and the layers and ``keras.ops`` it
calls are recorded as a functional graph. The walk goes through that graph as through a nested
model, and the rebuild turns the composite into a plain nested functional model of the same
name (loadable without the composite's class). A ``call`` that cannot run on symbolic tensors
(TensorFlow ops, Python branching on values) leaves the layer a boundary, with the reason.
"""

import keras

from afp_tf.surgery.keras_internals import (
    Functional,
    inbound_nodes,
    is_builtin_layer,
    sublayers,
)
from afp_tf.surgery.rules import Boundary


def own_weights(op: keras.layers.Layer) -> list:
    """The variables ``op`` holds itself, not through one of its sub-layers."""
    inner = {id(v) for layer in sublayers(op) for v in layer.weights}
    return [v for v in op.weights if id(v) not in inner]


def check_traceable(op) -> None:
    """Raises Boundary unless ``op`` is a layer whose variables all belong to sub-layers.

    A layer using variables of its own in ``call`` (a per-channel scale, say) would carry
    them into the traced graph as constants: surgery could neither slice nor save them.
    """
    if not isinstance(op, keras.layers.Layer) or is_builtin_layer(op):  # primitives
        raise Boundary(
            "no surgery rule is registered for its class (see afp_tf.surgery.register_rule)"
        )
    mine = own_weights(op)
    if mine:
        names = ", ".join(v.path for v in mine[:3])
        raise Boundary(
            f"no surgery rule is registered for its class and it holds weights of its own "
            f"({names}), so it is not looked inside (see afp_tf.surgery.register_rule)"
        )


def _common_shapes(op, node) -> list[tuple]:
    """The input shapes of ``node``, with None where another call of ``op`` differs (a head
    shared by the levels of a feature pyramid sees several spatial sizes)."""
    shapes = [tuple(x.shape) for x in node.input_tensors]
    for other in inbound_nodes(op):
        others = [tuple(x.shape) for x in other.input_tensors]
        if [len(a) for a in others] != [len(b) for b in shapes]:
            continue
        shapes = [
            tuple(d if d == e else None for d, e in zip(a, b, strict=True))
            for a, b in zip(shapes, others, strict=True)
        ]
    return shapes


def trace(op: keras.layers.Layer, node) -> Functional:
    """The functional graph of one call of composite layer ``op`` (node: that call).

    Raises:
        Boundary: when ``op`` holds weights of its own, when ``op.call`` cannot be traced on
            symbolic tensors, or when it gives other outputs than the layer.
    """
    check_traceable(op)
    shapes = _common_shapes(op, node)
    inputs = [
        keras.Input(batch_shape=shape, dtype=x.dtype, name=f"{op.name}_input_{i}")
        for i, (x, shape) in enumerate(zip(node.input_tensors, shapes, strict=True))
    ]
    symbols = {id(x): y for x, y in zip(node.input_tensors, inputs, strict=True)}
    args, kwargs = node.arguments.fill_in(symbols)
    kwargs.pop("training", None)  # left to the enclosing model's call, as for any layer
    try:
        outputs = op.call(*args, **kwargs)
        flat = keras.tree.flatten(outputs)
        if len(flat) != len(node.outputs) or not all(
            isinstance(y, keras.KerasTensor) for y in flat
        ):
            raise Boundary("its traced call() gives other outputs than the layer")
        single = len(flat) == 1
        graph = keras.Model(
            inputs[0] if len(inputs) == 1 else inputs, flat[0] if single else flat, name=op.name
        )
    except Boundary:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of user code means "not traceable"
        message = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise Boundary(
            f"it is a composite layer whose call() cannot be traced on symbolic tensors "
            f"({type(err).__name__}: {message})"
        ) from err
    return graph
