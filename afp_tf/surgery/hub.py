"""keras-hub image classifiers pruned in place, their preprocessing kept.

A keras-hub ``ImageClassifier`` is a functional graph (backbone, pooling, head) plus things
outside it: its ``preprocessor``, and ``predict``/``fit`` that apply it. Surgery prunes the
graph like any other; :func:`as_task` then rebuilds the same classifier class around the
pruned backbone (a plain nested functional model), so the result keeps the preprocessor, and
copies the head's weights. The class builds its head from its config, so the head's own
filters stay (:func:`limit_head`); its input side follows the backbone. Other keras-hub tasks
(detectors, segmenters) are pruned as plain functional graphs of their raw outputs. keras-hub
is only used when the model is one of its tasks (the ``hub`` extra); it is never imported here.
"""

import dataclasses
import sys

import keras

from afp_tf.surgery.errors import SurgeryError


def is_image_classifier(model) -> bool:
    """Whether ``model`` is a keras-hub ImageClassifier (any subclass)."""
    hub = sys.modules.get("keras_hub")
    return hub is not None and isinstance(model, hub.models.ImageClassifier)


def limit_head(model, groups: list) -> list:
    """``groups`` with those produced in an ImageClassifier's head made unprunable."""
    if not is_image_classifier(model):
        return groups
    inside = model.backbone.name + "/"
    limited = []
    for group in groups:
        head = [p for p in group.producers if not p.startswith(inside)]
        if group.prunable and head:
            reason = (
                f"it is produced by '{head[0]}' in the head of the keras-hub "
                f"{type(model).__name__}, which builds its head from its config"
            )
            group = dataclasses.replace(group, prunable=False, reason=reason)
        limited.append(group)
    return limited


def as_task(model, pruned: keras.Model) -> keras.Model:
    """``pruned`` (the graph of ``model`` rebuilt) as ``model``'s class when that is a
    keras-hub ImageClassifier; ``pruned`` itself otherwise.

    Raises:
        SurgeryError: when the rebuilt classifier's head does not match the pruned graph.
    """
    if not is_image_classifier(model):
        return pruned
    backbone = pruned.get_layer(model.backbone.name)
    config = model.get_config()
    config.update(backbone=backbone, preprocessor=model.preprocessor)
    task = type(model).from_config(config)
    source = [layer for layer in pruned.layers if layer.weights and layer is not backbone]
    target = [layer for layer in task.layers if layer.weights and layer is not task.backbone]
    shapes = [[tuple(w.shape) for w in layer.weights] for layer in source]
    if shapes != [[tuple(w.shape) for w in layer.weights] for layer in target]:
        raise SurgeryError(
            f"The rebuilt {type(model).__name__} has another head than the pruned graph "
            f"({[layer.name for layer in target]} vs {[layer.name for layer in source]})."
        )
    for old, new in zip(source, target, strict=True):
        new.set_weights(old.get_weights())
    return task
