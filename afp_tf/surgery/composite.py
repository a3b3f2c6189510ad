"""Composite layers: subclassed layers whose ``call`` composes other layers.

Surgery looks inside such a layer by *tracing* it: its ``call`` runs once on symbolic
``keras.Input`` tensors shaped like the call's inputs, and the layers and ``keras.ops`` it
calls are recorded as a functional graph. The walk goes through that graph as through a nested
model, and the rebuild turns the composite into a plain nested functional model of the same
name (loadable without the composite's class). A ``call`` that cannot run on symbolic tensors
(TensorFlow ops, Python branching on values) leaves the layer a boundary, with the reason.
"""

import keras

from afp_tf.surgery.keras_internals import Functional, sublayers
from afp_tf.surgery.rules import Boundary


def is_composite(op) -> bool:
    """Whether ``op`` is a layer without a rule that holds other layers (a tracing candidate)."""
    return isinstance(op, keras.layers.Layer) and bool(sublayers(op))


def trace(op: keras.layers.Layer, node) -> Functional:
    """The functional graph of one call of composite layer ``op`` (node: that call).

    Raises:
        Boundary: when ``op.call`` cannot be traced on symbolic tensors, or gives a graph
            that is not a function of its tensor inputs alone.
    """
    inputs = [
        keras.Input(batch_shape=x.shape, dtype=x.dtype, name=f"{op.name}_input_{i}")
        for i, x in enumerate(node.input_tensors)
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
