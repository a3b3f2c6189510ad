"""The main job on SSD/GTSDB: synthetic end to end with export, the real archive layout, no data."""

import functools
import http.server
import json
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from afp_tf.data import DatasetNotFoundError, gtsdb_signs, gtsdb_synth
from afp_tf.export import latency_model
from afp_tf.run import config_lib, pipeline, task_builders

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
    # ONNX detectors: test_export_detection (the same export function, at the export level)
    overrides = [f"data.data_dir={tmp_path / 'data'}", "export.formats=tflite_fp32", *TINY]
    cfg = _config("ssd_gtsdb_synthetic:quick", overrides)
    summary = pipeline.run(cfg, tmp_path / "run")
    assert summary["rounds"] >= 1 and summary["pruned"]["params"] <= summary["baseline"]["params"]
    reports = summary["export"]["reports"]
    for name in ("baseline", "pruned"):
        assert set(reports[name]["formats"]) == {"tflite_fp32"}
        assert reports[name]["passed"] and reports[name]["task"] == "detection"
        assert (tmp_path / "run" / "export" / name / "model_fp32_nms.tflite").is_file()
    assert {r["format"] for r in summary["export"]["latency"]} == {"tflite_fp32"}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    # scored on the GTSDB competition's three categories, the four-category figure beside it
    for name in ("baseline", "pruned"):
        evaluation = report[name]["evaluation"]
        assert set(evaluation) == {"val", "test"}  # the quick run decides on val
        for split, m in evaluation.items():
            assert m["map50"] == report[name][split] and 0 <= m["map50_all"] <= 1
            assert m["scored"] == ["prohibitory", "danger", "mandatory"]
            assert set(m["ap_per_class"]) <= set(gtsdb_signs.CATEGORY_NAMES)
            assert set(m["confusion"]) >= {"swaps", "background", "missed"}


@pytest.fixture
def archive_server(tmp_path):
    """A loopback HTTP server holding FullIJCNN2013.zip: generated frames in the real layout."""
    frames = gtsdb_synth.generate(tmp_path / "src", 12, scale=0.1, sign_scale=0.3, seed=1)
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "FullIJCNN2013.zip", "w") as zf:
        for path in sorted(frames.iterdir()):
            zf.write(path, f"FullIJCNN2013/{path.name}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/FullIJCNN2013.zip"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_main_job_ssd_gtsdb_loopback_archive_downloads_trains_evaluates_exports(
    tmp_path, archive_server
):
    cfg = _config(
        "ssd_gtsdb:quick",
        [
            f"data.data_dir={tmp_path / 'gtsdb'}",
            f"data.url={archive_server}",
            "data.download=true",
            "train.steps_per_epoch=1",
            "prune.max_rounds=1",
            "prune.finetune_epochs=0",
            "export.formats=tflite_fp32",
            *TINY,
        ],
    )
    summary = pipeline.run(cfg, tmp_path / "run")
    assert (tmp_path / "gtsdb" / "FullIJCNN2013" / "00011.ppm").is_file()
    assert {"val", "test"} <= set(summary["baseline"]) and "val" in summary["pruned"]
    report = summary["export"]["reports"]["pruned"]
    assert report["passed"] and report["input"]["shape"] == [None, 80, 136, 3]  # full frames
    assert report["postprocessing"]["built_in"]["tflite_fp32_nms"]["passed"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["source"] == "auto" and config["data"]["image_size"] == 64


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


def test_detector_is_latency_probed_at_its_frame_size_as_exported(tmp_path):
    # Trained on 64 px crops, exported (and so timed) on full frames: Task.deployed.
    cfg = _config("ssd_gtsdb_synthetic:quick", [f"data.data_dir={tmp_path / 'data'}", *TINY])
    data = task_builders.load_task(cfg)
    model = data.build_model()
    frame = tuple(data.val.element_spec[0].shape[1:3])
    assert tuple(model.input_shape[1:3]) == (64, 64) and frame != (64, 64)
    first = next(iter(latency_model.describe(data.task.deployed(model)).values()))
    assert tuple(first["input_spatial"]) == frame
