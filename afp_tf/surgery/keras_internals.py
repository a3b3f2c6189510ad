"""Every use of private Keras API in afp_tf, in one place.

Keras 3 has no public API for walking a functional graph, for the classes of the ``keras.ops``
operations recorded in it, or for deserializing a live layer's config with safe mode off.
Everything afp_tf needs of that lives here; :func:`check` verifies it against the installed
Keras and fails loudly, naming the version, when an internal moved. Tested with Keras 3.15.
"""

from collections.abc import Iterator
from typing import Any

import keras
from keras.src.activations import activations as activation_ops
from keras.src.models.functional import Functional
from keras.src.ops import core as core_ops
from keras.src.ops import nn as nn_ops
from keras.src.ops import numpy as np_ops
from keras.src.saving.serialization_lib import SafeModeScope

__all__ = [
    "Functional",
    "activation_ops",
    "core_ops",
    "SafeModeScope",
    "check",
    "inbound_nodes",
    "inputs_struct",
    "is_builtin_layer",
    "nn_ops",
    "nodes_by_depth",
    "np_ops",
    "outputs_struct",
    "producer",
    "sequential_graph",
    "sublayers",
]


def sequential_graph(model: keras.Sequential) -> Functional | None:
    """The functional graph a built Sequential keeps, or None before it is built."""
    return model._functional


def nodes_by_depth(graph: Functional) -> dict[int, list]:
    """The graph's nodes keyed by depth (0: the nodes producing the outputs)."""
    return graph._nodes_by_depth


def inputs_struct(graph: Functional) -> Any:
    """The nested structure (dict, list, single tensor) of the graph's inputs."""
    return graph._inputs_struct


def outputs_struct(graph: Functional) -> Any:
    """The nested structure of the graph's outputs."""
    return graph._outputs_struct


def producer(tensor: keras.KerasTensor) -> Any:
    """The operation (layer or ``keras.ops`` op) that produced a symbolic tensor."""
    return tensor._keras_history.operation


def inbound_nodes(layer: Any) -> list:
    """Every call of ``layer`` on symbolic tensors (in any model), as graph nodes."""
    return list(layer._inbound_nodes)


def is_builtin_layer(layer: Any) -> bool:
    """Whether ``layer``'s class is one of Keras's own layers (defined in its layers package)."""
    return type(layer).__module__.startswith(_LAYERS_PACKAGE)


_LAYERS_PACKAGE = keras.layers.Conv2D.__module__.split(".convolutional")[0] + "."


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers tracked directly by ``layer`` (its attributes), not recursively."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _probe() -> Iterator[str]:
    """Names of the internals that do not behave as this module expects."""
    inp = keras.Input((4, 4, 2), name="probe_in")
    out = keras.layers.Conv2D(3, 1, name="probe_conv")(inp)
    out = keras.ops.split(out, [1], axis=-1)[0]
    graph = keras.Model(inp, out)
    if not isinstance(graph, Functional):
        yield "keras.src.models.functional.Functional"
    try:
        depths = nodes_by_depth(graph)
        ops = {type(n.operation) for nodes in depths.values() for n in nodes if n.operation}
        if np_ops.Split not in ops:
            yield "keras.src.ops.numpy.Split"
        if inputs_struct(graph) is not graph.inputs[0] and inputs_struct(graph) != graph.inputs[0]:
            yield "Functional._inputs_struct"
        outputs_struct(graph)
    except AttributeError as err:
        yield f"Functional graph attributes ({err})"
    try:
        if producer(out).name != depths[0][0].operation.name:
            yield "KerasTensor._keras_history"
    except AttributeError:
        yield "KerasTensor._keras_history"
    seq = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    if not isinstance(getattr(seq, "_functional", None), Functional):
        yield "Sequential._functional"
    conv = graph.get_layer("probe_conv")
    if len(getattr(conv, "_inbound_nodes", ())) != 1:
        yield "Layer._inbound_nodes"
    if not is_builtin_layer(conv) or is_builtin_layer(graph):
        yield "keras.src.layers module layout"
    if not hasattr(keras.layers.Layer, "_flatten_layers"):
        yield "Layer._flatten_layers"
    for module, names in (
        (nn_ops, ("Relu", "Sigmoid", "HardSilu", "Softsign")),
        (np_ops, ("Split", "Concatenate", "Mean", "Max", "Sum", "Add", "Multiply")),
        (activation_ops, ("ReLU", "Mish")),
        (core_ops, ("Cast",)),
    ):
        for name in names:
            if not hasattr(module, name):
                yield f"{module.__name__}.{name}"
    with SafeModeScope(False):
        pass


def check() -> None:
    """Raises RuntimeError naming the Keras version if an internal used by afp_tf changed."""
    broken = list(_probe())
    if broken:
        raise RuntimeError(
            f"afp_tf's channel surgery relies on Keras internals that changed in Keras "
            f"{keras.__version__}: {', '.join(broken)}. It was tested with Keras 3.15; pin "
            "keras to that or update afp_tf/surgery/keras_internals.py."
        )
