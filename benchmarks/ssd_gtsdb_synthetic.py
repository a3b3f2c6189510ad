"""SSD on the synthetic GTSDB-layout set at CPU scale: mAP, params, MACs and TFLite latency.

    .venv/bin/python benchmarks/ssd_gtsdb_synthetic.py --workdir /tmp/bench_ssd [--config.x=v ...]

Runs the main job on ``configs/ssd_gtsdb_synthetic.py`` (baseline training, pruning rounds,
fine-tuning, export with verification and latency), then evaluates mAP@0.5 and mAP@[.5:.95] of
the baseline and pruned models on validation and test. The run is resumable: re-running the
same command on the same workdir continues where it stopped (the wall time sums every
invocation that did work). Latency: the export's table (raw artifacts, batch 1, one thread)
and image -> detections through ``export/run_detector.py``. The result goes to
``benchmarks/results/ssd_gtsdb_synthetic.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from afp_tf import config_lib, latency, pipeline  # noqa: E402
from afp_tf.detection import task as detection_task  # noqa: E402
from afp_tf.detection.metrics import evaluate_detector  # noqa: E402

CONFIG = "ssd_gtsdb_synthetic"


def evaluate_map(cfg, workdir: Path) -> dict:
    """mAP@0.5 and mAP@[.5:.95] of baseline.keras and pruned.keras on validation and test."""
    import keras  # noqa: PLC0415

    data = detection_task.load(cfg)
    anchors = data.task.loss.anchors
    out = {}
    for name in ("baseline", "pruned"):
        model = keras.saving.load_model(workdir / f"{name}.keras", compile=False)
        out[name] = {
            split: {k: round(v, 4) for k, v in evaluate_detector(model, ds, anchors).items()}
            for split, ds in (("val", data.val), ("test", data.test))
        }
    return out


def detection_latency(workdir: Path, runs: int) -> list[dict]:
    """Image -> detections at batch 1, one thread: TFLite with NMS inside, ONNX + NumPy NMS."""
    rows = []
    for artifact in ("model_fp32_nms.tflite", "model.onnx"):
        ms = {
            name: latency.measure_latency(
                workdir / "export" / name / artifact, runs=runs, warmup=5, runner="run_detector.py"
            )["median_ms"]
            for name in ("baseline", "pruned")
        }
        rows.append(
            {
                "artifact": artifact,
                "baseline_ms": ms["baseline"],
                "pruned_ms": ms["pruned"],
                "speedup": ms["baseline"] / ms["pruned"],
                "runs": runs,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--note", default="", help="recorded with the result")
    args, overrides = parser.parse_known_args()
    cfg = config_lib.load_config(CONFIG)
    config_lib.apply_overrides(
        cfg, ["train.progress=false", *(o.removeprefix("--config.") for o in overrides)]
    )
    finished_before = (args.workdir / "report.json").is_file()
    with common.wall_clock(args.workdir, count=not finished_before) as wall:
        summary = pipeline.run(cfg, args.workdir)
    base, pruned = summary["baseline"], summary["pruned"]
    latency = (summary.get("export") or {}).get("latency", [])
    result = {
        "config": CONFIG,
        "note": args.note,
        "overrides": overrides,
        "data": "synthetic GTSDB layout (generated, seed 0)",
        "wall_seconds": round(wall["seconds"], 1),
        "map": evaluate_map(cfg, args.workdir),
        "decision_metric": "map50 on validation",
        "tolerance": cfg.prune.tolerance,
        "baseline": {k: base[k] for k in ("val", "test", "params", "macs", "filters")},
        "pruned": {k: pruned[k] for k in ("val", "test", "params", "macs", "filters", "floor")},
        "params_reduction": summary["reduction"]["params"],
        "macs_reduction": summary["reduction"]["macs"],
        "rounds": summary["rounds"],
        "stop_reason": summary["stop_reason"],
        "latency": [r for r in latency if r["format"].startswith("tflite")],
        "latency_all_formats": latency,
        "detection_latency": detection_latency(args.workdir, cfg.export.latency_runs),
    }
    path = common.write_result(CONFIG, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
