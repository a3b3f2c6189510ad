"""Pruning to a latency budget: the latency table's interpolation and prediction, the stop rule
and cost on a fake table, and one table measured for real on a tiny model."""

import json

import keras
import numpy as np
import pytest
from test_pruner import FakePruner, _free
from test_pruner import _model as _pruner_model

from afp_tf import AFPCallback, resources, surgery
from afp_tf.export import artifacts, latency, latency_model
from afp_tf.export.latency_model import LatencyTable
from afp_tf.method import prc
from afp_tf.method.options import PruneOptions
from afp_tf.method.pruner import filters_per_group, round_candidates, saving_per_filter
from afp_tf.run import config_lib

OVERHEAD = 0.5  # the hand table's empty probe, ms
# Probe medians (ms, overhead included) of the tiny model's layers at (c_in, c_out).
HAND = {
    "c1": {(2, 4): 1.5, (2, 8): 3.5, (3, 4): 1.5, (3, 8): 3.5},  # 1 + 0.5 ms per c_out above 4
    "c2": {(4, 4): 1.5, (4, 8): 2.5, (8, 4): 2.5, (8, 8): 4.5},  # 1, 2, 2, 4 without overhead
    "out": {(4, 2): 0.5, (4, 4): 0.4, (8, 2): 0.5, (8, 4): 0.5},  # at or under the overhead: 0
}


def _tiny(size=16, second="c2"):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, name=second)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _hand_table(model_ms=10.0, fmt="tflite_fp32") -> LatencyTable:
    probes = [
        {"file": f"{name}_{a}_{b}", "role": "layer", "layer": name, "c_in": a, "c_out": b}
        | {"median_ms": ms, "p90_ms": ms}
        for name, grid in HAND.items()
        for (a, b), ms in grid.items()
    ]
    probes += [
        {"file": "model", "role": "model", "layer": None, "median_ms": model_ms},
        {"file": "empty", "role": "empty", "layer": None, "median_ms": OVERHEAD},
    ]
    layers = latency_model.describe(_tiny())
    return LatencyTable({"format": fmt, "threads": 1, "layers": layers, "probes": probes})


def test_describe_names_every_kernel_layer_with_its_shape_and_counts():
    layers = latency_model.describe(_tiny())
    assert list(layers) == ["c1", "c2", "out"]
    assert layers["c2"] == {
        "class": "Conv2D",
        "kernel_size": [3, 3],
        "strides": [1, 1],
        "dilation_rate": [1, 1],
        "padding": "valid",
        "input_spatial": [14, 14],
        "c_in": 8,
        "c_out": 8,
    }
    assert (layers["out"]["input_spatial"], layers["out"]["c_in"]) == ([], 8)


def test_layer_ms_is_bilinear_on_the_grid_and_linear_beyond_it_clamped_at_zero():
    table = _hand_table()
    assert table.layer_ms("c2", 8, 8) == pytest.approx(4.0)  # grid points, overhead subtracted
    assert table.layer_ms("c2", 4, 4) == pytest.approx(1.0)
    assert table.layer_ms("c2", 6, 6) == pytest.approx(2.25)  # mean of the cell's corners
    assert table.layer_ms("c2", 6, 8) == pytest.approx(3.0)
    assert table.layer_ms("c2", 4, 5) == pytest.approx(1.25)
    # Below the grid, the edge cell's bilinear surface: 1 + (x-4)/4 + (y-4)/4 + (x-4)(y-4)/16.
    assert table.layer_ms("c2", 2, 4) == pytest.approx(0.5)
    assert table.layer_ms("c2", 2, 2) == pytest.approx(0.25)
    assert table.layer_ms("c1", 3, 3) == pytest.approx(0.5)
    assert table.layer_ms("c1", 3, 1) == 0.0  # 1 - 1.5 ms: clamped
    assert table.layer_ms("out", 4, 4) == 0.0  # a probe faster than the empty one
    with pytest.raises(ValueError, match="no layer 'c3'"):
        table.layer_ms("c3", 1, 1)


def test_predict_is_the_measured_model_plus_what_the_counts_change():
    table, model = _hand_table(), _tiny()
    assert table.predict(model) == 10.0  # exactly the measurement
    pruned = surgery.remove_filters(model, {"c1": [0, 1, 2, 3], "c2": [0, 1]})
    # c1 3x8 -> 3x4: 1 - 3; c2 8x8 -> 4x6: 1.5 - 4; out 8x4 -> 6x4: 0 - 0.
    assert table.predict(pruned) == pytest.approx(10.0 - 2.0 - 2.5)


def test_saving_per_filter_removes_one_filter_per_group_and_predicts():
    table, model = _hand_table(), _tiny()
    # c1: its own c_out 8 -> 7 saves 0.5, c2's c_in 8 -> 7 another 0.5; c2: its c_out 0.5 and
    # the Dense reading it nothing.
    savings = saving_per_filter(
        model, surgery.analyze(model), table.predict, latency_model.MIN_SAVING_MS
    )
    assert savings == pytest.approx({"c1": 1.0, "c2": 0.5})


def test_saving_per_filter_of_a_group_down_to_one_filter_is_the_floor():
    # A group at its last filter cannot lose it: it saves nothing (this crashed a latency run).
    model = surgery.remove_filters(_tiny(), {"c1": list(range(7))})
    savings = saving_per_filter(model, surgery.analyze(model), lambda m: m.count_params(), 1e-3)
    assert savings["c1"] == 1e-3 and savings["c2"] == 9 + 1 + 4  # 3x3x1 kernel, bias, 4 Dense


def test_table_of_another_model_is_refused_naming_the_layer():
    table = _hand_table()
    with pytest.raises(ValueError, match="'c1'.*input_spatial \\[20, 20\\].*\\[16, 16\\]"):
        table.predict(_tiny(size=20))
    with pytest.raises(ValueError, match="no layer 'conv2'"):
        table.check(_tiny(second="conv2"))
    table.check(_tiny())


def test_table_json_round_trip(tmp_path):
    table = _hand_table()
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert again.predict(_tiny()) == 10.0 and again.layer_ms("c2", 6, 6) == pytest.approx(2.25)
    with pytest.raises(ValueError, match="one 'empty' probe"):
        LatencyTable({**table.data, "probes": table.data["probes"][:-1]})


def test_load_or_measure_reuses_a_fitting_cached_table_and_refuses_another_format(
    tmp_path, monkeypatch
):
    _hand_table(model_ms=7.0).save(tmp_path / latency_model.TABLE_NAME)
    measured = []
    monkeypatch.setattr(
        latency_model, "measure_table", lambda *a, **k: measured.append(a[1]) or _hand_table()
    )
    assert latency_model.load_or_measure(_tiny(), "tflite_fp32", tmp_path).model_ms == 7.0
    assert latency_model.load_or_measure(_tiny(size=20), "tflite_fp32", tmp_path).model_ms == 10
    assert latency_model.load_or_measure(_tiny(), "tflite_int8", tmp_path).model_ms == 10.0
    assert measured == ["tflite_fp32", "tflite_int8"]
    given = tmp_path / latency_model.TABLE_NAME
    with pytest.raises(ValueError, match="measured as tflite_fp32, not tflite_int8"):
        latency_model.load_or_measure(_tiny(), "tflite_int8", tmp_path, table=given)


def test_a_deployed_form_is_what_the_table_probes_checks_and_predicts(tmp_path, monkeypatch):
    # Trained at 20 px, deployed (Task.deployed: a detector at its frame size) at 16 px: the
    # table of the deployed form predicts the trained model and its pruned versions.
    def deploy(model):
        return _tiny(size=16) if model.input_shape[1] == 20 else model

    probed = []
    monkeypatch.setattr(
        latency_model,
        "measure_table",
        lambda model, *a, **k: probed.append(model.input_shape[1]) or _hand_table(),
    )
    table = latency_model.load_or_measure(_tiny(size=20), "tflite_fp32", tmp_path, deploy=deploy)
    assert probed == [16] and table.predict(_tiny(size=20)) == 10.0
    _hand_table(model_ms=7.0).save(tmp_path / latency_model.TABLE_NAME)
    cached = latency_model.load_or_measure(_tiny(size=20), "tflite_fp32", tmp_path, deploy=deploy)
    assert probed == [16] and cached.predict(_tiny(size=20)) == 7.0  # reused, not re-probed
    with pytest.raises(ValueError, match="input_spatial \\[20, 20\\]"):
        LatencyTable.load(tmp_path / latency_model.TABLE_NAME).predict(_tiny(size=20))


class _PerFilterTable:
    """A fake latency table: 0.1 ms per filter left; ``free`` groups' filters save nothing."""

    def __init__(self, free=()):
        self.free = free

    def predict(self, model):
        counts = filters_per_group(model)
        return 0.1 * sum(n if g not in self.free else 0 for g, n in counts.items())


def _run_to_latency(score, table=None, **options):
    pruner = FakePruner({"score": score}, rule="fixed", **options)
    pruner.latency = _PerFilterTable() if table is None else table
    model = _pruner_model()  # 20 filters: 2.0 ms
    return pruner.run(model, pruner.start(model, baseline_macs=1000))


def test_pruning_stops_once_the_predicted_latency_meets_the_target():
    _, state = _run_to_latency(_free, max_rounds=5, latency_target_ms=1.5)
    (h,) = state.history  # 6 of 20 filters removed: 1.4 ms
    assert h["outcome"] == "accepted" and h["predicted_ms"] == pytest.approx(1.4)
    assert state.stop_reason == "latency target" and state.round == 1


def test_baseline_under_the_latency_target_runs_no_round():
    pruned, state = _run_to_latency(_free, max_rounds=5, latency_target_ms=2.5)
    assert state.history == [] and state.stop_reason == "latency target"
    assert sum(filters_per_group(pruned).values()) == 20


def test_tolerance_binds_before_the_latency_target():
    def costly(filters, epochs):  # every removed filter costs 2 points
        return 0.9 - 0.02 * (20 - filters)

    _, state = _run_to_latency(costly, max_rounds=5, latency_target_ms=1.9, max_failures=2)
    assert [h["outcome"] for h in state.history] == ["failed", "failed"]
    assert state.stop_reason == "recovery failed"


def test_cost_latency_spares_the_groups_whose_filters_save_nothing():
    def removed(table, cost):
        _, state = _run_to_latency(_free, table, max_rounds=1, cost=cost, importance="none")
        return set(state.history[0]["removed_per_group"])

    assert removed(_PerFilterTable(), "none") == {"c1"}  # c1's kernels have the smaller norms
    assert removed(_PerFilterTable(), "latency") == {"c1"}  # every filter saves alike
    assert removed(_PerFilterTable(free=("c1",)), "latency") == {"c2"}


def test_round_candidates_divide_importance_by_the_latency_saved():
    weights = {
        "a": [(np.array([1.0] * 4 + [5.0] * 4), 0)],
        "b": [(np.array([2.0] * 4 + [5.0] * 4), 0)],
    }
    plan = prc.RoundPlan(0.01, 0.25, None, 0.0, False)

    def candidates(cost, filter_cost=None):
        options = PruneOptions(cost=cost, importance="none")
        return round_candidates(weights, plan, options, filter_cost=filter_cost)

    assert candidates("none") == {"a": [0, 1, 2, 3]}
    assert candidates("latency", {"a": 1e-6, "b": 1.0}) == {"b": [0, 1, 2, 3]}
    with pytest.raises(ValueError, match="cost='latency' needs the cost per filter"):
        candidates("latency")


def test_pruner_without_a_table_refuses_latency_options():
    pruner = FakePruner({"score": _free}, latency_target_ms=1.0)
    model = _pruner_model()
    with pytest.raises(ValueError, match="need a latency table"):
        pruner.run(model, pruner.start(model, baseline_macs=1000))


def test_controller_latency_target_round_trips_and_old_checkpoints_load():
    c = prc.PruningRateController(0.9, 0.02, latency_target=2.0)
    assert c.observe("accepted", before=0.9, metric=0.9, latency=2.5) is None
    c2 = prc.PruningRateController.from_dict(json.loads(json.dumps(c.to_dict())))
    assert (c2.latency_target, c2.last_latency) == (2.0, 2.5)
    assert c2.observe("accepted", before=0.9, metric=0.9, latency=2.0) == "latency target"
    old = {k: v for k, v in c.to_dict().items() if k not in ("latency_target", "last_latency")}
    assert prc.PruningRateController.from_dict(old).latency_target is None
    with pytest.raises(ValueError, match="latency_target"):
        prc.PruningRateController(0.9, 0.02, latency_target=0.0)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(latency_format="tflite_fp16"), "latency_format='tflite_fp16' is not one of"),
        (dict(latency_target_ms=-1.0), "latency_target_ms=-1.0 must be >= 0"),
        (dict(latency_target_ms=float("nan")), "latency_target_ms=nan"),
        (dict(cost="latncy"), "Did you mean 'latency'"),
    ],
)
def test_prune_options_validate_the_latency_keys(kw, match):
    with pytest.raises(ValueError, match=match):
        PruneOptions(**kw)


def test_config_and_entry_points_take_the_latency_keys():
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    config_lib.apply_overrides(cfg, ["prune.latency_target_ms=2", "prune.cost=latency"])
    options = config_lib.prune_options(cfg)
    assert options.latency_target_ms == 2.0 and options.needs_latency
    assert options.controller(0.9, 1000).latency_target == 2.0
    with pytest.raises(config_lib.ConfigError, match="prune.latency_format"):
        config_lib.apply_overrides(cfg, ["prune.latency_format=onnx"])
    for kw in (dict(cost="latency"), dict(latency_target_ms=2.0)):
        with pytest.raises(ValueError, match="AFPCallback does not support"):
            AFPCallback(**kw)


def test_measured_table_predicts_a_pruned_model_and_has_every_probe(tmp_path):
    pytest.importorskip("ai_edge_litert")
    model, probes = _tiny(), tmp_path / "probes"
    table = latency_model.measure_table(
        model, "tflite_fp32", probes, runs=20, warmup=5, fractions=(1.0, 0.5)
    )
    manifest = json.loads((probes / latency_model.MANIFEST).read_text())
    written = json.loads((probes / "table.json").read_text())
    assert len(manifest["probes"]) == 3 * 4 + 2  # 2 x 2 counts per layer, the model, empty
    assert [p["file"] for p in written["probes"]] == [p["file"] for p in manifest["probes"]]
    assert all(0 < p["median_ms"] <= p["p90_ms"] for p in written["probes"])
    assert (written["threads"], written["runs"]) == (1, 20)
    assert written["runtime"]["name"] == "ai-edge-litert" and written["machine"]["machine"]
    assert table.predict(model) == table.model_ms
    pruned = surgery.remove_filters(model, {"c1": [0, 1, 2, 3], "c2": [0, 1, 2, 3]})
    path = tmp_path / "pruned" / "model_fp32.tflite"
    artifacts.write_saved_model(pruned, (16, 16, 3), tmp_path / "saved_model", "logits")
    artifacts.convert("tflite_fp32", tmp_path / "saved_model", path, None, [])
    measured = latency.measure_latency(path, runs=50, warmup=10)["median_ms"]
    # A model of ~10 µs is mostly the fixed cost of an invoke, and the CPU is shared: 50 %.
    assert table.predict(pruned) == pytest.approx(measured, rel=0.5)


def test_round_robin_in_blocks_times_each_model_warm_and_in_turns():
    import sys

    sys.path.insert(0, str(resources.deploy_dir()))
    import deploy_common  # noqa: PLC0415

    calls: list[str] = []
    fns = [lambda n=n: calls.append(n) for n in "ab"]
    out = deploy_common.time_round_robin(fns, runs=5, warmup=1, block=3)
    assert [r["runs"] for r in out] == [5, 5]
    # warm-up a b; then turns of 3 calls (1 untimed + 2 timed) until 5 are timed: 3 turns each.
    assert "".join(calls) == "ab" + "aaabbb" * 2 + "aabb"
    calls.clear()
    deploy_common.time_round_robin(fns, runs=2, warmup=0)  # block 1: call by call
    assert "".join(calls) == "abab"
