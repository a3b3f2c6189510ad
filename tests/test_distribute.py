"""afp_tf.train.distribute: make_strategy, and two local MultiWorkerMirroredStrategy workers."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mwms_worker
import numpy as np
import pytest
import tensorflow as tf

from afp_tf.train import distribute

WORKER_SCRIPT = Path(__file__).with_name("mwms_worker.py")
TIMEOUT_S = 300  # two TensorFlow processes on a shared 2-core machine: mostly start-up


def test_make_strategy_default_is_single_replica():
    assert distribute.make_strategy("default").num_replicas_in_sync == 1


def test_make_strategy_mirrored_uses_both_logical_cpus():
    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    assert isinstance(strategy.extended._cross_device_ops, tf.distribute.ReductionToOneDevice)


def test_make_strategy_unknown_kind_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'mirrored'"):
        distribute.make_strategy("mirror")


def test_make_strategy_devices_for_default_raises():
    with pytest.raises(ValueError, match="only used by the 'mirrored'"):
        distribute.make_strategy("default", devices=["/cpu:0"])


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "non-empty 'worker'"),
        (
            '{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
            "'host:port'",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
            "'type' is one of",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
            r"in \[0, 1\)",
        ),
    ],
)
def test_make_strategy_multi_worker_bad_tf_config_raises(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        distribute.make_strategy("multi_worker")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _launch_workers(tmp_path, worker_args):
    """Starts the two workers of a local cluster with ``worker_args`` (after ``--out``)."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", no_proxy="127.0.0.1,localhost")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        )
        log = open(tmp_path / f"worker_{index}.log", "wb")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, str(WORKER_SCRIPT), "--out", str(tmp_path), *worker_args]
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return procs


def _wait(procs, tmp_path):
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"Workers did not finish within {TIMEOUT_S} s; logs:\n{_logs(tmp_path)}")
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return [proc.returncode for proc, _ in procs]


def _logs(tmp_path):
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*.log"))


@pytest.mark.slow
def test_multi_worker_two_local_workers_match_single_process(tmp_path):
    init = [np.asarray(w) for w in mwms_worker.build_model().get_weights()]
    init_path = tmp_path / "init.npz"
    np.savez(init_path, **{f"w{i}": w for i, w in enumerate(init)})

    args = ["--mode", "train", "--init", str(init_path), "--epochs", "2"]
    codes = _wait(_launch_workers(tmp_path, args), tmp_path)

    assert codes == [0, 0], _logs(tmp_path)
    digests = [(tmp_path / f"worker_{i}.sha256").read_text() for i in range(2)]
    assert digests[0] == digests[1]
    with np.load(tmp_path / "worker_0.npz") as f:
        distributed = [f[f"w{i}"] for i in range(len(init))]
    assert mwms_worker.weights_digest(distributed) == digests[0]
    single = mwms_worker.train(tf.distribute.get_strategy(), init, epochs=2)
    assert not np.allclose(single[0], init[0])
    for a, b in zip(distributed, single, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_multi_worker_prune_round_same_architecture_and_weights(tmp_path):
    codes = _wait(_launch_workers(tmp_path, ["--mode", "prune", "--epochs", "3"]), tmp_path)

    assert codes == [0, 0], _logs(tmp_path)
    results = [json.loads((tmp_path / f"worker_{i}.json").read_text()) for i in range(2)]
    assert results[0]["outcomes"] == ["accepted"]
    assert results[0]["rounds"] == 1
    assert results[0]["params"][1] < results[0]["params"][0]
    assert results[0]["metric"] >= results[0]["floor"]
    assert results[0]["compiled"]
    assert any(results[0]["filters"][k] < n for k, n in results[0]["filters_before"].items())
    assert results[0] == results[1]  # same filters per group, metrics and weight digest
