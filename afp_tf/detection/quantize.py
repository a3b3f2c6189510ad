"""Full-integer int8 TFLite for detectors: int8 network, float box/score post-processing.

Plain full-integer conversion quantises every tensor, and an SSD's raw output concatenates box
offsets (a few units) with class logits (tens): one int8 scale for both loses the offsets, and
int8 relative box coordinates in a 1360-px frame are 5 px apart. So the conversion quantises
every convolution, pooling and fully connected layer (weights per channel, activations
calibrated on training frames) and keeps the ops that only move, join, decode, rank or resample
the predictor outputs in float (:data:`FLOAT_OPS`: reshapes, concatenations, slices,
element-wise decoding, softmax, top-k, NMS, and a Faster R-CNN's proposal and ROI Align ops):
each predictor has its own int8 scale and is dequantised right after it. The interface is
float (the graph quantises the image itself). Builtin TFLite ops only.

Denylisting the float ops is not enough by itself: the quantizer puts a quantise-dequantise
pair on every calibrated tensor and quantises ``same-scale`` ops (slices, gathers) between
such pairs, and fixed-range ops (``SOFTMAX``: scale 1/256) carry their int8 range to the next
op even when kept in float. Scores and boxes came out rounded to int8 steps (the decoded boxes
of an SSD to 1/255 of the frame). So the calibration ranges of tensors that only float ops read
are dropped before quantising (:func:`_float_region`): those tensors stay float throughout.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert
from tensorflow.lite.tools import flatbuffer_utils

from afp_tf import io_utils

# Ops kept in float; everything else with an int8 kernel (CONV_2D, DEPTHWISE_CONV_2D,
# FULLY_CONNECTED, pooling, PAD, ...) runs in int8.
FLOAT_OPS = (
    "RESHAPE",
    "CONCATENATION",
    "STRIDED_SLICE",
    "SLICE",
    "ADD",
    "SUB",
    "MUL",
    "DIV",
    "EXP",
    "MINIMUM",
    "MAXIMUM",
    "SOFTMAX",
    "GATHER",
    "FLOOR_MOD",
    "FLOOR_DIV",
    "SELECT_V2",
    "PACK",
    "RELU",  # not fused into a conv: clip_by_value(x, 0, 1) of decoded boxes
    "GREATER",  # score thresholds
    # Faster R-CNN proposals (top-k, Fast NMS) and ROI Align (bilinear weights, two matmuls)
    "TOPK_V2",
    "REDUCE_MAX",
    "UNPACK",
    "SQRT",
    "LOG",
    "FLOOR",
    "ABS",
    "MEAN",
    "BATCH_MATMUL",
    "TRANSPOSE",
    "TILE",  # FPN nearest-neighbour upsampling: a copy between float ADDs
)
# The int8 compute: a float op's output keeps its calibrated range only where one of these
# reads it (the image, the int8 ops' outputs and their float-op inputs keep theirs).
INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D")
CALIBRATION_FRAMES = 64  # full frames are large; 64 settle the activation ranges


def to_int8_tflite(saved_model: str, representative: np.ndarray) -> bytes:
    """Converts a SavedModel (``image`` input) to an int8 TFLite with float post-processing."""
    rep = np.asarray(representative, np.float32)[:CALIBRATION_FRAMES]
    if len(rep) == 0:
        raise ValueError("int8 conversion needs representative training frames; got none.")

    def dataset():
        return ([x[None]] for x in rep)

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    # The two steps of tf.lite.experimental.QuantizationDebugger with denylisted ops
    # (calibrate, then quantise), the calibrated model edited in between (module docstring).
    converter._experimental_calibrate_only = True  # noqa: SLF001 - ranges only, no quantising
    calibrated = _float_region(converter.convert(), FLOAT_OPS)
    return convert.mlir_quantize(calibrated, denylisted_ops=list(FLOAT_OPS))


def write_int8_tflite(saved_model: Path, path: Path, representative: np.ndarray) -> None:
    """Writes :func:`to_int8_tflite` of ``saved_model`` to ``path`` (nothing left if it fails)."""
    with io_utils.atomic_path(path) as tmp:
        tmp.write_bytes(to_int8_tflite(str(saved_model), representative))


def _float_region(calibrated: bytes, float_ops: Sequence[str]) -> bytes:
    """``calibrated`` without the ranges of the tensors that ops of ``float_ops`` write and no op
    of :data:`INT8_OPS` reads."""
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    for graph in model.subgraphs:
        kinds = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in graph.operators]
        read_by_int8 = {
            i for op, kind in zip(graph.operators, kinds, strict=True) if kind in INT8_OPS
            for i in op.inputs
        }  # fmt: skip
        for op, kind in zip(graph.operators, kinds, strict=True):
            if kind in float_ops:
                for i in set(op.outputs) - read_by_int8:
                    graph.tensors[i].quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_precision(model: bytes, ops: Sequence[str] = ("CONV_2D", "DEPTHWISE_CONV_2D")) -> dict:
    """How many of each op type run in int8 and in float (by their first input's type)."""
    interpreter = tf.lite.Interpreter(model_content=model)
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only op listing in the API
        if op["op_name"] in ops and len(op["inputs"]):
            kind = "int8" if dtypes[op["inputs"][0]] == np.int8 else "float"
            counts[op["op_name"]][kind] += 1
    return {name: dict(c) for name, c in counts.items()}
