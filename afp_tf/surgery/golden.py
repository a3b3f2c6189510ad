"""The exactness reference of channel surgery: the model with its consumers' inputs zeroed.

Removing channels from a group is exact when the pruned model computes what the original
computes once every layer that *consumes* those channels (a convolution, a dense layer: it
mixes channels into new ones) ignores them, i.e. has the matching input rows of its kernel
zeroed. :func:`zeroed_reference` builds that reference; :func:`golden_error` compares.
"""

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from afp_tf.surgery.analysis import analyze
from afp_tf.surgery.graph import as_functional, is_submodel, nodes_in_order
from afp_tf.surgery.rebuild import copy_model, remove_filters

L = keras.layers
_CONSUMERS = (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense, L.SeparableConv1D, L.SeparableConv2D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_RANDOM = ("bias", "beta", "gamma", "moving_mean", "moving_variance", "alpha")


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random biases, BatchNorm parameters/statistics and PReLU slopes, in place.

    Freshly initialised models have zero biases and identity BatchNorms, under which removed
    channels would often be zero anyway; a golden check on them would prove little.
    """
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.path.split("/")[-1]
        if name in _RANDOM:
            positive = name in ("gamma", "moving_variance")
            values = rng.uniform(0.5, 1.5, v.shape) if positive else rng.normal(0, 0.5, v.shape)
            v.assign(values.astype(v.dtype))
    return model


def zeroed_reference(model: keras.Model, removal: Mapping[str, Sequence[int]]) -> keras.Model:
    """A copy of ``model`` (as surgery rebuilds it) whose consumers ignore removed channels."""
    ref = copy_model(model)
    analysis = analyze(ref)
    removed = np.zeros(len(analysis.roots), bool)
    for name, indices in removal.items():
        removed[analysis.orders[name][np.asarray(indices, np.int64)]] = True
    gone = removed[analysis.roots]
    _zero(as_functional(ref), analysis.labels, gone)
    return ref


def _zero(graph, labels: dict, gone: np.ndarray) -> None:
    for node in nodes_in_order(graph):
        op = node.operation
        if is_submodel(op):
            _zero(as_functional(op), labels, gone)
            continue
        if not isinstance(op, _CONSUMERS + _TRANSPOSED) or not node.input_tensors:
            continue
        ids = labels.get(id(node.input_tensors[0]))
        if ids is not None and gone[ids].any():
            _zero_rows(op, np.flatnonzero(gone[ids]))


def _zero_rows(layer, positions: np.ndarray) -> None:
    """Zeroes the kernel entries of ``layer`` that read input channels ``positions``."""
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        kernel, axis = layer.depthwise_kernel, -2
    elif isinstance(layer, _TRANSPOSED):
        kernel, axis = layer.kernel, -1
    else:
        kernel, axis = layer.kernel, -2
    values = np.array(kernel.numpy())
    groups = getattr(layer, "groups", 1) if isinstance(layer, _CONSUMERS[:3]) else 1
    if groups > 1:  # input channel p is row p % k of the filters of group p // k
        k, per = values.shape[-2], values.shape[-1] // groups
        for p in positions.tolist():
            j = p // k
            values[..., p % k, j * per : (j + 1) * per] = 0.0
    else:
        index = [slice(None)] * values.ndim
        index[axis] = positions
        values[tuple(index)] = 0.0
    kernel.assign(values)


def golden_error(
    model: keras.Model, removal: Mapping[str, Sequence[int]], x, pruned: keras.Model | None = None
) -> float:
    """Largest relative error between the pruned model and :func:`zeroed_reference` on ``x``."""
    pruned = remove_filters(model, removal) if pruned is None else pruned
    ref = zeroed_reference(model, removal)
    worst = 0.0
    outs = zip(
        keras.tree.flatten(pruned(x, training=False)),
        keras.tree.flatten(ref(x, training=False)),
        strict=True,
    )
    for u, v in outs:
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        if u.shape != v.shape:
            raise ValueError(f"output shapes differ: {u.shape} vs {v.shape}")
        worst = max(worst, float(np.abs(u - v).max() / max(np.abs(v).max(), 1e-12)))
    return worst
