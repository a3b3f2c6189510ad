"""The main job on SSD/GTSDB: synthetic end to end with export, the real archive layout, no data."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from afp_tf import config_lib, pipeline
from afp_tf.data import DatasetNotFoundError, gtsdb_synth

TINY = [
    "data.synthetic_images=24",
    "data.image_size=64",
    "data.val_fraction=0.2",
    "train.baseline_epochs=1",
    "train.progress=false",
    "export.samples=8",
    "export.latency_runs=2",
]


def _config(name, overrides):
    cfg = config_lib.load_config(name)
    config_lib.apply_overrides(cfg, overrides)
    return cfg


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_main_job_ssd_synthetic_quick_tiny_runs_end_to_end_with_export(tmp_path):
    cfg = _config("ssd_gtsdb_synthetic:quick", [f"data.data_dir={tmp_path / 'data'}", *TINY])
    summary = pipeline.run(cfg, tmp_path / "run")
    assert summary["rounds"] >= 1 and summary["pruned"]["params"] <= summary["baseline"]["params"]
    reports = summary["export"]["reports"]
    for name in ("baseline", "pruned"):
        assert set(reports[name]["formats"]) == {"tflite_fp32", "onnx"}
        assert reports[name]["passed"] and reports[name]["task"] == "detection"
        assert (tmp_path / "run" / "export" / name / "model_fp32_nms.tflite").is_file()
    assert {r["format"] for r in summary["export"]["latency"]} == {"tflite_fp32", "onnx"}
    assert (tmp_path / "run" / "report.json").is_file()


@pytest.mark.slow
def test_main_job_ssd_gtsdb_reads_archive_layout(tmp_path):
    gtsdb_synth.generate(tmp_path / "gtsdb" / "FullIJCNN2013", 24, scale=0.1, seed=1)
    cfg = _config(
        "ssd_gtsdb:quick",
        [
            f"data.data_dir={tmp_path / 'gtsdb'}",
            "data.download=false",
            "export.enabled=false",
            "prune.max_rounds=1",
            *TINY,
        ],
    )
    summary = pipeline.run(cfg, tmp_path / "run")
    assert summary["baseline"]["params"] > 0 and "val" in summary["pruned"]
    assert sorted(p.name for p in (tmp_path / "gtsdb").iterdir()) == ["FullIJCNN2013"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["source"] == "auto"


def test_main_job_ssd_gtsdb_absent_data_without_download_says_where(tmp_path):
    cfg = _config(
        "ssd_gtsdb", [f"data.data_dir={tmp_path / 'nothing'}", "data.download=false", *TINY]
    )
    with pytest.raises(DatasetNotFoundError, match=r"No GTSDB data in .*FullIJCNN2013\.zip"):
        pipeline.run(cfg, tmp_path / "run")


def test_cli_ssd_gtsdb_unreachable_url_exits_with_clear_error(tmp_path):
    data_dir = tmp_path / "gtsdb"
    url = f"http://127.0.0.1:{_closed_port()}/FullIJCNN2013.zip"
    proc = subprocess.run(
        [sys.executable, "-m", "afp_tf.main", "--config", "ssd_gtsdb"]
        + [f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={data_dir}"]
        + [f"--config.data.url={url}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"error: Cannot download {url}" in proc.stderr
    assert f"Put FullIJCNN2013.zip into {data_dir}" in proc.stderr
