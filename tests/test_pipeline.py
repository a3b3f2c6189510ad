"""The main job end to end on tiny IDX data: artifacts, floor, resume after SIGKILL, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    artifact_float_types,
    learnable_images,
    tiny_job_config,
    tiny_job_overrides,
    write_idx,
)

from afp_tf import export
from afp_tf.run import config_lib, pipeline

REPO = Path(__file__).resolve().parent.parent


_config = tiny_job_config


def _cli(workdir, data_dir, *extra, **kwargs):
    cmd = [
        sys.executable,
        "-m",
        "afp_tf.main",
        "--config",
        "lenet5_fashion_mnist:quick",
        "--workdir",
        str(workdir),
    ]
    cmd += [f"--config.{o}" for o in tiny_job_overrides(data_dir, *extra)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


@pytest.mark.slow
def test_pipeline_quick_run_prunes_within_floor_and_writes_artifacts(tmp_path, tiny_fashion_mnist):
    summary = pipeline.run(_config(tiny_fashion_mnist, "prune.finetune_epochs=3"), tmp_path)
    for name in (
        "baseline.keras",
        "pruned.keras",
        "report.md",
        "report.json",
        "metrics.jsonl",
        "plots/filters_per_layer.png",
        "plots/metric_vs_macs.png",
        "config.json",
    ):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tensorboard").iterdir())
    base, pruned = summary["baseline"], summary["pruned"]
    assert pruned["val"] >= pruned["floor"] - 1e-9
    accepted = [h for h in summary["history"] if h["outcome"] == "accepted"]
    assert summary["rounds"] == len(accepted) >= 1
    assert pruned["macs"] == accepted[-1]["macs"] < base["macs"]
    for group, size in base["filters"].items():
        removed = sum(h["removed_per_group"].get(group, 0) for h in accepted)
        assert pruned["filters"][group] == size - removed, group
    model = keras.saving.load_model(tmp_path / "pruned.keras")
    assert model.count_params() == pruned["params"]
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"baseline", "shrink", "round"} <= {e["phase"] for e in events}
    # Fine-tuning keeps its best validation epoch (or the model before it, if that was better).
    tuned = [e["val_accuracy"] for e in events if e["phase"] == "finetune"]
    assert len(tuned) == 3
    assert pruned["val"] >= max(tuned) - 1e-6


@pytest.mark.slow
def test_pipeline_absurd_learning_rate_rolls_back_to_last_good(tmp_path, tiny_fashion_mnist):
    cfg = _config(
        tiny_fashion_mnist,
        "prune.learning_rate=1e12",
        "prune.max_nonfinite_retries=1",
        "train.baseline_epochs=1",
        "prune.finetune_epochs=0",
    )
    summary = pipeline.run(cfg, tmp_path)
    assert summary["stop_reason"] == "non-finite loss persisted"
    assert [r["outcome"] for r in summary["history"]] == ["non-finite"] * 2
    assert summary["pruned"]["macs"] == summary["baseline"]["macs"]
    assert summary["pruned"]["val"] == pytest.approx(summary["baseline"]["val"])
    weights = keras.saving.load_model(tmp_path / "pruned.keras").get_weights()
    assert all(np.isfinite(w).all() for w in weights)


@pytest.mark.slow
def test_main_sigkill_mid_round_resumes_and_finishes(tmp_path, tiny_fashion_mnist):
    state_path = tmp_path / "checkpoints" / "state.json"
    proc = _cli(tmp_path, tiny_fashion_mnist, "prune.max_rounds=3", "prune.shrink_epochs=2")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("phase") == "pruning" and state["prune"]["round"] >= 1:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "run ended before a round completed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_round = json.loads(state_path.read_text())["prune"]["round"]
    resumed = _cli(tmp_path, tiny_fashion_mnist, "prune.max_rounds=3", "prune.shrink_epochs=2")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert f"Resuming pruning after round {killed_round}" in err
    assert "baseline epoch" not in err  # the baseline was not trained again
    report = json.loads((tmp_path / "report.json").read_text())
    rounds = [r["round"] for r in report["history"] if r["outcome"] == "accepted"]
    assert rounds == sorted(set(rounds)) and rounds[0] == 1
    assert "MACs" in out and "pruned" in out


@pytest.mark.slow
def test_pipeline_finished_run_more_rounds_reopens_pruning_after_finetune(
    tmp_path, tiny_fashion_mnist
):
    one = _config(tiny_fashion_mnist, "prune.max_rounds=1", "prune.tolerance=0.5")
    two = _config(tiny_fashion_mnist, "prune.max_rounds=2", "prune.tolerance=0.5")
    first = pipeline.run(one, tmp_path)
    assert [h["round"] for h in first["history"]] == [1]
    assert first["stop_reason"] == "round budget"
    assert pipeline.finished(one, tmp_path) and not pipeline.finished(two, tmp_path)
    second = pipeline.run(two, tmp_path)
    assert [h["round"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]
    tuned = first["pruned"]["val"]  # the reopened round starts from the fine-tuned model
    assert second["history"][1]["metric_before"] == pytest.approx(tuned)
    assert second["pruned"]["macs"] <= first["pruned"]["macs"]
    assert pipeline.finished(two, tmp_path)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["phase"] in ("shrink", "recover", "finetune")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no epoch index repeated


def test_main_missing_dataset_says_how_to_get_it(tmp_path):
    proc = _cli(tmp_path / "run", tmp_path / "empty")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "dataset-fashion-mnist" in err


def test_main_unwritable_workdir_clear_error(tmp_path, tiny_fashion_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _cli(blocker / "run", tiny_fashion_mnist)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "Cannot write to workdir" in err


def test_main_misspelt_override_exit_2_with_suggestion(tmp_path, tiny_fashion_mnist):
    proc = _cli(tmp_path, tiny_fashion_mnist, "prune.tolerence=0.1")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "Did you mean 'prune.tolerance'" in err


_TINY_JOB = (
    "train.baseline_epochs=1",
    "prune.max_rounds=1",
    "prune.finetune_epochs=0",
    "data.train_subset=640",
    "data.test_subset=128",
)


@pytest.mark.slow
def test_pipeline_steps_per_execution_and_xla_same_numbers_as_default(tmp_path, tiny_fashion_mnist):
    summaries = {
        name: pipeline.run(_config(tiny_fashion_mnist, *_TINY_JOB, *extra), tmp_path / name)
        for name, extra in {
            "default": (),
            "steps_per_execution": ("train.steps_per_execution=4",),
            "jit_compile": ("train.jit_compile=true",),
        }.items()
    }
    default = summaries.pop("default")
    assert default["rounds"] == 1
    for name, summary in summaries.items():
        for side in ("baseline", "pruned"):
            assert summary[side]["macs"] == default[side]["macs"], name
            assert summary[side]["val"] == pytest.approx(default[side]["val"], abs=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_pipeline_mixed_precision_keeps_its_layers_and_exports_float32(
    tmp_path, tiny_fashion_mnist, policy
):
    formats = ("saved_model", "tflite_fp32", "onnx")
    cfg = _config(
        tiny_fashion_mnist,
        *_TINY_JOB,
        f"train.mixed_precision={policy}",
        "export.enabled=true",
        f"export.formats={','.join(formats)}",
        "export.latency_runs=1",
    )
    summary = pipeline.run(cfg, tmp_path)
    assert keras.config.dtype_policy().name == "float32"  # the run's policy does not leak
    assert summary["rounds"] == 1 and summary["pruned"]["macs"] < summary["baseline"]["macs"]
    assert summary["pruned"]["val"] >= summary["pruned"]["floor"]
    pruned = keras.saving.load_model(tmp_path / "pruned.keras")
    convs = [layer for layer in pruned.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.compute_dtype for layer in convs] == [policy.removeprefix("mixed_")] * 2
    assert all(w.dtype == "float32" for w in pruned.weights)
    for side in ("baseline", "pruned"):
        out = tmp_path / "export" / side
        report = json.loads((out / export.REPORT_NAME).read_text())
        assert report["passed"] and report["model_precision"] == policy, side
        for name in formats:
            assert report["formats"][name]["max_rel_diff"] <= 1e-4, (side, name)
            assert artifact_float_types(out / export.FORMATS[name].filename) == {"float32"}


@pytest.mark.parametrize(
    ("overrides", "rates"),
    [
        ([], [0.02, 0.02, 0.02]),
        (["train.lr_schedule=cosine"], [0.02, 0.01, 0.0]),
        (["train.lr_schedule=cosine", "train.warmup_epochs=1"], [0.0, 0.02, 0.0]),
    ],
)
def test_baseline_optimizer_factory_schedule_over_baseline_epochs(overrides, rates):
    cfg = config_lib.load_config("lenet5_fashion_mnist")  # sgd at 0.02
    config_lib.apply_overrides(cfg, ["train.baseline_epochs=2", *overrides])
    optimizer = pipeline.baseline_optimizer_factory(cfg, steps=5)()
    seen = []
    for step in (0, 5, 10):  # start, after epoch 1, the end of epoch 2
        optimizer.iterations.assign(step)
        seen.append(float(optimizer.learning_rate))
    assert seen == pytest.approx(rates, abs=1e-7)


def test_baseline_optimizer_factory_cosine_unknown_length_raises():
    cfg = config_lib.load_config("lenet5_fashion_mnist")
    config_lib.apply_overrides(cfg, ["train.lr_schedule=cosine"])
    with pytest.raises(pipeline.RunError, match="train.steps_per_epoch"):
        pipeline.baseline_optimizer_factory(cfg, steps=0)


@pytest.mark.slow
@pytest.mark.parametrize(("accept_fraction", "split"), [(0.1, "accept"), (0.0, "val")])
def test_pipeline_report_states_margin_on_the_decision_split(tmp_path, accept_fraction, split):
    data_dir = tmp_path / "data"  # the tiny IDX files with a fifth of the labels wrong
    data_dir.mkdir()
    for name, n, seed in (("train", 1200, 1), ("t10k", 300, 2)):
        images, labels = learnable_images(n, seed)
        wrong = np.random.default_rng(seed).random(n) < 0.2
        write_idx(data_dir / f"{name}-images-idx3-ubyte.gz", images)
        write_idx(data_dir / f"{name}-labels-idx1-ubyte.gz", np.where(wrong, 9 - labels, labels))
    cfg = _config(data_dir, *_TINY_JOB, f"data.accept_fraction={accept_fraction}")
    pipeline.run(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    base, pruned = report["baseline"], report["pruned"]
    assert ("accept" in base) == (split == "accept")
    e = base[split]  # decided on it; 120 examples: a tenth of the 1200 training images
    assert 0 < e < 1
    assert pruned["margin"] == pytest.approx(np.sqrt(e * (1 - e) / 120))
    assert pruned["accept_floor"] == pytest.approx(pruned["floor"] + pruned["margin"])
    assert pruned["floor"] == pytest.approx(e - 0.2)
    accepted = [h for h in report["history"] if h["outcome"] == "accepted"]
    assert all(h["metric"] >= pruned["accept_floor"] for h in accepted)
