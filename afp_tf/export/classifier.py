"""Exports a model as SavedModel, TFLite (fp32/fp16/int8) and ONNX, and verifies each artifact.

:func:`export_model` is the classifier's exporter; a task with other outputs (the SSD detector,
:mod:`afp_tf.detection.export`) supplies its own exporter built on :func:`write_formats`, so
nothing here knows about tasks. Every requested format is attempted: one that fails is reported
with its cause and the others are still written. Full-integer ``tflite_int8`` calibrates on
real inputs only; without them it is skipped with a note, never calibrated on noise. A model
trained under a reduced-precision dtype policy (``mixed_bfloat16``, ``mixed_float16``) is
exported as its float32 copy (:func:`afp_tf.train.precision.as_float32`).

Command line (see :mod:`afp_tf.export.cli`)::

    afp-tf-export --model M.keras --out DIR [--formats a,b] [--data d.npz | IMAGE_DIR | tfds:NAME]
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from absl import logging

from afp_tf.export.artifacts import (
    INPUT_NAME,
    check_single_io,
    convert,
    layer_names,
    prepare_out_dir,
    write_saved_model,
)
from afp_tf.export.checks import (
    ALL_FORMATS,
    FORMATS,
    REPORT_NAME,
    ExportError,
    ExportVerificationError,
    Format,
    checked,
    metric_failures,
    not_written,
    parse_formats,
    parse_tolerances,
    resolve_formats,
    run_and_compare,
    summary_table,
    write_report,
)
from afp_tf.train import precision

__all__ = [
    "ALL_FORMATS",
    "FORMATS",
    "REPORT_NAME",
    "ExportError",
    "ExportVerificationError",
    "export_model",
    "parse_formats",
    "parse_tolerances",
    "summary_table",
    "write_formats",
]

OUTPUT_NAME = "logits"
MIN_SAMPLES = 256
NO_CALIBRATION = "skipped: no calibration data (give real inputs, e.g. --data, to calibrate int8)"

# ``(format, artifact path) -> report entry`` (see ``checks.checked``).
Verify = Callable[[Format, Path], dict]
# ``(saved_model, artifact path, representative) -> None``: writes one format another way.
Writer = Callable[[Path, Path, Any], None]


def write_formats(
    model: keras.Model,
    out: Path,
    formats: Sequence[Format],
    *,
    representative: np.ndarray | None,
    verify: Verify,
    output_name: str,
    writers: Mapping[str, Writer] | None = None,
) -> dict[str, dict]:
    """Writes every format of ``model`` from one SavedModel and verifies each with ``verify``.

    A format that cannot be written or verified gets a ``failed`` entry with its cause and the
    others are still written; ``tflite_int8`` without ``representative`` is ``skipped``.
    ``writers`` lets a task write some formats its own way (by format name); the others are
    converted by ``artifacts.convert``.

    Returns:
        ``{format name: report entry}``.
    """
    input_shape = check_single_io(model)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".export.") as tmp:
        names = [f.name for f in formats]
        saved_model = out / "saved_model" if "saved_model" in names else Path(tmp) / "sm"
        try:
            write_saved_model(model, input_shape, saved_model, output_name)
        except Exception as e:  # noqa: BLE001 - every format is converted from it: all fail
            cause = f"SavedModel export failed: {_first_line(e)}"
            logging.warning("%s", cause)
            return {f.name: not_written(f, "failed", cause) for f in formats}
        layers = layer_names(model)
        for fmt in formats:
            write = (writers or {}).get(fmt.name) or functools.partial(
                _convert, fmt.name, layers=layers
            )
            results[fmt.name] = _attempt(
                fmt, out / fmt.filename, saved_model, representative, write, verify
            )
    return results


def _convert(name: str, saved_model: Path, path: Path, representative, *, layers) -> None:
    if name != "saved_model":  # already written: every format is converted from it
        convert(name, saved_model, path, representative, layers)


def _attempt(fmt, path, saved_model, representative, write: Writer, verify: Verify) -> dict:
    if fmt.needs_calibration and (representative is None or len(representative) == 0):
        logging.info("%s %s.", fmt.name, NO_CALIBRATION)
        return not_written(fmt, "skipped", NO_CALIBRATION)
    try:
        write(saved_model, path, representative)
        entry = verify(fmt, path)
    except Exception as e:  # noqa: BLE001 - one format's failure must not stop the others
        cause = _first_line(e)
        logging.warning("%s failed: %s", fmt.name, cause)
        return not_written(fmt, "failed", cause)
    if entry["failures"]:
        logging.warning("%s failed its checks: %s", fmt.name, "; ".join(entry["failures"]))
    return entry


def _first_line(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return text if isinstance(e, ExportError) else f"{type(e).__name__}: {text}"


def export_model(
    model: keras.Model,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ALL_FORMATS,
    representative: np.ndarray | None = None,
    val_x: np.ndarray,
    val_y: np.ndarray | None,
    data_note: str | None = None,
    tolerances: Mapping[str, Mapping[str, float | None]] | None = None,
    measure_metric: bool = True,
) -> dict:
    """Writes the artifacts of a classifier to ``out_dir``, verifies them, writes the report.

    The artifacts and the Keras reference they are checked against are float32 whatever
    ``model``'s dtype policy (``precision.as_float32``); the report's ``model_precision``
    names the reduced-precision policies ``model`` was built with, if any.

    Args:
        model: A classifier with one image input and one logits output.
        out_dir: Created if missing; artifacts replace earlier ones atomically.
        formats: Names from ``ALL_FORMATS``.
        representative: Real training inputs calibrating full-integer quantisation; None
            skips ``tflite_int8`` with a note.
        val_x: Validation inputs (at least 256 recommended) every artifact is run on.
        val_y: Their integer labels; None uses the Keras model's argmax as labels, so the
            metric becomes top-1 agreement with Keras.
        data_note: Recorded in the report (e.g. where the inputs came from).
        tolerances: ``{format: {"max_rel_diff" | "max_metric_drop": value}}`` replacing the
            defaults of ``FORMATS`` (see :func:`parse_tolerances`).
        measure_metric: False when ``val_x`` is not data (random inputs, whose logits sit near
            ties): accuracy is not measured (None in the report) and every format is held to
            its relative difference from Keras, by default ``Format.unmeasured_rel_diff``.
            ``val_y`` must then be None.

    Returns:
        The report, also written to ``out_dir/export_report.json``.

    Raises:
        ExportVerificationError: A format failed (after every format was attempted and the
            report written); ``.report`` holds the report.
    """
    if val_y is not None and not measure_metric:
        raise ValueError("val_y is given but measure_metric=False: labels measure accuracy.")
    fmts = resolve_formats(formats, tolerances, measured=measure_metric)
    out = prepare_out_dir(out_dir)
    input_shape = check_single_io(model)
    reduced = ", ".join(sorted(precision.reduced_policies(model)))
    if reduced:
        logging.info("%s computes in %s: exporting its float32 copy.", model.name, reduced)
    model = precision.as_float32(model)
    val_x, labels, keras_logits = _validation_data(model, val_x, val_y)
    keras_metric = _accuracy(keras_logits, labels) if measure_metric else None
    label_source = "given" if val_y is not None else "keras_argmax"
    report: dict[str, Any] = {
        "task": "classification",
        "model_precision": reduced or "float32",
        "samples": len(val_x),
        "labels": label_source if measure_metric else "none",
        "data": data_note or "validation set",
        "calibration": "none" if representative is None else f"{len(representative)} inputs",
        "metric": "accuracy",
        "keras_metric": keras_metric,
        "relative_difference": "max|artifact - keras| / max|keras| over all logits",
        "input": {"name": INPUT_NAME, "shape": [None, *input_shape]},
        "output": OUTPUT_NAME,
    }

    def verify(fmt: Format, path: Path) -> dict:
        runner, logits, abs_diff, rel_diff, failures = run_and_compare(
            fmt, path, val_x, keras_logits
        )
        metric = None
        if measure_metric:
            metric = _accuracy(logits, labels)
            failures += metric_failures(fmt, metric, keras_metric, "accuracy")
        return checked(
            fmt,
            path,
            runner,
            failures,
            max_abs_diff=abs_diff,
            max_rel_diff=rel_diff,
            metric=metric,
            keras_metric=keras_metric,
        )

    report["formats"] = write_formats(
        model, out, fmts, representative=representative, verify=verify, output_name=OUTPUT_NAME
    )
    write_report(out, report, report["formats"])
    logging.info("Exported %s to %s: %s.", model.name, out, _outcome(report["formats"]))
    return report


def _outcome(entries: Mapping[str, dict]) -> str:
    by_status: dict[str, list[str]] = {}
    for name, r in entries.items():
        by_status.setdefault(r["status"], []).append(name)
    return "; ".join(f"{status} {', '.join(names)}" for status, names in by_status.items())


def _validation_data(model, val_x, val_y):
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


if __name__ == "__main__":
    raise SystemExit("The export command is afp-tf-export (python -m afp_tf.export).")
