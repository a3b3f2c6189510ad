"""Mixed precision: the Keras dtype policy models are built under, who needs loss scaling, and
the float32 copy a model is exported as.

with precision.policy("mixed_float16"):
    model = build_model()  # float16 compute, float32 variables
exportable = precision.as_float32(model)  # the same weights, float32 compute
"""

from __future__ import annotations

import contextlib
import difflib

import keras

PRECISIONS = ("", "mixed_float16", "mixed_bfloat16")  # "" = float32
# Policies computing in a float type TFLite builtins and ONNX kernels lack (or, for float16,
# that an fp32 artifact must not carry): ``as_float32`` replaces them.
REDUCED_PRECISION = ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16")


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


def reduced_policies(layer: keras.layers.Layer) -> set[str]:
    """Names of the ``REDUCED_PRECISION`` policies of ``layer`` and the layers nested in it."""
    own = {layer.dtype_policy.name} & set(REDUCED_PRECISION)
    return own.union(*(reduced_policies(inner) for inner in getattr(layer, "layers", ())))


def as_float32(model: keras.Model) -> keras.Model:
    """``model`` computing in float32: ``model`` itself if it does, else a copy rebuilt from its
    config with every ``REDUCED_PRECISION`` dtype policy replaced by ``float32`` (under the
    float32 global policy) and its weights copied, cast to float32. The copy is uncompiled.

    Exporters use it: TFLite builtins and ONNX have no bfloat16 kernels, and a model trained
    under ``mixed_float16`` is deployed as float32 (fp16 artifacts quantise it themselves).
    """
    if not reduced_policies(model):
        return model
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    with policy(""):
        # The config comes from a live model of this process, not from a file: a Lambda's
        # Python function is safe to rebuild.
        clone = keras.saving.deserialize_keras_object(_float32_config(config), safe_mode=False)
    clone.set_weights(model.get_weights())  # float32 variables: assignment casts
    return clone


def _float32_config(config):
    """``config`` with every ``dtype`` naming a ``REDUCED_PRECISION`` policy set to float32."""
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    if not isinstance(config, dict):
        return config
    return {
        k: "float32"
        if k == "dtype" and _policy_name(v) in REDUCED_PRECISION
        else _float32_config(v)
        for k, v in config.items()
    }


def _policy_name(dtype) -> str | None:
    """The policy a config's ``dtype`` names: a string, or a serialized ``DTypePolicy``."""
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
        return dtype["config"].get("name")
    return None
