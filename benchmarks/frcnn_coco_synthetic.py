"""Faster R-CNN on the synthetic COCO-format set at CPU scale: mAP, params, MACs and latency.

    .venv/bin/python benchmarks/frcnn_coco_synthetic.py --workdir runs/bench_frcnn [--config.x=v]

Runs the main job on ``configs/frcnn_coco_synthetic.py`` (baseline training, pruning rounds,
fine-tuning, export of SavedModel / TFLite fp32, fp16 / ONNX with proposals, ROI Align,
decoding and NMS inside, each verified by mAP@0.5 against Keras), then evaluates mAP@0.5 and
mAP@[.5:.95] of the baseline and pruned models on the validation and test images. The run is
resumable: re-running the same command on the same workdir continues where it stopped (the
wall time sums every invocation that did work). Recorded besides: epoch times, each artifact's
mAP@0.5 next to the Keras model's and whether it passed (``export_passed``), and image ->
detections latency of the TFLite artifacts (batch 1, one thread, ``export/run_detector.py``).
The result goes to ``benchmarks/results/frcnn_coco_synthetic.json``; the key layout of
``map``, ``macs_reduction`` and ``tolerance`` is the SSD benchmark's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from detection_common import detection_latency, epoch_seconds, run_config  # noqa: E402

from afp_tf import io_utils, stats  # noqa: E402
from afp_tf.detection import frcnn_task  # noqa: E402
from afp_tf.detection.frcnn_decode import evaluate_frcnn  # noqa: E402

CONFIG = "frcnn_coco_synthetic"
TIMED = ("model_fp32_nms.tflite", "model_fp16_nms.tflite", "model_int8_nms.tflite")


def evaluate_map(cfg, workdir: Path) -> tuple[dict, dict]:
    """mAP of baseline.keras and pruned.keras on the val/test images; MACs per image."""
    import keras  # noqa: PLC0415

    data = frcnn_task.load(cfg)
    out, macs = {}, {}
    for name in ("baseline", "pruned"):
        model = keras.saving.load_model(workdir / f"{name}.keras", compile=False)
        macs[name] = stats.model_stats(model).macs
        out[name] = {
            split: {k: round(v, 4) for k, v in evaluate_frcnn(model, ds).items()}
            for split, ds in (("val", data.val), ("test", data.test))
        }
    return out, macs


def export_checks(workdir: Path) -> tuple[dict, dict]:
    """Per artifact: passed (baseline and pruned) and mAP@0.5 next to the Keras model's."""
    passed, map50 = {}, {}
    for name in ("baseline", "pruned"):
        report = io_utils.read_json(workdir / "export" / name / "export_report.json")
        for fmt, row in report["detectors"].items():
            if row["status"] == "skipped":
                continue
            passed[fmt] = passed.get(fmt, True) and bool(row["passed"])
            map50.setdefault(fmt, {})[name] = row["metric"] and round(row["metric"], 4)
            map50[fmt][f"{name}_keras"] = round(report["keras_metric"], 4)
    return passed, map50


def main() -> None:
    args, cfg, summary, wall = run_config(CONFIG, __doc__.splitlines()[0])
    base, pruned = summary["baseline"], summary["pruned"]
    maps, macs = evaluate_map(cfg, args.workdir)
    export_passed, export_map50 = export_checks(args.workdir)
    result = {
        "config": CONFIG,
        "note": args.note,
        "overrides": args.overrides,
        "data": "synthetic COCO-format set (generated, seed 0)",
        "wall_seconds": round(wall["seconds"], 1),
        "map": maps,
        "macs_per_image": macs,
        "epoch_seconds": epoch_seconds(args.workdir),
        "export_passed": export_passed,
        "export_map50": export_map50,
        "decision_metric": "map50 on validation",
        "tolerance": cfg.prune.tolerance,
        "baseline": {k: base[k] for k in ("val", "test", "params", "macs", "filters")},
        "pruned": {k: pruned[k] for k in ("val", "test", "params", "macs", "filters", "floor")},
        "params_reduction": summary["reduction"]["params"],
        "macs_reduction": summary["reduction"]["macs"],
        "rounds": summary["rounds"],
        "stop_reason": summary["stop_reason"],
        "detection_latency": detection_latency(args.workdir, TIMED, cfg.export.latency_runs),
    }
    path = common.write_result(CONFIG, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
