"""Export: writes a model as SavedModel, TFLite and ONNX and verifies every artifact
(``classifier``, ``artifacts``, ``checks``), draws calibration inputs, measures latency
(``latency``) and predicts it from timed probes (``latency_model``), and is the
``afp-tf-export`` command (``cli``; ``python -m afp_tf.export``).
"""

import importlib

# The names the rest of afp_tf uses as ``export.X``, imported on first use: importing the
# package (or its TensorFlow-free ``checks``) must not import TensorFlow.
_LAZY = {
    "ALL_FORMATS": "afp_tf.export.checks",
    "ExportError": "afp_tf.export.checks",
    "ExportVerificationError": "afp_tf.export.checks",
    "FORMATS": "afp_tf.export.checks",
    "REPORT_NAME": "afp_tf.export.checks",
    "export_model": "afp_tf.export.classifier",
    "parse_formats": "afp_tf.export.checks",
    "parse_tolerances": "afp_tf.export.checks",
    "summary_table": "afp_tf.export.checks",
    "write_formats": "afp_tf.export.classifier",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    """Imports a re-exported name from its module on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'afp_tf.export' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
