"""The export formats, the checks each artifact must pass, and the export report.

Every artifact is verified in its own runtime (LiteRT, ONNX Runtime, ``tf.saved_model.load``)
through the deploy-side runners (``export/`` in the repository, ``afp_tf.deploy`` when
installed), which import nothing but numpy and that runtime. This module imports no
TensorFlow, so command lines and config validation can use it cheaply.

Relative difference is ``max|a - b| / max|b|`` over all outputs of the batch, ``b`` the Keras
output: element-wise relative error of near-zero outputs is meaningless.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from afp_tf import extras, io_utils, resources

REPORT_NAME = "export_report.json"
CHECKS = ("max_rel_diff", "max_metric_drop")


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format: file name, deploy runner, and the checks its outputs must pass.

    ``max_rel_diff`` bounds the relative difference from Keras (None: not checked, reported);
    ``max_metric_drop`` bounds how far the task metric may fall below the Keras model's.
    """

    name: str
    filename: str
    runner: str
    max_rel_diff: float | None
    max_metric_drop: float | None

    @property
    def needs_calibration(self) -> bool:
        """Full-integer quantisation calibrates on real inputs."""
        return self.name == "tflite_int8"


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
_RUNTIME = {"run_tflite.py": "ai_edge_litert", "run_onnx.py": "onnxruntime"}


class ExportError(RuntimeError):
    """A conversion failed; the message names the format and, if known, the ops at fault."""


class ExportVerificationError(ExportError):
    """An artifact failed; ``report`` is the full export report (already written)."""

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


def parse_tolerances(spec: str | Sequence[str]) -> dict[str, dict[str, float | None]]:
    """``"FORMAT.CHECK=VALUE,..."`` (or a sequence of items) -> ``{format: {check: value}}``.

    ``CHECK`` is ``max_rel_diff`` or ``max_metric_drop``; ``VALUE`` a number >= 0, or ``none``
    to report without checking. Example: ``"tflite_int8.max_metric_drop=0.02"``.

    Raises:
        ValueError: naming the item and what is accepted.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: dict[str, dict[str, float | None]] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        name, _, check = key.strip().rpartition(".")
        if not sep or name not in FORMATS or check not in CHECKS:
            raise ValueError(
                f"Tolerance {item!r} must look like FORMAT.CHECK=VALUE with FORMAT one of "
                f"{', '.join(ALL_FORMATS)} and CHECK one of {', '.join(CHECKS)}."
            )
        out.setdefault(name, {})[check] = _tolerance_value(item, raw.strip())
    return out


def _tolerance_value(item: str, raw: str) -> float | None:
    if raw.lower() == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"Tolerance {item!r}: the value must be a number >= 0 or 'none'.")
    return value


def resolve_formats(
    names: Sequence[str],
    tolerances: Mapping[str, Mapping[str, float | None]] | None = None,
    *,
    metric_drop: Mapping[str, float | None] | None = None,
) -> list[Format]:
    """The formats ``names`` with a task's default metric drops, then ``tolerances``, applied.

    Args:
        names: Format names (validated by :func:`parse_formats`).
        tolerances: ``{format: {check: value}}`` from :func:`parse_tolerances`.
        metric_drop: A task's own ``max_metric_drop`` per format (e.g. in mAP points),
            replacing the classifier defaults of ``FORMATS``.
    """
    out = []
    for name in parse_formats(names):
        fmt = FORMATS[name]
        if metric_drop is not None:
            fmt = dataclasses.replace(fmt, max_metric_drop=metric_drop.get(name))
        out.append(dataclasses.replace(fmt, **dict((tolerances or {}).get(name, {}))))
    return out


def load_runner(script: str):
    """Imports a deploy runner (e.g. ``run_tflite.py``) as a module, for in-process checks.

    Raises:
        MissingExtraError: its runtime is not installed (the message names the extra).
    """
    path = resources.deploy_dir() / script
    spec = importlib.util.spec_from_file_location(f"afp_tf_deploy_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        runtime = _RUNTIME.get(script)
        if runtime is None or e.name is None or e.name.split(".")[0] != runtime:
            raise
        raise extras.MissingExtraError(
            extras.missing_extra_message(runtime, f"Running {script}")
        ) from e
    return module


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


def metric_failures(fmt: Format, metric: float, keras_metric: float, label: str) -> list[str]:
    """The metric-drop check of ``fmt``: ``[]`` or one message naming ``label`` (the metric)."""
    drop = fmt.max_metric_drop
    if drop is None or metric >= keras_metric - drop:
        return []
    return [f"{label} {metric:.4f} more than {drop:g} below Keras {keras_metric:.4f}"]


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (a SavedModel)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _entry(path: Path, runner, failures: list[str], thresholds: dict, **values) -> dict:
    """The report entry of a verified artifact: its measurements ``values`` and checks."""
    return {
        "status": "failed" if failures else "passed",
        "path": str(path),
        "size_bytes": artifact_size(path),
        **values,
        "thresholds": thresholds,
        "runtime": runner.runtime,
        "passed": not failures,
        "failures": failures,
    }


def checked(fmt: Format, path: Path, runner, failures: list[str], **values) -> dict:
    """The report entry of a verified artifact; ``values`` are its measurements."""
    thresholds = {"max_rel_diff": fmt.max_rel_diff, "max_metric_drop": fmt.max_metric_drop}
    return _entry(path, runner, failures, thresholds, **values)


def detector_checked(
    path: Path, runner, map50: float, keras_map50: float, tolerance: float, against: str, **values
) -> dict:
    """The report entry of a detector artifact (NMS inside): its mAP@0.5 must be within
    ``tolerance`` of the Keras model's (``against`` names that reference), on either side;
    ``values`` are further measurements."""
    failures = []
    if not abs(map50 - keras_map50) <= tolerance:
        failures.append(
            f"mAP@0.5 {map50:.4f} differs from {against} {keras_map50:.4f} by more than "
            f"{tolerance:g}"
        )
    thresholds = {"max_map50_difference": tolerance}
    return _entry(
        path, runner, failures, thresholds, metric=map50, keras_metric=keras_map50, **values
    )


def not_written(fmt: Format, status: str, cause: str) -> dict:
    """The report entry of a format that was skipped or failed before it could be checked."""
    return {
        "status": status,
        "path": None,
        "size_bytes": None,
        "max_abs_diff": None,
        "max_rel_diff": None,
        "metric": None,
        "thresholds": {"max_rel_diff": fmt.max_rel_diff, "max_metric_drop": fmt.max_metric_drop},
        "passed": False if status == "failed" else None,
        "failures": [cause] if status == "failed" else [],
        "note": cause,
    }


def write_report(out: Path, report: dict, checks: Mapping[str, dict]) -> None:
    """Sets ``report["passed"]``, writes the report, then raises if any of ``checks`` failed.

    Skipped formats (``status == "skipped"``) are listed, not failed.

    Raises:
        ExportVerificationError: naming every failed check, after the report is written.
    """
    failed = {n: r["failures"] for n, r in checks.items() if r["status"] == "failed"}
    report["passed"] = not failed
    report["skipped"] = [n for n, r in checks.items() if r["status"] == "skipped"]
    io_utils.write_json(out / REPORT_NAME, report)
    if failed:
        raise ExportVerificationError(
            f"Export verification failed in {out}: "
            + "; ".join(f"{n}: {', '.join(f)}" for n, f in failed.items())
            + f". See {out / REPORT_NAME}.",
            report,
        )


def summary_table(report: dict) -> str:
    """One line per artifact: status, size, difference from Keras, metric, and why not."""
    entries = {**report["formats"], **report.get("postprocessing", {}).get("built_in", {})}
    rows = [("format", "status", "size", "max rel diff", report.get("metric", "metric"), "note")]
    for name, r in entries.items():
        metric = r.get("metric")
        rows.append(
            (
                name,
                r.get("status", "passed" if r.get("passed") else "failed"),
                _size(r.get("size_bytes")),
                "-" if r.get("max_rel_diff") is None else f"{r['max_rel_diff']:.2g}",
                "-" if metric is None else f"{metric:.4f}",
                "; ".join(r.get("failures") or []) or r.get("note", ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    keras_metric = report.get("keras_metric")
    if keras_metric is not None:
        lines.append(
            f"Keras {report.get('metric', 'metric')}: {keras_metric:.4f} on "
            f"{report.get('samples')} samples ({report.get('data')})."
        )
    return "\n".join(line.rstrip() for line in lines)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
