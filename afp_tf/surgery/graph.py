"""Walking the nodes of a functional Keras graph, nested sub-models included."""

from collections.abc import Iterator

import keras

from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.keras_internals import Functional, nodes_by_depth, sequential_graph


def as_functional(model: keras.Model) -> Functional:
    """The functional graph behind ``model`` (a Functional, or a built Sequential).

    Raises:
        SurgeryError: for a subclassed model or an unbuilt Sequential.
    """
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Sequential):
        graph = sequential_graph(model)
        if graph is None:
            raise SurgeryError(
                f"Sequential model '{model.name}' has no graph yet: give it a keras.Input "
                "as first layer (or build it) before surgery."
            )
        return graph
    raise SurgeryError(
        f"Model '{getattr(model, 'name', model)}' of class {type(model).__name__} is subclassed "
        "(its call() is Python code), so its channel flow cannot be traced. Rewrite it with the "
        "functional API (keras.Model(inputs, outputs)) before surgery."
    )


def is_submodel(op) -> bool:
    """Whether ``op`` is a model used as a layer whose graph surgery descends into."""
    return isinstance(op, Functional) or (
        isinstance(op, keras.Sequential) and sequential_graph(op) is not None
    )


def nodes_in_order(graph: Functional) -> Iterator:
    """The non-input nodes of ``graph`` in topological order (deepest first)."""
    by_depth = nodes_by_depth(graph)
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is not None and not node.is_input:
                yield node


def join(prefix: str, name: str) -> str:
    """The path of layer ``name`` inside a sub-model at ``prefix`` ("" at top level)."""
    return f"{prefix}/{name}" if prefix else name


def get_layer(model: keras.Model, path: str) -> keras.layers.Layer:
    """The layer at ``path``: a layer name, or "outer/inner" inside nested sub-models.

    Raises:
        SurgeryError: when a part of the path names no layer.
    """
    layer = model
    for part in path.split("/"):
        try:
            layer = layer.get_layer(part)
        except (ValueError, AttributeError) as err:
            raise SurgeryError(f"No layer '{part}' (of path '{path}') in '{layer.name}'.") from err
    return layer
