"""Optional dependencies: importing one that is missing names the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

# Top-level module -> the afp_tf extra that installs it (see pyproject.toml).
EXTRA_OF = {
    "keras_cv": "detection",
    "pycocotools": "detection",
    "tf2onnx": "onnx",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "ai_edge_litert": "litert",
    "keras_hub": "hub",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing_extra_message(module: str, purpose: str) -> str:
    extra = EXTRA_OF[module.split(".")[0]]
    return (
        f"{purpose} needs {module.split('.')[0]}, which is not installed: "
        f"pip install 'afp_tf[{extra}]' (or 'afp_tf[all]')."
    )


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module``, or raises :class:`MissingExtraError` naming its extra.

    Args:
        module: A module of one of the optional dependencies in ``EXTRA_OF``.
        purpose: What needs it, for the message (e.g. "ONNX export").
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own imports failed
        raise MissingExtraError(missing_extra_message(module, purpose)) from e
