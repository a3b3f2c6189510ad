"""Batch-1 latency of exported artifacts, each timed by its deploy runner in a subprocess.

The runner (``export/run_*.py``, installed as ``afp_tf.deploy``) loads nothing but numpy and
its runtime, so the numbers are what a deployment would see, not what a process with
TensorFlow and Keras loaded would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from afp_tf import io_utils, resources
from afp_tf.export.checks import FORMATS, REPORT_NAME, ExportError


def measure_latency(
    artifact_path: str | os.PathLike,
    *,
    runs: int = 50,
    warmup: int = 10,
    threads: int = 1,
    batch: int = 1,
    runner: str | None = None,
) -> dict:
    """Times an artifact with its deploy runner in a subprocess that loads only its runtime.

    Args:
        runner: A script in ``export/`` to use instead of the format's own runner (e.g.
            ``run_detector.py``, image to detections).

    Returns:
        The runner's JSON: ``median_ms``, ``p90_ms``, ``runs``, ``threads``, ``runtime``, ...
    """
    path = Path(artifact_path)
    if runner is None:
        fmt = next((f for f in FORMATS.values() if f.filename == path.name), None)
        if fmt is None:
            raise ValueError(
                f"{path}: not an exported artifact name "
                f"({', '.join(f.filename for f in FORMATS.values())})."
            )
        runner = fmt.runner
    flags = {"runs": runs, "warmup": warmup, "threads": threads, "batch": batch}
    args = [str(path), *(f"--{k}={v}" for k, v in flags.items())]
    return run_deploy_script(runner, args, threads=threads, what=f"Timing {path}")


def run_deploy_script(script: str, args: Sequence[str], *, threads: int, what: str) -> dict:
    """Runs ``export/<script> args`` in a subprocess of this interpreter (``threads`` OpenMP
    threads); returns the JSON of the last line it prints.

    Raises:
        ExportError: ``what`` failed, with the end of the script's stderr.
    """
    cmd = [sys.executable, str(resources.deploy_dir() / script), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise ExportError(f"{what} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def latency_table(
    baseline_dir: str | os.PathLike,
    pruned_dir: str | os.PathLike,
    macs_baseline: int,
    macs_pruned: int,
    *,
    runs: int = 50,
    warmup: int = 10,
    threads: int = 1,
) -> list[dict]:
    """Baseline vs pruned latency (batch 1) of each format exported to both dirs.

    Returns:
        One row per format: medians (``baseline_ms``, ``pruned_ms``), p90 and minimum,
        ``speedup`` (baseline / pruned median), ``macs_reduction`` and their ratio.
    """
    if macs_pruned <= 0 or macs_baseline <= 0:
        raise ValueError(f"MACs must be positive, got {macs_baseline} and {macs_pruned}.")
    reduction = macs_baseline / macs_pruned
    rows = []
    common = _exported_formats(baseline_dir) & _exported_formats(pruned_dir)
    for fmt in (f for name, f in FORMATS.items() if name in common):
        paths = [Path(d) / fmt.filename for d in (baseline_dir, pruned_dir)]
        base, pruned = (
            measure_latency(p, runs=runs, warmup=warmup, threads=threads) for p in paths
        )
        speedup = base["median_ms"] / pruned["median_ms"]
        rows.append(
            {
                "format": fmt.name,
                "baseline_ms": base["median_ms"],
                "pruned_ms": pruned["median_ms"],
                "baseline_p90_ms": base["p90_ms"],
                "pruned_p90_ms": pruned["p90_ms"],
                "baseline_min_ms": base["min_ms"],
                "pruned_min_ms": pruned["min_ms"],
                "speedup": speedup,
                "macs_reduction": reduction,
                "speedup_over_macs_reduction": speedup / reduction,
                "threads": threads,
                "runs": runs,
                "batch": 1,
            }
        )
    return rows


def _exported_formats(export_dir: str | os.PathLike) -> set[str]:
    """Formats that ``export_dir``'s report lists and whose artifacts exist."""
    path = Path(export_dir) / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a directory written by export_model.")
    listed = io_utils.read_json(path)["formats"]
    return {n for n in listed if n in FORMATS and (path.parent / FORMATS[n].filename).exists()}
