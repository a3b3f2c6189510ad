"""Tests of the orthogonality regulariser and the targeted ℓ1 penalty."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from afp_tf import surgery
from afp_tf.method import regularizers


def _direct(m, normalize=True, eps=1e-4):
    """Reference ||M̂M̂ᵀ − I||_F² in numpy."""
    m = np.asarray(m, np.float64)
    if normalize:
        m = m / np.sqrt((m**2).sum(1, keepdims=True) + eps)
    g = m @ m.T
    return ((g - np.eye(len(m))) ** 2).sum()


# --------------------------------------------------------------------- orthogonality penalty
def test_orthogonality_penalty_orthonormal_filters_zero():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(12, 5)))  # 5 orthonormal columns
    kernel = q.reshape(3, 4, 5).astype(np.float32)  # conv1d (k=3, c_in=4, c_out=5)
    assert float(regularizers.orthogonality_penalty(kernel, epsilon=1e-12)) == pytest.approx(
        0.0, abs=1e-5
    )


def test_orthogonality_penalty_scaled_orthogonal_normalize_zero_otherwise_not():
    kernel = 3.0 * np.eye(4, dtype=np.float32)
    assert float(regularizers.orthogonality_penalty(kernel, epsilon=1e-12)) == pytest.approx(
        0.0, abs=1e-5
    )
    # Unnormalised: rows of norm 3 -> diag 9 -> 4 * 8**2.
    assert float(regularizers.orthogonality_penalty(kernel, normalize=False)) == pytest.approx(256)


def test_orthogonality_penalty_identical_filters_hand_value():
    kernel = np.ones((2, 3), np.float32)  # dense (in=2, out=3): 3 identical filters
    # M̂M̂ᵀ is all ones: 3x3 with 6 off-diagonal ones -> 6.
    assert float(regularizers.orthogonality_penalty(kernel, epsilon=1e-12)) == pytest.approx(6.0)


@pytest.mark.parametrize("shape", [(5, 7), (3, 3, 4, 6), (3, 2, 10), (2, 2, 2, 3, 4), (4, 40)])
def test_orthogonality_penalty_conv_shapes_match_reference(shape):
    kernel = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    m = np.moveaxis(kernel, -1, 0).reshape(shape[-1], -1)
    got = float(regularizers.orthogonality_penalty(kernel))
    assert got == pytest.approx(_direct(m), rel=1e-4)


def test_orthogonality_penalty_more_filters_than_weights_uses_small_gram_same_value():
    kernel = np.random.default_rng(2).normal(size=(1, 1, 3, 16)).astype(np.float32)
    m = kernel.reshape(3, 16).T  # 16 filters of 3 weights: M̂M̂ᵀ cannot be I
    got = float(regularizers.orthogonality_penalty(kernel))
    assert got == pytest.approx(_direct(m), rel=1e-4)
    assert got > 16 * 16 / 3 - 16 - 1e-3  # lower bound n²/d − n for unit rows


def test_orthogonality_penalty_transpose_axis_rows_are_output_channels():
    kernel = np.random.default_rng(3).normal(size=(3, 3, 5, 2)).astype(np.float32)  # (.., out, in)
    m = np.moveaxis(kernel, 2, 0).reshape(5, -1)
    got = float(regularizers.orthogonality_penalty(kernel, filter_axis=-2))
    assert got == pytest.approx(_direct(m), rel=1e-4)


def test_orthogonality_penalty_depthwise_rows_are_each_spatial_filter():
    kernel = np.random.default_rng(4).normal(size=(3, 3, 4, 2)).astype(np.float32)
    m = np.stack([kernel[:, :, c, j].ravel() for c in range(4) for j in range(2)])
    got = float(regularizers.orthogonality_penalty(kernel, depthwise=True))
    assert got == pytest.approx(_direct(m), rel=1e-4)


def test_orthogonality_penalty_depthwise_multiplier_one_equals_channel_axis():
    kernel = np.random.default_rng(5).normal(size=(3, 3, 6, 1)).astype(np.float32)
    a = float(regularizers.orthogonality_penalty(kernel, depthwise=True))
    b = float(regularizers.orthogonality_penalty(kernel, filter_axis=-2))
    assert a == pytest.approx(b, rel=1e-5)


def test_orthogonality_penalty_zero_filter_finite_value_and_gradient():
    kernel = tf.Variable(np.random.default_rng(6).normal(size=(3, 3, 2, 4)).astype(np.float32))
    kernel[..., 1].assign(tf.zeros((3, 3, 2)))
    with tf.GradientTape() as tape:
        value = regularizers.orthogonality_penalty(kernel)
    grad = tape.gradient(value, kernel)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))
    np.testing.assert_allclose(grad.numpy()[..., 1], 0.0, atol=1e-6)


def test_orthogonality_penalty_rank1_is_zero():
    assert float(regularizers.orthogonality_penalty(np.ones(5, np.float32))) == 0.0


@pytest.mark.parametrize(
    "kernel, kw, match",
    [
        (np.ones((3, 4), np.float32), dict(depthwise=True), "depthwise"),
        (np.ones((3, 4), np.float32), dict(filter_axis=2), "out of range"),
        (np.ones((3, 4), np.float32), dict(epsilon=0.0), "epsilon"),
    ],
)
def test_orthogonality_penalty_bad_input_raises(kernel, kw, match):
    with pytest.raises(ValueError, match=match):
        regularizers.orthogonality_penalty(kernel, **kw)


def test_orthogonality_penalty_gradient_reduces_penalty_on_keras_variable():
    layer = keras.layers.Conv2D(8, 3)
    layer.build((None, 6, 6, 4))
    opt = keras.optimizers.SGD(0.05)
    start = float(regularizers.orthogonality_penalty(layer.kernel))
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = regularizers.orthogonality_penalty(layer.kernel)
        opt.apply_gradients([(tape.gradient(loss, layer.kernel.value), layer.kernel)])
    assert float(regularizers.orthogonality_penalty(layer.kernel)) < 0.5 * start


# --------------------------------------------------------------------- the Keras regulariser
@pytest.mark.parametrize(
    "mode, kernel_shape, axis, depthwise",
    [
        ("filters", (3, 3, 4, 6), -1, False),
        ("transpose", (3, 3, 6, 4), -2, False),
        ("depthwise", (3, 3, 4, 2), -1, True),
    ],
)
def test_orthogonal_regularizer_is_factor_times_penalty(mode, kernel_shape, axis, depthwise):
    kernel = np.random.default_rng(7).normal(size=kernel_shape).astype(np.float32)
    reg = regularizers.OrthogonalRegularizer(factor=0.3, mode=mode)
    expected = 0.3 * float(regularizers.orthogonality_penalty(kernel, axis, depthwise=depthwise))
    assert float(reg(tf.constant(kernel))) == pytest.approx(expected, rel=1e-5)


def test_orthogonal_regularizer_bad_mode_raises():
    with pytest.raises(ValueError, match="Unknown mode"):
        regularizers.OrthogonalRegularizer(mode="rows")


def test_orthogonal_regularizer_saved_model_loads_with_same_losses(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(
        4, 3, kernel_regularizer=regularizers.OrthogonalRegularizer(0.1), name="conv"
    )(inputs)
    x = keras.layers.DepthwiseConv2D(
        3, depthwise_regularizer=regularizers.OrthogonalRegularizer(0.1, mode="depthwise")
    )(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, kernel_regularizer=regularizers.OrthogonalRegularizer(0.05))(x)
    model = keras.Model(inputs, outputs)
    model(np.zeros((1, 8, 8, 3), np.float32))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded(np.zeros((1, 8, 8, 3), np.float32))
    reg = loaded.get_layer("conv").kernel_regularizer
    assert isinstance(reg, regularizers.OrthogonalRegularizer) and reg.factor == 0.1
    np.testing.assert_allclose(
        sorted(float(v) for v in loaded.losses), sorted(float(v) for v in model.losses), rtol=1e-5
    )
    assert len(loaded.losses) == 3


# --------------------------------------------------------------------- orthogonality loss
def test_orthogonality_loss_is_beta_times_penalty_sum_over_prunable_kernels():
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(inp)
    x = keras.layers.Conv2D(5, 1, name="b")(keras.layers.ReLU()(x))
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    analysis = surgery.analyze(model)
    kernels = [v for g in analysis.prunable for v, _ in analysis.filter_weights(g)]
    assert {v.path for v in kernels} == {"a/kernel", "b/kernel"}
    expected = 0.5 * sum(float(regularizers.orthogonality_penalty(v)) for v in kernels)
    assert float(regularizers.orthogonality_loss(model, 0.5)()) == pytest.approx(expected)
    assert float(regularizers.orthogonality_loss(model, 0.5, analysis)()) == pytest.approx(expected)
    inp = keras.Input((3,))
    none = keras.Model(inp, keras.layers.Dense(2)(inp))  # its only group reaches the output
    assert float(regularizers.orthogonality_loss(none, 0.5)()) == 0.0


# --------------------------------------------------------------------- targeted ℓ1
def _conv_weights():
    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 5, 5, 2))
    return conv, {"g": [(conv.kernel, 3), (conv.bias, 0)]}


def test_targeted_l1_value_matches_hand_sum():
    conv, weights = _conv_weights()
    pen = regularizers.TargetedL1Penalty(weights)
    conv.bias.assign([1.0, -2.0, 3.0, -4.0])
    pen.set_candidates({"g": [1, 3]})
    pen.set_strength(0.5)
    k = np.abs(conv.kernel.numpy())
    expected = 0.5 * (k[..., 1].sum() + k[..., 3].sum() + 2.0 + 4.0)
    assert float(pen()) == pytest.approx(expected, rel=1e-5)
    assert pen.sizes == {"g": 4}


def test_targeted_l1_clear_gives_zero():
    _, weights = _conv_weights()
    pen = regularizers.TargetedL1Penalty(weights)
    pen.set_candidates({"g": [0]})
    pen.set_strength(1.0)
    assert float(pen()) > 0
    pen.clear()
    assert float(pen()) == 0.0
    assert float(tf.reduce_sum(pen.masks["g"])) == 0.0


def test_targeted_l1_gradient_is_lambda_sign_on_candidates_zero_elsewhere():
    conv, weights = _conv_weights()
    pen = regularizers.TargetedL1Penalty(weights)
    pen.set_candidates({"g": [2]})
    pen.set_strength(0.25)
    with tf.GradientTape() as tape:
        value = pen()
    grad = tape.gradient(value, conv.kernel.value).numpy()
    k = conv.kernel.numpy()
    np.testing.assert_allclose(grad[..., 2], 0.25 * np.sign(k[..., 2]))
    np.testing.assert_array_equal(grad[..., [0, 1, 3]], 0.0)


def test_targeted_l1_changing_masks_and_strength_does_not_retrace():
    conv, weights = _conv_weights()
    pen = regularizers.TargetedL1Penalty(weights)

    @tf.function
    def step():
        return pen()

    values = []
    for cands, lam in [({"g": [0]}, 1.0), ({"g": [1, 2]}, 0.1), ({}, 2.0), ({"g": [3]}, 0.0)]:
        pen.set_candidates(cands)
        pen.set_strength(lam)
        values.append(float(step()))
    assert step.experimental_get_tracing_count() == 1
    k = np.abs(conv.kernel.numpy()).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(values, [k[0], 0.1 * (k[1] + k[2]), 0.0, 0.0], rtol=1e-5)


def test_targeted_l1_depthwise_producer_channel_axis():
    dw = keras.layers.DepthwiseConv2D(3)
    dw.build((None, 5, 5, 3))
    pen = regularizers.TargetedL1Penalty({"g": [(dw.kernel, 2)]})
    pen.set_candidates({"g": [1]})
    pen.set_strength(1.0)
    assert float(pen()) == pytest.approx(np.abs(dw.kernel.numpy()[:, :, 1, :]).sum(), rel=1e-5)


def test_targeted_l1_under_mirrored_strategy_runs_in_replica_context():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        conv, weights = _conv_weights()
        pen = regularizers.TargetedL1Penalty(weights)
    pen.set_candidates({"g": [0, 1]})
    pen.set_strength(2.0)

    @tf.function
    def step():
        def replica():
            with tf.GradientTape() as tape:
                value = pen()
            return value, tape.gradient(value, conv.kernel.value)

        return strategy.run(replica)

    values, grads = step()
    k = conv.kernel.numpy()
    expected = 2.0 * np.abs(k[..., :2]).sum()
    for v, g in zip(
        strategy.experimental_local_results(values),
        strategy.experimental_local_results(grads),
        strict=True,
    ):
        assert float(v) == pytest.approx(expected, rel=1e-5)
        np.testing.assert_allclose(g.numpy()[..., :2], 2.0 * np.sign(k[..., :2]))
    pen.set_strength(1.0)
    values, _ = step()
    assert float(strategy.experimental_local_results(values)[0]) == pytest.approx(expected / 2)
    assert step.experimental_get_tracing_count() == 1


@pytest.mark.parametrize(
    "cands, match", [({"nope": [0]}, "Unknown channel groups"), ({"g": [4]}, "out of range")]
)
def test_targeted_l1_bad_candidates_raise(cands, match):
    _, weights = _conv_weights()
    pen = regularizers.TargetedL1Penalty(weights)
    with pytest.raises(ValueError, match=match):
        pen.set_candidates(cands)


def test_targeted_l1_producers_disagree_on_size_raises():
    conv, _ = _conv_weights()
    with pytest.raises(ValueError, match="same size"):
        regularizers.TargetedL1Penalty({"g": [(conv.kernel, 3), (conv.kernel, 2)]})


def test_targeted_l1_negative_strength_raises():
    _, weights = _conv_weights()
    with pytest.raises(ValueError, match="strength"):
        regularizers.TargetedL1Penalty(weights).set_strength(-1.0)


def test_targeted_fade_linear_to_exact_zero_candidates_only():
    conv, weights = _conv_weights()
    conv.bias.assign([1.0, -2.0, 3.0, -4.0])
    start = [conv.kernel.numpy().copy(), conv.bias.numpy().copy()]
    pen = regularizers.TargetedL1Penalty(weights)
    pen.set_candidates({"g": [1, 3]})
    fade = regularizers.TargetedFade(pen, steps=5)
    fade(2)  # 2 of 5 steps: candidates at 3/5 of their start
    np.testing.assert_allclose(conv.bias.numpy(), [1.0, -1.2, 3.0, -2.4], rtol=1e-6)
    np.testing.assert_allclose(conv.kernel.numpy()[..., 3], 0.6 * start[0][..., 3], rtol=1e-6)
    fade(2)
    fade(4)  # past the end: exactly zero, and stays there
    fade(1)
    assert np.all(conv.kernel.numpy()[..., [1, 3]] == 0) and np.all(conv.bias.numpy()[[1, 3]] == 0)
    np.testing.assert_array_equal(conv.kernel.numpy()[..., [0, 2]], start[0][..., [0, 2]])
    np.testing.assert_array_equal(conv.bias.numpy()[[0, 2]], [1.0, 3.0])


def test_targeted_fade_zero_steps_raises():
    _, weights = _conv_weights()
    with pytest.raises(ValueError, match="steps >= 1"):
        regularizers.TargetedFade(regularizers.TargetedL1Penalty(weights), steps=0)
