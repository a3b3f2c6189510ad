"""Packaging: the wheel installs configs and deploy runners, console scripts run, extras named."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from afp_tf import extras, resources

ROOT = Path(__file__).resolve().parents[1]
# TensorFlow C++ / absl-format log lines, which the quiet console keeps in the log file.
NATIVE_LOG = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|cudart_stub|cuInit|XNNPACK|"
    r"fully_quantize|oneDNN|cpu_feature_guard",
    re.MULTILINE,
)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_packages_every_source_package_and_mapped_folders():
    setuptools = _pyproject()["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "afp_tf").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert set(setuptools["packages"]) == found | {"afp_tf.configs", "afp_tf.deploy"}
    assert setuptools["package-dir"] == {"afp_tf.configs": "configs", "afp_tf.deploy": "export"}


def test_pyproject_extras_and_console_scripts():
    project = _pyproject()["project"]
    extra = project["optional-dependencies"]
    assert set(extra) == {"detection", "onnx", "litert", "hub", "all", "dev"}
    assert extra["all"] == ["afp_tf[detection,onnx,litert,hub]"]
    assert extra["dev"][0] == "afp_tf[all]" and any(d.startswith("pytest") for d in extra["dev"])
    core = " ".join(project["dependencies"])
    assert not re.search(r"keras-cv|tf2onnx|onnxruntime|ai-edge-litert|keras-hub|pycocotools", core)
    assert project["scripts"] == {
        "afp-tf": "afp_tf.main:run",
        "afp-tf-export": "afp_tf.export.cli:run",
    }
    assert set(extras.EXTRA_OF.values()) <= set(extra)


def test_require_missing_module_names_its_extra(monkeypatch):
    monkeypatch.setitem(extras.EXTRA_OF, "afp_tf_no_such_module", "onnx")
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'afp_tf\[onnx\]'"):
        extras.require("afp_tf_no_such_module", "ONNX export")


_BLOCK_EXTRAS = (
    "import sys\n"
    "for m in ('keras_cv', 'pycocotools', 'tf2onnx', 'onnx', 'onnxruntime', 'ai_edge_litert',"
    " 'keras_hub'):\n"
    "    sys.modules[m] = None  # as if not installed\n"
)


def test_core_install_without_extras_imports_the_main_job_and_names_missing_extras():
    script = _BLOCK_EXTRAS + (
        "import afp_tf.main, afp_tf.run.pipeline, afp_tf.export, afp_tf.export.cli\n"
        "from afp_tf import extras\n"
        "for module, purpose in (('tf2onnx', 'ONNX export'), ('keras_cv', 'detection')):\n"
        "    try:\n"
        "        extras.require(module, purpose)\n"
        "    except extras.MissingExtraError as e:\n"
        "        print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pip install 'afp_tf[onnx]'" in proc.stdout
    assert "pip install 'afp_tf[detection]'" in proc.stdout


def test_resources_source_checkout_finds_configs_and_runners():
    assert resources.config_dir() == ROOT / "configs"
    assert (resources.deploy_dir() / "run_tflite.py").is_file()


def _copy_source(dest: Path) -> Path:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("afp_tf", "configs", "export"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _venv_with_shared_deps(path: Path) -> Path:
    """A venv without pip that sees this interpreter's packages (no download of TensorFlow)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path entry: the shared venv's own .pth files (its editable afp_tf) stay inactive.
    Path(site, "shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.slow
def test_wheel_install_runs_quick_job_quietly_from_another_directory(tmp_path, tiny_fashion_mnist):
    (tmp_path / "src").mkdir()
    src = _copy_source(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), src],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("afp_tf-*.whl")
    python = _venv_with_shared_deps(tmp_path / "venv")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    shutil.rmtree(src)  # nothing may come from a source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    where = subprocess.run(
        [str(python), "-c", "import afp_tf.resources as r; print(r.config_dir(), r.deploy_dir())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=elsewhere,
        env=env,
    ).stdout.split()
    assert all(p.startswith(str(tmp_path / "venv")) for p in where), where
    proc = subprocess.run(
        [
            str(tmp_path / "venv" / "bin" / "afp-tf"),
            "--config",
            "lenet5_fashion_mnist:quick",
            # data the test wrote in the real (IDX) format, never the machine's installed copy
            f"--config.data.data_dir={tiny_fashion_mnist}",
            "--config.data.source=local",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert len(output.splitlines()) <= 50, output
    assert not NATIVE_LOG.search(output), output
    assert "baseline epoch 2/2" in output and "MACs" in output
    workdir = elsewhere / "runs" / "lenet5_fashion_mnist"
    assert (workdir / "export" / "pruned" / "model_int8.tflite").is_file()
    log = (workdir / "afp_tf.log").read_text()
    assert NATIVE_LOG.search(log)  # kept in the log file
    assert f"fashion_mnist from local:{tiny_fashion_mnist}:" in log  # the test's data, no other
