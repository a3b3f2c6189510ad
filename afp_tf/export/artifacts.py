"""Writes the deployable artifacts: a SavedModel, then TFLite and ONNX converted from it.

Routes that work with Keras 3.15 / TF 2.21: the SavedModel is written with
``keras.export.ExportArchive`` (a ``tf.Module`` wrapping a Keras 3 model converts to a TFLite
graph with uninitialised ``READ_VARIABLE`` ops that return NaN); TFLite comes from
``TFLiteConverter.from_saved_model`` on builtin ops only (no Flex ops: the file must run on
plain LiteRT); ONNX from ``tf2onnx.convert.from_function`` on the SavedModel's serving
signature at opset 17 (``from_keras`` does not support Keras 3).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from afp_tf import extras, io_utils
from afp_tf.export.checks import ExportError

INPUT_NAME = "image"
ONNX_OPSET = 17
CALIBRATION_SAMPLES = 200  # full-integer quantisation calibrates on at most this many inputs


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Creates ``out_dir`` and checks it is writable.

    Raises:
        ExportError: it cannot be written.
    """
    out = Path(out_dir).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        msg = f"Cannot write to export directory {out}: {e.strerror}. Pass a writable --out."
        raise ExportError(msg) from e
    return out


def check_single_io(model: keras.Model) -> tuple[int, ...]:
    """The fixed input shape (without batch) of a model with one input and one output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs; export supports models with one "
            "image input and one output."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ValueError(
            f"Model {model.name!r} input shape {shape} is not fully defined; "
            "build it with a fixed image size."
        )
    return tuple(int(d) for d in shape)


def layer_names(model: keras.Model) -> list[str]:
    """Names of every layer, those inside nested models included."""
    names = []
    for layer in model.layers:
        names += [layer.name, *(layer_names(layer) if isinstance(layer, keras.Model) else [])]
    return names


def write_saved_model(
    model: keras.Model,
    input_shape: tuple[int, ...],
    path: Path,
    output_name: str,
    *,
    endpoint=None,
    batch: int | None = None,
) -> None:
    """Writes ``model`` as a SavedModel whose ``serve`` signature maps ``image`` to its outputs.

    Args:
        output_name: The signature's output, ``{output_name: model(image)}``.
        endpoint: ``image -> {name: tensor}`` to serve instead (e.g. with decoding and NMS).
        batch: a fixed batch size for the signature (default: any).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        endpoint or (lambda image: {output_name: model(image, training=False)}),
        input_signature=[tf.TensorSpec([batch, *input_shape], tf.float32, name=INPUT_NAME)],
    )
    with io_utils.atomic_path(path, directory=True) as tmp:
        archive.write_out(str(tmp), verbose=False)


def convert(
    name: str,
    saved_model: Path,
    path: Path,
    representative: np.ndarray | None,
    layers: Sequence[str],
) -> None:
    """Converts the SavedModel to format ``name`` at ``path``; nothing is left if it fails.

    Raises:
        ExportError: naming the format and, when the converter says, the ops and layers.
    """
    try:
        with io_utils.atomic_path(path) as tmp:
            if name == "onnx":
                _to_onnx(saved_model, tmp, layers)
            else:
                tmp.write_bytes(_to_tflite(name, saved_model, representative))
    except (ExportError, extras.MissingExtraError):
        raise
    except Exception as e:  # noqa: BLE001 - converters raise many types; re-raised with context
        message = str(e).strip()
        ops = re.findall(r"'(tf\.\w+)' op", message)
        paths = re.findall(r'"([\w.-]+(?:/[\w.-]+)+)@', message) if ops else []
        first = (message.splitlines() or [""])[0]
        raise ExportError(
            f"{name} conversion failed{_culprits(ops, paths, layers)}: {first}"
        ) from e


def _to_tflite(name: str, saved_model: Path, representative: np.ndarray | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if name != "tflite_fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "tflite_fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif name == "tflite_int8":
        rep = np.asarray([] if representative is None else representative, np.float32)
        if len(rep) == 0:
            raise ExportError("tflite_int8 needs calibration inputs (real training data).")
        rep = rep[:CALIBRATION_SAMPLES]
        converter.representative_dataset = lambda: ([x[None]] for x in rep)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _to_onnx(saved_model: Path, path: Path, layers: Sequence[str]) -> None:
    onnx = extras.require("onnx", "ONNX export")
    tf2onnx = extras.require("tf2onnx", "ONNX export")
    loaded = tf.saved_model.load(str(saved_model))  # keep alive: it owns the variables
    serve = loaded.signatures["serving_default"]
    _, spec = serve.structured_input_signature
    proto, _ = tf2onnx.convert.from_function(
        tf.function(serve), input_signature=[spec[INPUT_NAME]], opset=ONNX_OPSET
    )
    bad = [n for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)]
    if bad:
        ops = [f"tf.{n.op_type}" for n in bad]
        raise ExportError(
            f"onnx conversion failed{_culprits(ops, [n.name for n in bad], layers)}"
            f": no ONNX opset {ONNX_OPSET} equivalent, ONNX Runtime cannot run it."
        )
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def _culprits(ops: Sequence[str], paths: Sequence[str], layers: Sequence[str]) -> str:
    """' at op(s) X in layer(s) L' from op names and graph paths, or '' if there are none.

    Graph paths look like ``functional_1/my_layer_1/op``; a path segment is matched to a model
    layer by name, allowing the ``_N`` suffix TensorFlow adds when tracing.
    """
    if not ops:
        return ""
    found = sorted(
        {
            layer
            for p in paths
            for seg in p.split("/")
            for layer in layers
            if re.fullmatch(re.escape(layer) + r"(_\d+)?", seg)
        }
    )
    where = f" in layer(s) {', '.join(found)}" if found else ""
    return f" at op(s) {', '.join(sorted(set(ops)))}{where}"
