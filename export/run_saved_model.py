"""Runs and times a SavedModel classifier through its serving signature with TensorFlow alone.

    python export/run_saved_model.py saved_model/ [--inputs x.npy] [--runs 50] [--threads 1]

Prints one JSON line: median/p90 latency in ms and the predicted classes. Only
``tf.saved_model.load`` and the ``serving_default`` signature are used: no Keras, no afp_tf.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_common  # noqa: E402


class Runner:
    """The ``serving_default`` signature of a SavedModel."""

    def __init__(self, path: str, threads: int = 1):
        _set_threads(threads)
        self._loaded = tf.saved_model.load(str(path))
        self._fn = self._loaded.signatures["serving_default"]
        _, kwargs = self._fn.structured_input_signature
        ((self._in_name, spec),) = kwargs.items()
        self.input_shape = tuple(int(d) for d in spec.shape[1:])
        self.runtime = {"name": "tensorflow", "version": tf.__version__}

    def predict_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of a float32 batch ``x``, by name."""
        out = self._fn(**{self._in_name: tf.constant(np.asarray(x, np.float32))})
        return {name: value.numpy() for name, value in out.items()}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits (the only output) of a float32 batch ``x``."""
        (out,) = self.predict_all(x).values()
        return out


def _set_threads(threads: int) -> None:
    """Thread pools can only be sized before TensorFlow first runs an op; later calls are moot."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised (e.g. loaded inside a process that ran TensorFlow)


def load(path: str, threads: int = 1) -> Runner:
    return Runner(path, threads)


if __name__ == "__main__":
    deploy_common.main(load, __doc__.splitlines()[0])
