"""Runs and times an ``.onnx`` classifier with ONNX Runtime alone (CPU execution provider).

    python export/run_onnx.py model.onnx [--inputs x.npy] [--runs 50] [--threads 1]

Prints one JSON line: median/p90 latency in ms and the predicted classes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_common  # noqa: E402


class Runner:
    """An ONNX Runtime session with ``threads`` intra-op threads and sequential execution."""

    def __init__(self, path: str, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (inp,) = self._session.get_inputs()
        self._in_name = inp.name
        self.input_shape = tuple(int(d) for d in inp.shape[1:])
        self.runtime = {"name": "onnxruntime", "version": ort.__version__}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits of a float32 batch ``x``."""
        return self._session.run(None, {self._in_name: np.asarray(x, np.float32)})[0]


def load(path: str, threads: int = 1) -> Runner:
    return Runner(path, threads)


if __name__ == "__main__":
    deploy_common.main(load, __doc__.splitlines()[0])
