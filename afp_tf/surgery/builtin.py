"""Rules for the built-in Keras layers (see :mod:`afp_tf.surgery.rules` for the interface)."""

import math

import keras
import numpy as np

from afp_tf.surgery.rules import Boundary, Rule, check_channels_last, register_many, take

L = keras.layers
_MIXING_ACTIVATIONS = ("softmax", "log_softmax", "sparsemax", "glu")


def _mixes(activation) -> bool:
    return getattr(activation, "__name__", "") in _MIXING_ACTIVATIONS


class IdentityRule(Rule):
    """Channel-wise layers without weights: activations, dropout, pooling, padding, resizing."""

    consistent_calls = False


class ActivationRule(IdentityRule):
    """``Activation``: channel-wise unless its function mixes channels (softmax, glu...)."""

    def propagate(self, layer, inputs, ctx):
        if _mixes(layer.activation):
            raise Boundary(f"its {layer.activation.__name__} activation mixes channels")
        return super().propagate(layer, inputs, ctx)


class RescalingRule(IdentityRule):
    """``Rescaling`` with scalar scale and offset."""

    def propagate(self, layer, inputs, ctx):
        if np.ndim(layer.scale) or np.ndim(layer.offset):
            raise Boundary("it has a per-channel scale/offset")
        return super().propagate(layer, inputs, ctx)


class PerChannelRule(Rule):
    """Channel-wise layers with per-channel weights on the last axis (BatchNorm, PReLU)."""

    def propagate(self, layer, inputs, ctx):
        axis = getattr(layer, "axis", -1)
        if axis not in (-1, len(ctx.input_shapes[0]) - 1):
            raise Boundary(f"it normalises over axis {axis}, not the channel axis")
        return super().propagate(layer, inputs, ctx)

    def rebuild(self, layer, config, weights, keep):
        # Weights shared over the channel axis (e.g. PReLU shared_axes) have size 1 there.
        return config, [w if w.shape[-1] == 1 else take(w, keep.inputs[0], -1) for w in weights]


class BatchNormRule(PerChannelRule):
    """``BatchNormalization``: its scale and offset set the output of each channel."""

    def propagate(self, layer, inputs, ctx):
        outputs = super().propagate(layer, inputs, ctx)
        ctx.scales(inputs[0])
        return outputs

    def scale_weights(self, layer):
        return [(v, 0) for v in (layer.gamma, layer.beta) if v is not None]


class NormalizationRule(PerChannelRule):
    """``Normalization`` over the channel axis: per-channel mean and variance."""

    def propagate(self, layer, inputs, ctx):
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        rank = len(ctx.input_shapes[0])
        if [a % rank for a in axis if a is not None] != [rank - 1]:
            raise Boundary(f"it normalises over axes {layer.axis}, not the channel axis alone")
        return [inputs[0]]

    def rebuild(self, layer, config, weights, keep):
        # mean and variance (weights, or fixed in the config) have the channel last.
        for key in ("mean", "variance"):
            if config.get(key) is not None and np.size(config[key]) > 1:
                config = {**config, key: take(np.asarray(config[key]), keep.inputs[0], -1)}
        return config, [w if w.ndim == 0 else take(w, keep.inputs[0], -1) for w in weights]


class ChannelNormRule(Rule):
    """Normalisations whose statistics run over the channel axis: removing one channel
    changes every other channel's output."""

    def propagate(self, layer, inputs, ctx):
        axis = getattr(layer, "axis", -1)
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        if any(a % len(ctx.input_shapes[0]) == len(ctx.input_shapes[0]) - 1 for a in axes):
            raise Boundary("it normalises over the channel axis, so every channel depends on all")
        raise Boundary(f"it normalises over axes {axis} (no rule for that case)")


class MergeRule(IdentityRule):
    """Element-wise merges: the channels of all inputs are coupled (broadcast size 1 allowed)."""

    def propagate(self, layer, inputs, ctx):
        if any(x is None for x in inputs):
            raise Boundary("one of its inputs has no channel axis")
        size = max(len(x) for x in inputs)
        full = [x for x in inputs if len(x) == size]
        if any(len(x) not in (1, size) for x in inputs):
            raise Boundary("its inputs have different channel counts")
        for other in full[1:]:
            ctx.unify(full[0], other)
        return [full[0]]


class ConcatenateRule(IdentityRule):
    """``Concatenate`` on the channel axis: output channels are the inputs' with offsets."""

    def propagate(self, layer, inputs, ctx):
        if layer.axis not in (-1, len(ctx.output_shapes[0]) - 1):
            raise Boundary(f"it concatenates along axis {layer.axis}, not the channel axis")
        if any(x is None for x in inputs):
            raise Boundary("one of its inputs has no channel axis")
        return [np.concatenate(inputs)]


class FlattenRule(IdentityRule):
    """``Flatten`` of (..., C): channel ``c`` lands at positions ``p*C + c``."""

    def propagate(self, layer, inputs, ctx):
        check_channels_last(layer)
        spatial = ctx.input_shapes[0][1:-1]
        if any(d is None for d in spatial):
            raise Boundary("its input has unknown spatial size")
        return [np.tile(inputs[0], math.prod(spatial))]


class ReshapeRule(Rule):
    """``Reshape`` that keeps the channel axis last, e.g. (C,) -> (1, 1, C)."""

    def propagate(self, layer, inputs, ctx):
        if ctx.input_shapes[0][-1] != ctx.output_shapes[0][-1]:
            raise Boundary("it reshapes the channel axis")
        return [inputs[0]]

    def rebuild(self, layer, config, weights, keep):
        target = list(config["target_shape"])
        if target[-1] != -1:
            target[-1] = len(keep.outputs[0])
        return {**config, "target_shape": tuple(target)}, weights


def _produce(layer, ctx, size: int):
    """A new channel space for the layer's filters, blocked if its activation mixes them."""
    labels = ctx.new_space(size)
    if _mixes(layer.activation):
        name = layer.activation.__name__
        ctx.block(labels, f"'{ctx.path}' applies {name} over its output channels")
    return labels


def _check_plain(layer) -> None:
    check_channels_last(layer)
    if getattr(layer, "lora_enabled", False):
        raise Boundary("it has LoRA weights")


class DenseRule(Rule):
    """``Dense``: consumes the last axis of its input, produces ``units`` filters."""

    def propagate(self, layer, inputs, ctx):
        _check_plain(layer)
        return [_produce(layer, ctx, layer.units)]

    def rebuild(self, layer, config, weights, keep):
        kernel = take(take(weights[0], keep.inputs[0], 0), keep.outputs[0], 1)
        rest = [take(b, keep.outputs[0], 0) for b in weights[1:]]
        return {**config, "units": kernel.shape[1]}, [kernel, *rest]

    def filter_weights(self, layer):
        return [(layer.kernel, 1)]


class ConvRule(Rule):
    """ConvND (kernel ``(..., in, out)``) and ConvNDTranspose (kernel ``(..., out, in)``)."""

    def __init__(self, transpose: bool = False):
        self.in_axis, self.out_axis = (-1, -2) if transpose else (-2, -1)

    def propagate(self, layer, inputs, ctx):
        _check_plain(layer)
        groups = getattr(layer, "groups", 1)
        if groups == 1:
            return [_produce(layer, ctx, layer.filters)]
        if inputs[0] is None:
            raise Boundary("it is a grouped convolution over a tensor without channel axis")
        if groups == len(inputs[0]):  # depthwise: input c gives outputs c*m .. c*m+m-1
            multiplier = layer.filters // groups
            if multiplier == 1:
                ctx.passthrough(inputs[0])
            return [np.repeat(inputs[0], multiplier)]
        ctx.divide(inputs[0], groups)  # the same count removed from each group's inputs...
        out = _produce(layer, ctx, layer.filters)
        ctx.divide(out, groups)  # ... and from each group's filters
        return [out]

    def rebuild(self, layer, config, weights, keep):
        groups = getattr(layer, "groups", 1)
        if groups > 1:
            return _rebuild_grouped(config, weights, keep, groups)
        kernel = take(
            take(weights[0], keep.inputs[0], self.in_axis), keep.outputs[0], self.out_axis
        )
        rest = [take(b, keep.outputs[0], 0) for b in weights[1:]]
        return {**config, "filters": kernel.shape[self.out_axis]}, [kernel, *rest]

    def filter_weights(self, layer):
        return [(layer.kernel, len(layer.kernel.shape) + self.out_axis)]


def _rebuild_grouped(config, weights, keep, groups: int):
    """A grouped ConvND (kernel ``(..., in/groups, filters)``) without some channels."""
    kernel, *rest = weights
    per_in, filters = kernel.shape[-2], kernel.shape[-1]
    per_out = filters // groups
    kept_in = np.arange(per_in * groups) if keep.inputs[0] is None else keep.inputs[0]
    kept_out = np.arange(filters) if keep.outputs[0] is None else keep.outputs[0]
    if per_in == 1:  # depthwise: the kept input channels are the kept groups
        groups = len(kept_in)
        kernel = kernel[..., kept_out]
    else:
        per_group = []  # the kept kernel of each convolution group
        for j in range(groups):
            rows = kept_in[kept_in // per_in == j] % per_in
            cols = kept_out[kept_out // per_out == j]
            per_group.append(kernel[..., rows, :][..., cols])
        kernel = np.concatenate(per_group, axis=-1)
    rest = [b[kept_out] for b in rest]
    return {**config, "filters": len(kept_out), "groups": groups}, [kernel, *rest]


def _depthwise_rows(keep: np.ndarray, multiplier: int) -> np.ndarray:
    """Positions ``c*m .. c*m+m-1`` of every kept input channel ``c``."""
    return (keep[:, None] * multiplier + np.arange(multiplier)).ravel()


class DepthwiseRule(Rule):
    """``DepthwiseConvND``: input channel ``c`` becomes outputs ``c*m .. c*m+m-1``."""

    def propagate(self, layer, inputs, ctx):
        _check_plain(layer)
        if inputs[0] is None:
            raise Boundary("its input has no channel axis")
        ctx.passthrough(inputs[0])
        return [np.repeat(inputs[0], layer.depth_multiplier)]

    def rebuild(self, layer, config, weights, keep):
        kernel = take(weights[0], keep.inputs[0], -2)
        m = layer.depth_multiplier
        rest = [take(b.reshape(-1, m), keep.inputs[0], 0).ravel() for b in weights[1:]]
        return config, [kernel, *rest]

    def filter_weights(self, layer):
        return [(layer.kernel, len(layer.kernel.shape) - 2)]


class SeparableRule(Rule):
    """``SeparableConvND``: consumes input channels (depthwise) and produces ``filters``."""

    def propagate(self, layer, inputs, ctx):
        _check_plain(layer)
        return [_produce(layer, ctx, layer.filters)]

    def rebuild(self, layer, config, weights, keep):
        depthwise, pointwise, *rest = weights
        rows = keep.inputs[0]
        if rows is not None:
            depthwise = take(depthwise, rows, -2)
            rows = _depthwise_rows(rows, layer.depth_multiplier)
        pointwise = take(take(pointwise, rows, -2), keep.outputs[0], -1)
        rest = [take(b, keep.outputs[0], 0) for b in rest]
        return {**config, "filters": pointwise.shape[-1]}, [depthwise, pointwise, *rest]

    def filter_weights(self, layer):
        return [(layer.pointwise_kernel, len(layer.pointwise_kernel.shape) - 1)]


_identity = IdentityRule()
register_many(
    [L.ReLU, L.LeakyReLU, L.ELU, L.Identity, L.ActivityRegularization]
    + [L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D]
    + [L.GaussianNoise, L.GaussianDropout, L.AlphaDropout]
    + [L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D]
    + [L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D]
    + [L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D]
    + [L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D]
    + [L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D]
    + [L.Cropping1D, L.Cropping2D, L.Cropping3D]
    + [L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Resizing],
    _identity,
)
register_many([L.Activation], ActivationRule())
register_many([L.Rescaling], RescalingRule())
register_many([L.BatchNormalization], BatchNormRule())
register_many([L.PReLU], PerChannelRule())
register_many([L.Normalization], NormalizationRule())
register_many(
    [L.LayerNormalization, L.GroupNormalization, L.UnitNormalization, L.RMSNormalization],
    ChannelNormRule(),
)
register_many([L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum], MergeRule())
register_many([L.Concatenate], ConcatenateRule())
register_many([L.Flatten], FlattenRule())
register_many([L.Reshape], ReshapeRule())
register_many([L.Dense], DenseRule())
register_many([L.Conv1D, L.Conv2D, L.Conv3D], ConvRule())
register_many([L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose], ConvRule(transpose=True))
register_many([L.DepthwiseConv1D, L.DepthwiseConv2D], DepthwiseRule())
register_many([L.SeparableConv1D, L.SeparableConv2D], SeparableRule())
