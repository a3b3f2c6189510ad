"""Atomic writes and run checkpoints."""

import keras
import numpy as np
import pytest

from afp_tf import io_utils
from afp_tf.run import checkpoint


def test_atomic_path_error_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.json"
    io_utils.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), io_utils.atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert io_utils.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_path_directory_replaces_whole(tmp_path):
    target = tmp_path / "saved"
    for content in ("one", "two"):
        with io_utils.atomic_path(target, directory=True) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text(content)
    assert (target / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_write_json_numpy_values_serialise(tmp_path):
    io_utils.write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(2)})
    assert io_utils.read_json(tmp_path / "x.json") == {"a": 1.5, "b": [0, 1]}


def _model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, name="d")(inputs))


def test_run_store_roundtrip_restores_model_and_optimizer(tmp_path):
    model = _model()
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    for v in opt.variables:
        v.assign(np.full(v.shape, 0.5, dtype=v.dtype))
    store = checkpoint.RunStore(tmp_path)
    assert store.load() is None
    store.save({"phase": "baseline", "epoch": 2}, model=model, optimizer=opt, tag="e2")
    state = store.load()
    assert state["phase"] == "baseline" and state["epoch"] == 2
    loaded = store.load_model(state)
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    fresh = keras.optimizers.Adam()
    assert store.restore_optimizer(state, fresh, loaded)
    np.testing.assert_allclose(fresh.variables[-1].numpy(), 0.5)


def test_run_store_new_tag_removes_old_files(tmp_path):
    store = checkpoint.RunStore(tmp_path)
    store.save({"phase": "pruning"}, model=_model(), tag="round_001")
    store.save({"phase": "pruning"}, model=_model(), tag="round_002")
    assert sorted(p.name for p in store.dir.iterdir()) == ["round_002.keras", "state.json"]


def test_run_store_corrupt_state_says_what_to_do(tmp_path):
    store = checkpoint.RunStore(tmp_path)
    store.dir.mkdir()
    store.state_path.write_text("{not json")
    with pytest.raises(RuntimeError, match="delete the workdir's checkpoints"):
        store.load()
