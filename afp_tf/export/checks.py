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
    ``unmeasured_rel_diff`` replaces ``max_rel_diff`` when no metric is measured (the inputs
    are random, not data): the artifact is then held to its outputs alone.
    """

    name: str
    filename: str
    runner: str
    max_rel_diff: float | None
    max_metric_drop: float | None
    unmeasured_rel_diff: float | None

    @property
    def needs_calibration(self) -> bool:
        """Full-integer quantisation calibrates on real inputs."""
        return self.name == "tflite_int8"


# fp32 formats must reproduce Keras to float round-off. fp16 weights shift logits by ~1e-3
# relative; 1e-2 leaves room for deep models. Integer formats change logits by design: they
# are held to the task metric, within 1 point of the float model. Without a metric (random
# inputs, whose logits sit near ties: a 2 % change flips some top-1s) int8 formats are held to
# their logits instead: 0.3-3 % relative is normal (LeNet-5, ResNet-56); a wrong artifact is
# off by the order of 1.
FORMATS = {
    f.name: f
    for f in (
        Format("saved_model", "saved_model", "run_saved_model.py", 1e-4, None, 1e-4),
        Format("tflite_fp32", "model_fp32.tflite", "run_tflite.py", 1e-4, None, 1e-4),
        Format("tflite_fp16", "model_fp16.tflite", "run_tflite.py", 1e-2, 0.01, 1e-2),
        Format(
            "tflite_dynamic_int8", "model_dynamic_int8.tflite", "run_tflite.py", None, 0.01, 0.1
        ),
        Format("tflite_int8", "model_int8.tflite", "run_tflite.py", None, 0.01, 0.1),
        Format("onnx", "model.onnx", "run_onnx.py", 1e-4, None, 1e-4),
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
    measured: bool = True,
) -> list[Format]:
    """The formats ``names`` with a task's default metric drops, then ``tolerances``, applied.

    Args:
        names: Format names (validated by :func:`parse_formats`).
        tolerances: ``{format: {check: value}}`` from :func:`parse_tolerances`.
        metric_drop: A task's own ``max_metric_drop`` per format (e.g. in mAP points),
            replacing the classifier defaults of ``FORMATS``.
        measured: False when no metric is measured: ``max_rel_diff`` defaults to
            ``unmeasured_rel_diff`` (``tolerances`` still replace it) and nothing checks
            ``max_metric_drop`` (None).
    """
    out = []
    for name in parse_formats(names):
        fmt = FORMATS[name]
        if metric_drop is not None:
            fmt = dataclasses.replace(fmt, max_metric_drop=metric_drop.get(name))
        if not measured:
            fmt = dataclasses.replace(fmt, max_rel_diff=fmt.unmeasured_rel_diff)
        fmt = dataclasses.replace(fmt, **dict((tolerances or {}).get(name, {})))
        out.append(fmt if measured else dataclasses.replace(fmt, max_metric_drop=None))
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
    fmt: Format,
    path: Path,
    runner,
    detections: Sequence[Mapping[str, np.ndarray]],
    candidates: Sequence[Mapping[str, np.ndarray]],
    *,
    map50: float,
    keras_map50: float,
    against: str,
    nms: Mapping[str, float],
    **values,
) -> dict:
    """The report entry of a detector artifact (NMS inside), run on the images of ``candidates``.

    A format without a metric-drop bound (fp32: it must reproduce the reference) is held to
    the reference's NMS candidates, image by image (:func:`check_detections`, ``atol =
    fmt.max_rel_diff``). mAP over a few images is no test of that: it ranks all images'
    detections together, and round-off reorders their near-tied scores. A format that changes
    numerics by design (``fmt.max_metric_drop``) is held to mAP@0.5 instead.

    Args:
        detections: per image ``boxes`` ``(n, 4)``, ``scores``, ``classes`` ``(n,)`` of the
            artifact.
        candidates: per image the reference's (``against``'s) NMS input: ``boxes``
            ``(N, C, 4)`` or ``(N, 1, 4)`` (one box for every class) and ``scores`` ``(N, C)``.
        nms: the NMS settings ``score_threshold``, ``iou_threshold``, ``max_detections``.
        values: further measurements for the entry.
    """
    failures, checked_nms = [], None
    if fmt.max_metric_drop is None and fmt.max_rel_diff is not None:
        checked_nms = check_detections(detections, candidates, atol=fmt.max_rel_diff, **nms)
        if checked_nms["mismatched"]:
            failures.append(
                f"{checked_nms['mismatched']} violations of NMS over the candidates of {against} "
                f"(within {fmt.max_rel_diff:g}); first: {checked_nms['first_mismatch']}"
            )
    failures += metric_failures(fmt, map50, keras_map50, "mAP@0.5")
    thresholds = {"max_rel_diff": fmt.max_rel_diff, "max_metric_drop": fmt.max_metric_drop}
    return _entry(
        path,
        runner,
        failures,
        thresholds,
        metric=map50,
        keras_metric=keras_map50,
        detections=checked_nms,
        **values,
    )


def check_detections(
    detections: Sequence[Mapping[str, np.ndarray]],
    candidates: Sequence[Mapping[str, np.ndarray]],
    *,
    atol: float,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> dict:
    """Checks, image by image, that ``detections`` are what greedy class-aware NMS keeps of the
    reference's ``candidates`` once scores and boxes move by up to ``atol``.

    Two float runtimes need not keep the same boxes: a barely trained detector has thousands
    of candidates whose scores differ by less than round-off, and NMS keeps whichever comes
    first. What every correct result satisfies is checked instead:

    - each detection is a distinct candidate of its class (score and box within ``atol``);
    - detections come in descending score order (within ``atol``);
    - no two detections of a class overlap by more than ``iou_threshold``;
    - every other candidate scoring above the cut (``score_threshold``, or the lowest
      detection's score when there are ``max_detections``) overlaps a detection of its class
      scoring at least as high by more than ``iou_threshold``: it was suppressed.

    IoUs within their round-off of ``iou_threshold`` satisfy either side, to first order: the
    float32 round-off of the ``2c`` class shift the runtime's NMS sees, plus ``atol`` where a
    reference candidate's box is compared.

    Returns:
        ``images``, ``detections``, ``matched`` (detections that are candidates),
        ``mismatched`` (violations), ``max_abs_diff`` (scores and boxes of the matched) and
        ``first_mismatch`` (a description, or None).
    """
    if len(detections) != len(candidates):
        raise ValueError(
            f"{len(detections)} images of detections, {len(candidates)} of candidates."
        )
    totals = {"detections": 0, "matched": 0, "mismatched": 0, "max_abs_diff": 0.0}
    first = None
    for image, (det, cand) in enumerate(zip(detections, candidates, strict=True)):
        det = {
            "boxes": np.asarray(det["boxes"], np.float64).reshape(-1, 4),
            "scores": np.asarray(det["scores"], np.float64).reshape(-1),
            "classes": np.asarray(det["classes"]).astype(int).reshape(-1),
        }
        scores = np.asarray(cand["scores"], np.float64)
        n, c = scores.shape
        boxes = np.broadcast_to(np.asarray(cand["boxes"], np.float64), (n, c, 4))
        cand = {
            "boxes": boxes.reshape(-1, 4),
            "scores": scores.reshape(-1),
            "classes": np.tile(np.arange(c), n),
        }
        problems, taken, diff = _nms_problems(
            det, cand, atol, (2 * c + 1) * 2.0**-22, score_threshold, iou_threshold, max_detections
        )
        totals["detections"] += len(det["scores"])
        totals["matched"] += int(taken.sum())
        totals["mismatched"] += len(problems)
        totals["max_abs_diff"] = max(totals["max_abs_diff"], diff)
        if problems and first is None:
            first = f"image {image}: {problems[0]}"
    return {"images": len(candidates), **totals, "first_mismatch": first}


def _nms_problems(det, cand, atol, shift_err, score_threshold, iou, max_detections):
    """The violations of one image (:func:`check_detections`), the candidates matched, and the
    largest matched difference; ``shift_err`` bounds the round-off of shifted coordinates."""
    from afp_tf.detection.metrics import box_iou  # noqa: PLC0415 - TensorFlow, detectors only

    live = np.flatnonzero(cand["scores"] > score_threshold - atol)
    taken = np.zeros(len(cand["scores"]), bool)
    problems, max_diff = [], 0.0
    rows = zip(det["boxes"], det["scores"], det["classes"], strict=True)
    for i, (box, score, cls) in enumerate(rows):
        pool = live[(cand["classes"][live] == cls) & ~taken[live]]
        diff = np.maximum(
            np.abs(cand["scores"][pool] - score), np.abs(cand["boxes"][pool] - box).max(axis=-1)
        )
        if len(pool) and diff.min() <= atol:
            taken[pool[np.argmin(diff)]] = True
            max_diff = max(max_diff, float(diff.min()))
        else:
            problems.append(f"detection {i} is no candidate: {_describe(cls, score, box)}")
    order = np.flatnonzero(det["scores"][1:] > det["scores"][:-1] + atol) + 1
    problems += [f"detection {i} scores above detection {i - 1}" for i in order]
    overlap = box_iou(det["boxes"], det["boxes"])
    slack = _iou_slack(det["boxes"], det["boxes"], shift_err)
    same = det["classes"][:, None] == det["classes"][None]
    for i, j in zip(*np.nonzero(np.triu(same & (overlap > iou + slack), 1)), strict=True):
        problems.append(
            f"detections {i} and {j} of class {det['classes'][i]} overlap by "
            f"{overlap[i, j]:.4f} > {iou:g}"
        )
    full = len(det["scores"]) == max_detections
    cut = det["scores"].min() if full else score_threshold
    rest = live[~taken[live] & (cand["scores"][live] > cut + atol)]
    if len(rest):
        suppressed = (
            (cand["classes"][rest][:, None] == det["classes"][None])
            & (det["scores"][None] >= cand["scores"][rest][:, None] - atol)
            & (
                box_iou(cand["boxes"][rest], det["boxes"])
                > iou - _iou_slack(cand["boxes"][rest], det["boxes"], atol + shift_err)
            )
        ).any(axis=1)
        problems += [
            f"candidate neither kept nor suppressed: "
            f"{_describe(cand['classes'][j], cand['scores'][j], cand['boxes'][j])}"
            for j in rest[~suppressed]
        ]
    return problems, taken, max_diff


def _iou_slack(a: np.ndarray, b: np.ndarray, err: float) -> np.ndarray:
    """First-order bound ``(len(a), len(b))`` on the IoU change when coordinates move by ``err``:
    every side of the intersection and union moves by ``2 err`` at most."""
    side_a = np.minimum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    side_b = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    return 8.0 * err / np.maximum(np.minimum(side_a[:, None], side_b[None]), 1e-12)


def _describe(cls, score, box) -> str:
    return f"class {int(cls)} score {score:.6g} box {np.round(box, 4).tolist()}"


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
    """One line per artifact: status, size, difference from Keras, metric, and why not.

    A verified artifact (one with a ``path``) without a metric reads ``not measured``.
    """
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
                _metric_cell(metric, verified=r.get("path") is not None),
                "; ".join(r.get("failures") or []) or r.get("note", ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    if "keras_metric" in report:
        lines.append(
            f"Keras {report.get('metric', 'metric')}: "
            f"{_metric_cell(report['keras_metric'], verified=True)} on "
            f"{report.get('samples')} samples ({report.get('data')})."
        )
    return "\n".join(line.rstrip() for line in lines)


def _metric_cell(metric: float | None, *, verified: bool) -> str:
    if metric is not None:
        return f"{metric:.4f}"
    return "not measured" if verified else "-"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
