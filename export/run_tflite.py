"""Runs and times a ``.tflite`` classifier with the LiteRT interpreter alone (ai-edge-litert).

    python export/run_tflite.py model_int8.tflite [--inputs x.npy] [--runs 50] [--threads 1]

Prints one JSON line: median/p90 latency in ms and the predicted classes. Full-integer models
(int8 inputs/outputs) are fed quantised inputs and their outputs dequantised.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ai_edge_litert import interpreter as litert

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_common  # noqa: E402


class Runner:
    """A LiteRT interpreter on the model's first signature, resized to the batch it is given."""

    def __init__(self, path: str, threads: int = 1):
        self._interpreter = litert.Interpreter(model_path=str(path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner()
        ((self._in_name, self._in),) = self._runner.get_input_details().items()
        self._outs = self._runner.get_output_details()
        self.input_shape = tuple(int(d) for d in self._in["shape_signature"][1:])
        self.runtime = {"name": "ai-edge-litert", "version": _version()}

    def predict_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output (float32 ones dequantised) of a float32 batch ``x``, by name."""
        x = _quantize(np.asarray(x, np.float32), self._in)
        out = self._runner(**{self._in_name: x})
        return {name: _dequantize(out[name], detail) for name, detail in self._outs.items()}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits (the only output) of a float32 batch ``x``."""
        (out,) = self.predict_all(x).values()
        return out


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x
    scale, zero = _qparams(detail)
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] not in (np.int8, np.uint8, np.int16):
        return y
    scale, zero = _qparams(detail)
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def _qparams(detail: dict) -> tuple[float, int]:
    q = detail["quantization_parameters"]
    if len(q["scales"]) != 1:
        raise ValueError(f"{detail['name']}: per-channel quantised model inputs are not supported")
    return float(q["scales"][0]), int(q["zero_points"][0])


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - the version is informative only
        return "unknown"


def load(path: str, threads: int = 1) -> Runner:
    return Runner(path, threads)


if __name__ == "__main__":
    deploy_common.main(load, __doc__.splitlines()[0])
