"""What every benchmark records next to its numbers: the command, the machine and the date."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def provenance() -> dict:
    """Exact command line, machine and library versions of this process."""
    import keras
    import tensorflow as tf

    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }


def write_result(name: str, result: dict) -> Path:
    """Writes ``benchmarks/results/NAME.json`` atomically, provenance first."""
    from afp_tf import io_utils

    path = RESULTS / f"{name}.json"
    io_utils.write_json(path, {**provenance(), **result})
    return path
