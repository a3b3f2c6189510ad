"""Rules for ``keras.ops`` operations called on symbolic tensors (in functional graphs and in
the traced calls of composite layers): element-wise maths, activations, split, concatenate,
reshapes that keep the channel axis, reductions over non-channel axes, and the spatial
rearrangements (repeat, tile, pad, flip, roll, transpose) that leave the channel axis alone."""

import functools

import keras
import numpy as np

from afp_tf.surgery.builtin import MergeRule
from afp_tf.surgery.keras_internals import activation_ops, core_ops, nn_ops, np_ops
from afp_tf.surgery.rules import Boundary, Rule, register_many


def _channel_axis(axis, rank: int) -> bool:
    """Whether ``axis`` (an int, a sequence, or None for all) includes the last axis."""
    if axis is None:
        return True
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return any(int(a) % rank == rank - 1 for a in axes)


class ElementwiseOpRule(MergeRule):
    """Element-wise functions (``x + 3.0``, ``ops.relu(x)``, ``activations.relu(x, 6.0)``):
    channel-wise when every constant operand is a scalar; tensor operands are coupled like a
    merge."""

    consistent_calls = False

    def propagate(self, layer, inputs, ctx):
        stored = [v for v in vars(layer).values() if hasattr(v, "shape")]  # e.g. clip bounds
        if any(np.size(c) != 1 for c in [*ctx.constants, *stored] if not isinstance(c, bool)):
            raise Boundary("it has a non-scalar constant operand")
        return super().propagate(layer, inputs, ctx)


class SplitRule(Rule):
    """``keras.ops.split``: along the channel axis each output is a slice of the input's
    channels (the split points are recomputed from what is kept); along another axis every
    output carries all channels."""

    consistent_calls = False

    def propagate(self, op, inputs, ctx):
        if inputs[0] is None:
            raise Boundary("its input has no channel axis")
        if not _channel_axis(op.axis, len(ctx.input_shapes[0])):
            return [inputs[0]] * len(ctx.output_shapes)
        ends = np.cumsum([shape[-1] for shape in ctx.output_shapes])
        return [
            inputs[0][end - size : end]
            for end, size in zip(ends, np.diff(ends, prepend=0), strict=True)
        ]

    def rebuild_op(self, op, keep, input_shapes):
        if not _channel_axis(op.axis, len(input_shapes[0])):
            return op
        channels = input_shapes[0][-1]
        split = op.indices_or_sections
        if isinstance(split, int):
            before = [channels // split] * split
        else:
            before = np.diff([0, *split, channels]).tolist()
        sizes = [n if k is None else len(k) for n, k in zip(before, keep.outputs, strict=True)]
        return functools.partial(
            keras.ops.split, indices_or_sections=np.cumsum(sizes)[:-1].tolist(), axis=op.axis
        )


class ConcatenateOpRule(Rule):
    """``keras.ops.concatenate``: on the channel axis, outputs are the inputs' channels in
    order; on another axis, the inputs' channels are coupled like a merge."""

    consistent_calls = False

    def propagate(self, op, inputs, ctx):
        if any(x is None for x in inputs):
            raise Boundary("one of its inputs has no channel axis")
        if _channel_axis(op.axis, len(ctx.output_shapes[0])):
            return [np.concatenate(inputs)]
        if len({len(x) for x in inputs}) > 1:
            raise Boundary("its inputs have different channel counts")
        for other in inputs[1:]:
            ctx.unify(inputs[0], other)
        return [inputs[0]]


class ReductionRule(Rule):
    """``mean``/``max``/``sum``/... over non-channel axes (with or without ``keepdims``):
    each channel is reduced on its own and stays on the last axis."""

    consistent_calls = False

    def propagate(self, op, inputs, ctx):
        if inputs[0] is None:
            raise Boundary("its input has no channel axis")
        if _channel_axis(getattr(op, "axis", None), len(ctx.input_shapes[0])):
            raise Boundary("it reduces over the channel axis")
        return [inputs[0]]


class ShapeOpRule(Rule):
    """``reshape``/``expand_dims``/``squeeze`` that keep the channel axis last and whole."""

    consistent_calls = False

    def propagate(self, op, inputs, ctx):
        if inputs[0] is None or ctx.output_shapes[0][-1] != ctx.input_shapes[0][-1]:
            raise Boundary("it moves or reshapes the channel axis")
        return [inputs[0]]

    def rebuild_op(self, op, keep, input_shapes):
        if not isinstance(op, np_ops.Reshape):
            return op
        shape = list(op.newshape)
        if shape[-1] != -1:
            shape[-1] = len(keep.outputs[0])
        return functools.partial(keras.ops.reshape, newshape=tuple(shape))


def _keeps_last_axis(op, rank: int) -> bool:
    """Whether a rearranging op leaves every channel on the last axis, in place, whole."""
    if isinstance(op, np_ops.Tile):
        repeats = op.repeats if isinstance(op.repeats, (list, tuple)) else [op.repeats]
        return int(repeats[-1]) == 1
    if isinstance(op, np_ops.Pad):
        width = np.asarray(op.pad_width)  # a scalar or one pair pads every axis
        return width.shape == (rank, 2) and width[-1].tolist() == [0, 0]
    if isinstance(op, np_ops.Transpose):
        return op.axes is not None and int(op.axes[-1]) % rank == rank - 1
    return op.axis is not None and not _channel_axis(op.axis, rank)  # repeat, flip, roll


class RearrangeOpRule(Rule):
    """``repeat``/``tile``/``pad``/``flip``/``roll``/``transpose`` over the spatial axes (e.g.
    YOLOv8's nearest-neighbour upsampling by ``ops.repeat``): channels pass through."""

    consistent_calls = False

    def propagate(self, op, inputs, ctx):
        if inputs[0] is None or not _keeps_last_axis(op, len(ctx.input_shapes[0])):
            raise Boundary("it rearranges the channel axis")
        return [inputs[0]]


_ELEMENTWISE_OPS = (
    [np_ops.Add, np_ops.Subtract, np_ops.Multiply, np_ops.Divide, np_ops.TrueDivide]
    + [np_ops.Maximum, np_ops.Minimum, np_ops.Power, np_ops.Negative, np_ops.Absolute]
    + [np_ops.Square, np_ops.Sqrt, np_ops.Exp, np_ops.Log, np_ops.Tanh, np_ops.Clip]
    + [nn_ops.Relu, nn_ops.Relu6, nn_ops.Sigmoid, nn_ops.HardSigmoid, nn_ops.HardSilu]
    + [nn_ops.Silu, nn_ops.Gelu, nn_ops.Elu, nn_ops.Selu, nn_ops.LeakyRelu, nn_ops.Softplus]
    + [nn_ops.Softsign, nn_ops.HardTanh, nn_ops.Celu, nn_ops.LogSigmoid]
    + [activation_ops.ReLU, activation_ops.Mish, core_ops.Cast, np_ops.Reciprocal]
)
register_many(_ELEMENTWISE_OPS, ElementwiseOpRule())
register_many([np_ops.Split], SplitRule())
register_many([np_ops.Concatenate], ConcatenateOpRule())
register_many([np_ops.Reshape, np_ops.ExpandDims, np_ops.Squeeze], ShapeOpRule())
register_many(
    [np_ops.Mean, np_ops.Max, np_ops.Min, np_ops.Sum, np_ops.Amax, np_ops.Amin, np_ops.Prod]
    + [np_ops.Var, np_ops.Std],
    ReductionRule(),
)
register_many(
    [np_ops.Repeat, np_ops.Tile, np_ops.Pad, np_ops.Flip, np_ops.Roll, np_ops.Transpose],
    RearrangeOpRule(),
)
