"""Faster R-CNN (Ren et al., 2015) with an FPN (Lin et al., 2017) as one functional Keras model.

Parts: a backbone giving C3-C5 (strides 8, 16, 32): ``resnet50`` (``keras.applications``,
built from its config, no weights) or ``mobilenet``, a light MobileNet-v1-style stack for CPU;
an FPN (1x1 laterals, nearest-neighbour top-down adds, 3x3 outputs P3-P5); per level an RPN
tower (3x3 conv + ReLU) with objectness (``k``) and box-delta (``4k``) predictors;
:class:`~afp_tf.detection.proposals.RPNProposals` (decoding, top-k, Fast NMS) giving
``num_rois`` proposals per image; :class:`~afp_tf.detection.roi_align.ROIAlign` (level by ROI
size); a box head of two fully connected layers and the class-logit (``C + 1``, index 0 =
background) and per-class box-delta (``4C``) predictors.

One model serves training and inference: it maps an image to one packed tensor
``(batch, 5 A + R (5 + 5 C))`` (:func:`split_outputs` unpacks it): RPN objectness logits and
deltas of the ``A`` anchors, then per proposal its box (relative ``xyxy``), class logits and
class-wise deltas. The loss (:mod:`afp_tf.detection.frcnn_loss`) matches anchors and
proposals to the ground truth; inference decodes the proposals' deltas and runs class-wise
NMS (:mod:`afp_tf.detection.frcnn_decode`), also inside exported graphs.

Pruning: every backbone, FPN, RPN-tower and box-head layer is in an ordinary channel group
(ROI Align passes channels through). The predictors reach the output only through reshapes
of their channel axis or the proposal layer, so their groups are never prunable.

Differences from the paper: the RPN towers are not shared across levels (one per level; the
anchor count per cell is the same), proposals come from Fast NMS over all levels at once and
are not augmented with the ground-truth boxes during training.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from afp_tf.detection.anchors import AnchorSpec
from afp_tf.detection.proposals import RPNProposals
from afp_tf.detection.roi_align import ROIAlign

BACKBONES = ("mobilenet", "resnet50")
_STRIDES = (8, 16, 32)
_RESNET50_FEATURES = ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
# (pointwise filters at width 1, stride) of the light backbone's depthwise-separable blocks.
_LIGHT_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (1024, 2))
_LIGHT_FEATURES = (5, 7, 8)  # blocks ending strides 8, 16, 32
_BN_MOMENTUM = 0.9  # settles within the few hundred steps of a small-data run


def _ch(filters: int, width: float) -> int:
    return max(8, int(round(filters * width / 8)) * 8)


def _conv_bn(x, filters, kernel, name, strides=1):
    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _light_backbone(x, width: float) -> list:
    x = _conv_bn(x, _ch(32, width), 3, "stem", strides=2)
    feats = []
    for i, (filters, stride) in enumerate(_LIGHT_BLOCKS, 1):
        x = keras.layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw"
        )(x)
        x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"block{i}_dw_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_dw_relu")(x)
        x = _conv_bn(x, _ch(filters, width), 1, f"block{i}_pw")
        if i in _LIGHT_FEATURES:
            feats.append(x)
    return feats


def _resnet50_backbone(inputs) -> list:
    base = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=inputs)
    return [base.get_layer(name).output for name in _RESNET50_FEATURES]


def _fpn(feats, channels: int) -> list:
    laterals = [
        keras.layers.Conv2D(channels, 1, name=f"fpn_lateral{i + 3}")(f) for i, f in enumerate(feats)
    ]
    merged = [laterals[-1]]
    for i in range(len(laterals) - 2, -1, -1):
        up = keras.layers.UpSampling2D(2, name=f"fpn_up{i + 4}")(merged[0])
        merged.insert(0, keras.layers.Add(name=f"fpn_merge{i + 3}")([laterals[i], up]))
    return [
        keras.layers.Conv2D(channels, 3, padding="same", name=f"fpn_p{i + 3}")(m)
        for i, m in enumerate(merged)
    ]


def rpn_anchors(min_size: float, scales_per_octave: int, aspect_ratios) -> AnchorSpec:
    """Three levels (strides 8, 16, 32) of ``scales_per_octave`` sizes from ``min_size``."""
    return AnchorSpec(
        strides=_STRIDES,
        sizes=tuple(
            tuple(
                round(min_size * 2 ** (lv + k / scales_per_octave), 2)
                for k in range(scales_per_octave)
            )
            for lv in range(len(_STRIDES))
        ),  # fmt: skip
        aspect_ratios=tuple(float(a) for a in aspect_ratios),
    )


def split_outputs(y_pred, num_anchors: int, num_rois: int, num_classes: int) -> dict:
    """The parts of the packed output (see the module docstring), each ``(batch, ...)``."""
    y_pred = tf.cast(y_pred, tf.float32)
    a, c = num_anchors, num_classes
    roi = tf.reshape(y_pred[:, 5 * a :], [-1, num_rois, 5 + 5 * c])
    return {
        "rpn_logits": y_pred[:, :a],
        "rpn_deltas": tf.reshape(y_pred[:, a : 5 * a], [-1, a, 4]),
        "proposals": roi[..., :4],
        "class_logits": roi[..., 4 : 5 + c],
        "box_deltas": tf.reshape(roi[..., 5 + c :], [-1, num_rois, c, 4]),
    }


def build_frcnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    anchors: AnchorSpec,
    backbone: str = "mobilenet",
    width: float = 1.0,
    *,
    fpn_channels: int = 256,
    num_rois: int = 128,
    pre_nms: int = 600,
    rpn_iou: float = 0.7,
    roi_size: int = 7,
    head_units: int = 1024,
    name: str = "faster_rcnn",
) -> keras.Model:
    """Builds a Faster R-CNN + FPN detector.

    Args:
      input_shape: ``(height, width, channels)``, sides multiples of 32.
      num_classes: object classes, without background.
      anchors: RPN anchors on strides 8, 16, 32 (:func:`rpn_anchors`).
      backbone: ``"mobilenet"`` (light, ``width`` multiplier) or ``"resnet50"``.
      width: channel multiplier of the light backbone.
      fpn_channels: channels of the FPN levels and RPN towers.
      num_rois: proposals per image fed to the box head.
      pre_nms: top-scoring RPN boxes entering proposal NMS.
      rpn_iou: proposal NMS threshold.
      roi_size: ROI Align bins per side.
      head_units: units of the box head's two fully connected layers.
      name: model name.

    Returns:
      A functional model ``image -> (batch, 5 A + num_rois (5 + 5 num_classes))``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r} is not one of {', '.join(BACKBONES)}.")
    if backbone == "resnet50" and width != 1.0:
        raise ValueError(f"backbone resnet50 has no width multiplier (got width={width}).")
    if len(input_shape) != 3 or input_shape[0] % 32 or input_shape[1] % 32:
        raise ValueError(f"Faster R-CNN needs sides that are multiples of 32, got {input_shape}.")
    if tuple(anchors.strides) != _STRIDES:
        raise ValueError(f"RPN anchors must be on strides {_STRIDES}, got {anchors.strides}.")
    if num_classes < 1 or width <= 0 or num_rois < 1 or roi_size < 1:
        raise ValueError(
            f"need num_classes, num_rois, roi_size >= 1 and width > 0, got {num_classes}, "
            f"{num_rois}, {roi_size}, {width}."
        )
    image_size = tuple(input_shape[:2])
    inputs = keras.Input(input_shape, name="image")
    feats = (
        _light_backbone(inputs, width) if backbone == "mobilenet" else _resnet50_backbone(inputs)
    )
    levels = _fpn(feats, fpn_channels)
    k = anchors.per_location
    logits, deltas = [], []
    for i, p in enumerate(levels):
        t = keras.layers.Conv2D(
            fpn_channels, 3, padding="same", activation="relu", name=f"rpn_tower{i + 3}"
        )(p)
        obj = keras.layers.Conv2D(k, 1, name=f"rpn_objectness{i + 3}")(t)
        box = keras.layers.Conv2D(4 * k, 1, name=f"rpn_deltas{i + 3}")(t)
        logits.append(keras.layers.Reshape((-1,), name=f"rpn_objectness_flat{i + 3}")(obj))
        deltas.append(keras.layers.Reshape((-1, 4), name=f"rpn_deltas_flat{i + 3}")(box))
    logits = keras.layers.Concatenate(axis=1, name="rpn_logits")(logits)
    deltas = keras.layers.Concatenate(axis=1, name="rpn_box_deltas")(deltas)
    proposals = RPNProposals(
        anchors.to_dict(), image_size, pre_nms, num_rois, rpn_iou, name="proposals"
    )([logits, deltas])
    x = ROIAlign(image_size, roi_size, canonical_size=4.0 * _STRIDES[0], name="roi_align")(
        [*levels, proposals]
    )
    x = keras.layers.Dense(head_units, activation="relu", name="box_head_fc1")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="box_head_fc2")(x)
    cls = keras.layers.Dense(num_classes + 1, name="box_class_logits")(x)
    box = keras.layers.Dense(4 * num_classes, name="box_deltas")(x)
    roi = keras.layers.Concatenate(name="roi_outputs")([proposals, cls, box])
    rpn = keras.layers.Concatenate(name="rpn_outputs")(
        [logits, keras.layers.Reshape((-1,), name="rpn_deltas_packed")(deltas)]
    )
    roi = keras.layers.Reshape((-1,), name="roi_outputs_packed")(roi)
    outputs = keras.layers.Concatenate(name="predictions")([rpn, roi])
    return keras.Model(inputs, outputs, name=name)
