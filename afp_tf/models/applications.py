"""Any ``keras.applications`` model by name, untrained and with a logits head."""

from __future__ import annotations

import difflib

import keras


def available_applications() -> list[str]:
    """Sorted names of the model constructors in ``keras.applications`` (``"ResNet50"``, ...)."""
    return sorted(
        n
        for n in dir(keras.applications)
        if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def build(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> keras.Model:
    """Builds ``keras.applications.<name>`` with random weights and ``num_classes`` logits.

    Weights are never downloaded (``weights=None``); the classifier has no activation, so use
    a loss with ``from_logits=True``. Extra ``kwargs`` (e.g. ``alpha``) go to the constructor.

    Raises:
        ValueError: if ``name`` is not a keras.applications model, or a kwarg is reserved.
    """
    names = available_applications()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean 'applications.{close[0]}'?" if close else ""
        raise ValueError(
            f"keras.applications has no model {name!r}.{hint} Valid names: {', '.join(names)}."
        )
    reserved = {"weights", "classes", "classifier_activation", "input_shape", "include_top"}
    if reserved & kwargs.keys():
        raise ValueError(
            f"applications.{name}: {sorted(reserved & kwargs.keys())} are set by afp_tf "
            "(random weights, logits head); use build_model's input_shape and num_classes."
        )
    return getattr(keras.applications, name)(
        include_top=True,
        weights=None,
        input_shape=input_shape,
        classes=num_classes,
        classifier_activation=None,
        **kwargs,
    )
