"""The run report: the rounds plot on one split with both floors, tables that name their data."""

import pytest

from afp_tf.method import prc
from afp_tf.run import report


def _state(*, accept: bool) -> dict:
    base = {"val": 0.9414, "test": 0.8986, "macs": 2_000_000, "params": 10, "filters": {"c": 4}}
    if accept:
        base["accept"] = 0.9000
    decision = base["accept"] if accept else base["val"]
    controller = prc.PruningRateController(decision, 0.02, margin=0.005 if accept else 0.0)
    history = [
        {"round": 1, "outcome": "accepted", "metric": 0.8950, "macs": 1_500_000},
        {"round": 2, "outcome": "failed", "metric": 0.8700, "macs": 1_000_000},
        {"round": 3, "outcome": "accepted", "metric": 0.8900, "macs": 1_200_000},
    ]
    return {
        "baseline": base,
        "pruned": {**base, "macs": 1_200_000, "filters": {"c": 3}},
        "prune": {"round": 3, "controller": controller.to_dict(), "history": history},
    }


def test_rounds_series_is_on_the_acceptance_split_from_round_0_with_both_floors():
    series = report.rounds_series(_state(accept=True))
    assert series["split"] == "acceptance"
    assert series["metric"] == [0.9000, 0.8950, 0.8900]  # round 0: accept, not val (0.9414)
    assert series["macs"] == [2_000_000, 1_500_000, 1_200_000]
    assert series["floor"] == pytest.approx(0.88)
    assert series["accept_floor"] == pytest.approx(0.885)


def test_rounds_series_without_acceptance_split_is_on_validation():
    series = report.rounds_series(_state(accept=False))
    assert series["split"] == "validation"
    assert series["metric"][0] == 0.9414
    assert series["floor"] == series["accept_floor"] == pytest.approx(0.9214)


def test_rounds_plot_draws_the_series_both_floors_and_names_the_split(tmp_path, monkeypatch):
    figures = {}
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.setdefault(path.name, fig))
    report.write(tmp_path, _state(accept=True), [])
    ax = figures["metric_vs_macs.png"].axes[0]
    curve, floor, accept_floor = ax.get_lines()
    assert list(curve.get_ydata()) == [0.9000, 0.8950, 0.8900]
    assert list(curve.get_xdata()) == [2.0, 1.5, 1.2]
    assert floor.get_ydata()[0] == pytest.approx(0.88)
    assert accept_floor.get_ydata()[0] == pytest.approx(0.885)
    assert ax.get_ylabel() == "acceptance metric"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["acceptance metric", "floor", "accept floor (floor + margin 0.005)"]


def test_markdown_tables_name_the_data_their_metric_is_on(tmp_path):
    state = _state(accept=True)
    formats = {"tflite_int8": {"size_bytes": 100, "max_rel_diff": 0.01, "metric": 0.9414}}
    rep = {"metric": "accuracy", "samples": 256, "data": "validation set", "formats": formats}
    state["export"] = {"reports": {"baseline": rep, "pruned": rep}}
    report.write(tmp_path, state, [])
    text = (tmp_path / "report.md").read_text()
    assert "| round | outcome | acceptance metric |" in text
    assert "| max rel. diff | accuracy on validation set (256 samples) | check |" in text
    assert (tmp_path / "plots" / "metric_vs_macs.png").stat().st_size > 1000
