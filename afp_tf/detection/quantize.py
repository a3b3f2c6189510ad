"""Full-integer int8 TFLite for SSD detectors: int8 network, float box/score post-processing.

Plain full-integer conversion quantises every tensor, and an SSD's raw output concatenates box
offsets (a few units) with class logits (tens): one int8 scale for both loses the offsets, and
int8 relative box coordinates in a 1360-px frame are 5 px apart. So the conversion quantises
every convolution and pooling (weights per channel, activations calibrated on training frames)
and keeps the ops that only move, join or decode the predictor outputs in float
(:data:`FLOAT_OPS`: reshapes, concatenations, slices, element-wise decoding, softmax, NMS): each
predictor conv has its own int8 scale and is dequantised right after it. The interface is float
(the graph quantises the image itself). Builtin TFLite ops only.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# Ops kept in float; everything else with an int8 kernel (CONV_2D, DEPTHWISE_CONV_2D, pooling,
# PAD, ...) runs in int8.
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
)
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
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS)),
    )
    return debugger.get_nondebug_quantized_model()


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
