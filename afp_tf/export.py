"""Exports a classifier as SavedModel, TFLite (fp32/fp16/int8) and ONNX, and verifies each.

Every artifact is verified in its own runtime (LiteRT, ONNX Runtime, ``tf.saved_model.load``)
through the deploy-side runners in the top-level ``export/`` folder, which import nothing but
numpy and that runtime; :mod:`afp_tf.latency` times them with the same scripts.
Detectors (``task="detection"``) go through :mod:`afp_tf.detection.export`, which reuses the
writers here and adds mAP checks and artifacts with decoding + NMS built in.

Routes that work with Keras 3.15 / TF 2.21: the SavedModel is written with
``keras.export.ExportArchive`` (a ``tf.Module`` wrapping a Keras 3 model converts to a TFLite
graph with uninitialised ``READ_VARIABLE`` ops that return NaN); TFLite comes from
``TFLiteConverter.from_saved_model`` on builtin ops only (no Flex ops: the file must run on
plain LiteRT); ONNX from ``tf2onnx.convert.from_function`` on the SavedModel's serving
signature at opset 17 (``from_keras`` does not support Keras 3).

Relative difference is ``max|a - b| / max|b|`` over all logits of the batch, ``b`` the Keras
output: element-wise relative error of near-zero logits is meaningless.

    python -m afp_tf.export --model M.keras --out DIR [--formats a,b] [--data d.npz] [--samples 256]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from afp_tf import io_utils

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
REPORT_NAME = "export_report.json"
DEPLOY_DIR = Path(__file__).resolve().parents[1] / "export"
ONNX_OPSET = 17
MIN_SAMPLES = 256
CALIBRATION_SAMPLES = 200


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format: file name, deploy runner, and the checks its outputs must pass.

    ``max_rel_diff`` bounds the relative difference from Keras (None: not checked, reported);
    ``max_metric_drop`` bounds how far the metric may fall below the Keras metric (fractions).
    """

    name: str
    filename: str
    runner: str
    max_rel_diff: float | None
    max_metric_drop: float | None


# fp32 formats must reproduce Keras to float round-off. fp16 weights shift logits by ~1e-3
# relative; 1e-2 leaves room for deep models. Integer formats change logits by design: they
# are held to the task metric, within 1 point of the float model.
FORMATS = {
    f.name: f
    for f in (
        Format("saved_model", "saved_model", "run_saved_model.py", 1e-4, None),
        Format("tflite_fp32", "model_fp32.tflite", "run_tflite.py", 1e-4, None),
        Format("tflite_fp16", "model_fp16.tflite", "run_tflite.py", 1e-2, 0.01),
        Format("tflite_dynamic_int8", "model_dynamic_int8.tflite", "run_tflite.py", None, 0.01),
        Format("tflite_int8", "model_int8.tflite", "run_tflite.py", None, 0.01),
        Format("onnx", "model.onnx", "run_onnx.py", 1e-4, None),
    )
}
ALL_FORMATS = tuple(FORMATS)


class ExportError(RuntimeError):
    """A conversion failed; the message names the format and, if known, the ops at fault."""


class ExportVerificationError(ExportError):
    """An artifact failed verification; ``report`` is the full export report (already written)."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` or comma-separated names (or a sequence of names) -> validated format names."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return ALL_FORMATS
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ValueError(
            f"Unknown export format(s) {unknown or spec!r}; choose from "
            f"{', '.join(ALL_FORMATS)} or 'all'."
        )
    return tuple(dict.fromkeys(names))


def export_model(
    model: keras.Model,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] = ALL_FORMATS,
    representative: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray | None,
    metric: str = "accuracy",
    data_note: str | None = None,
    task: str = "classification",
    anchors: np.ndarray | None = None,
) -> dict:
    """Writes the artifacts of ``model`` to ``out_dir``, verifies them, writes the report.

    Args:
        model: A classifier with one image input and one logits output (or, with
            ``task="detection"``, an SSD with one raw output).
        out_dir: Created if missing; artifacts replace earlier ones atomically.
        formats: Names from ``ALL_FORMATS``.
        representative: Training inputs calibrating full-integer quantisation.
        val_x: Validation inputs (at least 256 recommended) every artifact is run on.
        val_y: Their integer labels; None uses the Keras model's argmax as labels, so the
            metric becomes top-1 agreement with Keras.
        metric: Only "accuracy" (top-1) for now.
        data_note: Recorded in the report (e.g. that inputs were random).
        task: "classification", or "detection": ``val_y`` are packed boxes, artifacts are
            checked by mAP@0.5 and decoding + NMS are built in where the runtime has the ops
            (see :mod:`afp_tf.detection.export`).
        anchors: The detector's default boxes (detection only).

    Returns:
        The report, also written to ``out_dir/export_report.json``.

    Raises:
        ExportError: A conversion failed (no partial file is left).
        ExportVerificationError: An artifact failed a check (after the report is written).
    """
    if task == "detection":
        if anchors is None:
            raise ValueError("task='detection' needs the detector's anchors.")
        from afp_tf.detection import export as detection_export  # noqa: PLC0415 - avoids a cycle

        return detection_export.export_detector(
            model,
            out_dir,
            anchors=anchors,
            formats=formats,
            representative=representative,
            val_x=val_x,
            val_y=val_y,
            data_note=data_note,
        )
    if task != "classification":
        raise ValueError(f"task={task!r} is not one of classification, detection.")
    formats = parse_formats(formats)
    out = prepare_out_dir(out_dir)
    input_shape = check_single_io(model)
    val_x, labels, keras_logits = _validation_data(model, val_x, val_y, metric)
    keras_metric = _accuracy(keras_logits, labels)
    report: dict[str, Any] = {
        "samples": len(val_x),
        "labels": "given" if val_y is not None else "keras_argmax",
        "data": data_note or "validation set",
        "metric": metric,
        "keras_metric": keras_metric,
        "relative_difference": "max|artifact - keras| / max|keras| over all logits",
        "input": {"name": INPUT_NAME, "shape": [None, *input_shape]},
        "output": OUTPUT_NAME,
        "formats": {},
    }
    with tempfile.TemporaryDirectory(dir=out, prefix=".export.") as tmp:
        saved_model = out / "saved_model" if "saved_model" in formats else Path(tmp) / "sm"
        write_saved_model(model, input_shape, saved_model)
        layers = layer_names(model)
        for name in formats:
            fmt = FORMATS[name]
            path = out / fmt.filename
            if name != "saved_model":
                convert(name, saved_model, path, representative, layers)
            report["formats"][name] = _verify(fmt, path, val_x, labels, keras_logits, keras_metric)
    write_report(out, report, report["formats"])
    logging.info("Exported %s to %s, all checks passed.", ", ".join(formats), out)
    return report


def write_report(out: Path, report: dict, checks: dict) -> None:
    """Sets ``report["passed"]``, writes the report, then raises if any of ``checks`` failed.

    Raises:
        ExportVerificationError: naming every failed check, after the report is written.
    """
    failed = {n: r["failures"] for n, r in checks.items() if not r["passed"]}
    report["passed"] = not failed
    io_utils.write_json(out / REPORT_NAME, report)
    if failed:
        raise ExportVerificationError(
            f"Export verification failed in {out}: "
            + "; ".join(f"{n}: {', '.join(f)}" for n, f in failed.items())
            + f". See {out / REPORT_NAME}.",
            report,
        )


def layer_names(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        names += [layer.name, *(layer_names(layer) if isinstance(layer, keras.Model) else [])]
    return names


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        msg = f"Cannot write to export directory {out}: {e.strerror}. Pass a writable --out."
        raise ExportError(msg) from e
    return out


def check_single_io(model: keras.Model) -> tuple[int, ...]:
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


def _validation_data(model, val_x, val_y, metric):
    if metric != "accuracy":
        raise ValueError(f"Unsupported export metric {metric!r}; only 'accuracy' is implemented.")
    val_x = np.asarray(val_x, np.float32)
    if len(val_x) < MIN_SAMPLES:
        logging.warning(
            "Verifying on %d samples, fewer than the %d asked for.", len(val_x), MIN_SAMPLES
        )
    logits = np.asarray(model.predict(val_x, batch_size=64, verbose=0), np.float32)
    labels = np.argmax(logits, -1) if val_y is None else np.asarray(val_y).reshape(-1)
    if len(labels) != len(val_x):
        raise ValueError(f"val_x has {len(val_x)} samples but val_y {len(labels)}.")
    return val_x, labels, logits


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == labels))


def write_saved_model(
    model: keras.Model,
    input_shape: tuple[int, ...],
    path: Path,
    output_name: str = OUTPUT_NAME,
    *,
    endpoint=None,
    batch: int | None = None,
) -> None:
    """Writes ``model`` as a SavedModel whose ``serve`` signature maps ``image`` to its outputs.

    Args:
        endpoint: ``image -> {name: tensor}`` to serve instead of ``{output_name: model(image)}``
            (e.g. with decoding and NMS).
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
    name: str, saved_model: Path, path: Path, representative: np.ndarray, layers: Sequence[str]
) -> None:
    """Converts the SavedModel to format ``name`` at ``path``; nothing is left if it fails."""
    try:
        with io_utils.atomic_path(path) as tmp:
            if name == "onnx":
                _to_onnx(saved_model, tmp, layers)
            else:
                tmp.write_bytes(_to_tflite(name, saved_model, representative))
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - converters raise many types; re-raised with context
        message = str(e).strip()
        ops = re.findall(r"'(tf\.\w+)' op", message)
        paths = re.findall(r'"([\w.-]+(?:/[\w.-]+)+)@', message) if ops else []
        first = (message.splitlines() or [""])[0]
        raise ExportError(
            f"{name} conversion failed{_culprits(ops, paths, layers)}: {first}"
        ) from e


def _to_tflite(name: str, saved_model: Path, representative: np.ndarray) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if name != "tflite_fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "tflite_fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif name == "tflite_int8":
        rep = np.asarray(representative, np.float32)[:CALIBRATION_SAMPLES]
        if len(rep) == 0:
            raise ValueError("tflite_int8 needs representative training inputs; got none.")
        converter.representative_dataset = lambda: ([x[None]] for x in rep)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _to_onnx(saved_model: Path, path: Path, layers: Sequence[str]) -> None:
    import onnx  # noqa: PLC0415 - only needed for this format
    import tf2onnx  # noqa: PLC0415

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


def run_and_compare(fmt: Format, path: Path, val_x, keras_out, batch: int = 64) -> tuple:
    """Runs an artifact in its own runtime and compares its raw outputs with Keras'.

    Returns:
        ``(runner, outputs, max_abs_diff, max_rel_diff, failures)``; ``failures`` holds the
        relative-difference check of ``fmt``.
    """
    runner = load_runner(fmt.runner).load(str(path), threads=1)
    out = np.concatenate(
        [runner.predict(val_x[i : i + batch]) for i in range(0, len(val_x), batch)]
    )
    abs_diff = float(np.max(np.abs(out - keras_out)))
    rel_diff = abs_diff / max(float(np.max(np.abs(keras_out))), 1e-12)
    failures = []
    if fmt.max_rel_diff is not None and not rel_diff <= fmt.max_rel_diff:
        failures.append(f"relative difference {rel_diff:.3g} > {fmt.max_rel_diff:g}")
    return runner, out, abs_diff, rel_diff, failures


def _verify(fmt: Format, path: Path, val_x, val_y, keras_logits, keras_metric) -> dict:
    runner, logits, abs_diff, rel_diff, failures = run_and_compare(fmt, path, val_x, keras_logits)
    metric = _accuracy(logits, val_y)
    if fmt.max_metric_drop is not None and not metric >= keras_metric - fmt.max_metric_drop:
        failures.append(
            f"metric {metric:.4f} more than {fmt.max_metric_drop:g} below Keras {keras_metric:.4f}"
        )
    return {
        "path": str(path),
        "size_bytes": artifact_size(path),
        "max_abs_diff": abs_diff,
        "max_rel_diff": rel_diff,
        "metric": metric,
        "keras_metric": keras_metric,
        "thresholds": {"max_rel_diff": fmt.max_rel_diff, "max_metric_drop": fmt.max_metric_drop},
        "runtime": runner.runtime,
        "passed": not failures,
        "failures": failures,
    }


def artifact_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def load_runner(script: str):
    """Imports a deploy runner (``export/run_*.py``) as a module, for in-process verification."""
    path = DEPLOY_DIR / script
    if not path.is_file():
        raise FileNotFoundError(
            f"Deploy runner {path} not found; afp_tf.export needs the "
            "repository's export/ folder (install afp_tf editable)."
        )
    spec = importlib.util.spec_from_file_location(f"afp_tf_deploy_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: exports a saved ``.keras`` classifier and verifies the artifacts."""
    import argparse  # noqa: PLC0415 - CLI only

    parser = argparse.ArgumentParser("python -m afp_tf.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved .keras classifier")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--formats", default="all", help=f"comma-separated: {','.join(FORMATS)}")
    parser.add_argument("--data", help=".npz with x, y (and optional x_rep for calibration)")
    parser.add_argument("--samples", type=int, default=MIN_SAMPLES, help="validation samples")
    args = parser.parse_args(argv)
    model = keras.saving.load_model(args.model, compile=False)
    shape = check_single_io(model)
    note, y = "random uniform [0, 1) inputs (no --data); int8 calibrated on them", None
    x = np.random.default_rng(0).random((args.samples, *shape), dtype=np.float32)
    rep = x
    if args.data:
        with np.load(args.data) as data:
            if "x" not in data:
                raise ValueError(f"{args.data} has no array 'x' (arrays: {list(data)}).")
            x, rep = data["x"][: args.samples], data["x_rep" if "x_rep" in data else "x"]
            y = data["y"][: args.samples] if "y" in data else None
        note = f"--data {args.data}"
    report = export_model(
        model,
        args.out,
        formats=parse_formats(args.formats),
        representative=rep,
        val_x=x,
        val_y=y,
        data_note=note,
    )
    keys = ("size_bytes", "max_rel_diff", "metric", "passed")
    summary = {n: {k: r[k] for k in keys} for n, r in report["formats"].items()}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
