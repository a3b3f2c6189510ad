"""Where the experiment configs and the deploy runners are, installed or in a source checkout.

A wheel installs the repository's top-level ``configs/`` as the package ``afp_tf.configs`` and
``export/`` as ``afp_tf.deploy`` (see ``pyproject.toml``); a source checkout keeps them beside
the ``afp_tf`` folder. Both are found here, nowhere else.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _folder(package: str, source_name: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(package)))
    except ModuleNotFoundError:
        path = _SOURCE_ROOT / source_name
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} not found: afp_tf is installed without its {source_name}/ folder "
            f"({package}); reinstall it from a wheel or a source checkout."
        )
    return path


def config_dir() -> Path:
    """The folder of the experiment configs (``configs/`` in the repository)."""
    return _folder("afp_tf.configs", "configs")


def deploy_dir() -> Path:
    """The folder of the deploy-side runners (``export/`` in the repository)."""
    return _folder("afp_tf.deploy", "export")
