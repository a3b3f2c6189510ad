"""Rebuilding a functional model without some channels, by cloning layer configs."""

import difflib
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import tree

from afp_tf.surgery import hub
from afp_tf.surgery.analysis import ChannelGroup, ModelAnalysis
from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.graph import as_functional, is_submodel, nodes_in_order
from afp_tf.surgery.groups import checked
from afp_tf.surgery.keras_internals import SafeModeScope, inputs_struct, outputs_struct, producer
from afp_tf.surgery.rules import Keep, Rule, rule_for


def remove_filters(
    model: keras.Model,
    removal: Mapping[str, Sequence[int]],
    *,
    analysis: ModelAnalysis | None = None,
) -> keras.Model:
    """A new, smaller functional model without the given channels.

    The input model is not modified. The result is a plain (uncompiled) ``keras.Model`` with
    the same layer names, configs (trainability, dtype policy, regularizers, constraints) and
    the original weights sliced to the kept channels. An empty ``removal`` gives a copy
    (:func:`copy_model` names that). A keras-hub ImageClassifier comes back as its own class
    with its preprocessor (:mod:`afp_tf.surgery.hub`).
    Composite layers that surgery looked inside become nested functional models of the same
    name, so the result loads without their classes.

    Args:
        model: a functional model (or a built Sequential, or a functional subclass).
        removal: group name (see :func:`find_channel_groups`) -> channel indices to remove.
        analysis: ``surgery.analyze(model)``, if already computed (saves walking the graph).

    Raises:
        SurgeryError: for a subclassed model, an unknown or unprunable group, or bad indices
            (non-integer, out of range, duplicated, all channels of a group, or not the same
            number from each division of a group with ``divisions > 1``).
    """
    graph = as_functional(model)
    analysis = checked(model, analysis)
    removed = _removed_ids(analysis, removal)
    return hub.as_task(model, _Rebuild(analysis, removed).model(graph, model.name))


def copy_model(model: keras.Model, analysis: ModelAnalysis | None = None) -> keras.Model:
    """A separate copy of ``model`` as surgery rebuilds it: :func:`remove_filters` removing
    nothing.

    The copy has the same layer names, configs and weight values in new variables and computes
    the same outputs; training one model leaves the other as it was. Like every result of
    :func:`remove_filters` it is not compiled. Unlike ``keras.models.clone_model`` it is built
    as any pruned model of ``model`` is (composite layers become nested functional models, a
    keras-hub task keeps its class), so a round can work on the copy and leave ``model``
    untouched.

    Args:
        model: a functional model (or a built Sequential, or a functional subclass).
        analysis: ``surgery.analyze(model)``, if already computed (saves walking the graph).

    Raises:
        SurgeryError: for a subclassed model, or an ``analysis`` of another model.
    """
    return remove_filters(model, {}, analysis=analysis)


def _removed_ids(analysis: ModelAnalysis, removal: Mapping[str, Sequence[int]]) -> np.ndarray:
    """A mask over channel ids: the canonical ids of every channel to remove."""
    if not isinstance(removal, Mapping):
        raise SurgeryError(f"removal must map group names to indices, got {type(removal).__name__}")
    groups = {g.name: g for g in analysis.groups}
    removed = np.zeros(len(analysis.roots), bool)
    for name, indices in removal.items():
        group = groups.get(name)
        if group is None:
            close = difflib.get_close_matches(str(name), groups, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise SurgeryError(f"No channel group named '{name}'.{hint}")
        if not group.prunable:
            raise SurgeryError(f"Channel group '{name}' is not prunable: {group.reason}")
        index = _check_indices(group, indices)
        removed[analysis.orders[name][index]] = True
    return removed


def _check_indices(group: ChannelGroup, indices: Sequence[int]) -> np.ndarray:
    name, size = group.name, group.size
    values = list(indices)
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in values):
        raise SurgeryError(f"Indices for group '{name}' must be integers, got {values!r}.")
    index = np.asarray(values, dtype=np.int64)
    bad = index[(index < 0) | (index >= size)]
    if bad.size:
        raise SurgeryError(
            f"Indices {bad.tolist()} out of range for group '{name}' of {size} channels."
        )
    unique, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        raise SurgeryError(f"Duplicate indices {unique[counts > 1].tolist()} for group '{name}'.")
    if len(unique) == size:
        raise SurgeryError(f"Cannot remove all {size} channels of group '{name}'; keep at least 1.")
    if group.divisions > 1:
        per_division = np.bincount(unique // (size // group.divisions), minlength=group.divisions)
        if len(set(per_division.tolist())) > 1:
            raise SurgeryError(
                f"Group '{name}' feeds a grouped convolution: remove the same number of channels "
                f"from each of its {group.divisions} divisions of {size // group.divisions}, got "
                f"{per_division.tolist()}."
            )
    return index


class _Rebuild:
    def __init__(self, analysis: ModelAnalysis, removed: np.ndarray):
        self.labels = analysis.labels
        self.traces = analysis.traces
        self.gone = removed[analysis.roots]  # channel id -> removed?
        self.clones: dict[int, object] = {}
        self.tensors: dict[int, object] = {}

    def keep(self, tensor) -> np.ndarray | None:
        """Kept positions of the tensor's last axis, or None when all are kept."""
        labels = self.labels.get(id(tensor))
        if labels is None:
            return None
        gone = self.gone[labels]
        return np.flatnonzero(~gone) if gone.any() else None

    def model(self, graph, name: str) -> keras.Model:
        outer, self.tensors = self.tensors, {}  # a nested model may share its input tensors
        try:
            return self._model(graph, name)
        finally:
            self.tensors = outer

    def _model(self, graph, name: str) -> keras.Model:
        inputs = []
        for tensor in graph.inputs:
            kept = self.keep(tensor)
            shape = tuple(tensor.shape[:-1]) + (tensor.shape[-1] if kept is None else len(kept),)
            new = keras.Input(batch_shape=shape, dtype=tensor.dtype, name=producer(tensor).name)
            self.tensors[id(tensor)] = new
            inputs.append(new)
        for node in nodes_in_order(graph):
            if any(id(x) not in self.tensors for x in node.input_tensors):
                continue
            self._call(node)
        outputs = [self.tensors[id(t)] for t in graph.outputs]
        return keras.Model(
            tree.pack_sequence_as(inputs_struct(graph), inputs),
            tree.pack_sequence_as(outputs_struct(graph), outputs),
            name=name,
        )

    def _call(self, node) -> None:
        op = node.operation
        weights = None
        clone = self.clones.get(id(op))
        if clone is None:
            clone, weights = self._clone(op, node)
            self.clones[id(op)] = clone
        if id(op) in self.traces:  # the nested model that replaces a composite layer
            inputs = [self.tensors[id(x)] for x in node.input_tensors]
            outputs = clone(inputs[0] if len(inputs) == 1 else inputs)
        else:
            args, kwargs = node.arguments.fill_in(self.tensors)
            outputs = clone(*args, **kwargs)
        if weights:
            clone.set_weights(weights)
        for old, new in zip(node.outputs, tree.flatten(outputs), strict=True):
            self.tensors[id(old)] = new

    def _clone(self, op, node) -> tuple[object, list | None]:
        inner = self.traces.get(id(op))
        if inner is not None or is_submodel(op):
            clone = self.model(as_functional(op) if inner is None else inner, op.name)
            if not op.trainable:  # setting True would override its layers' own flags
                clone.trainable = False
            return clone, None
        keep = Keep(
            [self.keep(x) for x in node.input_tensors], [self.keep(y) for y in node.outputs]
        )
        changed = any(k is not None for k in keep.inputs + keep.outputs)
        if not isinstance(op, keras.layers.Layer):  # a keras.ops.* operation called on symbols
            shapes = [x.shape for x in node.input_tensors]
            return (rule_for(op).rebuild_op(op, keep, shapes) if changed else op), None
        rule = rule_for(op)
        try:
            config = op.get_config()
        except NotImplementedError:  # built with arguments its class cannot serialize
            if op.weights or type(rule).rebuild is not Rule.rebuild:
                raise
            return op, None  # stateless and channel-agnostic: the new model may share it
        weights = op.get_weights()
        if changed:
            config, weights = rule.rebuild(op, config, weights, keep)
        # The config comes from a live layer of this process, not from a file: a Lambda's
        # Python function is safe to rebuild.
        with SafeModeScope(False):
            try:
                return type(op).from_config(config), weights
            except (TypeError, ValueError):
                # e.g. a layer object as activation whose class cannot be rebuilt from its
                # config: use the live objects themselves.
                live = {k: getattr(op, k) for k, v in config.items() if isinstance(v, dict)}
                if not live or any(v is None for v in live.values()):
                    raise
                return type(op).from_config({**config, **live}), weights
