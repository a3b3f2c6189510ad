"""Pruning the backbone of an existing keras-cv detector (RetinaNet, YOLOV8Detector).

keras-cv detectors read their feature maps from ``backbone.pyramid_level_inputs`` (level name ->
layer name). :func:`prune_backbone` wraps the backbone's pyramid layers as outputs of a plain
functional model, so channel surgery keeps those maps' channel counts (model outputs are group
boundaries) and prunes only what lies between them; the result is wrapped in
:class:`FunctionalBackbone` and the detector is rebuilt from its config with the neck and head
weights copied over unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import keras_cv

from afp_tf import surgery


@keras.saving.register_keras_serializable(package="afp_tf")
class FunctionalBackbone(keras_cv.models.Backbone):
    """A keras-cv ``Backbone`` made of any functional graph (e.g. one rebuilt by surgery).

    Args:
      inputs: the graph's inputs.
      outputs: its outputs.
      pyramid_level_inputs: level name (``"P3"``, ...) -> layer name of that feature map.
    """

    def __init__(self, inputs, outputs, pyramid_level_inputs=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.pyramid_level_inputs = dict(pyramid_level_inputs or {})

    def get_config(self):
        graph = keras.Model(self.inputs, self.outputs, name=self.name).get_config()
        return {
            "graph": graph,
            "pyramid_level_inputs": self.pyramid_level_inputs,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        graph = keras.Model.from_config(config["graph"])
        backbone = cls(graph.inputs, graph.outputs, config["pyramid_level_inputs"], name=graph.name)
        backbone.trainable = config.get("trainable", True)
        return backbone


def pyramid_model(backbone: keras.Model, levels: Sequence[str]) -> keras.Model:
    """The backbone as a functional model whose outputs are its ``levels`` feature maps."""
    names = [backbone.pyramid_level_inputs[level] for level in levels]
    outputs = [backbone.get_layer(name).output for name in names]
    return keras.Model(backbone.inputs, outputs, name=backbone.name)


def prune_backbone(
    detector: keras.Model,
    select: Callable[[surgery.ChannelGroup], Sequence[int]],
    *,
    levels: Sequence[str] = ("P3", "P4", "P5"),
) -> keras.Model:
    """Returns a copy of a keras-cv detector whose backbone lost filters; neck and head are kept.

    Args:
      detector: a keras-cv ``YOLOV8Detector`` or ``RetinaNet`` (any model with a ``backbone``
        having ``pyramid_level_inputs`` and a ``from_config`` taking ``backbone``).
      select: for each prunable backbone group, the channel indices to remove (may be empty).
      levels: the pyramid levels the detector reads (their channel counts are kept).

    Raises:
      ValueError: the detector has no keras-cv backbone.
    """
    backbone = getattr(detector, "backbone", None)
    if backbone is None or not getattr(backbone, "pyramid_level_inputs", None):
        raise ValueError(f"{detector.name!r} has no keras-cv backbone with pyramid_level_inputs.")
    graph = pyramid_model(backbone, levels)
    removal = {g.name: list(select(g)) for g in surgery.find_channel_groups(graph) if g.prunable}
    pruned = surgery.remove_filters(graph, {k: v for k, v in removal.items() if v})
    new_backbone = FunctionalBackbone(
        pruned.inputs, pruned.outputs, backbone.pyramid_level_inputs, name=backbone.name
    )
    config = detector.get_config()
    config["backbone"] = keras.saving.serialize_keras_object(new_backbone)
    rebuilt = type(detector).from_config(config)
    rebuilt.backbone.set_weights(new_backbone.get_weights())
    backbone_vars = {id(v) for v in backbone.weights}
    for old, new in zip(detector.layers, rebuilt.layers, strict=True):
        if not old.weights or any(id(v) in backbone_vars for v in old.weights):
            continue
        # Layers match by position (auto-generated names get new suffixes on rebuild).
        if type(old) is not type(new) or [w.shape for w in old.weights] != [
            w.shape for w in new.weights
        ]:
            raise ValueError(f"Rebuilt detector differs at layer {old.name!r} / {new.name!r}.")
        new.set_weights(old.get_weights())
    return rebuilt
