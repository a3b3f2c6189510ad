"""What the detection benchmarks (SSD, Faster R-CNN) share: epoch times and artifact latency."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import common
import numpy as np

from afp_tf.export import latency
from afp_tf.run import config_lib, pipeline


def run_config(config: str, description: str) -> tuple[argparse.Namespace, object, dict, dict]:
    """Parses ``--workdir``, ``--note`` and ``--config.KEY=V`` overrides, then runs (or resumes)
    the pipeline of ``config`` on the workdir, timed over invocations. Returns ``(args, cfg,
    summary, wall)``: ``args.overrides`` as given, ``wall["seconds"]`` the summed wall time."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--note", default="", help="recorded with the result")
    args, overrides = parser.parse_known_args()
    args.overrides = overrides  # recorded with the result
    cfg = config_lib.load_config(config)
    config_lib.apply_overrides(
        cfg, ["train.progress=false", *(o.removeprefix("--config.") for o in args.overrides)]
    )
    with common.wall_clock(args.workdir, count=not pipeline.finished(cfg, args.workdir)) as wall:
        summary = pipeline.run(cfg, args.workdir)
    return args, cfg, summary, wall


def epoch_seconds(workdir: Path) -> dict:
    """Median wall seconds per epoch (training + validation) of each phase, from metrics.jsonl."""
    events = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    out = {}
    for phase in ("baseline", "recover", "finetune"):
        times = [e["time"] for e in events if e["phase"] == phase]
        gaps = np.diff(times)
        gaps = gaps[(gaps > 0) & (gaps < 3600)]
        if len(gaps):
            out[phase] = round(float(np.median(gaps)), 1)
    return out


def detection_latency(workdir: Path, artifacts: Sequence[str], runs: int) -> list[dict]:
    """Image -> detections at batch 1, one thread, of each exported artifact, baseline vs pruned
    (timed by the deploy runner ``run_detector.py``)."""
    rows = []
    for artifact in artifacts:
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
