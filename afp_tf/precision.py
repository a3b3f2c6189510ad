"""Mixed precision: the Keras dtype policy models are built under, and who needs loss scaling.

with precision.policy("mixed_float16"):
    model = build_model()  # float16 compute, float32 variables
"""

from __future__ import annotations

import contextlib
import difflib

import keras

PRECISIONS = ("", "mixed_float16", "mixed_bfloat16")  # "" = float32


@contextlib.contextmanager
def policy(name: str):
    """Layers built inside use the Keras dtype policy ``name`` (``""`` = float32).

    Layers keep their policy in their config, so models rebuilt by surgery or loaded from a
    ``.keras`` file compute as they were built; ``training.Trainer`` scales the loss of models
    with float16 layers.
    """
    if name not in PRECISIONS:
        close = difflib.get_close_matches(str(name), PRECISIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown precision {name!r}; choose one of {PRECISIONS}.{hint}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name or "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def computes_in_float16(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` or any layer nested in it computes in float16."""
    if layer.compute_dtype == "float16":
        return True
    return any(computes_in_float16(inner) for inner in getattr(layer, "layers", ()))
