"""Runs and times an exported SSD end to end: the artifact's runtime, then NumPy post-processing.

    python export/run_detector.py model.onnx [--inputs x.npz] [--runs 50] [--threads 1]
    python export/run_detector.py model_fp32_nms.tflite   # decoding + NMS inside the artifact

Raw artifacts (``.onnx``, ``.tflite``, ``saved_model/``) are decoded and NMS'd by
``detection_postprocess.py`` with the anchors and settings of ``detection.json`` beside them;
artifacts with NMS inside (``*_nms.tflite``, ``saved_model_nms/``) return detections directly.
Prints one JSON line: latency of image -> detections (median/p90 ms, batch 1) and the
detections of the first input. Imports numpy and the artifact's runtime only.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_common  # noqa: E402
import detection_postprocess  # noqa: E402


def runner_module(path: Path):
    """The runner module for an artifact: by suffix, a directory is a SavedModel."""
    if path.is_dir():
        return importlib.import_module("run_saved_model")
    modules = {".tflite": "run_tflite", ".onnx": "run_onnx"}
    if path.suffix not in modules:
        raise ValueError(f"{path}: not a .tflite, .onnx or SavedModel directory")
    return importlib.import_module(modules[path.suffix])


def detector(path: str, threads: int = 1):
    """Returns ``(input_shape, detect(x) -> list of per-image dicts, runtime)``."""
    path = Path(path)
    runner = runner_module(path).load(str(path), threads=threads)
    if path.stem.endswith("_nms"):

        def detect(x):
            out = runner.predict_all(x)
            counts = np.asarray(out["num_detections"]).reshape(-1)
            return [
                {
                    "boxes": out["boxes"][b, : int(n)],
                    "scores": out["scores"][b, : int(n)],
                    "classes": out["classes"][b, : int(n)].astype(int),
                }
                for b, n in enumerate(counts)
            ]

    else:
        meta = detection_postprocess.load_metadata(path)

        def detect(x):
            return detection_postprocess.postprocess(runner.predict(x), meta)

    return runner.input_shape, detect, runner.runtime


def main(argv: list[str] | None = None) -> dict:
    args = deploy_common.parse_args(__doc__.splitlines()[0], argv)
    if args.batch != 1:
        raise SystemExit("run_detector.py times batch 1 (artifacts with NMS inside take one image)")
    shape, detect, runtime = detector(args.model, threads=args.threads)
    x = deploy_common.load_inputs(args.inputs, shape, 1)[:1]
    first = detect(x)[0]
    result = {
        "model": args.model,
        "runtime": runtime,
        "threads": args.threads,
        "batch": 1,
        **deploy_common.time_calls(lambda: detect(x), args.runs, args.warmup),
        "detections": {k: np.asarray(v).tolist() for k, v in first.items()},
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
