"""The reusable model analysis and the Keras internals it relies on."""

import keras
import numpy as np
import pytest
from surgery_cases import assert_same_outputs, randomize

from afp_tf import surgery
from afp_tf.surgery import keras_internals

L = keras.layers


def _net():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    b = L.Conv2D(6, 1, name="b")(inp)
    x = L.Add(name="add")([L.BatchNormalization(name="bn")(a), b])
    x = L.Conv2D(4, 3, name="c")(L.ReLU()(x))
    return randomize(keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))))


def test_keras_internals_check_passes_on_installed_keras(monkeypatch):
    assert keras_internals.check() is None  # nothing moved in the installed Keras
    # a Functional class that is not the one keras.Model builds: both graphs it checks miss it
    monkeypatch.setattr(keras_internals, "Functional", type("Functional", (), {}))
    broken = r"keras\.src\.models\.functional\.Functional, Sequential\._functional\. It was"
    with pytest.raises(RuntimeError, match=rf"changed in Keras {keras.__version__}: {broken}"):
        keras_internals.check()


def test_keras_internals_check_names_version_when_internal_missing(monkeypatch):
    monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    with pytest.raises(RuntimeError, match=f"Keras {keras.__version__}.*_flatten_layers"):
        keras_internals.check()


def test_analyze_groups_consumers_and_filter_weights():
    model = _net()
    analysis = surgery.analyze(model)
    assert [g.name for g in analysis.groups] == [g.name for g in surgery.find_channel_groups(model)]
    assert analysis.group("a").producers == ("a", "b")
    assert analysis.consumers("a") == ("c",)
    assert analysis.consumers("c") == ("out",)
    pairs = analysis.filter_weights("a")
    assert [(v.path, axis) for v, axis in pairs] == [("a/kernel", 3), ("b/kernel", 3)]
    assert [g.name for g in analysis.prunable] == ["a", "c"]
    with pytest.raises(surgery.SurgeryError, match="No channel group 'zz'"):
        analysis.group("zz")


def test_remove_filters_reused_analysis_same_model_as_fresh():
    model = _net()
    analysis = surgery.analyze(model)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    reused = surgery.remove_filters(model, {"a": [1, 4]}, analysis=analysis)
    fresh = surgery.remove_filters(model, {"a": [1, 4]})
    assert reused.get_layer("c").kernel.shape == (3, 3, 4, 4)
    assert_same_outputs(reused, fresh, x, tol=1e-6)


def test_remove_filters_and_copy_model_analysis_of_other_model_raises():
    model, other = _net(), _net()
    with pytest.raises(surgery.SurgeryError, match="analysis passed is of model"):
        surgery.remove_filters(model, {"a": [0]}, analysis=surgery.analyze(other))
    with pytest.raises(surgery.SurgeryError, match="analysis passed is of model"):
        surgery.copy_model(model, analysis=surgery.analyze(other))
