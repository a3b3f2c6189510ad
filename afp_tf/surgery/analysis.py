"""One graph analysis of a model: its channel groups and how every tensor's channels map.

:func:`analyze` walks a model once (:mod:`afp_tf.surgery.walk`) and resolves which output
filters must be removed together. The :class:`ModelAnalysis` it returns is what every other
surgery function needs; pass it on (``remove_filters(model, removal, analysis=a)``) instead of
walking the same model again. A channel group is a connected set of channel spaces; its
channel ``i`` is channel ``i`` of its first producer.
"""

import dataclasses
import math
from typing import Any

import keras
import numpy as np

from afp_tf.surgery import hub
from afp_tf.surgery.errors import SurgeryError
from afp_tf.surgery.graph import as_functional
from afp_tf.surgery.rules import Labels, rule_for
from afp_tf.surgery.walk import Space, Walk


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
        partial: producers whose filters are only a part of the group's channels (after a
            split) or all of them in another order; they lose the removed channels too but
            are left out of ``filter_weights``.
        divisions: a removal must take the same number of channels from each of this many equal
            consecutive divisions of the group (grouped convolutions keep their group structure).
        scales: paths of the per-channel normalisations (BatchNorm) applied to the channels in
            the group's order, whose scale and offset set each channel's output.
    """

    name: str
    size: int
    producers: tuple[str, ...]
    prunable: bool
    reason: str | None = None
    passthrough: tuple[str, ...] = ()
    partial: tuple[str, ...] = ()
    divisions: int = 1
    scales: tuple[str, ...] = ()


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


def aligned(group: ChannelGroup) -> list[str]:
    """Paths of the layers whose per-filter weights are, in order, the group's channels."""
    return [p for p in group.producers if p not in group.partial] + list(group.passthrough)


@dataclasses.dataclass(eq=False)
class ModelAnalysis:
    """The channel structure of one model, computed once by :func:`analyze`.

    Attributes:
        model: the analysed model (the analysis is only valid for this very object).
        groups: its channel groups, in topological order of their first producer.
    """

    model: keras.Model
    groups: list[ChannelGroup]
    labels: dict[int, Labels | None]  # id(KerasTensor) -> channel ids of its last axis
    roots: np.ndarray  # channel id -> canonical id of its coupled channel
    orders: dict[str, np.ndarray]  # group name -> canonical id of each group channel
    traces: dict[int, Any]  # id(composite layer) -> the functional graph traced from it
    layers: dict[str, Any]  # layer path -> layer
    consumed: list[tuple[str, Labels]]  # (path of a consumer, channel ids of its input)

    def group(self, name: str) -> ChannelGroup:
        """The group called ``name``; SurgeryError if there is none."""
        for group in self.groups:
            if group.name == name:
                return group
        raise SurgeryError(f"No channel group '{name}' in model '{self.model.name}'.")

    @property
    def prunable(self) -> list[ChannelGroup]:
        """The prunable groups, in order."""
        return [g for g in self.groups if g.prunable]

    def consumers(self, group: ChannelGroup | str) -> tuple[str, ...]:
        """Paths of the layers that read the group's channels and mix them into new ones."""
        name = group if isinstance(group, str) else group.name
        mine = set(self.orders[self.group(name).name].tolist())
        paths = (p for p, ids in self.consumed if mine & set(self.roots[ids].tolist()))
        return tuple(dict.fromkeys(paths))

    def filter_weights(self, group: ChannelGroup | str) -> list[tuple[Any, int]]:
        """The live variables holding a prunable group's filters, each with its channel axis.

        Includes the output kernel of every aligned producer (Conv/Dense kernel; SeparableConv
        pointwise kernel; ConvTranspose kernel on axis -2) and the kernel of every depthwise
        convolution the channels pass through (its input-channel axis). Biases and BatchNorm
        parameters are not included. Index ``i`` along the axis is channel ``i`` of the group.

        Raises:
            SurgeryError: for an unknown or unprunable group.
        """
        group = self.group(group if isinstance(group, str) else group.name)
        if not group.prunable:
            raise SurgeryError(f"Channel group '{group.name}' is not prunable: {group.reason}")
        pairs = []
        for path in aligned(group):
            layer = self.layers[path]
            pairs.extend(rule_for(layer).filter_weights(layer))
        return pairs

    def scale_weights(self, group: ChannelGroup | str) -> list[tuple[Any, int]]:
        """The live per-channel variables that set a prunable group's channel outputs (the
        scale and offset of every BatchNorm in ``group.scales``), each with its channel axis;
        empty for a group without one. Under a BatchNorm the output of a channel does not
        depend on the size of the kernel before it, so these, not ``filter_weights``, say how
        much a channel contributes and drive it to zero.

        Raises:
            SurgeryError: for an unknown or unprunable group.
        """
        group = self.group(group if isinstance(group, str) else group.name)
        if not group.prunable:
            raise SurgeryError(f"Channel group '{group.name}' is not prunable: {group.reason}")
        return [
            pair
            for path in group.scales
            for pair in rule_for(self.layers[path]).scale_weights(self.layers[path])
        ]


def analyze(model: keras.Model) -> ModelAnalysis:
    """Walks ``model`` once and resolves its channel groups.

    Raises:
        SurgeryError: for a subclassed model or an unbuilt Sequential.
    """
    as_functional(model)
    walk = Walk()
    walk.run(model)
    channels = _UnionFind(walk.count)
    for a, b in walk.edges:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            channels.union(x, y)
    roots = channels.roots()
    coupled = _UnionFind(walk.count)  # roots of channels that share a space
    members: dict[int, list[Space]] = {}
    for space in walk.spaces:
        r = roots[space.start : space.start + space.size].tolist()
        for x in r[1:]:
            coupled.union(r[0], x)
    for space in walk.spaces:
        members.setdefault(coupled.find(int(roots[space.start])), []).append(space)
    divisions = _divisions(walk, roots, coupled, members)
    first_blocked = np.full(walk.count, len(walk.blocked))
    for i, (labels, _) in enumerate(walk.blocked):
        r = roots[labels]
        first_blocked[r] = np.minimum(first_blocked[r], i)
    through, scaled = (
        _by_group(walk.passthroughs, roots, coupled),
        _by_group(walk.scalings, roots, coupled),
    )
    groups, orders = [], {}
    for key, spaces in members.items():
        group, order = _resolve(spaces, roots, first_blocked, walk.blocked, through.get(key, []))
        group = dataclasses.replace(group, scales=_in_order(scaled.get(key, []), roots, order))
        if divisions.get(key, 1) > 1 and group.prunable:
            group = dataclasses.replace(group, divisions=divisions[key])
        groups.append(group)
        orders[group.name] = order
    groups = hub.limit_head(model, groups)
    return ModelAnalysis(
        model, groups, walk.labels, roots, orders, walk.traces, walk.layers, walk.consumed
    )


def _by_group(records: list, roots: np.ndarray, coupled: _UnionFind) -> dict[int, list]:
    """``(path, labels)`` records of the walk, by the key of the group their channels are in."""
    out: dict[int, list] = {}
    for path, labels in records:
        out.setdefault(coupled.find(int(roots[labels[0]])), []).append((path, labels))
    return out


def _in_order(records: list, roots: np.ndarray, order: np.ndarray) -> tuple[str, ...]:
    """Paths of the records whose channels are the group's, in the group's order."""
    paths = [path for path, labels in records if np.array_equal(roots[labels], order)]
    return tuple(dict.fromkeys(paths))


def _divisions(walk: Walk, roots, coupled, members) -> dict[int, int]:
    """Divisions per group from grouped convolutions; blocks the channels that cannot keep them.

    A grouped convolution over a group's channels in the group's order divides it into
    equal divisions; over channels of several groups (or reordered ones) it blocks them.
    """
    divisions: dict[int, int] = {}
    for labels, count, path in walk.divisions:
        key = coupled.find(int(roots[labels[0]]))
        order = _ids(_first(members[key], roots), roots)
        if np.array_equal(roots[labels], order):
            divisions[key] = math.lcm(divisions.get(key, 1), count)
        else:
            walk.block(
                labels,
                f"'{path}' is a grouped convolution (groups={count}) over channels of several "
                "groups or in another order, whose group structure a removal cannot keep",
            )
    return divisions


def _ids(space: Space, roots: np.ndarray) -> np.ndarray:
    return roots[space.start : space.start + space.size]


def _first(spaces: list[Space], roots: np.ndarray) -> Space:
    """The first space (in topological order) holding every channel of the group."""
    total = len(np.unique(np.concatenate([_ids(s, roots) for s in spaces])))
    return next((s for s in spaces if len(np.unique(_ids(s, roots))) == total), spaces[0])


def _resolve(spaces, roots, first_blocked, blocked, through) -> tuple[ChannelGroup, np.ndarray]:
    """The group of coupled ``spaces``: its channels are those of its first full producer.

    Other producers may hold a part of them (after a split) or all in another order (through
    concatenations); surgery removes their filters alike, but only the producers aligned with
    the group's channel order give :meth:`ModelAnalysis.filter_weights`.
    """
    first = _first(spaces, roots)
    order = _ids(first, roots)
    reason = None
    earliest = min(int(first_blocked[_ids(s, roots)].min()) for s in spaces)
    if earliest < len(blocked):
        reason = blocked[earliest][1]
    elif len(np.unique(order)) != len(order):
        reason = f"channels of '{first.path}' are coupled to each other"
    elif not set(np.concatenate([_ids(s, roots) for s in spaces]).tolist()) <= set(order.tolist()):
        reason = (
            f"channels of '{first.path}' are coupled to those of other layers only in part "
            "(e.g. through a concatenation), and no layer produces all of them"
        )
    else:
        for s in spaces:
            if len(np.unique(_ids(s, roots))) != s.size:
                reason = f"channels of '{s.path}' are coupled to each other"
                break
    partial = [s.path for s in spaces if not np.array_equal(_ids(s, roots), order)]
    passthrough = _in_order(through, roots, order)
    group = ChannelGroup(
        name=first.name,
        size=len(order),
        producers=tuple(dict.fromkeys(s.path for s in spaces)),
        prunable=reason is None,
        reason=reason,
        passthrough=passthrough,
        partial=tuple(dict.fromkeys(partial)),
    )
    return group, order
