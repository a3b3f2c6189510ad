"""SSD on the synthetic GTSDB-layout set at CPU scale: mAP, params, MACs and TFLite latency.

    .venv/bin/python benchmarks/ssd_gtsdb_synthetic.py --workdir /tmp/bench_ssd [--config.x=v ...]

Runs the main job on ``configs/ssd_gtsdb_synthetic.py`` (baseline training on native-resolution
crops, pruning rounds, fine-tuning, export with verification and latency), then evaluates
mAP@0.5 and mAP@[.5:.95] of the baseline and pruned models on the full validation, acceptance
(the decisions' split) and test frames as the task scores them (``map50``: the GTSDB
competition's three categories under ``data.scoring=competition``; ``map50_all``: all four;
``ap_per_class`` and ``confusion`` counts). The run is resumable: re-running the same command on the
same workdir continues where it stopped (the wall time sums every invocation that did work; on a
finished workdir it only re-evaluates and rewrites the result). Recorded besides: MACs per full
frame, epoch times, every exported artifact's mAP@0.5 next to the Keras model's (fp32 and int8)
and whether it passed (``export_passed``), latency of the raw artifacts (batch 1, one thread)
and of image -> detections (``export/run_detector.py``: TFLite fp32/int8 with NMS inside, ONNX +
NumPy NMS). The result goes to ``benchmarks/results/ssd_gtsdb_synthetic.json``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from detection_common import detection_latency, epoch_seconds, run_config  # noqa: E402

from afp_tf import io_utils, stats  # noqa: E402
from afp_tf.detection import task as detection_task  # noqa: E402
from afp_tf.models.ssd import at_input_size  # noqa: E402

CONFIG = "ssd_gtsdb_synthetic"


def evaluate_map(cfg, workdir: Path) -> tuple[dict, dict]:
    """mAP of baseline.keras and pruned.keras on the full val/accept/test frames; MACs per frame."""
    import keras  # noqa: PLC0415

    data = detection_task.load(cfg)
    frame = tuple(data.val.element_spec[0].shape[1:3])
    crop = tuple(data.train.element_spec[0].shape[1:3])
    out, macs = {}, {}
    for name in ("baseline", "pruned"):
        model = keras.saving.load_model(workdir / f"{name}.keras", compile=False)
        macs[name] = stats.model_stats(at_input_size(model, *frame)).macs
        splits = {"val": data.val, "accept": data.accept, "test": data.test}
        trainer = types.SimpleNamespace(model=model)  # the evaluator reads only the model
        out[name] = {
            split: _rounded(data.task.report_evaluator(trainer, ds))
            for split, ds in splits.items()
            if ds is not None
        }
    return out, {"frame": list(frame), "crop": list(crop), **macs}


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def export_checks(workdir: Path) -> tuple[dict, dict]:
    """Per artifact: passed (baseline and pruned) and mAP@0.5 on the export's val frames."""
    passed, map50 = {}, {}
    for name in ("baseline", "pruned"):
        report = io_utils.read_json(workdir / "export" / name / "export_report.json")
        rows = {**report["formats"], **report["postprocessing"]["built_in"]}
        for fmt, row in rows.items():
            passed[fmt] = passed.get(fmt, True) and bool(row["passed"])
            map50.setdefault(fmt, {})[name] = round(row["metric"], 4)
            map50[fmt][f"{name}_keras"] = round(row["keras_metric"], 4)
    return passed, map50


def main() -> None:
    args, cfg, summary, wall = run_config(CONFIG, __doc__.splitlines()[0])
    base, pruned = summary["baseline"], summary["pruned"]
    latency = (summary.get("export") or {}).get("latency", [])
    maps, frame_macs = evaluate_map(cfg, args.workdir)
    export_passed, export_map50 = export_checks(args.workdir)
    result = {
        "config": CONFIG,
        "note": args.note,
        "overrides": args.overrides,
        "data": "synthetic GTSDB layout (generated, seed 0)",
        "wall_seconds": round(wall["seconds"], 1),
        "map": maps,
        "macs_per_frame": frame_macs,
        "epoch_seconds": epoch_seconds(args.workdir),
        "export_passed": export_passed,
        "export_map50": export_map50,
        "decision_metric": f"map50 ({cfg.data.scoring} scoring) on "
        + ("acceptance" if cfg.data.accept_fraction else "validation"),
        "tolerance": cfg.prune.tolerance,
        "baseline": {k: base[k] for k in ("val", "test", "params", "macs", "filters")},
        "pruned": {k: pruned[k] for k in ("val", "test", "params", "macs", "filters", "floor")},
        "params_reduction": summary["reduction"]["params"],
        "macs_reduction": summary["reduction"]["macs"],
        "rounds": summary["rounds"],
        "stop_reason": summary["stop_reason"],
        "latency": [r for r in latency if r["format"].startswith("tflite")],
        "latency_all_formats": latency,
        "detection_latency": detection_latency(
            args.workdir,
            ("model_fp32_nms.tflite", "model_int8_nms.tflite", "model.onnx"),
            cfg.export.latency_runs,
        ),
    }
    path = common.write_result(CONFIG, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
