"""Tests of AFP filter importance and selection."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from afp_tf.method import afp, regularizers

IMP = {"a": np.array([0.1, 0.5, 0.9]), "b": np.array([0.2, 0.3, 0.4, 0.6, 0.8])}


# --------------------------------------------------------------------- filter_importance
def test_filter_importance_sums_producers_and_normalizes_by_fan_in():
    kernel = np.arange(12, dtype=np.float32).reshape(2, 2, 1, 3) - 6.0  # 4 weights per filter
    bias = np.array([1.0, -1.0, 0.5], np.float32)  # 1 weight per filter
    weights = {"g": [(tf.Variable(kernel), 3), (tf.Variable(bias), 0)]}
    l1 = np.abs(kernel).reshape(4, 3).sum(0) + np.abs(bias)
    raw = afp.filter_importance(weights, normalize=False)
    norm = afp.filter_importance(weights, normalize="fan_in")
    np.testing.assert_allclose(raw["g"], l1)
    np.testing.assert_allclose(norm["g"], l1 / 5)


def test_filter_importance_normalized_comparable_across_fan_in():
    small = keras.Variable(np.full((1, 1, 2, 3), 0.5, np.float32))  # fan-in 2
    big = keras.Variable(np.full((3, 3, 8, 3), 0.5, np.float32))  # fan-in 72
    imp = afp.filter_importance({"s": [(small, 3)], "b": [(big, 3)]}, normalize="fan_in")
    np.testing.assert_allclose(imp["s"], imp["b"])
    raw = afp.filter_importance({"s": [(small, 3)], "b": [(big, 3)]}, normalize=False)
    np.testing.assert_allclose(raw["b"] / raw["s"], 36.0)


def test_filter_importance_transpose_axis_counts_output_channels():
    k = np.random.default_rng(0).normal(size=(3, 3, 5, 2)).astype(np.float32)  # (.., out, in)
    imp = afp.filter_importance({"t": [(tf.Variable(k), 2)]}, normalize=False)
    np.testing.assert_allclose(imp["t"], np.abs(k).sum(axis=(0, 1, 3)), rtol=1e-6)


def test_filter_importance_real_model_variables_match_numpy():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Conv2D(6, 1, name="c2")(x)
    model = keras.Model(inputs, outputs)
    c1, bn, c2 = (model.get_layer(n) for n in ("c1", "bn", "c2"))
    weights = {"c1": [(c1.kernel, 3), (c1.bias, 0)], "c2": [(c2.kernel, 3)]}
    imp = afp.filter_importance(weights, normalize="fan_in")
    expected = (np.abs(c1.kernel.numpy()).sum((0, 1, 2)) + np.abs(c1.bias.numpy())) / (27 + 1)
    np.testing.assert_allclose(imp["c1"], expected, rtol=1e-6)
    assert imp["c2"].shape == (6,)
    assert bn.gamma.shape == (4,)  # BN not a producer here: not counted


def test_filter_importance_producers_disagree_raises():
    v = tf.Variable(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="disagree"):
        afp.filter_importance({"g": [(v, 1), (v, 0)]})


def test_filter_importance_empty_group_raises():
    with pytest.raises(ValueError, match="no producer"):
        afp.filter_importance({"g": []})


# --------------------------------------------------------------------- select_candidates
def test_select_candidates_quantile_is_global():
    # 8 scores; the 0.5-quantile (linear) is (0.4 + 0.5) / 2 = 0.45.
    assert afp.select_candidates(IMP, quantile=0.5) == {"a": [0], "b": [0, 1, 2]}


def test_select_candidates_threshold_absolute():
    assert afp.select_candidates(IMP, threshold=0.35) == {"a": [0], "b": [0, 1]}


def test_select_candidates_zero_quantile_or_threshold_selects_nothing():
    assert afp.select_candidates(IMP, quantile=0.0) == {}
    assert afp.select_candidates(IMP, threshold=0.0) == {}


def test_select_candidates_min_filters_keeps_most_important():
    assert afp.select_candidates(IMP, threshold=1.0) == {"a": [0, 1], "b": [0, 1, 2, 3]}
    assert afp.select_candidates(IMP, threshold=1.0, min_filters=2) == {"a": [0], "b": [0, 1, 2]}
    assert afp.select_candidates(IMP, threshold=1.0, min_filters=0) == {
        "a": [0, 1],
        "b": [0, 1, 2, 3],
    }  # 0 behaves as 1: a group is never emptied


def test_select_candidates_indices_sorted_python_ints():
    imp = {"g": np.array([0.3, 0.05, 0.9, 0.01, 0.2])}
    out = afp.select_candidates(imp, threshold=0.25)
    assert out == {"g": [1, 3, 4]}
    assert all(type(i) is int for i in out["g"])


def test_select_candidates_ties_at_quantile_strictly_below():
    assert afp.select_candidates({"g": np.full(6, 0.5)}, quantile=0.5) == {}


@pytest.mark.parametrize(
    "size, n_cand, round_to, removed",
    [
        (16, 5, 8, 0),  # 11 left -> cannot reach 8 with 5: remove none
        (16, 9, 8, 8),  # 7 left -> rounded up to 8 remaining
        (16, 16, 8, 8),  # min_filters 1 -> 1 left -> rounded up to 8
        (10, 1, 8, 0),  # 9 left: no multiple of 8 reachable
        (10, 3, 8, 2),  # 7 left -> 8 remaining
        (8, 8, 8, 0),  # already at the smallest multiple
        (12, 7, 4, 4),  # 5 left -> 8 remaining
        (12, 7, 1, 7),
    ],
)
def test_select_candidates_round_to_remaining_multiple(size, n_cand, round_to, removed):
    s = np.linspace(2.0, 1.0, size)  # the least important filters are the last ones
    cut = 3.0 if n_cand == size else float(s[size - n_cand - 1])  # last n_cand strictly below
    out = afp.select_candidates({"g": s}, threshold=cut, round_to=round_to)
    got = out.get("g", [])
    assert len(got) == removed
    assert (size - len(got)) % round_to == 0 or not got
    assert got == list(range(size - removed, size))  # the least important ones


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(), "exactly one"),
        (dict(quantile=0.1, threshold=0.1), "exactly one"),
        (dict(quantile=1.5), "quantile"),
        (dict(threshold=-1.0), "threshold"),
        (dict(threshold=0.1, round_to=0), "round_to"),
        (dict(threshold=0.1, min_filters=-1), "min_filters"),
    ],
)
def test_select_candidates_bad_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        afp.select_candidates(IMP, **kw)


def test_select_candidates_nonfinite_importance_raises():
    with pytest.raises(ValueError, match="finite 1-D"):
        afp.select_candidates({"g": np.array([0.1, np.nan])}, quantile=0.5)


# --------------------------------------------------------------------- decayed
def test_decayed_keeps_candidates_that_fell_below_fraction():
    before = {"a": np.array([1.0, 2.0, 4.0, 0.0, 3.0])}
    now = {"a": np.array([0.4, 1.5, 1.0, 0.0, 0.1])}
    out = afp.decayed(before, now, {"a": [0, 1, 2, 3]}, 0.5)
    assert out == {"a": [0, 2, 3]}  # 4 decayed too but was no candidate


def test_decayed_none_fell_drops_group():
    out = afp.decayed({"a": np.ones(3)}, {"a": np.ones(3)}, {"a": [0, 1]}, 0.5)
    assert out == {}


def test_decayed_round_to_keeps_remaining_multiple_most_decayed_first():
    before = {"a": np.ones(8)}
    now = {"a": np.array([0.1, 0.3, 0.2, 1, 1, 1, 1, 0.05])}
    out = afp.decayed(before, now, {"a": [0, 1, 2, 7]}, 0.5, round_to=2)
    assert out == {"a": [0, 1, 2, 7]}  # all 4 qualify, 4 remain: already a multiple of 2
    out = afp.decayed(before, now, {"a": [0, 1, 2, 7]}, 0.25, round_to=2)
    assert out == {"a": [0, 7]}  # 0, 2, 7 qualify; 5 would remain -> keep 6, drop 7 and 0


def test_decayed_bad_fraction_raises():
    with pytest.raises(ValueError, match="fraction"):
        afp.decayed(IMP, IMP, {"a": [0]}, 0.0)


# --------------------------------------------------------------------- uniform_selection
def test_uniform_selection_lowest_ratio_per_group():
    imp = {"a": np.array([5.0, 1.0, 3.0, 2.0, 4.0]), "b": np.array([0.1, 0.2])}
    assert afp.uniform_selection(imp, 0.5) == {"a": [1, 3], "b": [0]}
    assert afp.uniform_selection(imp, 0.3) == {"a": [1]}  # floor(0.6) = 0 for b


def test_uniform_selection_float_round_off_counts_exactly():
    assert len(afp.uniform_selection({"g": np.arange(100.0)}, 0.29)["g"]) == 29


def test_uniform_selection_min_filters_caps():
    imp = {"a": np.arange(4.0)}
    assert afp.uniform_selection(imp, 0.9) == {"a": [0, 1, 2]}
    assert afp.uniform_selection(imp, 0.9, min_filters=3) == {"a": [0]}


def test_uniform_selection_bad_ratio_raises():
    with pytest.raises(ValueError, match="ratio"):
        afp.uniform_selection(IMP, 1.0)


# --------------------------------------------------------------------- with real training
def test_targeted_penalty_decays_candidates_then_decayed_selects_them():
    conv = keras.layers.Conv2D(8, 3)
    conv.build((None, 6, 6, 3))
    weights = {"g": [(conv.kernel, 3), (conv.bias, 0)]}
    before = afp.filter_importance(weights, normalize="none")
    cands = afp.select_candidates(before, quantile=0.3)
    assert 1 <= len(cands["g"]) < 8
    pen = regularizers.TargetedL1Penalty(weights)
    pen.set_candidates(cands)
    pen.set_strength(1.0)
    opt = keras.optimizers.SGD(0.01)
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = pen()
        opt.apply_gradients(
            zip(tape.gradient(loss, conv.trainable_weights), conv.trainable_weights, strict=True)
        )
    now = afp.filter_importance(weights, normalize="none")
    assert afp.decayed(before, now, cands, 0.5) == cands
    others = [i for i in range(8) if i not in cands["g"]]
    np.testing.assert_allclose(now["g"][others], before["g"][others])


def test_filter_importance_layer_mean_removes_init_scale():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, (3, 3, 4, 6))
    imp = afp.filter_importance(
        {"small": [(tf.Variable(0.01 * base), 3)], "big": [(tf.Variable(base), 3)]}
    )
    np.testing.assert_allclose(imp["small"], imp["big"], rtol=1e-6)
    assert imp["big"].mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="layer_mean"):
        afp.filter_importance({"big": [(tf.Variable(base), 3)]}, normalize="median")


def test_select_candidates_max_fraction_caps_each_group():
    importance = {"a": np.arange(10.0), "b": np.arange(10.0) + 100}
    out = afp.select_candidates(importance, threshold=50.0, max_fraction=0.3)
    assert out == {"a": [0, 1, 2]}
    with pytest.raises(ValueError, match="max_fraction"):
        afp.select_candidates(importance, threshold=1.0, max_fraction=0)


def test_select_candidates_divisions_take_same_count_per_division_least_important():
    # division 0 = filters 0-3, division 1 = 4-7; four candidates in division 0, one in division 1
    imp = {"g": np.array([0.1, 0.2, 0.3, 0.4, 5.0, 0.15, 6.0, 7.0]), "h": np.ones(4) * 9}
    out = afp.select_candidates(imp, threshold=1.0, divisions={"g": 2})
    assert out == {"g": [0, 5]}


def test_select_candidates_divisions_with_round_to_keep_remaining_multiple():
    imp = {"g": np.array([0.1, 0.2, 0.3, 9.0, 0.1, 0.2, 0.3, 9.0])}
    # 3 per division would leave 2 (not a multiple of 4); 2 per division leaves 4
    assert afp.select_candidates(imp, threshold=1.0, divisions={"g": 2}, round_to=4) == {
        "g": [0, 1, 4, 5]
    }


def test_uniform_selection_divisions_split_count_evenly():
    imp = {"g": np.array([0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0])}
    assert afp.uniform_selection(imp, 0.5, divisions={"g": 2}) == {"g": [0, 1, 4, 5]}


def test_decayed_divisions_keep_equal_count_most_decayed_first():
    before = {"g": np.ones(6)}
    now = {"g": np.array([0.01, 0.02, 1.0, 0.05, 1.0, 1.0])}
    out = afp.decayed(before, now, {"g": [0, 1, 3]}, 0.1, divisions={"g": 2})
    assert out == {"g": [0, 3]}
