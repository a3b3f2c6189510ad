"""The model zoo: functional Keras models by name.

    from afp_tf import models
    model = models.build_model("resnet56", (32, 32, 3), 10)
    model = models.build_model("vgg16", (32, 32, 3), 10, width=0.25)
    model = models.build_model("applications.MobileNetV2", (96, 96, 3), 10)

Every classifier returns **logits** (no softmax): train it with a loss built with
``from_logits=True``, e.g. ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
Zoo models are functional, use no Lambda layers and give every layer a deterministic name
(``conv1``, ``block3_conv2``, ``stage2_block4_conv1``), so the surgery can prune every conv.

A new model joins the zoo by living in a module of this package and decorating its builder::

    @register_model("mynet")
    def mynet(input_shape, num_classes, **kwargs) -> keras.Model: ...

The package's modules are imported on the first registry look-up, so no list needs editing.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Sequence

import keras

ModelBuilder = Callable[..., keras.Model]

APPLICATIONS_PREFIX = "applications."

_REGISTRY: dict[str, ModelBuilder] = {}
_discovered = False


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(input_shape, num_classes, **kwargs)`` under ``name``.

    Raises:
        ValueError: if ``name`` is already taken or uses the ``applications.`` prefix.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name.startswith(APPLICATIONS_PREFIX):
            raise ValueError(
                f"Model name {name!r}: the prefix {APPLICATIONS_PREFIX!r} is reserved."
            )
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"Model name {name!r} is already registered by {_REGISTRY[name]}.")
        _REGISTRY[name] = builder
        return builder

    return decorator


def _discover() -> None:
    """Imports every module of this package once, so their ``@register_model`` calls run."""
    global _discovered
    if _discovered:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _discovered = True


def available_models() -> list[str]:
    """Sorted names of the zoo models; any ``applications.<Name>`` of keras works as well."""
    _discover()
    return sorted(_REGISTRY)


def scaled_width(channels: int, multiplier: float) -> int:
    """``channels`` times a width ``multiplier``, rounded, at least 1."""
    if multiplier <= 0:
        raise ValueError(f"Width multiplier {multiplier} must be > 0.")
    return max(1, round(channels * multiplier))


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> keras.Model:
    """Builds zoo model ``name`` (see ``available_models()``) or ``applications.<Name>``.

    Args:
        name: a registered name such as ``"lenet5"``, ``"vgg16"``, ``"resnet56"``,
            ``"resnet110"``, ``"mobilenet"``; or ``"applications.<Name>"`` for any
            ``keras.applications`` model, built untrained (``weights=None``).
        input_shape: shape of one example, channels last, e.g. ``(32, 32, 3)``.
        num_classes: number of outputs (logits) of the classifier.
        **kwargs: model-specific options (e.g. ``width`` for vgg16, ``alpha`` for mobilenet).

    Returns:
        An uncompiled functional ``keras.Model`` named ``name``.

    Raises:
        ValueError: for an unknown name, a bad shape or class count.
        TypeError: if ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"Model name must be a str, got {type(name).__name__}: {name!r}.")
    input_shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int.")
    if name.startswith(APPLICATIONS_PREFIX):
        from afp_tf.models import applications  # noqa: PLC0415

        return applications.build(
            name[len(APPLICATIONS_PREFIX) :], input_shape, num_classes, **kwargs
        )
    _discover()
    if name not in _REGISTRY:
        raise ValueError(_unknown_name_message(name))
    return _REGISTRY[name](input_shape, num_classes, **kwargs)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"input_shape={input_shape!r} must be a sequence of ints.") from err
    if not shape or min(shape) < 1:
        raise ValueError(
            f"input_shape={input_shape!r} must be non-empty positive dims without the batch "
            "dimension, e.g. (32, 32, 3)."
        )
    return shape


def _unknown_name_message(name: str) -> str:
    from afp_tf.models import applications  # noqa: PLC0415

    candidates = available_models() + [
        APPLICATIONS_PREFIX + a for a in applications.available_applications()
    ]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"Unknown model {name!r}.{hint} Valid names: {', '.join(available_models())}, "
        f"or '{APPLICATIONS_PREFIX}<Name>' for a keras.applications model."
    )
